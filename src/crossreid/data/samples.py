"""The data model every loader produces and every protocol and sampler consumes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crossreid.errors import UserError
from crossreid.modality import Modality


@dataclass(frozen=True)
class Sample:
    """One image.

    ``frame`` identifies a time step: co-registered images of different modalities
    (an RGB frame and its depth frame) share it. ``sequence`` groups frames of one
    recording. Both are optional (``None`` where a dataset has no such notion).
    ``source`` says where the image is listed (``FILE:LINE`` of an index file or
    manifest) when it is, so problems with it can name the line; it takes no part in
    comparisons.
    """

    path: Path
    pid: int
    cam: int
    modality: Modality
    frame: str | None = None
    sequence: str | None = None
    source: str | None = field(default=None, compare=False, repr=False)


@dataclass
class Catalog:
    """The samples of one dataset split into pools.

    ``train`` feeds training; ``val`` (drawn from training identities, never test)
    feeds model selection; ``query`` and ``gallery`` feed protocols. Training labels
    are mapped explicitly from the sorted training person ids. ``name`` is the dataset's
    registered name: ``load_dataset`` sets it, loaders leave it out.
    """

    root: Path
    train: list[Sample] = field(default_factory=list)
    val: list[Sample] = field(default_factory=list)
    query: list[Sample] = field(default_factory=list)
    gallery: list[Sample] = field(default_factory=list)
    name: str = field(default="", kw_only=True)

    @property
    def modalities(self) -> list[Modality]:
        seen = {s.modality for pool in (self.train, self.val, self.query, self.gallery) for s in pool}
        return [m for m in Modality if m in seen]

    @property
    def train_pids(self) -> list[int]:
        return sorted({s.pid for s in self.train})

    @property
    def label_map(self) -> dict[int, int]:
        """Training person id -> class label 0..C-1, in ascending person-id order."""
        return {pid: i for i, pid in enumerate(self.train_pids)}

    @property
    def num_classes(self) -> int:
        return len(self.train_pids)

    def pool(self, name: str) -> list[Sample]:
        if name not in ("train", "val", "query", "gallery"):
            raise ValueError(f"unknown pool {name!r}")
        return getattr(self, name)

    def summary(self) -> dict[str, dict[str, int]]:
        """Images per pool and modality, plus identity counts."""
        out: dict[str, dict[str, int]] = {}
        for name in ("train", "val", "query", "gallery"):
            samples = self.pool(name)
            counts = Counter(str(s.modality) for s in samples)
            out[name] = {"images": len(samples), "ids": len({s.pid for s in samples}), **counts}
        return out

    def require_modalities(self, needed: Iterable[Modality], what: str) -> None:
        missing = [m for m in needed if m not in self.modalities]
        if missing:
            names = ", ".join(str(m) for m in missing)
            raise UserError(
                f"dataset {self.name!r} at {self.root} has no {names} images, which {what} needs; "
                "choose a dataset with those modalities or change the method/protocol")


def sample_arrays(samples: Sequence[Sample]) -> dict[str, np.ndarray]:
    """Column arrays (pids, cams, modality codes) for vectorised protocol code."""
    return {
        "pids": np.fromiter((s.pid for s in samples), dtype=np.int64, count=len(samples)),
        "cams": np.fromiter((s.cam for s in samples), dtype=np.int64, count=len(samples)),
        "modalities": np.array([s.modality.value for s in samples], dtype=object),
        "frames": np.array([s.frame for s in samples], dtype=object),
        "sequences": np.array([s.sequence for s in samples], dtype=object),
    }
