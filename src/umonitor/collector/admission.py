"""Who may log, and under which name: the collector's admission rules.

How this works: every channel asks ``Admission.admit(requested, peer_host, token)``
before it files anything — a native HELLO (TCP or UDP, which carries a token), a text
or legacy connection, a syslog message (which cannot carry one: ``token`` is None).
It returns the instance to file under, or raises ``Refused`` with one sentence that
the collector logs (``DATA/security.log``), counts (``umonitor ls``) and, on native
connections, sends back in an ERROR frame before closing.

* ``OpenAdmission`` (``umonitor serve``): any guest, under its sanitized name. Its
  listeners are on loopback unless ``--open`` says otherwise.
* ``FleetAdmission`` (``umonitor up``): the fleet's instances are *managed*: each got
  a random token on its kernel command line and a leased address. A native HELLO
  from a lease must name that lease's instance and carry its token (compared in
  constant time); tokenless channels from a lease are filed under the lease's
  instance. A managed instance's name is refused from any other address. Anything
  else — an address that is no lease — is accepted only from 127.0.0.1 or ::1 (the
  host's own tools, e.g. ``umonitor send``) or in open mode (``[collector] open =
  true``).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from umonitor.errors import Refused
from umonitor.store.names import sanitize_instance_name

# Where the host's own tools connect from (``umonitor send``, scripts): trusted to log
# under unmanaged names. Only these two, not all of 127.0.0.0/8.
LOCAL_TOOLS = frozenset({"127.0.0.1", "::1"})


class Admission(Protocol):
    def admit(self, requested: str, peer_host: str, token: bytes | None) -> str:
        """The instance to file under; Refused if this peer may not log as ``requested``."""
        ...


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def is_local_host(host: str) -> bool:
    """Whether an address to listen on is this host's own (loopback, or the name
    ``localhost``); any other name could resolve elsewhere."""
    return host == "localhost" or is_loopback(host)


@dataclass(frozen=True, slots=True)
class OpenAdmission:
    """Everyone, under sanitized names (``serve``)."""

    def admit(self, requested: str, peer_host: str, token: bytes | None) -> str:
        return sanitize_instance_name(requested)


@dataclass(frozen=True, slots=True)
class FleetAdmission:
    """Managed instances by lease and token; others only from loopback or when open."""

    owner_of: Callable[[str], str | None]  # address -> the managed instance leased it
    token_of: Callable[[str], str | None]  # instance -> its token, None if not managed
    open: bool = False
    local: frozenset[str] = LOCAL_TOOLS  # the host's own addresses (add its bridge address)

    def admit(self, requested: str, peer_host: str, token: bytes | None) -> str:
        owner = self.owner_of(peer_host)
        if owner is not None:
            if token is None:
                return owner  # syslog, text, legacy: the lease is all there is
            name = sanitize_instance_name(requested)
            if name != owner:
                raise Refused(f"{peer_host} is the address of {owner}; it may not log as {name}")
            expected = (self.token_of(owner) or "").encode()
            if not expected or not hmac.compare_digest(token, expected):
                raise Refused(f"{owner} at {peer_host} presented a wrong token")
            return owner
        name = sanitize_instance_name(requested)
        if self.token_of(name) is not None:
            raise Refused(
                f"{name} is a managed instance; {peer_host} is not its address, so it may not "
                "log as it"
            )
        if self.open or peer_host in self.local:
            return name
        raise Refused(
            f"{peer_host} is not a managed instance's address; set open = true under "
            "[collector] in umonitor.toml to accept unmanaged guests"
        )
