"""Load pretrained weights from a local file into a backbone, strictly by default, and report it.

``.safetensors`` is read with safetensors; ``.pth``/``.pt``/``.bin``/``.t`` with
``torch.load(weights_only=True)`` and an explicit allow-list of the plain numpy types
released checkpoints hold (arrays and scalars of metrics), so no pickled code ever runs.
Keys are matched by name after stripping wrapper prefixes; classifier keys (``fc.*``) are
skipped. With ``strict=True`` (``model.pretrained_strict``, the default) a shape mismatch,
a model tensor the file lacks or a file tensor the model lacks is an error naming the first
such key and its likely cause; ``strict=False`` loads what fits and reports the rest.
Every load is reported (``LoadReport``) and, inside ``recording_loads()``, collected.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from crossreid.errors import UserError
from crossreid.io import file_sha256

PREFIXES = ("module.", "model.", "backbone.")
SKIPPED = ("fc.",)
CONTAINER_KEYS = ("state_dict", "model", "state_dict_ema", "model_state")
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".t", ".tar")
_NUMPY_CORE = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
_PLAIN_DTYPES = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
                 np.float16, np.float32, np.float64)
# The plain types a released checkpoint's metrics are pickled with (numpy arrays and scalars of
# numeric dtypes), under numpy 1.x's module path and numpy 2's; nothing else besides torch's tensors.
NUMPY_SAFE_GLOBALS = [
    (_NUMPY_CORE._reconstruct, "numpy.core.multiarray._reconstruct"),
    (_NUMPY_CORE._reconstruct, "numpy._core.multiarray._reconstruct"),
    (_NUMPY_CORE.scalar, "numpy.core.multiarray.scalar"),
    (_NUMPY_CORE.scalar, "numpy._core.multiarray.scalar"),
    np.ndarray, np.dtype, *(type(np.dtype(t)) for t in _PLAIN_DTYPES),
]


@dataclass
class LoadReport:
    """Outcome of ``load_weights``: key names (model naming) in each category."""

    path: str
    sha256: str = ""
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def counts(self) -> str:
        return (f"{len(self.loaded)} tensors loaded, {len(self.missing)} missing, {len(self.unexpected)} "
                f"unexpected, {len(self.mismatched)} shape mismatches, {len(self.skipped)} classifier keys skipped")

    def summary(self) -> str:
        lines = [f"{self.path} (sha256 {self.sha256[:16]}): {self.counts()}"]
        if self.missing:
            lines.append("  missing (kept at init): " + ", ".join(self.missing))
        if self.unexpected:
            lines.append("  unexpected (ignored): " + ", ".join(self.unexpected))
        for key, file_shape, model_shape in self.mismatched:
            lines.append(f"  shape mismatch (skipped): {key} file {list(file_shape)} vs model {list(model_shape)}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return asdict(self)


_RECORDING: ContextVar[list[LoadReport] | None] = ContextVar("crossreid_weight_loads", default=None)


@contextlib.contextmanager
def recording_loads() -> Iterator[list[LoadReport]]:
    """Collect the report of every ``load_weights`` call made inside the block (e.g. while a
    method builds its networks, however many trunks it loads)."""
    loads: list[LoadReport] = []
    token = _RECORDING.set(loads)
    try:
        yield loads
    finally:
        _RECORDING.reset(token)


def load_pickle(path: str | os.PathLike) -> object:
    """A ``.pth``-style file read with ``torch.load(weights_only=True)`` plus ``NUMPY_SAFE_GLOBALS``.

    A pickle that needs anything else (code, arbitrary classes) is refused with one line naming it.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(NUMPY_SAFE_GLOBALS):
            warnings.simplefilter("ignore")  # torch's own pickle warnings: our error says it in one line
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refusals and corrupt files have many types
        needed = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if needed:
            raise UserError(f"{path}: refused: its pickle needs {needed.group(1)}, which is neither a tensor nor "
                            "a plain numpy value (crossreid never runs pickled code); re-save only the state "
                            "dict (torch.save(model.state_dict(), ...)) or convert it to .safetensors") from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(exc))
        detail = detail.group(1).strip() if detail else f"{type(exc).__name__}: {str(exc).strip()[:100]}"
        raise UserError(f"{path}: not a plain tensor checkpoint ({detail}; pickled objects are refused for "
                        "safety): a truncated or corrupt download? fetch it again; else save model.state_dict() "
                        "or convert it to .safetensors") from None


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a flat ``{name: tensor}`` dict from a local weights file (on CPU)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: weights file not found; pass the path of a local file, or "
                        "model.pretrained=imagenet for torchvision's published weights")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            obj = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise UserError(f"{path}: not a readable safetensors file ({exc}); re-download or re-export it") from None
    elif suffix in TORCH_SUFFIXES:
        obj = load_pickle(path)
    else:
        raise UserError(f"{path}: unsupported weights format {suffix!r}; use .safetensors, .pth or .pt")
    return unwrap_state_dict(obj, path)


def unwrap_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """The ``{name: tensor}`` mapping in a checkpoint, unwrapped from ``CONTAINER_KEYS``."""
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


@lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def sha256_of(path: str | os.PathLike) -> str:
    """A file's sha256, computed once per process for an unchanged file."""
    stat = os.stat(path)
    return _sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


# Blocks per stage of the torchvision ResNets, by block type: how a state dict reveals its depth.
RESNET_LAYOUTS = {("basic", (2, 2, 2, 2)): "resnet18", ("basic", (3, 4, 6, 3)): "resnet34",
                  ("bottleneck", (3, 4, 6, 3)): "resnet50", ("bottleneck", (3, 4, 23, 3)): "resnet101",
                  ("bottleneck", (3, 8, 36, 3)): "resnet152"}


def resnet_depth(keys) -> str | None:
    """Which torchvision ResNet a set of parameter names belongs to (None: not a plain ResNet)."""
    blocks: dict[int, set[int]] = {}
    bottleneck = False
    for key in keys:
        m = re.match(r"layer([1-4])\.(\d+)\.(\w+)", key)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
            bottleneck |= m.group(3) in ("conv3", "bn3")
    counts = tuple(len(blocks.get(i, ())) for i in range(1, 5))
    return RESNET_LAYOUTS.get(("bottleneck" if bottleneck else "basic", counts))


def _first_problem(report: LoadReport, file_keys, model_keys) -> str:
    """One clause naming the first offending key and the likely cause."""
    if report.mismatched:
        key, file_shape, model_shape = report.mismatched[0]
        what = f"shape mismatch at {key} (file {list(file_shape)}, model {list(model_shape)})"
    elif report.missing:
        what = f"the file lacks the model's {report.missing[0]} ({len(report.missing)} model tensors in all)"
    else:
        what = f"the model has no {report.unexpected[0]} ({len(report.unexpected)} file tensors in all)"
    ours, theirs = resnet_depth(model_keys), resnet_depth(file_keys)
    if ours and theirs and ours != theirs:
        cause = f"the file holds a {theirs} and the model is a {ours}: pass the {ours} file or set model.arch={theirs}"
    elif theirs is None:
        cause = "the file is not a plain torchvision-style ResNet state dict: wrong file?"
    else:
        cause = "same depth, other layout: wrong file?"
    return f"{what}; {cause}"


def load_weights(module: nn.Module, path: str | os.PathLike, prefixes: tuple[str, ...] = PREFIXES,
                 strict: bool = True) -> LoadReport:
    """Load a local weights file into ``module`` by name and report what happened.

    ``strict``: every model tensor must come from the file with its shape, and every file
    tensor (classifier keys aside) must have a place, else a UserError naming the first
    offending key. Not strict: missing keys keep their initial values; unexpected keys and
    shape mismatches are skipped. ``num_batches_tracked`` is never reported missing.
    A file sharing no key with the model is an error either way.
    """
    source = read_state_dict(path)
    report = LoadReport(path=str(Path(path).resolve()), sha256=sha256_of(path))
    target = module.state_dict()
    accepted: dict[str, torch.Tensor] = {}
    file_keys = []
    for raw_key, tensor in source.items():
        key = strip_prefixes(raw_key, prefixes)
        file_keys.append(key)
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
    mismatched = {m[0] for m in report.mismatched}
    report.missing = [k for k in target if k not in accepted and k not in mismatched
                      and not k.endswith("num_batches_tracked")]
    if strict and (report.mismatched or report.missing or report.unexpected):
        raise UserError(f"{path}: {_first_problem(report, file_keys, list(target))}; "
                        "set model.pretrained_strict=false to load only what fits")
    module.load_state_dict(accepted, strict=False)
    report.loaded = sorted(accepted)
    recording = _RECORDING.get()
    if recording is not None:
        recording.append(report)
    return report
