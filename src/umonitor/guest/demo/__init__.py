"""Demo guests."""
