"""The fleet: guest networking, launching and supervising unikernels."""
