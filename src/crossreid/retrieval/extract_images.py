"""``crossreid extract``: a run's features of a folder or manifest, into a features ``.npz``.

Under ``torchrun`` each rank embeds rows ``rank::world`` (on its own GPU with ``--device cuda``)
and rank 0 gathers them back into order and writes the file, so the result equals a single
process's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from crossreid.data.images import modality_contradiction, open_image
from crossreid.device import open_device
from crossreid.errors import UserError
from crossreid.retrieval.embedder import load_run
from crossreid.retrieval.features_file import features_arrays, read_image_list, save_npz


def extract_images(run: str | os.PathLike, source: str | os.PathLike, out: str | os.PathLike,
                   modality: str | None = None, splits: Sequence[str] = (), only: Sequence[str] = (),
                   batch_size: int = 64, channels_last: bool = False, progress: bool = True,
                   device=None, amp: str = "auto") -> dict | None:
    """Write the features file (rank 0) of images embedded on ``device`` under ``amp``
    (:mod:`crossreid.device`); returns its arrays there, None on other ranks."""
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be >= 1")
    device, dist = open_device(device)
    embedder = load_run(run, device, amp)
    entries = read_image_list(source, modality, splits, only)
    for m in sorted({e.modality for e in entries}, key=str):
        embedder.method.check_modality(m)
    for e in entries:  # the rule `embed` refuses with (and `check` warns with), on every rank alike
        reason = modality_contradiction(open_image(e.path), e.modality)
        if reason:
            raise UserError(f"{e.path}: {reason} Pass it with its real modality; nothing was written to {out}")
    feats = embedder.embed_samples([e.sample() for e in entries], batch_size, progress=progress,
                                   channels_last=channels_last, dist=dist)
    if not dist.main:
        return None
    if not np.isfinite(feats).all():
        bad = int(np.flatnonzero(~np.isfinite(feats).all(axis=1))[0])
        raise UserError(f"{entries[bad].path}: the model gave NaN or infinite features; check the image and the "
                        f"run ({run}){' or pass --amp off' if embedder.amp != 'off' else ''}; "
                        f"nothing was written to {out}")
    arrays = features_arrays(entries, feats, embedder.identity(feats.shape[1]))
    save_npz(Path(out), arrays)
    return arrays
