"""mgsd: teach vision-language models to plan from pictures of grid puzzles."""

__version__ = "0.1.0"
