"""Query × gallery distances (Euclidean or cosine), float64 by default, optionally in query chunks.

``precision="float64"`` (the default) ranks exactly as the official float64 evaluation
codes do; ``"float32"`` halves time and memory for huge galleries but can flip near-ties
(see docs/evaluation.md, "Precision").
"""

from __future__ import annotations

import numpy as np
import torch

Array = np.ndarray | torch.Tensor
METRICS = ("euclidean", "cosine")
PRECISIONS = {"float64": torch.float64, "float32": torch.float32}


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"unknown distance {metric!r}; use one of: {', '.join(METRICS)}")
    return metric


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of: {', '.join(PRECISIONS)}")
    return precision


def _as_tensor(x: Array, dtype: torch.dtype) -> torch.Tensor:
    """``x`` as a 2-D tensor of ``dtype``; evaluation and search take no gradients, so a tensor
    straight from a model is detached (the few-query path computes in numpy)."""
    t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    if t.ndim != 2:
        raise ValueError(f"features must be 2-D (rows × dims), got shape {tuple(t.shape)}")
    return t.to(dtype)


class GalleryDistance:
    """Distances from any query rows to one fixed gallery: the one distance code of evaluation and search.

    Euclidean is ``sqrt(max(|q|² + (|g|² − 2 q·g), 0))``; cosine is ``1 − q̂·g / |g|`` (``q̂``:
    the L2-normalised query). Only the gallery-dependent part, :meth:`scores`, orders a query's
    gallery, so search keeps the top-K of it block by block and finishes (:meth:`finish`) just
    those; ``__call__`` gives full rows. The per-row gallery terms (``|g|²``, ``1 / |g|``) are computed
    once. ``convert``: hold the whole gallery in the computing precision (default); ``False``
    converts block by block when it is stored otherwise (a float16 search index stays float16).
    """

    def __init__(self, gallery: Array, metric: str = "euclidean", precision: str = "float64",
                 block_rows: int = 1 << 16, convert: bool = True):
        self.metric = check_metric(metric)
        self.dtype = PRECISIONS[check_precision(precision)]
        self.block_rows = block_rows
        self.gallery = _as_tensor(gallery, self.dtype) if convert or isinstance(gallery, torch.Tensor) else gallery
        if np.ndim(self.gallery) != 2:
            raise ValueError(f"features must be 2-D (rows × dims), got shape {tuple(np.shape(self.gallery))}")
        self.dim = self.gallery.shape[1]
        terms = []
        for s in range(0, len(self.gallery), block_rows):
            g = self.block(s, s + block_rows)
            sq = torch.einsum("ij,ij->i", g, g)
            terms.append(sq if self.metric == "euclidean" else 1.0 / sq.sqrt().clamp(min=1e-12))
        self.terms = torch.cat(terms) if terms else torch.empty(0, dtype=self.dtype)

    def __len__(self) -> int:
        return len(self.gallery)

    def block(self, start: int, stop: int) -> torch.Tensor:
        """Gallery rows ``[start, stop)`` in the computing precision."""
        g = self.gallery[start:stop]
        return g.to(self.dtype) if isinstance(g, torch.Tensor) else _as_tensor(g, self.dtype)

    def queries(self, query: Array) -> torch.Tensor:
        """Query rows as :meth:`scores` takes them (computing precision, normalised for cosine)."""
        q = _as_tensor(query, self.dtype).to(self.terms.device)
        if q.shape[1] != self.dim:
            raise ValueError(f"query features have {q.shape[1]} dims, gallery {self.dim}")
        return torch.nn.functional.normalize(q, dim=1) if self.metric == "cosine" else q

    def scores(self, q: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """``|g|² − 2 q·g`` (Euclidean) or ``−q̂·g / |g|`` (cosine) of prepared queries ``q``
        against gallery rows ``[start, stop)``: a query's gallery in distance order."""
        stop = len(self) if stop is None else stop
        g, term = self.block(start, stop), self.terms[start:stop]
        if self.metric == "euclidean" and (len(q) >= 32 or q.device.type != "cpu"):
            return torch.addmm(term[None, :], q, g.T, alpha=-2.0)
        score = q @ g.T
        # Few queries on the CPU: the element-wise rest in numpy, in place, which spawns no
        # threads (torch's thread pool stalls on small operations when the cores are shared).
        out, t = (score.numpy(), term.numpy()[None, :]) if score.device.type == "cpu" else (score, term[None, :])
        if self.metric == "euclidean":
            out *= -2.0
            out += t
        else:
            out *= -t
        return score

    def finish(self, q: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Distances from the :meth:`scores` of prepared queries ``q`` (any subset of columns)."""
        if self.metric == "cosine":
            return scores.add_(1.0)
        return scores.add_((q * q).sum(dim=1, keepdim=True)).clamp_(min=0.0).sqrt_()

    def __call__(self, query: Array) -> torch.Tensor:
        q = self.queries(query)
        return self.finish(q, self.scores(q))


def pairwise_distance(query: Array, gallery: Array, metric: str = "euclidean",
                      chunk_size: int | None = None, precision: str = "float32") -> Array:
    """``[len(query), len(gallery)]`` distances; torch in → torch out, else numpy.

    Euclidean uses ``sqrt(max(|q|² + (|g|² − 2 q·g), 0))``; cosine is ``1 − q̂·ĝ`` (rows
    L2-normalised). ``chunk_size`` bounds the rows computed at once. ``precision``
    defaults to float32 here (a plain distance matrix); protocol scoring computes in
    float64 unless told otherwise.
    """
    dist = GalleryDistance(gallery, metric, precision)
    n = len(query)
    step = max(1, int(chunk_size or n))
    parts = [dist(query[i:i + step]) for i in range(0, n, step)] or [dist(query[:0])]
    out = torch.cat(parts, dim=0)
    return out if isinstance(query, torch.Tensor) else out.numpy()
