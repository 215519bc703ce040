"""Approximate search with FAISS (the optional ``faiss`` extra; imported only here, only when used).

``hnsw``: IndexHNSWFlat (M links per node, efConstruction at build, efSearch at query).
``ivf``: IndexIVFFlat (nlist clusters, nprobe visited per query). Both store full vectors,
so recall is limited only by the graph / cluster search, not by quantisation. Cosine
indexes hold L2-normalised vectors under inner product.
"""

from __future__ import annotations

import time

import numpy as np

from crossreid.errors import UserError

DEFAULTS = {"hnsw": {"M": 32, "ef_construction": 80, "ef_search": 64},
            "ivf": {"nlist": 0, "nprobe": 16}}  # nlist 0: 4·sqrt(n)


def _faiss():
    try:
        import faiss
    except ImportError:
        raise UserError("approximate search needs faiss: pip install 'crossreid[faiss]' (faiss-cpu)") from None
    return faiss


def _prepared(x: np.ndarray, metric: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


def build_faiss(features: np.ndarray, metric: str, kind: str, **options) -> tuple[object, dict]:
    """The FAISS index of ``features`` and the parameters (and build seconds) to record."""
    faiss = _faiss()
    if kind not in DEFAULTS:
        raise UserError(f"--approximate {kind}: use hnsw or ivf")
    unknown = set(options) - set(DEFAULTS[kind])
    if unknown:
        raise UserError(f"--ann-option {sorted(unknown)[0]}: unknown for {kind}; use {', '.join(DEFAULTS[kind])}")
    params = {**DEFAULTS[kind], **{k: int(v) for k, v in options.items()}}
    x = _prepared(features, metric)
    n, dim = x.shape
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    start = time.perf_counter()
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, params["M"], faiss_metric)
        index.hnsw.efConstruction = params["ef_construction"]
        index.hnsw.efSearch = params["ef_search"]
        index.add(x)
    else:
        params["nlist"] = params["nlist"] or max(1, min(n // 39, int(4 * np.sqrt(n))))
        quantizer = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, params["nlist"], faiss_metric)
        sample = x if n <= 256 * params["nlist"] else x[np.random.default_rng(0).choice(n, 256 * params["nlist"],
                                                                                         replace=False)]
        index.train(sample)
        index.add(x)
        index.nprobe = params["nprobe"]
    params["build_s"] = round(time.perf_counter() - start, 3)
    return index, params


def faiss_search(index, queries: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(distances, rows), ascending, in the index's metric (Euclidean or 1 - cosine); row -1 = none."""
    sims, rows = index.search(_prepared(queries, metric), k)
    if metric == "cosine":
        dist = 1.0 - sims
    else:
        dist = np.sqrt(np.maximum(sims, 0.0))
    dist[rows < 0] = np.inf
    return dist.astype(np.float32), rows.astype(np.int64)
