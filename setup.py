"""Build hook for the optional C accelerator; the metadata lives in pyproject.toml."""

from setuptools import Extension, setup

# One extension module, umonitor._speedups, from one source per fast path (see
# _speedups_module.c), what they share, and the module's table and initialisation.
SPEEDUPS = [
    "src/umonitor/_speedups_module.c",
    "src/umonitor/_speedups_common.c",
    "src/umonitor/_speedups_blocks.c",
    "src/umonitor/_speedups_format.c",
    "src/umonitor/_speedups_syslog.c",
]

setup(
    ext_modules=[
        Extension(
            "umonitor._speedups",
            sources=SPEEDUPS,
            depends=["src/umonitor/_speedups.h"],
            optional=True,
            extra_compile_args=["-O2"],
        )
    ]
)
