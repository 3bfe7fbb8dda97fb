"""r1lab: train reasoning models the way DeepSeek trained R1, end to end, at any scale."""

__version__ = "0.1.0"
