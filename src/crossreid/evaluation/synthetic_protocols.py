"""The protocol of the synthetic data (docs/synthetic.md): one modality against another, same camera removed."""

from __future__ import annotations

from typing import Any

import numpy as np

from crossreid.data.samples import Catalog
from crossreid.errors import UserError
from crossreid.evaluation.gallery_draws import draw_per_id
from crossreid.evaluation.metrics import SAME_CAMERA
from crossreid.evaluation.protocols import Protocol, Trial, register_protocol


@register_protocol("synthetic")
class SyntheticProtocol(Protocol):
    """Query modality against gallery modality; same-camera gallery items are removed.

    RGB and depth of one RGB-D camera share the camera id, so a query never meets its
    own co-registered frame. Image-level CMC. One trial over the whole test set, or
    ``trials`` seeded draws of ``gallery_per_id`` gallery images per identity.
    """

    exclusion = SAME_CAMERA
    fix = "check the test split or choose other modalities"

    def __init__(self, query: str = "rgb", gallery: str = "depth", trials: int = 1,
                 gallery_per_id: int | None = None, seed: int = 0, distance: str = "euclidean",
                 precision: str = "float64"):
        self.set_common(query, gallery, distance, precision, "image")
        if int(trials) < 1:
            raise UserError(f"protocol option trials={trials} must be at least 1")
        if int(trials) > 1 and not gallery_per_id:
            raise UserError("protocol option trials > 1 needs gallery_per_id (images drawn per identity)")
        if gallery_per_id is not None and int(gallery_per_id) < 1:
            raise UserError(f"protocol option gallery_per_id={gallery_per_id} must be at least 1")
        self.num_trials = int(trials)
        self.gallery_per_id = int(gallery_per_id) if gallery_per_id else None
        self.seed = int(seed)
        self.shots = self.gallery_per_id or "all"
        if self.gallery_per_id:
            self.sampling = (f"numpy default_rng([seed, t]), t=0..{self.num_trials - 1}: at most "
                             f"{self.gallery_per_id} gallery images per id")

    def trials(self, catalog: Catalog) -> list[Trial]:
        query, gallery = self.pools(catalog)
        if self.gallery_per_id is None:
            return [Trial(query, gallery, self.exclusion, self.cmc)]
        pids = np.array([catalog.gallery[i].pid for i in gallery])
        return [Trial(query, draw_per_id(np.random.default_rng([self.seed, t]), pids, gallery, self.gallery_per_id),
                      self.exclusion, self.cmc) for t in range(self.num_trials)]

    def extra(self) -> dict[str, Any]:
        return {"seed": self.seed}
