"""The data directory: per-instance log files (the truth) and an SQLite index."""
