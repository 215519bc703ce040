"""A run's tensor cache: storage for what a method computes once per run (e.g. the distillation
teacher's targets). The engine keeps one in each run folder (``cache/``) and hands it to the
method in the stage context; methods ask it and never touch files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from crossreid.errors import UserError
from crossreid.io import atomic_path


class TensorCache:
    """Named sets of tensors under ``folder`` (a run's ``cache/``), written atomically."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.safetensors"

    def get_or_compute(self, name: str, compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The tensors stored under ``name``, computed (and stored) on first use. Name the
        entry after everything it depends on: a changed input gets a new entry."""
        path = self.path(name)
        if path.is_file():
            try:
                return load_file(str(path))
            except (SafetensorError, OSError) as exc:
                raise UserError(f"{path}: unreadable cache entry ({exc}); delete it to recompute") from None
        tensors = compute()
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
        return tensors
