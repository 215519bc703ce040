"""LLCM protocol (datasets.md §3.4-3.6), DEEN-compatible.

The query is every test image of the query modality; the gallery of trial t = 0..9 is the
DEEN draw: ``random.seed(t)``, then per test id (sorted) and per camera of the gallery
modality (VIS cam1..9, NIR cam1, 2, 4..9) one ``random.choice`` over the sorted folder.
Gallery items with the query's id and camera number are removed (a VIS and a NIR camera with
one number are one physical camera); CMC is identity-level.

``deen_compat=True`` with ``direction="rgb->ir"`` reproduces DEEN's ``test_mode=[2,1]``,
which transposes the distances: the scored probes are the sampled NIR images and the gallery
is every VIS image (its numbers are not VIS→IR in the natural sense). ``gallery_draw="full"`` is a
separate, non-official mode: one trial, the whole test set of the gallery modality.

``llcm_idkl`` is IDKL's released LLCM test (``utils/eval_llcm.py``), which its published LLCM
figures come from: one pass over the whole test set of the gallery modality, identity-level
CMC, mAP on the full list, and no gallery item removed. Its filter drops gallery items whose
camera id equals the query's, of any identity, but its loader gives every visible image camera
2 and every infrared image camera 3 (``LLCMData``), so across modalities the filter never fires.
"""

from __future__ import annotations

from typing import Any

from crossreid.data.samples import Catalog
from crossreid.errors import UserError
from crossreid.evaluation.gallery_draws import python_random_gallery
from crossreid.evaluation.metrics import NO_EXCLUSION, SAME_ID_AND_CAMERA
from crossreid.evaluation.protocols import Protocol, Trial, bool_option, legacy_direction, option_in, register_protocol
from crossreid.modality import Modality

CAMERAS = {Modality.RGB: (1, 2, 3, 4, 5, 6, 7, 8, 9), Modality.IR: (1, 2, 4, 5, 6, 7, 8, 9)}
DIRECTIONS = ((Modality.IR, Modality.RGB), (Modality.RGB, Modality.IR))
TRIALS = 10


@register_protocol("llcm")
class LLCMProtocol(Protocol):
    """``query``/``gallery`` ir->rgb (default) or rgb->ir (also spelt ``direction="rgb->ir"``);
    ``gallery_draw`` ``sampled`` (official) or ``full``."""

    directions = DIRECTIONS
    exclusion = SAME_ID_AND_CAMERA
    fix = "load it with the llcm dataset (query and gallery pools hold both modalities)"

    def __init__(self, query: str | None = None, gallery: str | None = None, direction: str | None = None,
                 gallery_draw: str = "sampled", deen_compat: bool = False, distance: str = "euclidean",
                 precision: str = "float64"):
        if gallery in ("sampled", "full"):  # the older name of gallery_draw
            gallery_draw, gallery = gallery, None
        self.set_common(*legacy_direction(direction, query, gallery, self.name), distance, precision, "identity")
        self.gallery = option_in(gallery_draw, ("sampled", "full"), self.name, "gallery_draw")
        self.deen_compat = bool_option(deen_compat, self.name, "deen_compat")
        if self.deen_compat and self.gallery == "full":
            raise UserError("protocol 'llcm': deen_compat=true reproduces DEEN's sampled galleries; "
                            "drop it or use gallery_draw=sampled")
        self.transposed = self.deen_compat and self.query_modality is Modality.RGB
        if self.transposed:
            self.direction += " (deen_compat: sampled ir probes vs all rgb)"
        self.num_trials = TRIALS if self.gallery == "sampled" else 1
        self.shots = 1 if self.gallery == "sampled" else "all"
        self.sampling = ("none: full gallery (not the official protocol)" if self.gallery == "full" else
                         "python random.seed(t), t=0..9; one random.choice per (id, cam), DEEN call order")

    def trials(self, catalog: Catalog) -> list[Trial]:
        query, gallery = self.pools(catalog)
        if self.gallery == "full":
            return [Trial(query, gallery, self.exclusion, self.cmc)]
        if self.transposed:
            nir, vis = self.pool(catalog, "query", Modality.IR), self.pool(catalog, "gallery", Modality.RGB)
            return [Trial(python_random_gallery(catalog.query, nir, CAMERAS[Modality.IR], seed=t), vis,
                          self.exclusion, self.cmc) for t in range(TRIALS)]
        cams = CAMERAS[self.gallery_modality]
        return [Trial(query, python_random_gallery(catalog.gallery, gallery, cams, seed=t), self.exclusion, self.cmc)
                for t in range(TRIALS)]

    def extra(self) -> dict[str, Any]:
        return {"gallery": self.gallery, "deen_compat": self.deen_compat}


@register_protocol("llcm_idkl")
class LLCMIDKLProtocol(Protocol):
    """IDKL's released LLCM test: ``query``/``gallery`` ir->rgb (default) or rgb->ir; one trial,
    the whole test set of the gallery modality, nothing removed (see the module docstring)."""

    directions = DIRECTIONS
    exclusion = NO_EXCLUSION
    sampling = ("none: the whole test set in one pass (IDKL's released LLCM test; its same-camera filter "
                "compares modality flags and removes nothing across modalities)")
    fix = "load it with the llcm dataset (query and gallery pools hold both modalities)"

    def __init__(self, query: str | None = None, gallery: str | None = None, distance: str = "euclidean",
                 precision: str = "float64"):
        self.set_common(query, gallery, distance, precision, "identity")

    def trials(self, catalog: Catalog) -> list[Trial]:
        query, gallery = self.pools(catalog)
        return [Trial(query, gallery, self.exclusion, self.cmc)]
