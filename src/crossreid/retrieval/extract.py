"""Feature extraction: images of any modality through the method's embedder for it.

:func:`embed_rows` is the one extraction loop (eval mode, batched by modality, on the
device, under :func:`crossreid.device.inference`): evaluation, validation, ``extract`` and
the training-time embedding service that the stage context offers methods (SMMD's
class-mean prototypes, the distillation teacher's cached targets) all run it.
:func:`extract_features` shards it over the ranks of a ``torchrun`` job.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from crossreid import distributed as D
from crossreid.data.pipeline import ImageStore, normalize
from crossreid.device import inference
from crossreid.modality import Modality
from crossreid.progress import progress_bar

EmbedFn = Callable[[torch.Tensor, Modality], torch.Tensor]


def embed_rows(model: nn.Module, store: ImageStore, rows: Sequence[int], fn: EmbedFn | None = None,
               batch_size: int = 128, device: torch.device | str = "cpu", progress: bool = False,
               channels_last: bool = False, amp: str | None = None) -> torch.Tensor:
    """Features (float32, on the CPU, one row per index, in order) of ``store`` rows ``rows``:
    ``fn(images, modality)`` (default ``model.embed``) on normalised batches of one modality, with
    ``model`` in eval mode (its mode is restored after), under ``amp``'s autocast
    (:data:`crossreid.device.AMP_MODES`; None, the training services' default: as the process is set).

    On a GPU the batches are copied from pinned memory without waiting and the features stay
    there until the end, so the next batch is decoded while the GPU works on this one."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    fn = fn or model.embed
    rows = list(rows)
    done: list[tuple[list[int], torch.Tensor]] = []
    by_mod: dict = {}
    for pos, i in enumerate(rows):
        by_mod.setdefault(store.samples[i].modality, []).append(pos)
    cuda = device.type == "cuda"
    bar = progress_bar(total=len(rows), desc="extracting", enabled=progress, keep=False)
    try:
        with inference(device, amp, batch_size):
            for modality, positions in by_mod.items():
                for start in range(0, len(positions), batch_size):
                    chunk = positions[start:start + batch_size]
                    images = normalize(store.batch([rows[p] for p in chunk]))
                    images = (images.pin_memory() if cuda else images).to(device, non_blocking=cuda)
                    if channels_last:
                        images = images.contiguous(memory_format=torch.channels_last)
                    done.append((chunk, fn(images, modality).float()))
                    bar.update(len(chunk))
    finally:
        bar.close()
        model.train(was_training)
    if not done:
        return torch.empty(0, 0)
    feats = torch.cat([f for _, f in done]).cpu()
    out = torch.empty_like(feats)
    out[[p for chunk, _ in done for p in chunk]] = feats
    return out


def extract_features(method, store: ImageStore, indices: Sequence[int], batch_size: int = 128,
                     device: torch.device | str = "cpu", progress: bool = False, channels_last: bool = False,
                     amp: str | None = None, dist: D.Dist = D.Dist()) -> np.ndarray:
    """``method.embed`` features of ``store`` samples ``indices`` as a float32 array (see :func:`embed_rows`).
    Under torchrun (``dist``) rank r embeds ``indices[r::world]`` and every rank gets all rows, in order."""
    indices = list(indices)
    feats = embed_rows(method, store, indices[dist.rank::dist.world], None, batch_size, device,
                       progress and dist.main, channels_last, amp).numpy()
    return D.gather_rows(dist, feats, len(indices))
