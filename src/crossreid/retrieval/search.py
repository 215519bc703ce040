"""Top-K gallery search: exact (in gallery blocks, bounded memory) or FAISS, with gallery
filters (modality, camera), per-query exclusions (same camera, same frame) and optional
k-reciprocal re-ranking.

Distances and exclusions are the evaluation's: :class:`~crossreid.evaluation.distance.GalleryDistance`
(float32, the precision an index stores) and :class:`~crossreid.evaluation.metrics.ExclusionRule`,
so a search ranks a gallery as ``crossreid evaluate`` / ``score`` do (ties by gallery row).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from crossreid.errors import UserError
from crossreid.evaluation.distance import GalleryDistance
from crossreid.evaluation.metrics import ExclusionRule

CHUNK_ELEMENTS = 1 << 24      # query-batch × gallery-block scores held at once (64 MB float32)
EXCLUSIONS = {"same-camera": "cam", "same-frame": "frame"}  # --exclude value -> the rule's key


def exclusion_rule(exclude: Sequence[str]) -> ExclusionRule:
    """The rule of ``--exclude`` values: a gallery image sharing any of the named keys with the query goes."""
    unknown = [e for e in exclude if e not in EXCLUSIONS]
    if unknown:
        raise UserError(f"--exclude {unknown[0]}: use one of {', '.join(EXCLUSIONS)}")
    return ExclusionRule.parse(*dict.fromkeys(EXCLUSIONS[e] for e in exclude))


@dataclass
class Removal:
    """What each query must not see: an exclusion rule with the codes of the queries' and the gallery's keys."""

    rule: ExclusionRule
    qcodes: dict[str, np.ndarray]
    gcodes: dict[str, np.ndarray]

    def mask(self, rows: np.ndarray, gallery: slice | np.ndarray = slice(None)) -> np.ndarray | None:
        return self.rule.mask(self.qcodes, self.gcodes, rows, gallery=gallery)

    def of_queries(self, rows: np.ndarray) -> Removal:
        return Removal(self.rule, {k: v[rows] for k, v in self.qcodes.items()}, self.gcodes)


class ExactSearcher:
    """Exact top-K over a fixed gallery (float32 or float16 rows, in memory or memory-mapped)."""

    def __init__(self, gallery: np.ndarray, metric: str = "euclidean", chunk_rows: int | None = None):
        self.distance = GalleryDistance(gallery, metric, "float32", block_rows=chunk_rows or 1 << 16, convert=False)
        self.metric, self.chunk_rows = metric, self.distance.block_rows

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None,
               removal: Removal | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(distances, rows) [Q, k] ascending, ties by row; ``allowed``: bool per gallery row;
        ``removal``: gallery rows each query must not see. Fewer than k candidates leave row -1
        and distance inf."""
        q = self.distance.queries(np.ascontiguousarray(queries, dtype=np.float32))
        n, nq = len(self.distance), len(q)
        k_eff = min(k, n)
        q_batch = max(1, min(nq, CHUNK_ELEMENTS // max(1, min(n, self.chunk_rows))))
        rows_per_chunk = max(1, min(self.chunk_rows, CHUNK_ELEMENTS // q_batch))
        out_d = np.full((nq, k), np.inf, dtype=np.float32)
        out_i = np.full((nq, k), -1, dtype=np.int64)
        for q0 in range(0, nq, q_batch):
            qb = q[q0:q0 + q_batch]
            best_d = np.empty((len(qb), 0), dtype=np.float32)
            best_i = np.empty((len(qb), 0), dtype=np.int64)
            for s in range(0, n, rows_per_chunk):
                e = min(n, s + rows_per_chunk)
                score = self.distance.scores(qb, s, e).numpy()
                if allowed is not None:
                    score[:, ~allowed[s:e]] = np.inf
                gone = removal.mask(np.arange(q0, q0 + len(qb)), slice(s, e)) if removal else None
                if gone is not None:
                    score[gone] = np.inf
                top_d, top_i = torch.topk(torch.from_numpy(score), min(k_eff, e - s), dim=1, largest=False)
                best_d = np.concatenate([best_d, top_d.numpy()], axis=1)
                best_i = np.concatenate([best_i, top_i.numpy() + s], axis=1)
                if best_d.shape[1] > k_eff:
                    keep = np.argpartition(best_d, k_eff - 1, axis=1)[:, :k_eff]
                    best_d, best_i = np.take_along_axis(best_d, keep, 1), np.take_along_axis(best_i, keep, 1)
            d = self.distance.finish(qb, torch.from_numpy(best_d)).numpy().astype(np.float64)
            i = best_i
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


def removal_of(index, queries: Queries, rule: ExclusionRule) -> Removal | None:
    """The rule's codes for the queries and the gallery (an unknown camera or frame matches nothing)."""
    if not rule.clauses:
        return None
    def columns(cameras, frames) -> dict:
        return {"cam": [None if c < 0 else int(c) for c in cameras], "frame": [f or None for f in frames.tolist()]}
    qcodes, gcodes = rule.encode(columns(queries.cameras, queries.frames), columns(index.cameras, index.frames))
    return Removal(rule, qcodes, gcodes)


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
    removal = removal_of(index, queries, exclusion_rule(opts.exclude))
    if opts.rerank is not None:
        return (*_reranked(index, queries, opts, allowed, removal), "exact + k-reciprocal re-ranking")
    full_allowed = None if allowed.all() else allowed
    if index.faiss_index is not None and not opts.exact:
        return (*_approximate(index, queries, opts, full_allowed, removal), index.header["faiss"]["kind"])
    searcher = ExactSearcher(index.features, index.metric)
    return (*searcher.search(queries.features, opts.k, full_allowed, removal), "exact")


def _approximate(index, queries: Queries, opts: SearchOptions, allowed, removal: Removal | None):
    """FAISS candidates filtered afterwards; a query left with fewer than K falls back to exact search."""
    from crossreid.retrieval.ann import faiss_search

    filtered = allowed is not None or removal is not None
    fetch = min(len(index), opts.k if not filtered else max(4 * opts.k, opts.k + 64))
    dist, rows = faiss_search(index.faiss_index, queries.features, fetch, index.metric)
    keep = rows >= 0
    found = np.maximum(rows, 0)
    if allowed is not None:
        keep &= allowed[found]
    if removal is not None:
        qi = np.repeat(np.arange(len(rows)), rows.shape[1])
        keep &= ~removal.rule.pair_mask(removal.qcodes, removal.gcodes, qi, found.ravel()).reshape(rows.shape)
    out_d = np.full((len(rows), opts.k), np.inf, dtype=np.float32)
    out_i = np.full((len(rows), opts.k), -1, dtype=np.int64)
    short = []
    for r in range(len(rows)):
        d, i = dist[r][keep[r]][:opts.k], rows[r][keep[r]][:opts.k]
        out_d[r, :len(d)], out_i[r, :len(i)] = d, i
        if len(i) < opts.k:
            short.append(r)
    if short:
        out_d[short], out_i[short] = ExactSearcher(index.features, index.metric).search(
            queries.features[short], opts.k, allowed, removal.of_queries(np.array(short)) if removal else None)
    return out_d, out_i


def _reranked(index, queries: Queries, opts: SearchOptions, allowed: np.ndarray, removal: Removal | None):
    """k-reciprocal re-ranking over the filtered gallery (O(G·k1²) memory, O((Q+G)²·dim) time)."""
    cols = np.flatnonzero(allowed)
    dist = opts.rerank(queries.features, np.asarray(index.features[cols], dtype=np.float32), index.metric)
    gone = removal.mask(np.arange(len(queries.features)), cols) if removal else None
    if gone is not None:
        dist[gone] = np.inf
    order = np.argsort(dist, axis=1, kind="stable")[:, :opts.k]
    d = np.take_along_axis(dist, order, 1)
    rows = cols[order]
    rows[~np.isfinite(d)] = -1
    return d, rows
