"""The Python client's sans-IO session under the host's control frames (§2.5)."""

from __future__ import annotations

from umonitor.guest.session import GuestSession
from umonitor.protocol import frame_codec as fc
from umonitor.records import Severity


def sent(session: GuestSession, *, preface: bool = False) -> list[fc.Event]:
    decoder = fc.FrameDecoder(fc.Peer.GUEST, expect_preface=preface)
    decoder.receive_data(session.data_to_send())
    return decoder.next_events()


def test_set_level_is_applied_and_answered_before_the_pong() -> None:
    session = GuestSession("py", boot_id=bytes(16))
    session.connection_made()
    hello = sent(session, preface=True)[0]
    assert isinstance(hello, fc.Hello) and hello.level == Severity.DEBUG
    session.receive_data(fc.encode(fc.Ack(0)) + fc.encode(fc.SetLevel(Severity.WARNING)))
    session.receive_data(fc.encode(fc.Ping(7)))
    assert sent(session) == [fc.Level(Severity.WARNING), fc.Pong(7)]
    assert session.record(Severity.INFO, "filtered") == 0
    assert session.record(Severity.ERR, "kept") == 1


def test_each_hello_says_the_level_in_force() -> None:
    session = GuestSession("py", boot_id=bytes(16), level=Severity.NOTICE)
    session.connection_made()
    assert sent(session, preface=True)[0] == fc.Hello(
        "py", bytes(16), library=session.hello.library, level=Severity.NOTICE
    )
    session.receive_data(fc.encode(fc.SetLevel(Severity.CRIT)))
    session.connection_lost()
    session.connection_made()
    hello = sent(session, preface=True)[0]
    assert isinstance(hello, fc.Hello) and hello.level == Severity.CRIT
