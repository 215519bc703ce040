"""``crossreid extract``: a run's features of a folder or manifest, into a features ``.npz``.

Under ``torchrun`` each rank embeds rows ``rank::world`` and rank 0 gathers them back
into order and writes the file, so the result equals a single process's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from crossreid import distributed as D
from crossreid.data.images import modality_contradiction, open_image
from crossreid.errors import UserError
from crossreid.retrieval.embedder import load_run
from crossreid.retrieval.features_file import features_arrays, read_image_list, save_npz


def extract_images(run: str | os.PathLike, source: str | os.PathLike, out: str | os.PathLike,
                   modality: str | None = None, splits: Sequence[str] = (), only: Sequence[str] = (),
                   batch_size: int = 64, bf16: bool = False, channels_last: bool = False,
                   progress: bool = True) -> dict | None:
    """Write the features file (rank 0); returns its arrays there, None on other ranks."""
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be >= 1")
    dist = D.init_from_env()
    embedder = load_run(run)
    entries = read_image_list(source, modality, splits, only)
    for m in sorted({e.modality for e in entries}, key=str):
        embedder.method.check_modality(m)
    for e in entries:  # the rule `embed` refuses with (and `check` warns with), on every rank alike
        reason = modality_contradiction(open_image(e.path), e.modality)
        if reason:
            raise UserError(f"{e.path}: {reason} Pass it with its real modality; nothing was written to {out}")
    mine = [e.sample() for e in entries[dist.rank::dist.world]]
    feats = embedder.embed_samples(mine, batch_size, progress=progress and dist.main, bf16=bf16,
                                   channels_last=channels_last)
    feats = D.gather_rows(dist, feats, len(entries))
    if not dist.main:
        return None
    if not np.isfinite(feats).all():
        bad = int(np.flatnonzero(~np.isfinite(feats).all(axis=1))[0])
        raise UserError(f"{entries[bad].path}: the model gave NaN features; check the image and the run "
                        f"({run}); nothing was written to {out}")
    arrays = features_arrays(entries, feats, embedder.identity(feats.shape[1]))
    save_npz(Path(out), arrays)
    return arrays
