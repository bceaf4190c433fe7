"""mgsd.model."""
