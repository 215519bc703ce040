"""Training methods, registered by name. One file per method; shared parts in base.py."""

from crossreid.methods.base import (
    Batch,
    Method,
    MethodSetup,
    Stage,
    StageContext,
    build_method,
    method_names,
    register_method,
)

__all__ = ["Batch", "Method", "MethodSetup", "Stage", "StageContext", "build_method", "method_names",
           "register_method"]

# Built-in methods: importing a module registers it. A new method adds one line here.
from crossreid.methods import (  # noqa: E402
    agw,
    cross_modal_distillation,
    idkl,
    one_stream,
    smmd,
    two_stream,
    wan_fusion,
    zero_padding,
)
