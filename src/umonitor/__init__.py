"""umonitor: a host-side monitor for unikernels."""

__version__ = "0.1.0"
