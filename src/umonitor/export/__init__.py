"""Exporters: what the store holds, forwarded to syslog servers and OpenTelemetry."""
