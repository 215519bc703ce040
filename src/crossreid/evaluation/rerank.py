"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), sparse and chunked.

``k_reciprocal_rerank`` gives the same query × gallery distances as the dense algorithm
(``k_reciprocal_dense``, the widely copied reference code, kept here as the reference)
without ever holding a (Q+G)² matrix: the all-pairs distances are computed in row chunks
and only each row's top-(k1+1) neighbours and its maximum are kept; the encodings V are
sparse (a few hundred non-zeros per row) and the Jaccard distance is accumulated through
an inverted index over gallery rows. Memory is O((Q+G)·k1²) plus the Q × G result.

Re-ranking assumes several gallery images per identity: it rewards galleries whose
neighbours are mutual neighbours of the query. Single-shot galleries (one image per
identity, e.g. SYSU-MM01's official protocol) leave it little to work with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp
import torch

from crossreid.errors import UserError
from crossreid.evaluation.distance import check_metric, pairwise_distance


@dataclass(frozen=True)
class Rerank:
    """Re-ranking settings; ``describe()`` is what results files record."""

    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3

    def __post_init__(self) -> None:
        if self.k1 < 1 or self.k2 < 1:
            raise UserError(f"re-ranking k1={self.k1}, k2={self.k2}: both must be >= 1 (Zhong et al.: k1=20, k2=6)")
        if not 0.0 <= self.lambda_value <= 1.0:
            raise UserError(f"re-ranking lambda={self.lambda_value}: must lie in [0, 1] (Zhong et al.: 0.3)")

    @classmethod
    def from_options(cls, options: dict) -> Rerank:
        """From ``k1=..., k2=..., lambda=...`` (CLI ``--rerank-option``); unknown keys are errors."""
        known = {"k1": "k1", "k2": "k2", "lambda": "lambda_value", "lambda_value": "lambda_value"}
        bad = [k for k in options if k not in known]
        if bad:
            raise UserError(f"re-ranking option {bad[0]!r} unknown; use k1, k2 or lambda")
        try:
            return cls(**{known[k]: (float(v) if known[k] == "lambda_value" else int(v)) for k, v in options.items()})
        except (TypeError, ValueError) as exc:
            raise UserError(f"re-ranking options {options}: {exc}") from None

    def describe(self) -> dict:
        return {"method": "k-reciprocal (Zhong et al. 2017)", **asdict(self)}

    def __call__(self, query, gallery, metric: str = "euclidean") -> np.ndarray:
        return k_reciprocal_rerank(query, gallery, self.k1, self.k2, self.lambda_value, metric)


def _all_features(query, gallery) -> torch.Tensor:
    q = torch.as_tensor(np.asarray(query, dtype=np.float32))
    g = torch.as_tensor(np.asarray(gallery, dtype=np.float32))
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"query {tuple(q.shape)} and gallery {tuple(g.shape)} features must be 2-D with equal dims")
    return torch.cat([q, g])


def _sq_distances(x: torch.Tensor, metric: str):
    """A function ``(s, e, t, f)`` → squared distances of rows s:e of ``x`` to rows t:f (the squares
    of :class:`~crossreid.evaluation.distance.GalleryDistance`'s values, without the square root)."""
    n = len(x)
    if metric == "cosine":
        xn = torch.nn.functional.normalize(x, dim=1)
        xt = xn.t().contiguous()
        return lambda s, e, t=0, f=n: (1.0 - xn[s:e] @ xt[:, t:f]).square_()
    sq = (x * x).sum(dim=1)
    xt = x.t().contiguous()
    return lambda s, e, t=0, f=n: (torch.addmm(sq[None, t:f], x[s:e], xt[:, t:f], alpha=-2.0)
                                   .add_(sq[s:e, None]).clamp_(min=0.0))


def _neighbours(x: torch.Tensor, k: int, metric: str, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k nearest rows (ascending squared distance) and each column's largest
    squared distance (the dense code normalises by column)."""
    n = len(x)
    k = min(k, n)
    sq_dist = _sq_distances(x, metric)
    idx = np.empty((n, k), dtype=np.int64)
    col_max = torch.full((n,), -np.inf)
    for s in range(0, n, chunk):
        d2 = sq_dist(s, min(n, s + chunk))
        col_max = torch.maximum(col_max, d2.max(dim=0).values)
        idx[s:s + chunk] = torch.topk(d2, k, dim=1, largest=False, sorted=True).indices.numpy()
    return idx, col_max.numpy().astype(np.float64)


def _reciprocal(rank: np.ndarray, k: int) -> np.ndarray:
    """Padded (-1) k-reciprocal neighbours of every row, in forward order: j in the first k+1
    neighbours of i whose own first k+1 neighbours contain i."""
    fwd = rank[:, :k + 1]
    back = rank[fwd][:, :, :k + 1]                              # n × (k+1) × (k+1)
    mutual = (back == np.arange(len(rank))[:, None, None]).any(axis=2)
    return np.where(mutual, fwd, -1)


def _expansions(rank: np.ndarray, k1: int, chunk: int = 2048) -> list[np.ndarray]:
    """R*(i): R(i, k1) plus every R(j, k1/2), j in R(i, k1), sharing more than 2/3 of it with R(i, k1)."""
    kr = _reciprocal(rank, k1)
    half = _reciprocal(rank, int(np.around(k1 / 2.0)))
    half_len = (half >= 0).sum(axis=1)
    out = []
    for s in range(0, len(rank), chunk):
        r = kr[s:s + chunk]                                   # c × a
        cand = half[np.where(r >= 0, r, 0)]                   # c × a × b
        inside = ((cand[..., None] == r[:, None, None, :]) & (cand[..., None] >= 0)).any(axis=3).sum(axis=2)
        take = (r >= 0) & (inside > 2.0 / 3.0 * half_len[np.where(r >= 0, r, 0)])
        added = np.where(take[..., None], cand, -1).reshape(len(r), -1)
        rows = np.sort(np.concatenate([r, added], axis=1), axis=1)
        first = np.ones_like(rows, dtype=bool)
        first[:, 1:] = rows[:, 1:] != rows[:, :-1]
        keep = first & (rows >= 0)
        out.extend(row[m] for row, m in zip(rows, keep))
    return out


def _pair_sq_distances(x: torch.Tensor, rows: np.ndarray, cols: np.ndarray, metric: str,
                       chunk: int = 1 << 15) -> np.ndarray:
    """Squared distances of the pairs (rows[i], cols[i]), as ``GalleryDistance`` computes them."""
    out = np.empty(len(rows), dtype=np.float64)
    xn = torch.nn.functional.normalize(x, dim=1) if metric == "cosine" else x
    sq = (xn * xn).sum(dim=1)
    for s in range(0, len(rows), chunk):
        a = torch.from_numpy(rows[s:s + chunk])
        b = torch.from_numpy(cols[s:s + chunk])
        dot = (xn[a] * xn[b]).sum(dim=1)
        if metric == "cosine":
            out[s:s + chunk] = (1.0 - dot).square().numpy()
        else:
            out[s:s + chunk] = (sq[a] + sq[b] - 2.0 * dot).clamp(min=0).numpy()
    return out


def _encodings(x: torch.Tensor, rank: np.ndarray, col_max: np.ndarray, k1: int, k2: int, metric: str) -> sp.csr_matrix:
    """Sparse V (n × n): exp(-d) weights over each row's expanded set, then averaged over its k2 neighbours."""
    n = len(x)
    members = _expansions(rank, k1)
    counts = np.fromiter((len(m) for m in members), dtype=np.int64, count=n)
    rows = np.repeat(np.arange(n), counts)
    cols = np.concatenate(members) if n else np.empty(0, dtype=np.int64)
    # The dense code reads original_dist[i, e] = d(e, i)^2 / max over column i.
    d = _pair_sq_distances(x, cols, rows, metric) / col_max[rows]
    w = np.exp(-d)
    w /= np.bincount(rows, weights=w, minlength=n)[rows]
    v = sp.csr_matrix((w, (rows, cols)), shape=(n, n))
    if k2 != 1:
        k = min(k2, rank.shape[1])
        avg = sp.csr_matrix((np.full(n * k, 1.0 / k), (np.repeat(np.arange(n), k), rank[:, :k].ravel())), shape=(n, n))
        v = (avg @ v).tocsr()
    v.eliminate_zeros()
    return v


def _jaccard(v: sp.csr_matrix, nq: int, chunk: int) -> np.ndarray:
    """1 - S/(2 - S), S[i, g] = sum_k min(V[i, k], V[g, k]), for queries i < nq and gallery rows g >= nq."""
    n = v.shape[0]
    ng = n - nq
    inv = v[nq:].tocsc()                                  # column k -> gallery rows with V[g, k] != 0
    inv.sort_indices()
    out = np.empty((nq, ng), dtype=np.float32)
    for s in range(0, nq, chunk):
        block = v[s:min(s + chunk, nq)].tocoo()
        starts, ends = inv.indptr[block.col], inv.indptr[block.col + 1]
        lens = ends - starts
        total = int(lens.sum())
        owner = np.repeat(np.arange(len(lens)), lens)
        pos = np.arange(total) - np.repeat(np.cumsum(lens) - lens, lens) + np.repeat(starts, lens)
        mins = np.minimum(block.data[owner], inv.data[pos])
        flat = block.row[owner].astype(np.int64) * ng + inv.indices[pos]
        rows = min(chunk, nq - s)
        acc = np.bincount(flat, weights=mins, minlength=rows * ng).reshape(rows, ng)
        out[s:s + rows] = 1.0 - acc / (2.0 - acc)
    return out


def k_reciprocal_rerank(query, gallery, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
                        metric: str = "euclidean", chunk: int = 1024) -> np.ndarray:
    """Re-ranked ``[Q, G]`` float32 distances of Zhong et al. 2017 from query and gallery features.

    Equal (to float rounding) to :func:`k_reciprocal_dense` on the same features; memory
    is O((Q+G)·k1²) plus the result, never (Q+G)².
    """
    check_metric(metric)  # any other name would silently score as Euclidean below
    x = _all_features(query, gallery)
    nq, n = len(query), len(x)
    if nq == 0 or n == nq:
        return np.zeros((nq, n - nq), dtype=np.float32)
    rank, col_max = _neighbours(x, max(k1 + 1, k2), metric, chunk)
    col_max = np.where(col_max > 0, col_max, 1.0)
    v = _encodings(x, rank, col_max, k1, k2, metric)
    out = _jaccard(v, nq, max(1, (64 << 20) // (8 * max(1, n - nq))))
    out *= 1.0 - lambda_value
    sq_dist = _sq_distances(x, metric)
    for s in range(0, nq, chunk):  # one Q × G buffer: the original term is added chunk by chunk
        e = min(s + chunk, nq)
        # original_dist[i, g] = d(g, i)^2 / max over column i
        out[s:e] += (lambda_value * sq_dist(s, e)[:, nq:].numpy() / col_max[s:e, None]).astype(np.float32)
    return out


def k_reciprocal_dense(query, gallery, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
                       metric: str = "euclidean") -> np.ndarray:
    """The dense reference algorithm (the re-ranking code shipped with Zhong et al. and copied
    by most re-ID toolkits), on full (Q+G)² matrices. For tests and benchmarks only."""
    q, g = np.asarray(query, np.float32), np.asarray(gallery, np.float32)
    q_g = pairwise_distance(q, g, metric)
    q_q = pairwise_distance(q, q, metric)
    g_g = pairwise_distance(g, g, metric)
    original_dist = np.concatenate([np.concatenate([q_q, q_g], axis=1),
                                    np.concatenate([q_g.T, g_g], axis=1)], axis=0)
    original_dist = np.power(original_dist, 2).astype(np.float32)
    original_dist = np.transpose(1.0 * original_dist / np.max(original_dist, axis=0))
    V = np.zeros_like(original_dist).astype(np.float32)
    initial_rank = np.argsort(original_dist).astype(np.int32)
    query_num = q_g.shape[0]
    all_num = original_dist.shape[0]
    for i in range(all_num):
        forward = initial_rank[i, :k1 + 1]
        backward = initial_rank[forward, :k1 + 1]
        k_reciprocal_index = forward[np.where(backward == i)[0]]
        expansion = k_reciprocal_index
        half = int(np.around(k1 / 2.0))
        for candidate in k_reciprocal_index:
            c_forward = initial_rank[candidate, :half + 1]
            c_backward = initial_rank[c_forward, :half + 1]
            c_reciprocal = c_forward[np.where(c_backward == candidate)[0]]
            if len(np.intersect1d(c_reciprocal, k_reciprocal_index)) > 2.0 / 3 * len(c_reciprocal):
                expansion = np.append(expansion, c_reciprocal)
        expansion = np.unique(expansion)
        weight = np.exp(-original_dist[i, expansion])
        V[i, expansion] = 1.0 * weight / np.sum(weight)
    original_dist = original_dist[:query_num, ]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float32)
        for i in range(all_num):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe
    inv_index = [np.where(V[:, i] != 0)[0] for i in range(all_num)]
    jaccard_dist = np.zeros_like(original_dist, dtype=np.float32)
    for i in range(query_num):
        temp_min = np.zeros(shape=[1, all_num], dtype=np.float32)
        nonzero = np.where(V[i, :] != 0)[0]
        for j in nonzero:
            temp_min[0, inv_index[j]] += np.minimum(V[i, j], V[inv_index[j], j])
        jaccard_dist[i] = 1 - temp_min / (2.0 - temp_min)
    final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
    return final_dist[:query_num, query_num:]
