"""Adapt the unpacked lib-lwip (7c1859a7, = RELEASE-0.16.2) to Unikraft core 0.17.

Core 0.17 replaced uk/swrand by ukrandom, whose early init needs RDRAND/RDSEED, which
QEMU TCG lacks: an image with it does not boot there. So lib-lwip stops selecting
LIBUKSWRAND, and LWIP_RAND() (first local port, DNS and DHCP ids; nothing
cryptographic) mixes a counter with the monotonic clock (splitmix64). Each edit must
find its line exactly once in the sources read from ../shared/unikernels, else this
says which and fails. Usage: adapt_lwip.py LWIP_DIR
"""

import sys
from pathlib import Path

RAND = """/* rand: core 0.17's ukrandom stops the boot under QEMU TCG (no RDRAND); lwIP only
 * needs unpredictable-enough numbers here, so a counter mixed with the monotonic
 * clock (splitmix64) serves. */
static inline __u32 lwip_uk_rand(void)
{
\tstatic __u64 counter;
\t__u64 x = (__u64)ukplat_monotonic_clock() + ++counter * 0x9E3779B97F4A7C15ULL;

\tx = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
\tx = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
\treturn (__u32)(x ^ (x >> 31));
}
#define LWIP_RAND() lwip_uk_rand()"""

EDITS = [
    ("Config.uk", "\tselect LIBUKSWRAND\n", ""),
    ("include/arch/cc.h", "#include <uk/swrand.h>", "#include <uk/plat/time.h>"),
    ("include/arch/cc.h", "#define LWIP_RAND() uk_swrand_randr()", RAND),
]


def main(lwip: Path) -> int:
    for name, old, new in EDITS:
        path = lwip / name
        text = path.read_text()
        if text.count(old) != 1:
            print(f"adapt_lwip: {path} does not hold {old.strip()!r} once", file=sys.stderr)
            return 1
        path.write_text(text.replace(old, new))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
