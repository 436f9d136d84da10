from _typeshed import ReadableBuffer

def format_records(
    buf: bytearray, pos: int, end: int, max_body: int, high: int, now_ns: int, /
) -> tuple[int, str, int, int]: ...

# (seq, time_ns, mono_ns, severity, origin, kind, file, line, func, message, fields)
_IndexRow = tuple[int, int, int | None, int, str, int, str, int, str, str, str | None]

def parse_record_lines(
    data: ReadableBuffer, pos: int, end: int, /
) -> tuple[int, list[_IndexRow]]: ...
def syslog_lines(
    buf: ReadableBuffer, pos: int, end: int, max_frame: int, host: bytes, seq: int, now_ns: int, /
) -> tuple[int, str, int, int]: ...
