"""mabe-trainer: frame-by-frame mouse social-behaviour classification from pose tracking."""

__version__ = "0.1.0"
