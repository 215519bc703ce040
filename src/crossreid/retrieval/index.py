"""A gallery index: features plus labels in one ``.npz`` read without pickle, and a JSON header.

``header`` (a JSON string) records the format version, the model that made the features
(run, sha256 of its weights, dimension), the distance, the row count and, for an
approximate index, the FAISS side file (``INDEX.faiss``, written with ``faiss.write_index``)
with its sha256 and the recall@K measured against exact search when it was built.
Labels unknown for an image are -1 (ids, cameras) or "" (frames).
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crossreid import __version__
from crossreid.errors import UserError
from crossreid.evaluation.distance import check_metric
from crossreid.evaluation.score import model_of, run_metric
from crossreid.io import atomic_path, file_sha256
from crossreid.retrieval.features_file import save_npz

FORMAT = "crossreid-index"
VERSION = 1
ARRAYS = ("features", "paths", "modalities", "ids", "cameras", "frames")


@dataclass
class GalleryIndex:
    path: Path
    header: dict
    features: np.ndarray     # float32 or float16, rows × dim
    paths: np.ndarray
    modalities: np.ndarray
    ids: np.ndarray          # -1 unknown
    cameras: np.ndarray      # -1 unknown
    frames: np.ndarray       # "" unknown
    faiss_index: object = None

    def __len__(self) -> int:
        return len(self.features)

    @property
    def dim(self) -> int:
        return int(self.header["dim"])

    @property
    def metric(self) -> str:
        return self.header["metric"]

    @property
    def model(self) -> dict | None:
        return self.header.get("model")

    def check_model(self, model: dict | None, source: str) -> None:
        """Refuse queries from another model or dimension (``source`` names where they come from)."""
        mine = self.model
        if model is not None and mine is not None and model.get("weights_sha256") != mine.get("weights_sha256"):
            raise UserError(f"{self.path}: index was built with the model of {mine.get('run')} "
                            f"(weights {mine.get('weights_sha256', '')[:12]}), but {source} comes from "
                            f"{model.get('run')} (weights {model.get('weights_sha256', '')[:12]}); "
                            "query with the same run or rebuild the index")
        if model is not None and mine is None:
            raise UserError(f"{self.path}: index records no model (built from features without one), so queries "
                            f"from {source} cannot be checked; index features made by `crossreid extract`")


def faiss_path(index_path: Path) -> Path:
    return index_path.with_name(index_path.name + ".faiss")


def build_index(features_path: str | os.PathLike, out: str | os.PathLike, metric: str | None = None,
                dtype: str = "float32", approximate: str | None = None, options: dict | None = None,
                recall_k: int = 10, log=print) -> GalleryIndex:
    """Index a features file; ``approximate`` ("hnsw" or "ivf") adds a FAISS side file. ``metric``
    defaults to the distance of the run that extracted the features, else euclidean."""
    from crossreid.evaluation.score import load_features

    if dtype not in ("float32", "float16"):
        raise UserError(f"--dtype {dtype}: use float32 or float16")
    data = load_features(features_path)
    metric = check_metric(metric or run_metric(data) or "euclidean")
    n = len(data["features"])
    if n == 0:
        raise UserError(f"{features_path}: holds no features (empty gallery); extract some images first")
    feats = data["features"].astype(dtype)
    header = {"format": FORMAT, "version": VERSION, "crossreid_version": __version__, "metric": metric,
              "dim": int(feats.shape[1]), "count": n, "dtype": dtype, "model": model_of(data),
              "source": str(Path(features_path).resolve()), "faiss": None}
    arrays = {"features": feats, "paths": data["paths"], "modalities": data.get("modalities", np.full(n, "", dtype=str)),
              "ids": data["ids"].astype(np.int64) if "ids" in data else np.full(n, -1, dtype=np.int64),
              "cameras": data["cameras"].astype(np.int64) if "cameras" in data else np.full(n, -1, dtype=np.int64),
              "frames": data["frames"].astype(str) if "frames" in data else np.full(n, "", dtype=str)}
    out = Path(out)
    index = GalleryIndex(out, header, **arrays)
    side = faiss_path(out)
    if approximate:
        from crossreid.retrieval.ann import build_faiss

        faiss_index, params = build_faiss(feats.astype(np.float32), metric, approximate, **(options or {}))
        index.faiss_index = faiss_index
        recall = measure_recall(index, k=min(recall_k, n))
        log(f"{approximate} index: recall@{min(recall_k, n)} {recall['recall']:.4f} against exact search "
            f"({recall['queries']} queries drawn from the gallery), built in {params['build_s']:.1f} s")
        import faiss

        with atomic_path(side) as tmp:
            faiss.write_index(faiss_index, str(tmp))
            header["faiss"] = {"kind": approximate, "file": side.name, "sha256": file_sha256(tmp), **params,
                               f"recall@{min(recall_k, n)}": recall["recall"], "recall_queries": recall["queries"]}
    elif side.exists():
        side.unlink()  # a stale side file of an earlier index must not pair with this one
    save_npz(out, {"header": np.array(json.dumps(header)), **arrays})
    return index


def load_index(path: str | os.PathLike, load_faiss: bool = True) -> GalleryIndex:
    """Read an index; a missing, corrupt or foreign file is one clear error."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: index not found; build one with `crossreid index FEATS.npz --out {path}`")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "header" not in npz.files:
                raise UserError(f"{path}: not a crossreid index (no header); build it with `crossreid index`")
            header = json.loads(str(npz["header"]))
            arrays = {k: npz[k] for k in ARRAYS}
    except UserError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: corrupt or unreadable index ({type(exc).__name__}: {exc}); rebuild it with "
                        "`crossreid index`") from None
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise UserError(f"{path}: index format {header.get('format')} v{header.get('version')} is not "
                        f"{FORMAT} v{VERSION}; rebuild it with this crossreid")
    feats = arrays["features"]
    if feats.ndim != 2 or feats.shape != (header["count"], header["dim"]) or any(
            len(arrays[k]) != len(feats) for k in ARRAYS):
        raise UserError(f"{path}: index arrays disagree with its header (count {header['count']}, dim "
                        f"{header['dim']}); rebuild it with `crossreid index`")
    index = GalleryIndex(path, header, **arrays)
    if header.get("faiss") and load_faiss:
        side = path.with_name(header["faiss"]["file"])
        if not side.is_file() or file_sha256(side) != header["faiss"]["sha256"]:
            raise UserError(f"{side}: FAISS side file missing or not the one built with {path}; rebuild the index")
        try:
            import faiss
        except ImportError:
            raise UserError(f"{path}: approximate index needs faiss; pip install 'crossreid[faiss]' "
                            "or search exactly with --exact") from None
        index.faiss_index = faiss.read_index(str(side))
    return index


def measure_recall(gallery_index, k: int = 10, queries: int = 500, seed: int = 0) -> dict:
    """recall@k of the FAISS index against exact search, over gallery rows used as queries."""
    from crossreid.retrieval.ann import faiss_search
    from crossreid.retrieval.search import exact_topk

    feats = gallery_index.features
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(feats), min(queries, len(feats)), replace=False)
    q = np.asarray(feats[pick], dtype=np.float32)
    _, exact = exact_topk(feats, q, k, gallery_index.metric)
    _, approx = faiss_search(gallery_index.faiss_index, q, k, gallery_index.metric)
    hits = sum(len(set(a.tolist()) & set(e.tolist())) for a, e in zip(approx, exact))
    return {"recall": hits / (len(pick) * k), "queries": len(pick)}
