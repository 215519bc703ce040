"""crossreid: cross-modal person re-identification (RGB, depth, infrared)."""

__version__ = "0.1.0"
