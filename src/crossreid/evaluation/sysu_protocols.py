"""SYSU-MM01 protocols (datasets.md §1.5-1.6): IR queries (cams 3, 6) against an RGB gallery.

``sysu_mm01`` is the official MATLAB protocol, its galleries read from ``rand_perm_cam.mat``;
``sysu_mm01_agw`` reproduces the AGW baseline's Python ``random`` draw. Both remove every cam2
gallery image for cam3 queries (same location), de-duplicate identities in the CMC ranked
list and compute mAP / mINP on the full list, over 10 trials.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from crossreid.data.datasets.sysu_mm01 import read_rand_perm_cam
from crossreid.data.samples import Catalog
from crossreid.errors import UserError
from crossreid.evaluation.gallery_draws import folders, python_random_gallery
from crossreid.evaluation.metrics import SYSU_LOCATION
from crossreid.evaluation.protocols import Protocol, Setting, Trial, int_option, option_in, register_protocol
from crossreid.modality import Modality

MODES = {"all": (1, 2, 4, 5), "indoor": (1, 2)}
QUERY_CAMS = (3, 6)
TRIALS = 10
PERM_SOURCE = "https://github.com/wuancong/SYSU-MM01 (evaluation/data_split/rand_perm_cam.mat)"
MODE_NAMES = {"all": "all-search", "indoor": "indoor-search"}
SHOT_NAMES = {1: "single-shot", 10: "multi-shot"}


def settings(shots: tuple[int, ...]) -> tuple[Setting, ...]:
    """The table's rows: each search mode × each of ``shots`` (IR queries, visible gallery)."""
    return tuple(Setting(f"{MODE_NAMES[mode]} {SHOT_NAMES[n]}", Modality.IR, Modality.RGB,
                         (("mode", mode),) + ((("shots", n),) if len(shots) > 1 else ()))
                 for mode in MODES for n in shots)


class _SysuProtocol(Protocol):
    """Shared query set, camera lists and rules; subclasses draw the gallery of trial ``t``."""

    directions = ((Modality.IR, Modality.RGB),)
    num_trials = TRIALS
    exclusion = SYSU_LOCATION
    query_cams = QUERY_CAMS
    fix = "load it with the sysu_mm01 dataset (query = IR cams 3, 6; gallery = RGB cams 1, 2, 4, 5)"
    table_shots: tuple[int, ...] = (1,)  # the full table: each search mode x each of these

    @classmethod
    def table(cls) -> tuple[Setting, ...]:
        return settings(cls.table_shots)

    def __init__(self, mode: str, query: str | None, gallery: str | None, distance: str, precision: str):
        self.mode = option_in(mode, tuple(MODES), self.name, "mode")
        self.gallery_cams = MODES[self.mode]
        self.set_common(query, gallery, distance, precision, "identity")

    @abstractmethod
    def draw(self, catalog: Catalog, gallery: np.ndarray, trial: int) -> np.ndarray:
        """Gallery indices (into ``catalog.gallery``) of trial ``trial``, drawn from ``gallery``."""

    def trials(self, catalog: Catalog) -> list[Trial]:
        query, gallery = self.pools(catalog)
        return [Trial(query, self.draw(catalog, gallery, t), self.exclusion, self.cmc) for t in range(TRIALS)]

    def extra(self) -> dict[str, Any]:
        return {"mode": self.mode, "query_cams": list(QUERY_CAMS), "gallery_cams": list(self.gallery_cams)}


@register_protocol("sysu_mm01")
class SysuOfficial(_SysuProtocol):
    """Official protocol: trial t (0-based) takes, per gallery camera and test id, the folder
    positions ``rand_perm_cam{cam}{pid}(t+1, 1:shots)``; gallery order is (cam, pid, draw)."""

    table_shots = (1, 10)

    def __init__(self, mode: str = "all", shots: int = 1, perm_file: str | None = None, query: str | None = None,
                 gallery: str | None = None, distance: str = "euclidean", precision: str = "float64"):
        super().__init__(mode, query, gallery, distance, precision)
        self.shots = option_in(int_option(shots, self.name, "shots", 1), (1, 10), self.name, "shots")
        self.perm_file = None if perm_file is None else Path(perm_file)
        self._perms: dict[Path, dict] = {}

    def perm_path(self, catalog: Catalog) -> Path:
        path = self.perm_file or catalog.root / "exp" / "rand_perm_cam.mat"
        if not path.is_file():
            raise UserError(f"{path}: rand_perm_cam.mat not found; get it from {PERM_SOURCE} and put it there, "
                            "or pass --option perm_file=PATH")
        return path

    def draw(self, catalog: Catalog, gallery: np.ndarray, trial: int) -> np.ndarray:
        path = self.perm_path(catalog)
        if path not in self._perms:
            self._perms[path] = read_rand_perm_cam(path)
        perms = self._perms[path]
        groups = folders(catalog.gallery, gallery)
        picked: list[int] = []
        for cam in self.gallery_cams:
            for pid in sorted(p for p, c in groups if c == cam):
                members = groups[(pid, cam)]
                perm = perms.get((cam, pid))
                if perm is None or perm.shape[1] != len(members):
                    listed = "no entry" if perm is None else f"{perm.shape[1]} images"
                    raise UserError(f"{path}: lists {listed} for cam{cam}/{pid:04d}, which holds {len(members)}; "
                                    "use the official file with the unmodified SYSU-MM01 folders")
                at = {int(catalog.gallery[i].path.stem) - 1: i for i in members}
                picked.extend(at[int(k)] for k in perm[trial, :self.shots])
        return np.array(picked, dtype=np.int64)

    @property
    def sampling(self) -> str:  # type: ignore[override]
        where = self.perm_file or "<dataset root>/exp/rand_perm_cam.mat"
        return f"rand_perm_cam.mat ({where}): row t+1, first {self.shots} entries per (cam, id)"


@register_protocol("sysu_mm01_agw")
class SysuAGW(_SysuProtocol):
    """AGW-compatible single-shot galleries: ``random.seed(t)`` for t = 0..9, then per test id
    (sorted) and per gallery camera (list order) one ``random.choice`` over the sorted folder;
    gallery order is (id, cam) as drawn."""

    shots = 1

    def __init__(self, mode: str = "all", query: str | None = None, gallery: str | None = None,
                 distance: str = "euclidean", precision: str = "float64"):
        super().__init__(mode, query, gallery, distance, precision)
        self.sampling = "python random.seed(t), t=0..9; one random.choice per (id, cam), AGW call order"

    def draw(self, catalog: Catalog, gallery: np.ndarray, trial: int) -> np.ndarray:
        return python_random_gallery(catalog.gallery, gallery, self.gallery_cams, seed=trial)
