"""Top-K gallery search: exact (chunked matrix products, bounded memory) or FAISS, with
gallery filters (modality, camera), per-query exclusions (same camera, same frame) and
optional k-reciprocal re-ranking.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from crossreid.errors import UserError
from crossreid.evaluation.distance import check_metric

CHUNK_ELEMENTS = 1 << 24      # query-batch × gallery-chunk scores held at once (64 MB float32)
EXCLUSIONS = ("same-camera", "same-frame")


class ExactSearcher:
    """Exact top-K over a fixed gallery (float32 or float16 rows, in memory or memory-mapped)."""

    def __init__(self, gallery: np.ndarray, metric: str = "euclidean", chunk_rows: int | None = None):
        self.gallery, self.metric = gallery, check_metric(metric)
        self.chunk_rows = chunk_rows or 1 << 16
        norms = np.empty(len(gallery), dtype=np.float32)
        for s in range(0, len(gallery), self.chunk_rows):
            g = np.asarray(gallery[s:s + self.chunk_rows], dtype=np.float32)
            norms[s:s + len(g)] = np.einsum("ij,ij->i", g, g)
        # Euclidean ranks |g|² - 2 q·g; cosine ranks -q̂·g/|g|.
        self.gallery_term = torch.from_numpy(norms if self.metric == "euclidean"
                                             else 1.0 / np.maximum(np.sqrt(norms), 1e-12))

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None,
               exclusions: Sequence[tuple[np.ndarray, np.ndarray]] = ()) -> tuple[np.ndarray, np.ndarray]:
        """(distances, rows) [Q, k] ascending, ties by row; ``allowed``: bool per gallery row;
        ``exclusions``: (gallery codes, query codes) pairs removing equal codes (code < 0: unknown).
        Fewer than k candidates leave row -1 and distance inf."""
        q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        if self.metric == "cosine":
            q = torch.nn.functional.normalize(q, dim=1)
        n, nq = len(self.gallery), len(q)
        k_eff = min(k, n)
        qsq = (q * q).sum(dim=1)
        q_batch = max(1, min(nq, CHUNK_ELEMENTS // min(n, self.chunk_rows)))
        rows_per_chunk = max(1, min(self.chunk_rows, CHUNK_ELEMENTS // q_batch))
        out_d = np.full((nq, k), np.inf, dtype=np.float32)
        out_i = np.full((nq, k), -1, dtype=np.int64)
        term = self.gallery_term.numpy()
        for q0 in range(0, nq, q_batch):
            qb = q[q0:q0 + q_batch]
            best_d = np.empty((len(qb), 0), dtype=np.float32)
            best_i = np.empty((len(qb), 0), dtype=np.int64)
            for s in range(0, n, rows_per_chunk):
                g = torch.from_numpy(np.asarray(self.gallery[s:s + rows_per_chunk], dtype=np.float32))
                # batch × chunk, contiguous. Large batches: one fused addmm; small ones: the product,
                # then the element-wise rest in numpy, which spawns no threads (torch's thread pool
                # stalls on small ops when the cores are shared).
                if self.metric == "euclidean" and len(qb) >= 32:
                    score = torch.addmm(self.gallery_term[None, s:s + len(g)], qb, g.T, alpha=-2.0).numpy()
                elif self.metric == "euclidean":
                    score = (qb @ g.T).numpy()
                    score *= -2.0
                    score += term[None, s:s + len(g)]
                else:
                    score = (qb @ g.T).numpy()
                    score *= -term[None, s:s + len(g)]
                if allowed is not None:
                    score[:, ~allowed[s:s + len(g)]] = np.inf
                for g_codes, q_codes in exclusions:
                    gc = g_codes[None, s:s + len(g)]
                    score[(gc == q_codes[q0:q0 + len(qb), None]) & (gc >= 0)] = np.inf
                top_d, top_i = torch.topk(torch.from_numpy(score), min(k_eff, len(g)), dim=1, largest=False)
                best_d = np.concatenate([best_d, top_d.numpy()], axis=1)
                best_i = np.concatenate([best_i, top_i.numpy() + s], axis=1)
                if best_d.shape[1] > k_eff:
                    keep = np.argpartition(best_d, k_eff - 1, axis=1)[:, :k_eff]
                    best_d, best_i = np.take_along_axis(best_d, keep, 1), np.take_along_axis(best_i, keep, 1)
            d, i = best_d.astype(np.float64), best_i
            if self.metric == "euclidean":
                d = np.sqrt(np.maximum(d + qsq[q0:q0 + len(qb), None].numpy(), 0.0))
            else:
                d = 1.0 + d
            order = np.lexsort((i, d), axis=1) if d.size else np.zeros_like(i)
            d, i = np.take_along_axis(d, order, 1), np.take_along_axis(i, order, 1)
            i[~np.isfinite(d)] = -1
            out_d[q0:q0 + len(qb), :d.shape[1]] = d
            out_i[q0:q0 + len(qb), :i.shape[1]] = i
        return out_d, out_i


def exact_topk(gallery: np.ndarray, queries: np.ndarray, k: int, metric: str = "euclidean", **kw):
    return ExactSearcher(gallery, metric).search(queries, k, **kw)


@dataclass
class Queries:
    """Query features and what is known about each query (-1 / "" where unknown)."""

    features: np.ndarray
    paths: list[str]
    modalities: list[str]
    ids: np.ndarray
    cameras: np.ndarray
    frames: np.ndarray


@dataclass
class SearchOptions:
    k: int = 10
    gallery_modalities: list[str] = field(default_factory=list)
    cameras: list[int] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    rerank: object = None            # a crossreid.evaluation.rerank.Rerank, or None
    exact: bool = False              # ignore the FAISS side index

    def describe(self) -> dict:
        return {"k": self.k, "gallery_modalities": self.gallery_modalities or "all",
                "cameras": self.cameras or "all", "exclude": self.exclude,
                "rerank": self.rerank.describe() if self.rerank else "none"}


def _codes(gallery: np.ndarray, queries: np.ndarray, unknown) -> tuple[np.ndarray, np.ndarray]:
    """Shared integer codes of two label arrays; ``unknown`` values get -1."""
    values, inverse = np.unique(np.concatenate([gallery.astype(str), queries.astype(str)]), return_inverse=True)
    codes = inverse.astype(np.int64)
    codes[np.concatenate([gallery, queries]).astype(str) == str(unknown)] = -1
    return codes[:len(gallery)], codes[len(gallery):]


def search_index(index, queries: Queries, opts: SearchOptions) -> tuple[np.ndarray, np.ndarray, str]:
    """(distances, gallery rows, engine) for every query; rows -1 where fewer than K match."""
    if len(index) == 0:
        raise UserError(f"{index.path}: the index is empty; index a non-empty gallery")
    if queries.features.shape[1] != index.dim:
        raise UserError(f"{index.path}: index holds {index.dim}-d features but the queries are "
                        f"{queries.features.shape[1]}-d; query with the model that built the index")
    allowed = np.ones(len(index), dtype=bool)
    if opts.gallery_modalities:
        allowed &= np.isin(index.modalities, opts.gallery_modalities)
    if opts.cameras:
        allowed &= np.isin(index.cameras, opts.cameras)
    candidates = int(allowed.sum())
    if opts.k < 1:
        raise UserError(f"--top {opts.k}: must be >= 1")
    if opts.k > candidates:
        raise UserError(f"{index.path}: --top {opts.k} is larger than the gallery ({candidates} of {len(index)} "
                        "images pass the filters); lower --top or widen the filters")
    unknown = [e for e in opts.exclude if e not in EXCLUSIONS]
    if unknown:
        raise UserError(f"--exclude {unknown[0]}: use one of {', '.join(EXCLUSIONS)}")
    exclusions = []
    if "same-camera" in opts.exclude:
        exclusions.append(_codes(index.cameras, queries.cameras, -1))
    if "same-frame" in opts.exclude:
        exclusions.append(_codes(index.frames, queries.frames, ""))
    if opts.rerank is not None:
        return (*_reranked(index, queries, opts, allowed, exclusions), "exact + k-reciprocal re-ranking")
    full_allowed = None if allowed.all() else allowed
    if index.faiss_index is not None and not opts.exact:
        return (*_approximate(index, queries, opts, full_allowed, exclusions), index.header["faiss"]["kind"])
    searcher = ExactSearcher(index.features, index.metric)
    return (*searcher.search(queries.features, opts.k, full_allowed, exclusions), "exact")


def _approximate(index, queries: Queries, opts: SearchOptions, allowed, exclusions):
    """FAISS candidates filtered afterwards; a query left with fewer than K falls back to exact search."""
    from crossreid.retrieval.ann import faiss_search

    filtered = allowed is not None or exclusions
    fetch = min(len(index), opts.k if not filtered else max(4 * opts.k, opts.k + 64))
    dist, rows = faiss_search(index.faiss_index, queries.features, fetch, index.metric)
    keep = rows >= 0
    if allowed is not None:
        keep &= allowed[np.maximum(rows, 0)]
    for g_codes, q_codes in exclusions:
        gc = g_codes[np.maximum(rows, 0)]
        keep &= ~((gc == q_codes[:, None]) & (gc >= 0))
    out_d = np.full((len(rows), opts.k), np.inf, dtype=np.float32)
    out_i = np.full((len(rows), opts.k), -1, dtype=np.int64)
    short = []
    for r in range(len(rows)):
        d, i = dist[r][keep[r]][:opts.k], rows[r][keep[r]][:opts.k]
        out_d[r, :len(d)], out_i[r, :len(i)] = d, i
        if len(i) < opts.k:
            short.append(r)
    if short:
        sub = [(g, q[short]) for g, q in exclusions]
        out_d[short], out_i[short] = ExactSearcher(index.features, index.metric).search(
            queries.features[short], opts.k, allowed, sub)
    return out_d, out_i


def _reranked(index, queries: Queries, opts: SearchOptions, allowed: np.ndarray, exclusions):
    """k-reciprocal re-ranking over the filtered gallery (O(G·k1²) memory, O((Q+G)²·dim) time)."""
    cols = np.flatnonzero(allowed)
    dist = opts.rerank(queries.features, np.asarray(index.features[cols], dtype=np.float32), index.metric)
    for g_codes, q_codes in exclusions:
        gc = g_codes[cols][None, :]
        dist[(gc == q_codes[:, None]) & (gc >= 0)] = np.inf
    order = np.argsort(dist, axis=1, kind="stable")[:, :opts.k]
    d = np.take_along_axis(dist, order, 1)
    rows = cols[order]
    rows[~np.isfinite(d)] = -1
    return d, rows
