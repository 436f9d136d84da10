"""Build hook for the optional C accelerator; the metadata lives in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "umonitor._speedups",
            sources=["src/umonitor/_speedups.c"],
            optional=True,
            extra_compile_args=["-O2"],
        )
    ]
)
