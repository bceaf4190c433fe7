"""mgsd.data."""
