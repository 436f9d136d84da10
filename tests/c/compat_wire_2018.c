/*
 * compat_wire_2018.c - umonitor_compat.c built for the 2018 wire format, for
 * builds that take source files but no -D flags:
 *
 *   umonitor image build tests/c/seed_guest.c tests/c/compat_wire_2018.c -o DIR
 *
 * Elsewhere, compile umonitor_compat.c with -DUMON_COMPAT_WIRE_2018 instead.
 * Needs the C library directory on the include path (-I), as image builds have.
 */
#define UMON_COMPAT_WIRE_2018 1
#include "umonitor_compat.c"
