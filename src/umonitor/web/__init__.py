"""The web dashboard and /metrics (docs/web.md, docs/metrics.md)."""
