"""What a trial's gallery lets a ranking do: valid queries, chance R1 and the deepest real rank.

The exclusion rule leaves each query a kept gallery. :func:`gallery_reach` counts, per query,
its kept items, its kept true matches and the identities among its kept items; from those:

* a query is **valid** when it keeps at least one true match (others are not scored);
* **chance R1** is the expected rank-1 of a random ranking, averaged over valid queries:
  kept matches / kept items for image-level CMC, 1 / kept identities for identity-level CMC
  (where the ranked list holds each identity once);
* the **deepest rank** is the fewest items (identities, for identity-level CMC) that any valid
  query ranks. Beyond it some query's curve is 1 whatever the model does: a padded curve, not a
  result (a single-shot gallery of 16 identities has no R20).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from crossreid.evaluation.metrics import ExclusionRule

_CHUNK_ELEMENTS = 1 << 22  # query rows per chunk × gallery (or identity) columns


@dataclass(frozen=True)
class GalleryReach:
    """Per query: kept gallery items, kept true matches, kept identities."""

    kept: np.ndarray
    matches: np.ndarray
    kept_ids: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        return self.matches > 0

    def _ranked(self, cmc: str) -> np.ndarray:
        """What a valid query ranks: its kept items, or its kept identities (identity-level CMC)."""
        return (self.kept_ids if cmc == "identity" else self.kept)[self.valid]

    def chance_rank1(self, cmc: str) -> float:
        """Expected R1 of a random ranking over the valid queries (a fraction; NaN without any)."""
        if not self.valid.any():
            return float("nan")
        hits = 1.0 if cmc == "identity" else self.matches[self.valid]
        return float(np.mean(hits / self._ranked(cmc)))

    def deepest_rank(self, cmc: str) -> int:
        """The fewest items (identities, for identity-level CMC) a valid query ranks (0 without any)."""
        ranked = self._ranked(cmc)
        return int(ranked.min()) if len(ranked) else 0


def gallery_reach(query: Mapping[str, Sequence], gallery: Mapping[str, Sequence],
                  exclusion: ExclusionRule) -> GalleryReach:
    """Count each query's kept gallery under ``exclusion`` (columns as ``sample_columns`` gives them,
    ``pid`` plus the keys the rule uses), in chunks of queries so memory stays bounded."""
    qpid, gpid = np.asarray(query["pid"]), np.asarray(gallery["pid"])
    ids, gcode = np.unique(gpid, return_inverse=True)
    per_id = np.bincount(gcode, minlength=len(ids))
    qcodes, gcodes = exclusion.encode(query, gallery)
    nq, ng = len(qpid), len(gpid)
    kept, matches, kept_ids = (np.empty(nq, dtype=np.int64) for _ in range(3))
    step = max(1, _CHUNK_ELEMENTS // max(1, ng, len(ids)))
    for start in range(0, nq, step):
        rows = np.arange(start, min(nq, start + step))
        same = qpid[rows, None] == gpid[None, :]
        removed = exclusion.mask(qcodes, gcodes, rows) if exclusion.clauses else None
        if removed is None:
            kept[rows], matches[rows], kept_ids[rows] = ng, same.sum(1), len(ids)
            continue
        kept[rows] = ng - removed.sum(1)
        matches[rows] = (same & ~removed).sum(1)
        r, c = np.nonzero(removed)  # an identity is gone for a query when all its items are removed
        gone = np.bincount(r * len(ids) + gcode[c], minlength=len(rows) * len(ids)).reshape(len(rows), len(ids))
        kept_ids[rows] = len(ids) - (gone == per_id[None, :]).sum(1)
    return GalleryReach(kept, matches, kept_ids)
