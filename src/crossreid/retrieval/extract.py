"""Feature extraction: images of any modality through the method's embedder for it."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from crossreid.data.pipeline import ImageStore, normalize
from crossreid.progress import progress_bar


@torch.no_grad()
def extract_features(method, store: ImageStore, indices: Sequence[int], batch_size: int = 128,
                     device: torch.device | str = "cpu", progress: bool = False,
                     channels_last: bool = False) -> np.ndarray:
    """Features (float32, one row per index, in order) of ``store`` samples ``indices``."""
    was_training = method.training
    method.eval()
    indices = list(indices)
    out: np.ndarray | None = None
    by_mod: dict = {}
    for pos, i in enumerate(indices):
        by_mod.setdefault(store.samples[i].modality, []).append(pos)
    bar = progress_bar(total=len(indices), desc="extracting", enabled=progress, keep=False)
    for modality, positions in by_mod.items():
        for start in range(0, len(positions), batch_size):
            chunk = positions[start:start + batch_size]
            images = normalize(store.batch([indices[p] for p in chunk])).to(device)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            feats = method.embed(images, modality).float().cpu().numpy()
            if out is None:
                out = np.empty((len(indices), feats.shape[1]), dtype=np.float32)
            out[chunk] = feats
            bar.update(len(chunk))
    bar.close()
    method.train(was_training)
    return out if out is not None else np.empty((0, 0), dtype=np.float32)
