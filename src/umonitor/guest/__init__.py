"""Guest-side code: the Python guest library, the C library sources and the demo guests."""
