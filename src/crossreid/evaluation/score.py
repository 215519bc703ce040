"""Score a saved features file (``.npz``) under a protocol: the core of ``crossreid score``.

The file holds ``paths`` (unicode strings) and ``features`` (rows × dims), plus either
``ids``, ``cameras``, ``modalities`` (optional ``frames``, ``sequences``), from which a
catalog is built with every row in both the query and the gallery pool, or nothing
more when a registered dataset supplies the labels (rows matched by path).
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from crossreid.data.registry import load_dataset
from crossreid.data.samples import Catalog, Sample
from crossreid.errors import UserError
from crossreid.evaluation.protocols import PROTOCOLS, Protocol, evaluate_protocol, get_protocol, with_distance
from crossreid.evaluation.results import ProtocolResult
from crossreid.modality import Modality

LABEL_KEYS = ("ids", "cameras", "modalities")
OPTIONAL_KEYS = ("frames", "sequences")


def load_features(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read and check the npz: keys present, lengths equal, features finite."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: features file not found; check the path")
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path}: not a readable .npz file (not a zip archive); write it with numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except ValueError as exc:
        raise UserError(f"{path}: cannot be read without pickle ({exc}); store paths as a unicode "
                        "array, e.g. np.array(paths, dtype=str)") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise UserError(f"{path}: not a readable .npz file ({exc}); write it with numpy.savez") from None
    if not data:
        raise UserError(f"{path}: empty .npz (no arrays); save 'paths' and 'features' with numpy.savez")
    return check_arrays(data, str(path))


def run_metric(data: dict[str, np.ndarray]) -> str | None:
    """The distance (``eval.metric``) of the run that extracted a loaded features file, if it records one."""
    return (model_of(data) or {}).get("metric")


def model_of(data: dict[str, np.ndarray]) -> dict | None:
    """The ``model`` record of a loaded features file, or None."""
    if "model" not in data:
        return None
    try:
        return json.loads(str(data["model"]))
    except json.JSONDecodeError:
        return None


def check_arrays(data: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """Keys present, lengths equal, features finite and non-empty, paths unique (``where`` names the source)."""
    missing = [k for k in ("paths", "features") if k not in data]
    if missing:
        raise UserError(f"{where}: missing key(s) {', '.join(missing)}; the file needs 'paths' and 'features'")
    feats, paths = data["features"], data["paths"]
    if feats.ndim != 2 or not np.issubdtype(feats.dtype, np.number):
        raise UserError(f"{where}: 'features' must be a numeric rows × dims array, got {feats.dtype} {feats.shape}")
    if len(feats) == 0:
        raise UserError(f"{where}: empty: 'features' has no rows; extract features for the images before scoring")
    if paths.ndim != 1 or paths.dtype.kind != "U":
        raise UserError(f"{where}: 'paths' must be a 1-D unicode string array, got {paths.dtype} {paths.shape}")
    for key in ("paths",) + LABEL_KEYS + OPTIONAL_KEYS:
        if key in data and len(data[key]) != len(feats):
            raise UserError(f"{where}: '{key}' has {len(data[key])} rows but 'features' has {len(feats)}; "
                            "all arrays must have one row per image")
    bad = np.flatnonzero(~np.isfinite(feats).all(axis=1))
    if len(bad):
        raise UserError(f"{where}: {len(bad)} feature row(s) contain NaN or infinity (first: row {bad[0]}, "
                        f"{paths[bad[0]]}); re-extract the features")
    dup = len(paths) - len(set(paths.tolist()))
    if dup:
        raise UserError(f"{where}: 'paths' lists {dup} duplicate path(s); write each image once")
    return data


def catalog_from_arrays(path: Path, data: Mapping[str, np.ndarray]) -> Catalog:
    """Catalog with every row in both pools, from the npz label arrays."""
    missing = [k for k in LABEL_KEYS if k not in data]
    if missing:
        raise UserError(f"{path}: missing key(s) {', '.join(missing)}; without --dataset the file needs "
                        f"{', '.join(LABEL_KEYS)} (or pass --dataset to take labels from a dataset)")
    optional = {k: data[k].tolist() if k in data else [None] * len(data["paths"]) for k in OPTIONAL_KEYS}
    samples = []
    try:
        for i, p in enumerate(data["paths"].tolist()):
            samples.append(Sample(Path(p), int(data["ids"][i]), int(data["cameras"][i]),
                                  Modality.parse(str(data["modalities"][i])),
                                  frame=str(optional["frames"][i]) if optional["frames"][i] not in (None, "") else None,
                                  sequence=(str(optional["sequences"][i])
                                            if optional["sequences"][i] not in (None, "") else None)))
    except (UserError, ValueError, TypeError) as exc:
        raise UserError(f"{path}: row {len(samples)}: bad label ({exc}); fix the ids/cameras/modalities arrays") from None
    return Catalog(name=path.stem, root=path.parent, query=samples, gallery=list(samples))


def _norm(p: str | Path) -> str:
    return os.path.normpath(os.path.abspath(p))


def _rows_for(path: Path, catalog: Catalog, paths: np.ndarray, used: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """npz row of every used query/gallery sample; all npz paths must belong to the dataset."""
    row_of = {_norm(p if os.path.isabs(p) else catalog.root / p): i for i, p in enumerate(paths.tolist())}
    known = {_norm(s.path) for pool in ("train", "val", "query", "gallery") for s in catalog.pool(pool)}
    unknown = [paths[i] for p, i in row_of.items() if p not in known]
    if unknown:
        raise UserError(f"{path}: {len(unknown)} of {len(paths)} paths are not in dataset {catalog.name!r} at "
                        f"{catalog.root} (first: {unknown[0]}); store paths relative to the dataset root")
    rows = {}
    for pool, idx in used.items():
        samples = catalog.pool(pool)
        lacking = [samples[i].path for i in idx if _norm(samples[i].path) not in row_of]
        if lacking:
            raise UserError(f"{path}: {len(lacking)} {pool} image(s) of dataset {catalog.name!r} have no features "
                            f"(first: {lacking[0]}); extract features for the whole test split")
        rows[pool] = np.array([row_of[_norm(samples[i].path)] for i in idx], dtype=np.int64)
    return rows


def _floating(feats: np.ndarray) -> np.ndarray:
    return feats if feats.dtype in (np.float32, np.float64) else feats.astype(np.float32)


def _pool_features(feats: np.ndarray, n: int, idx: np.ndarray, rows: np.ndarray) -> np.ndarray:
    out = np.zeros((n, feats.shape[1]), dtype=feats.dtype)  # rows no trial uses stay zero
    out[idx] = feats[rows]
    return out


def score_features(features_path: str | os.PathLike, protocol: str | Protocol,
                   protocol_options: Mapping[str, Any] | None = None, dataset: str | None = None,
                   root: str | os.PathLike | None = None, metric: str | None = None,
                   dataset_options: Mapping[str, Any] | None = None, rerank=None) -> ProtocolResult:
    """Evaluate the features in ``features_path`` under ``protocol`` (a name or a Protocol).

    ``metric`` is the default of the protocol's ``distance`` option (a built Protocol keeps its own);
    without either, the distance of the run that extracted the features (``run_metric``), else
    euclidean. ``rerank`` (a :class:`crossreid.evaluation.rerank.Rerank`) re-ranks each trial's distances.
    """
    path = Path(features_path)
    if not isinstance(protocol, Protocol):
        PROTOCOLS.get(protocol)  # an unknown name fails before the file is read
    data = load_features(path)
    if isinstance(protocol, Protocol):
        if protocol_options or (metric is not None and metric != protocol.distance):
            raise UserError(f"protocol {protocol.name!r} is already built; set its options (distance "
                            f"{protocol.distance!r}) when building it, or pass its name")
        proto = protocol
    else:
        options = dict(protocol_options or {})
        if metric is None and "distance" not in options:
            metric = run_metric(data)
        proto = get_protocol(protocol, **with_distance(options, metric))
    feats = _floating(data["features"])  # float64 files keep their precision
    if dataset is None:
        catalog = catalog_from_arrays(path, data)
        return evaluate_protocol(proto, catalog, feats, feats, rerank=rerank)
    catalog = load_dataset(dataset, root, **dict(dataset_options or {}))
    trials = proto.trials(catalog)
    used = {"query": np.unique(np.concatenate([t.query for t in trials])),
            "gallery": np.unique(np.concatenate([t.gallery for t in trials]))}
    rows = _rows_for(path, catalog, data["paths"], used)
    qf = _pool_features(feats, len(catalog.query), used["query"], rows["query"])
    gf = _pool_features(feats, len(catalog.gallery), used["gallery"], rows["gallery"])
    return evaluate_protocol(proto, catalog, qf, gf, rerank=rerank)


def score_arrays(features, ids, cameras, modalities, protocol: str = "synthetic",
                 protocol_options: Mapping[str, Any] | None = None, metric: str | None = None,
                 frames=None, sequences=None, paths=None) -> ProtocolResult:
    """Score in-memory features (one row per image; every row is in both the query and the
    gallery pool, the protocol picks each side by modality) under ``protocol``. ``paths``
    default to the row numbers; ``frames``/``sequences`` feed exclusion rules that use them."""
    n = len(features)
    data = {"features": np.asarray(features), "ids": np.asarray(ids), "cameras": np.asarray(cameras),
            "modalities": np.asarray([str(m) for m in modalities]),
            "paths": np.asarray(paths if paths is not None else [str(i) for i in range(n)], dtype=str)}
    for key, values in (("frames", frames), ("sequences", sequences)):
        if values is not None:
            data[key] = np.asarray([("" if v is None else str(v)) for v in values])
    check_arrays(data, "arrays")
    catalog = catalog_from_arrays(Path("arrays"), data)
    proto = get_protocol(protocol, **with_distance(dict(protocol_options or {}), metric))
    feats = _floating(data["features"])
    return evaluate_protocol(proto, catalog, feats, feats)
