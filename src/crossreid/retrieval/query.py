"""Search queries from image files (embedded by a run) or from a features file, checked against the index."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from crossreid.errors import UserError
from crossreid.evaluation.score import model_of
from crossreid.modality import Modality
from crossreid.retrieval.search import Queries


def queries_from_images(index, images: Sequence[str], modality: str, run: str, camera: int | None = None,
                        frame: str | None = None, pid: int | None = None, device=None, amp: str = "auto") -> Queries:
    """Embed query images with ``run`` (on ``device`` under ``amp``, :mod:`crossreid.device`) after checking
    that the index was built with the same model; ``camera``, ``frame`` and ``pid`` (person id) are those
    of every image, when known."""
    from crossreid.retrieval.embedder import load_run

    embedder = load_run(run, device, amp)
    index.check_model({"run": str(Path(run).resolve()), "weights_sha256": embedder.weights_id}, f"run {run}")
    m = embedder.method.check_modality(modality)
    for img in images:
        if not Path(img).is_file():
            raise UserError(f"{img}: query image not found; check the path")
    feats = embedder.embed(list(images), m)
    n = len(images)
    return Queries(feats, [str(Path(p).resolve()) for p in images], [m.value] * n,
                   np.full(n, -1 if pid is None else pid, dtype=np.int64),
                   np.full(n, -1 if camera is None else camera, dtype=np.int64),
                   np.full(n, frame or "", dtype=object).astype(str))


def queries_from_features(index, path: str) -> Queries:
    """Queries of a features file (``crossreid extract``); its model must be the index's."""
    from crossreid.evaluation.score import load_features

    data = load_features(path)
    if len(data["features"]) == 0:
        raise UserError(f"{path}: holds no query features; extract some query images")
    index.check_model(model_of(data), path)
    n = len(data["features"])
    mods = data["modalities"].tolist() if "modalities" in data else [""] * n
    for m in set(mods) - {""}:
        Modality.parse(m)
    return Queries(data["features"].astype(np.float32), data["paths"].tolist(), [str(m) for m in mods],
                   data["ids"].astype(np.int64) if "ids" in data else np.full(n, -1, dtype=np.int64),
                   data["cameras"].astype(np.int64) if "cameras" in data else np.full(n, -1, dtype=np.int64),
                   data["frames"].astype(str) if "frames" in data else np.full(n, "", dtype=object).astype(str))
