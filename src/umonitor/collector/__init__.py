"""The asyncio layer: listeners and connections that feed the pure decoders."""
