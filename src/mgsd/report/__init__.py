"""mgsd.report."""
