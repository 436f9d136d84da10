"""Guest-side code: the C library sources and the demo guests."""
