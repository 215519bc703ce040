"""Checkpoints as single safetensors files: tensors inside, JSON state in the metadata.

Nothing is unpickled on load. A checkpoint holds the model weights, optimiser state,
RNG state and a JSON ``state`` (epoch, stage, scheduler, best metric, config).
Files are written atomically, so a killed run never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from crossreid.errors import UserError
from crossreid.io import atomic_path

_STATE_KEY = "crossreid_state"


def _flatten_optimizer(opt_state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, plain = {}, {"state": {}, "param_groups": opt_state["param_groups"]}
    for pid, entry in opt_state["state"].items():
        plain["state"][str(pid)] = {}
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optim/{pid}/{key}"] = value.detach().contiguous().cpu()
            else:
                plain["state"][str(pid)][key] = value
    return tensors, plain


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], plain: dict) -> dict:
    state: dict[int, dict[str, Any]] = {int(pid): dict(entry) for pid, entry in plain["state"].items()}
    for name, value in tensors.items():
        _, pid, key = name.split("/", 2)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": plain["param_groups"]}


def save_checkpoint(path: str | Path, model: torch.nn.Module, state: dict[str, Any],
                    optimizer: torch.optim.Optimizer | None = None,
                    rng: dict[str, torch.Tensor] | None = None) -> None:
    tensors = {f"model/{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    full_state = dict(state)
    if optimizer is not None:
        opt_tensors, opt_plain = _flatten_optimizer(optimizer.state_dict())
        tensors.update(opt_tensors)
        full_state["optimizer"] = opt_plain
    for name, value in (rng or {}).items():
        tensors[f"rng/{name}"] = value.contiguous()
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={_STATE_KEY: json.dumps(full_state)})
    except (OSError, SafetensorError) as exc:
        why = _write_failure(exc)
        if why is None:
            raise
        raise UserError(f"{path.parent}: could not write {path.name} ({why}); earlier checkpoints are intact: "
                        "free space there (or fix the folder), then continue the run with --resume") from None


def _write_failure(exc: Exception) -> str | None:
    """Why writing failed when the disk or the folder refused it (full, read-only, no permission), else None."""
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    text = str(exc)  # safetensors reports the OS error inside its message: "... I/O error: <why> (os error N)"
    return text.split("I/O error: ", 1)[1] if "I/O error: " in text else None


def read_state(path: str | Path) -> dict[str, Any]:
    """A checkpoint's JSON state alone (no tensor is read)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found; check the run folder")
    try:
        with safe_open(str(path), framework="pt") as fh:
            state = json.loads((fh.metadata() or {})[_STATE_KEY])
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a crossreid checkpoint ({exc}); point to a file written by crossreid train") from None
    state.pop("optimizer", None)
    return state


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict | None,
                                                 dict[str, torch.Tensor]]:
    """Returns (model state dict, JSON state, optimizer state dict or None, rng tensors)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found; check the run folder (nothing was trained from scratch)")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        state = json.loads(meta[_STATE_KEY])
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a crossreid checkpoint ({exc}); point to a file written by crossreid train") from None
    model = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    rng = {k[len("rng/"):]: v for k, v in tensors.items() if k.startswith("rng/")}
    optim_tensors = {k: v for k, v in tensors.items() if k.startswith("optim/")}
    optimizer = _unflatten_optimizer(optim_tensors, state.pop("optimizer")) if "optimizer" in state else None
    return model, state, optimizer, rng

