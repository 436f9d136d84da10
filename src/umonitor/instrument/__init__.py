"""``umonitor instrument``: C sources rewritten to log every function's entry and return.

How this works: ``parse`` reads a C file with tree-sitter's C grammar (a real parser
that keeps going past what it cannot read, marking it) and describes each function
definition: its name, parameters, return type, body and return statements, or why it
must be left alone (the parser could not read it, old-style parameter declarations, a
non-static ``inline`` definition). ``types`` decides from a declarator how a value is
written: a decimal integer, ``%g``, a bounded string, an address. ``rewrite`` turns the
functions into text edits: a block at the body's start that fills a ``struct
umon_field`` array and calls ``UMON_ENTER``; each ``return EXPR;`` evaluated into a
temporary of the return type, logged with ``UMON_EXIT`` and returned; ``#line``
directives after each insertion so that diagnostics and the records' file and line are
the original's. The helpers the inserted code calls are
``guest/c/umonitor_instrument.h`` (docs/instrument.md).
"""
