"""mgsd.train."""
