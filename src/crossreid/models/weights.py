"""Load pretrained weights from a local file the user names; never downloads.

``.safetensors`` is read with safetensors; ``.pth``/``.pt``/``.bin`` with
``torch.load(weights_only=True)``, which refuses pickled code and arbitrary objects.
Keys are matched by name after stripping wrapper prefixes; classifier keys (``fc.*``)
and shape mismatches are skipped, and everything is reported.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from crossreid.errors import UserError

log = logging.getLogger(__name__)

PREFIXES = ("module.", "model.", "backbone.")
SKIPPED = ("fc.",)
CONTAINER_KEYS = ("state_dict", "model", "state_dict_ema", "model_state")
TORCH_SUFFIXES = (".pth", ".pt", ".bin")


@dataclass
class LoadReport:
    """Outcome of ``load_weights``: key names (model naming) in each category."""

    path: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.path}: loaded {len(self.loaded)} tensors, {len(self.missing)} missing, "
                 f"{len(self.unexpected)} unexpected, {len(self.mismatched)} shape mismatches, "
                 f"{len(self.skipped)} classifier keys skipped"]
        if self.missing:
            lines.append("  missing (kept at init): " + ", ".join(self.missing))
        if self.unexpected:
            lines.append("  unexpected (ignored): " + ", ".join(self.unexpected))
        for key, file_shape, model_shape in self.mismatched:
            lines.append(f"  shape mismatch (skipped): {key} file {list(file_shape)} vs model {list(model_shape)}")
        return "\n".join(lines)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a flat ``{name: tensor}`` dict from a local weights file (on CPU)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: weights file not found; download it elsewhere and pass its local path")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            obj = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise UserError(f"{path}: not a readable safetensors file ({exc}); re-download or re-export it") from None
    elif suffix in TORCH_SUFFIXES:
        try:
            with warnings.catch_warnings():  # torch's own pickle-protocol warning: our error says it in one line
                warnings.simplefilter("ignore")
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # weights_only refusals and corrupt files have many types
            raise UserError(f"{path}: not a plain tensor checkpoint ({type(exc).__name__}; pickled objects "
                            "are refused for safety); save model.state_dict() or convert to .safetensors") from None
    else:
        raise UserError(f"{path}: unsupported weights format {suffix!r}; use .safetensors, .pth or .pt")
    return _unwrap(obj, path)


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in CONTAINER_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise UserError(f"{path}: not a state dict (expected a mapping of names to tensors); "
                        "pass a file saved from model.state_dict()")
    return obj


def strip_prefixes(key: str, prefixes: tuple[str, ...] = PREFIXES) -> str:
    """Remove wrapper prefixes (``module.``, ``model.``, ``backbone.``), repeatedly."""
    changed = True
    while changed:
        changed = False
        for prefix in prefixes:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def load_weights(module: nn.Module, path: str | os.PathLike, prefixes: tuple[str, ...] = PREFIXES) -> LoadReport:
    """Load a local weights file into ``module`` by name, tolerantly, and report what happened.

    Missing keys keep their initial values; unexpected keys, classifier keys and shape
    mismatches are skipped. ``num_batches_tracked`` is not reported as missing.
    Raises ``UserError`` if the file is absent, not a state dict, or shares no key with the model.
    """
    source = read_state_dict(path)
    report = LoadReport(path=str(path))
    target = module.state_dict()
    accepted: dict[str, torch.Tensor] = {}
    for raw_key, tensor in source.items():
        key = strip_prefixes(raw_key, prefixes)
        if key.startswith(SKIPPED):
            report.skipped.append(key)
        elif key not in target:
            report.unexpected.append(raw_key)
        elif tuple(tensor.shape) != tuple(target[key].shape):
            report.mismatched.append((key, tuple(tensor.shape), tuple(target[key].shape)))
        else:
            accepted[key] = tensor
    if not accepted:
        raise UserError(f"{path}: none of its {len(source)} keys match the model's parameter names; "
                        "pass a torchvision/timm ResNet state dict of the same architecture")
    module.load_state_dict(accepted, strict=False)
    report.loaded = sorted(accepted)
    mismatched = {m[0] for m in report.mismatched}
    report.missing = [k for k in target if k not in accepted and k not in mismatched
                      and not k.endswith("num_batches_tracked")]
    log.info(report.summary())
    return report
