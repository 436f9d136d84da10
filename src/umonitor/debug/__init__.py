"""Debugging unikernels from the host: symbols, crash backtraces, gdb (docs/debugging.md)."""
