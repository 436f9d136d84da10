"""Pure protocol code: bytes in, typed events out; events in, bytes out. No I/O."""
