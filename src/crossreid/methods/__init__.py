"""Training methods, registered by name. One file per method; shared parts in base.py."""

from crossreid.methods.base import (Batch, Method, Stage, StageContext, build_method, method_names,
                                   register_method)

__all__ = ["Batch", "Method", "Stage", "StageContext", "build_method", "method_names", "register_method"]
