"""mgsd.eval."""
