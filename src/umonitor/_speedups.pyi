from array import array

from _typeshed import ReadableBuffer

def format_records(
    buf: bytearray,
    pos: int,
    end: int,
    max_body: int,
    high: int,
    now_ns: int,
    tally: array[int] | None = None,
    /,
) -> tuple[int, str, int, int]: ...
def syslog_lines(
    buf: ReadableBuffer,
    pos: int,
    end: int,
    max_frame: int,
    host: bytes,
    seq: int,
    now_ns: int,
    tally: array[int] | None = None,
    /,
) -> tuple[int, str, int, int]: ...
def summarize_lines(
    data: ReadableBuffer,
    pos: int,
    end: int,
    stop_after: int,
    counters: array[int],
    grams: bytearray,
    /,
) -> int: ...
def scan_lines(
    data: ReadableBuffer,
    pos: int,
    end: int,
    since_ns: int,
    until_ns: int,
    max_severity: int,
    origin_mask: int,
    key: bytes,
    /,
) -> list[tuple[int, int | None]]: ...
def gram_list(bits: ReadableBuffer, /) -> bytes: ...
