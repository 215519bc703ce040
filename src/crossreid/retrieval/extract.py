"""Feature extraction: images of any modality through the method's embedder for it.

:func:`embed_rows` is the one extraction loop (eval mode, batched by modality, on the
device): evaluation, validation and the training-time embedding service that the stage
context offers methods (SMMD's class-mean prototypes, the distillation teacher's cached
targets) all run it.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from crossreid.data.pipeline import ImageStore, normalize
from crossreid.modality import Modality
from crossreid.progress import progress_bar

EmbedFn = Callable[[torch.Tensor, Modality], torch.Tensor]


@torch.no_grad()
def embed_rows(model: nn.Module, store: ImageStore, rows: Sequence[int], fn: EmbedFn | None = None,
               batch_size: int = 128, device: torch.device | str = "cpu", progress: bool = False,
               channels_last: bool = False) -> torch.Tensor:
    """Features (float32, on the CPU, one row per index, in order) of ``store`` rows ``rows``:
    ``fn(images, modality)`` (default ``model.embed``) on normalised batches of one modality, with
    ``model`` in eval mode (its mode is restored after)."""
    was_training = model.training
    model.eval()
    fn = fn or model.embed
    rows = list(rows)
    out: torch.Tensor | None = None
    by_mod: dict = {}
    for pos, i in enumerate(rows):
        by_mod.setdefault(store.samples[i].modality, []).append(pos)
    bar = progress_bar(total=len(rows), desc="extracting", enabled=progress, keep=False)
    try:
        for modality, positions in by_mod.items():
            for start in range(0, len(positions), batch_size):
                chunk = positions[start:start + batch_size]
                images = normalize(store.batch([rows[p] for p in chunk])).to(device)
                if channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                feats = fn(images, modality).float().cpu()
                if out is None:
                    out = torch.empty(len(rows), feats.shape[1])
                out[chunk] = feats
                bar.update(len(chunk))
    finally:
        bar.close()
        model.train(was_training)
    return out if out is not None else torch.empty(0, 0)


def extract_features(method, store: ImageStore, indices: Sequence[int], batch_size: int = 128,
                     device: torch.device | str = "cpu", progress: bool = False,
                     channels_last: bool = False) -> np.ndarray:
    """``method.embed`` features of ``store`` samples ``indices`` as a float32 array (see :func:`embed_rows`)."""
    return embed_rows(method, store, indices, None, batch_size, device, progress, channels_last).numpy()
