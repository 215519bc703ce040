"""crossreid: cross-modal person re-identification (RGB, depth, infrared)."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``crossreid.load_run`` (imported on first use, so ``import crossreid`` stays light)."""
    if name == "load_run":
        from crossreid.retrieval.embedder import load_run

        return load_run
    raise AttributeError(f"module 'crossreid' has no attribute {name!r}")
