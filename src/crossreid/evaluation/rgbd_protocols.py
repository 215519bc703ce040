"""RGB-D protocol of Hafner et al. (methods.md §3.7, datasets.md §6), as the paper states it.

Each of ``repeats`` repetitions r draws, with ``numpy.random.default_rng([seed, r])``:
at most ``max_per_id`` query images per test identity (query modality) and at most
``max_per_id`` gallery images per identity (gallery modality), for mAP / mINP; and one
gallery image per identity for single-gallery-shot CMC (rank-k), scored on the same
queries. The single-shot image of an identity is drawn among the images that the exclusion
rule leaves to every drawn query of that identity (for ``exclude=frame``: any image but the
co-registered pairs of those queries); when there is none (possible with ``sequence`` or
``camera``) it is drawn among all, and the queries that lose it are invalid in that repeat.
Image-level CMC. Repetition r reports rank-k of its single-shot trial and mAP / mINP (and
query counts) of its ≤ ``max_per_id`` trial; mean ± std are over repetitions.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from crossreid.data.samples import Catalog
from crossreid.evaluation.gallery_draws import draw_per_id
from crossreid.evaluation.metrics import SAME_CAMERA, SAME_FRAME, SAME_ID_AND_SEQUENCE, ExclusionRule, Metrics
from crossreid.evaluation.protocols import Protocol, Trial, int_option, option_in, register_protocol, sample_columns
from crossreid.modality import Modality

RULES = {"frame": SAME_FRAME, "sequence": SAME_ID_AND_SEQUENCE, "camera": SAME_CAMERA}
DIRECTIONS = ((Modality.RGB, Modality.DEPTH), (Modality.DEPTH, Modality.RGB))


def allowed_for_all(rule: ExclusionRule, catalog: Catalog, query: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Flags over ``gallery``: no query of the same identity has the item removed by ``rule``."""
    q = sample_columns([catalog.query[i] for i in query])
    g = sample_columns([catalog.gallery[i] for i in gallery])
    qcodes, gcodes = rule.encode(q, g)
    removed = rule.mask(qcodes, gcodes, np.arange(len(query)))
    if removed is None:
        return np.ones(len(gallery), dtype=bool)
    same_id = q["pid"][:, None] == g["pid"][None, :]
    return ~(removed & same_id).any(axis=0)


@register_protocol("rgbd")
class RGBDProtocol(Protocol):
    """``query``/``gallery`` modality (rgb, depth); ``exclude`` frame (default), sequence or camera."""

    directions = DIRECTIONS
    fix = "load it with an RGB-D dataset (biwi, robotpku) whose pools hold both modalities"

    def __init__(self, query: str = "rgb", gallery: str = "depth", exclude: str = "frame", repeats: int = 10,
                 max_per_id: int = 20, seed: int = 0, distance: str = "euclidean", precision: str = "float64"):
        self.set_common(query, gallery, distance, precision, "image")
        self.exclude = option_in(exclude, tuple(RULES), self.name, "exclude")
        self.exclusion = RULES[self.exclude]
        self.num_trials = int_option(repeats, self.name, "repeats", 1)
        self.max_per_id = int_option(max_per_id, self.name, "max_per_id", 1)
        self.seed = int_option(seed, self.name, "seed", 0)
        self.shots = f"1 per id (CMC); at most {self.max_per_id} per id (mAP)"
        self.sampling = (f"numpy default_rng([seed, r]), r=0..{self.num_trials - 1}: at most {self.max_per_id} "
                         "query and gallery images per id, one single-shot gallery image per id")

    def trials(self, catalog: Catalog) -> list[Trial]:
        query, gallery = self.pools(catalog)
        qpids = np.array([catalog.query[i].pid for i in query])
        gpids = np.array([catalog.gallery[i].pid for i in gallery])
        out = []
        for r in range(self.num_trials):
            rng = np.random.default_rng([self.seed, r])
            q = draw_per_id(rng, qpids, query, self.max_per_id)
            g = draw_per_id(rng, gpids, gallery, self.max_per_id)
            ok = allowed_for_all(self.exclusion, catalog, q, gallery)
            single = [rng.choice(gallery[(gpids == p) & ok] if ((gpids == p) & ok).any() else gallery[gpids == p])
                      for p in np.unique(gpids)]
            out += [Trial(q, np.array(single, dtype=np.int64), self.exclusion, self.cmc),
                    Trial(q, g, self.exclusion, self.cmc)]
        return out

    def aggregate(self, per_trial: list[Metrics]) -> list[Metrics]:
        """Pair (single-shot, ≤ max_per_id) trials: rank-k (and the gallery it ranked) of the first,
        mAP / mINP of the second."""
        return [dataclasses.replace(full, cmc=single.cmc, num_gallery=single.num_gallery,
                                    chance_rank1=single.chance_rank1, deepest_rank=single.deepest_rank)
                for single, full in zip(per_trial[::2], per_trial[1::2])]

    def extra(self) -> dict[str, Any]:
        return {"exclude": self.exclude, "max_per_id": self.max_per_id, "seed": self.seed}
