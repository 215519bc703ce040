"""CMC, mAP and mINP (datasets.md §8), vectorised and chunked over queries.

Ranking is stable: equal distances keep gallery order, as NumPy's ``kind="stable"``
and MATLAB's ``sort`` do. No full sort is needed in the common case: the rank of a
true match is one plus the number of kept gallery items ordered before it, counted
against the few match distances of each query (see docs/evaluation.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crossreid.errors import UserError
from crossreid.evaluation.distance import GalleryDistance

CMC_LEVELS = ("image", "identity")
DEFAULT_RANKS = (1, 5, 10, 20)
_INDEX_BITS = 29          # gallery index bits packed below a float32 distance in a float64 key
_COUNT_LIMIT = 192        # above this many matches per query a stable sort is cheaper than counting
_CHUNK_ELEMENTS = 1 << 18  # default query chunk: about this many distances at once (cache-sized)


@dataclass(frozen=True)
class ExclusionRule:
    """Which gallery items a query must not see, as data.

    A gallery item is removed for a query when, for at least one clause, every key
    of the clause has the same value on both sides. ``relabel`` maps a key's values
    before comparing, on both sides (SYSU-MM01 location: cam 3 → 2). A missing value
    (``None``) equals nothing. Keys name columns: ``pid``, ``cam`` or any extra column
    (``frame``, ``sequence``) the caller supplies.
    """

    clauses: tuple[tuple[str, ...], ...] = ()
    relabel: tuple[tuple[str, tuple[tuple[Any, Any], ...]], ...] = ()

    @classmethod
    def parse(cls, *clauses: str, relabel: Mapping[str, Mapping[Any, Any]] | None = None) -> ExclusionRule:
        """``ExclusionRule.parse("pid+cam")``; several clauses are alternatives."""
        parsed = tuple(tuple(k.strip() for k in c.split("+") if k.strip()) for c in clauses)
        if any(not c for c in parsed):
            raise ValueError(f"empty clause in exclusion rule {clauses!r}")
        rel = tuple(sorted((k, tuple(sorted(m.items()))) for k, m in (relabel or {}).items()))
        return cls(parsed, rel)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(sorted({k for c in self.clauses for k in c}))

    def mapping(self, key: str) -> dict:
        return dict(next((m for k, m in self.relabel if k == key), ()))

    def relabelled(self, key: str, values: Sequence) -> list:
        table = self.mapping(key)
        vals = values.tolist() if isinstance(values, np.ndarray) else list(values)
        return [table.get(v, v) for v in vals] if table else vals

    def describe(self) -> list[str]:
        """JSON-friendly text, e.g. ``["same pid+cam"]`` or ``["same cam (cam 3->2)"]``."""
        out = []
        for clause in self.clauses:
            maps = [f"{k} " + ",".join(f"{a}->{b}" for a, b in m) for k, m in self.relabel if k in clause]
            out.append("same " + "+".join(clause) + (f" ({'; '.join(maps)})" if maps else ""))
        return out

    def encode(self, query: Mapping[str, Sequence], gallery: Mapping[str, Sequence]
               ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Integer codes per key; ``None`` gets -1 (query) / -2 (gallery) so it never matches."""
        qcodes, gcodes = {}, {}
        for key in self.keys:
            if key not in query or key not in gallery:
                raise ValueError(f"exclusion rule needs the {key!r} column for query and gallery")
            table: dict = {}
            for missing, values, out in ((-1, query[key], qcodes), (-2, gallery[key], gcodes)):
                out[key] = np.array([missing if v is None else table.setdefault(v, len(table))
                                     for v in self.relabelled(key, values)], dtype=np.int64)
        return qcodes, gcodes

    def mask(self, qcodes: Mapping[str, np.ndarray], gcodes: Mapping[str, np.ndarray],
             rows: np.ndarray, clauses: Sequence[tuple[str, ...]] | None = None,
             gallery: slice | np.ndarray = slice(None)) -> np.ndarray | None:
        """Dense ``[len(rows), G]`` removal mask for the given query rows (None: nothing removed);
        ``gallery`` (a slice or index array) restricts its columns to those gallery items."""
        out = None
        for clause in self.clauses if clauses is None else clauses:
            same = None
            for key in clause:
                eq = qcodes[key][rows, None] == gcodes[key][None, gallery]
                same = eq if same is None else np.logical_and(same, eq, out=same)
            out = same if out is None else np.logical_or(out, same, out=out)
        return out

    def pair_mask(self, qcodes: Mapping[str, np.ndarray], gcodes: Mapping[str, np.ndarray],
                  qi: np.ndarray, gi: np.ndarray) -> np.ndarray:
        """Removal flags for individual (query, gallery) pairs."""
        out = np.zeros(len(qi), dtype=bool)
        for clause in self.clauses:
            same = np.ones(len(qi), dtype=bool)
            for key in clause:
                same &= qcodes[key][qi] == gcodes[key][gi]
            out |= same
        return out

    def to_dict(self) -> dict:
        return {"clauses": [list(c) for c in self.clauses],
                "relabel": {k: [[a, b] for a, b in m] for k, m in self.relabel}}

    @classmethod
    def from_dict(cls, data: Mapping) -> ExclusionRule:
        rel = {k: {a: b for a, b in pairs} for k, pairs in (data.get("relabel") or {}).items()}
        return cls.parse(*("+".join(c) for c in data.get("clauses", [])), relabel=rel)


NO_EXCLUSION = ExclusionRule()
SAME_CAMERA = ExclusionRule.parse("cam")
SAME_ID_AND_CAMERA = ExclusionRule.parse("pid+cam")
SYSU_LOCATION = ExclusionRule.parse("cam", relabel={"cam": {3: 2}})
SAME_FRAME = ExclusionRule.parse("frame")
SAME_ID_AND_SEQUENCE = ExclusionRule.parse("pid+sequence")


@dataclass(frozen=True)
class Metrics:
    """Metrics of one trial. ``cmc[k-1]`` is rank-k; values are fractions in [0, 1]."""

    cmc: np.ndarray
    map: float
    minp: float
    num_valid: int
    num_queries: int
    ranks: tuple[int, ...] = DEFAULT_RANKS
    cmc_level: str = "image"
    ap: np.ndarray | None = field(default=None, repr=False)  # per query, NaN where invalid
    num_gallery: int = 0
    # What the trial's gallery allows (crossreid.evaluation.chance), set by evaluate_protocol:
    chance_rank1: float | None = None  # expected R1 of a random ranking
    deepest_rank: int | None = None    # CMC ranks beyond it are padded, not results

    def rank(self, k: int) -> float:
        return float(self.cmc[k - 1])

    def summary(self) -> dict[str, float]:
        out = {f"rank{k}": self.rank(k) for k in self.ranks}
        return {**out, "map": self.map, "minp": self.minp}

    @classmethod
    def from_per_query(cls, first: np.ndarray, ap: np.ndarray, inp: np.ndarray, num_queries: int,
                       ranks: Sequence[int], cmc_level: str, per_query: np.ndarray | None = None,
                       num_gallery: int = 0) -> Metrics:
        """Aggregate valid queries: first-match ranks (1-based), AP and INP per valid query."""
        n = len(first)
        if n == 0:
            raise UserError("no valid query: no query has a true match left in its gallery after the "
                            "exclusion rule; check that query and gallery share identities")
        top = max(ranks)
        hist = np.bincount(np.minimum(first, top + 1), minlength=top + 2)[1:top + 1]
        cmc = np.cumsum(hist) / n
        return cls(cmc, math.fsum(ap) / n, math.fsum(inp) / n, n, num_queries,
                   tuple(ranks), cmc_level, per_query, num_gallery)


def check_level(cmc: str) -> str:
    if cmc not in CMC_LEVELS:
        raise ValueError(f"unknown CMC level {cmc!r}; use one of: {', '.join(CMC_LEVELS)}")
    return cmc


def _ragged(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row of each element, its position within its row, and ``starts[row] + position``."""
    row = np.repeat(np.arange(len(counts)), counts)
    pos = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    return row, pos, np.repeat(starts, counts) + pos


def _match_pairs(qpid: np.ndarray, gpid: np.ndarray, rule: ExclusionRule, qcodes, gcodes):
    """(query, gallery) pairs with equal ids, sorted by query then gallery index: kept, removed."""
    order = np.argsort(gpid, kind="stable")
    sorted_ids = gpid[order]
    lo = np.searchsorted(sorted_ids, qpid, side="left")
    hi = np.searchsorted(sorted_ids, qpid, side="right")
    qi, _, flat = _ragged(lo, hi - lo)
    gi = order[flat]
    gone = rule.pair_mask(qcodes, gcodes, qi, gi)
    return qi[~gone], gi[~gone], qi[gone], gi[gone]


def _ordered_keys(d: np.ndarray) -> np.ndarray:
    """float64 keys whose order is (distance, gallery index): stable ranking without a sort.

    A float32 value converted to float64 leaves the low 29 mantissa bits zero; the
    gallery index goes there (reversed for negative values, whose magnitude grows
    with the mantissa).
    """
    key = np.add(d, 0.0, dtype=np.float64)  # exact; -0.0 becomes +0.0
    bits = key.view(np.int64)
    idx = np.arange(d.shape[1], dtype=np.int64)
    if d.min() < 0:
        bits |= np.where(key < 0, (1 << _INDEX_BITS) - 1 - idx, idx)
    else:
        bits |= idx
    return key


def _remove(w: np.ndarray, removed) -> None:
    """Push removed items out of every ranking: a dense mask and/or sparse (row, col) pairs."""
    dense, rows, cols = removed
    if dense is not None:
        w[dense] = np.inf
    w[rows, cols] = np.inf


def _ranks_by_counting(d, removed, rows, cols, pos, m_max, want_before):
    """float32 distances: (distance, index) packed in one float64 key, so no ties exist."""
    key = _ordered_keys(d)
    thresholds, before = _match_thresholds(key, removed, rows, cols, pos, m_max)
    ranks = before + np.arange(1, m_max + 1)
    first_block = (key < thresholds[:, :1]) if want_before else None
    return ranks, first_block, None


def _match_thresholds(key, removed, rows, cols, pos, m_max):
    """Each query's true-match keys, sorted (inf-padded to ``m_max``), and how many other kept
    items lie strictly below each; ``key`` is modified in place (removed items and matches → inf)."""
    thresholds = np.full((len(key), m_max), np.inf)
    thresholds[rows, pos] = key[rows, cols]
    thresholds.sort(axis=1)
    _remove(key, removed)
    key[rows, cols] = np.inf
    return thresholds, _count_below(key, thresholds)


def _count_below(key: np.ndarray, thresholds: np.ndarray, or_equal: bool = False) -> np.ndarray:
    """``before[r, j]``: how many of ``key[r]`` are below (or equal to) ``thresholds[r, j]``."""
    before = np.zeros(thresholds.shape, dtype=np.int64)
    block = max(1, (1 << 22) // max(1, key.size))
    compare = np.less_equal if or_equal else np.less
    for j in range(0, thresholds.shape[1], block):
        t = thresholds[:, j:j + block, None]
        for g in range(0, key.shape[1], 65535):  # uint16 sums are fast and cannot overflow here
            below = compare(key[:, None, g:g + 65535], t)
            before[:, j:j + block] += below.view(np.uint8).sum(axis=2, dtype=np.uint16)
    return before


def _ranks_by_counting64(d, removed, rows, cols, pos, m_max, want_before):
    """float64 distances: count strictly closer items; rows where another item ties a true
    match exactly are returned in ``tied`` for the caller to rank by a stable sort."""
    key = np.add(d, 0.0)  # a copy; -0.0 becomes +0.0
    thresholds, before = _match_thresholds(key, removed, rows, cols, pos, m_max)
    real = np.isfinite(thresholds)
    tied = ((_count_below(key, thresholds, or_equal=True) > before) & real).any(axis=1)
    ranks = before + np.arange(1, m_max + 1)
    first_block = (key < thresholds[:, :1]) if want_before else None
    return ranks, first_block, np.flatnonzero(tied)


def _ranks_by_sorting(d, removed, rows, cols, pos, m_max, want_before):
    w = d.copy()
    _remove(w, removed)
    order = np.argsort(w, axis=1, kind="stable")
    place = np.empty_like(order)
    np.put_along_axis(place, order, np.broadcast_to(np.arange(w.shape[1]), w.shape), axis=1)
    ranks = np.full((len(d), m_max), np.iinfo(np.int64).max)
    ranks[rows, pos] = place[rows, cols] + 1
    ranks.sort(axis=1)
    first_block = (place < ranks[:, :1] - 1) if want_before else None
    return ranks, first_block, None


def _rows_of(sub: np.ndarray, n: int, removed, rows, cols, pos):
    """The removal and match structures restricted to chunk rows ``sub`` (renumbered 0..)."""
    new = np.full(n, -1)
    new[sub] = np.arange(len(sub))
    dense, r_rows, r_cols = removed
    keep_r, keep = new[r_rows] >= 0, new[rows] >= 0
    sub_removed = (None if dense is None else dense[sub], new[r_rows[keep_r]], r_cols[keep_r])
    return sub_removed, new[rows[keep]], cols[keep], pos[keep]


def _rank_chunk(d: np.ndarray, removed, rows, cols, pos, m_max: int, want_before: bool, method: str, ng: int):
    """1-based ranks of each query's true matches (sorted), and the items before its first match."""
    use_count = method == "count" or (method == "auto" and m_max <= _COUNT_LIMIT)
    if not use_count:
        return _ranks_by_sorting(d, removed, rows, cols, pos, m_max, want_before)[:2]
    if d.dtype == np.float32 and ng < (1 << _INDEX_BITS):
        return _ranks_by_counting(d, removed, rows, cols, pos, m_max, want_before)[:2]
    ranks, block, tied = _ranks_by_counting64(d, removed, rows, cols, pos, m_max, want_before)
    if len(tied):  # exact ties with a true match: a stable sort gives gallery order, as the official codes
        sub_rk, sub_block, _ = _ranks_by_sorting(d[tied], *_rows_of(tied, len(d), removed, rows, cols, pos),
                                                 m_max, want_before)
        ranks[tied] = sub_rk
        if want_before:
            block[tied] = sub_block
    return ranks, block


def _distance_source(nq: int, ng: int, distances, query_features, gallery_features, metric: str, precision: str):
    """A function from query rows to their distance rows (float32 or float64)."""
    if distances is not None:
        distances = np.asarray(distances)
        if distances.shape != (nq, ng):
            raise ValueError(f"distance matrix is {distances.shape}, expected {(nq, ng)}")
        if not np.isfinite(distances).all():
            raise ValueError("distance matrix has NaN or infinite values")
        if not np.issubdtype(distances.dtype, np.floating) or distances.dtype.itemsize > 4:
            cast = np.float64
        else:
            cast = np.float32
        return lambda idx: distances[idx].astype(cast, copy=False)
    if query_features is None or gallery_features is None:
        raise ValueError("give either distances or both query_features and gallery_features")
    if len(query_features) != nq or len(gallery_features) != ng:
        raise ValueError("features and ids differ in length")
    dist = GalleryDistance(gallery_features, metric, precision)
    return lambda idx: dist(query_features[idx]).cpu().numpy()


@dataclass(frozen=True)
class _Pairs:
    """Same-id (query, gallery) pairs per query: kept (true matches) and removed by the rule."""

    gallery: np.ndarray   # gallery index of each kept pair, grouped by query
    count: np.ndarray     # kept pairs per query
    start: np.ndarray     # first kept pair of each query
    removed_gallery: np.ndarray
    removed_count: np.ndarray
    removed_start: np.ndarray

    @classmethod
    def of(cls, qpid, gpid, rule: ExclusionRule, qcodes, gcodes) -> _Pairs:
        qi, gi, rqi, rgi = _match_pairs(qpid, gpid, rule, qcodes, gcodes)
        m_all = np.bincount(qi, minlength=len(qpid))
        r_all = np.bincount(rqi, minlength=len(qpid))
        return cls(gi, m_all, np.cumsum(m_all) - m_all, rgi, r_all, np.cumsum(r_all) - r_all)


def _check_ranks(cmc: str, ranks: Sequence[int]) -> tuple[int, ...]:
    check_level(cmc)
    ranks = tuple(int(k) for k in ranks)
    if not ranks or min(ranks) < 1:
        raise ValueError(f"ranks must be positive integers, got {ranks}")
    return ranks


def _first_identity_rank(block: np.ndarray, pid_codes: np.ndarray, n_ids: int) -> np.ndarray:
    """Identity-level rank-1 position: distinct ids ranked before the first true match, plus one."""
    br, bc = np.nonzero(block)
    seen = np.zeros(len(block) * n_ids, dtype=bool)
    seen[br * n_ids + pid_codes[bc]] = True
    return seen.reshape(len(block), n_ids).sum(axis=1) + 1


def compute_metrics(query_ids: Sequence[int], gallery_ids: Sequence[int],
                    query_cams: Sequence[int] | None = None, gallery_cams: Sequence[int] | None = None, *,
                    distances: np.ndarray | None = None,
                    query_features=None, gallery_features=None, metric: str = "euclidean",
                    exclusion: ExclusionRule = NO_EXCLUSION,
                    query_keys: Mapping[str, Sequence] | None = None,
                    gallery_keys: Mapping[str, Sequence] | None = None,
                    cmc: str = "image", ranks: Sequence[int] = DEFAULT_RANKS,
                    chunk_size: int | None = None, per_query: bool = False,
                    method: str = "auto", precision: str = "float64") -> Metrics:
    """CMC / mAP / mINP from a distance matrix or from features (distances per chunk).

    ``exclusion`` removes gallery items per query (see :class:`ExclusionRule`);
    ``cmc`` is ``"image"`` (standard) or ``"identity"`` (ids de-duplicated in the ranked
    list, first occurrence kept, as SYSU-MM01). Memory is bounded by ``chunk_size``
    queries × gallery. ``method`` ("auto", "count", "sort") picks the ranking kernel;
    all give identical values. ``precision`` is that of distances computed from features
    (a given matrix is ranked in its own precision). Equal distances keep gallery order.
    """
    ranks = _check_ranks(cmc, ranks)
    qpid = np.asarray(query_ids, dtype=np.int64)
    gpid = np.asarray(gallery_ids, dtype=np.int64)
    nq, ng = len(qpid), len(gpid)
    rows_of = _distance_source(nq, ng, distances, query_features, gallery_features, metric, precision)
    qcols = {"pid": qpid, **({"cam": query_cams} if query_cams is not None else {}), **(query_keys or {})}
    gcols = {"pid": gpid, **({"cam": gallery_cams} if gallery_cams is not None else {}), **(gallery_keys or {})}
    qcodes, gcodes = exclusion.encode(qcols, gcols)
    pairs = _Pairs.of(qpid, gpid, exclusion, qcodes, gcodes)
    dense_clauses = [c for c in exclusion.clauses if "pid" not in c]  # others only remove same-id pairs
    valid = np.flatnonzero(pairs.count > 0)
    valid = valid[np.argsort(pairs.count[valid], kind="stable")]  # similar match counts share a chunk
    dedup = cmc == "identity"
    pid_codes = np.unique(gpid, return_inverse=True)[1] if dedup else None
    n_ids = int(pid_codes.max()) + 1 if dedup and ng else 0

    step = chunk_size or max(1, _CHUNK_ELEMENTS // max(1, ng))
    first, ap, inp = np.empty(len(valid), dtype=np.int64), np.empty(len(valid)), np.empty(len(valid))
    for c0 in range(0, len(valid), step):
        idx = valid[c0:c0 + step]
        m = pairs.count[idx]
        m_max = int(m.max())
        rows, pos, flat = _ragged(pairs.start[idx], m)
        r_rows, _, r_flat = _ragged(pairs.removed_start[idx], pairs.removed_count[idx])
        dense = exclusion.mask(qcodes, gcodes, idx, dense_clauses) if dense_clauses else None
        rk, block = _rank_chunk(rows_of(idx), (dense, r_rows, pairs.removed_gallery[r_flat]), rows,
                                pairs.gallery[flat], pos, m_max, dedup, method, ng)
        sl = slice(c0, c0 + len(idx))
        j = np.arange(1, m_max + 1)
        prec = np.where(j[None, :] <= m[:, None], j[None, :] / np.maximum(rk, 1), 0.0)
        ap[sl] = np.cumsum(prec, axis=1)[np.arange(len(idx)), m - 1] / m
        inp[sl] = m / rk[np.arange(len(idx)), m - 1]
        first[sl] = _first_identity_rank(block, pid_codes, n_ids) if dedup else rk[:, 0]
    per_q = None
    if per_query:
        per_q = np.full(nq, np.nan)
        per_q[valid] = ap
    order = np.argsort(valid)  # aggregate in query order, whatever the chunking
    return Metrics.from_per_query(first[order], ap[order], inp[order], nq, ranks, cmc, per_q, ng)
