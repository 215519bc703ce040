"""Helpers shared by the dataset protocols: pool selection, per-(id, camera) folders,
the AGW/DEEN gallery draw, and a base class whose ``describe()`` every protocol shares."""

from __future__ import annotations

import random
from typing import Any, Iterable, Sequence

import numpy as np

from crossreid.data.samples import Catalog, Sample
from crossreid.errors import UserError
from crossreid.evaluation.metrics import ExclusionRule, check_level
from crossreid.evaluation.protocols import Protocol
from crossreid.modality import Modality, parse_direction


def select(samples: Sequence[Sample], modality: Modality, cams: Iterable[int] | None = None) -> np.ndarray:
    """Indices of ``samples`` of ``modality`` (and, when given, one of ``cams``)."""
    keep = None if cams is None else set(cams)
    return np.array([i for i, s in enumerate(samples)
                     if s.modality == modality and (keep is None or s.cam in keep)], dtype=np.int64)


def require_nonempty(idx: np.ndarray, catalog: Catalog, what: str, fix: str) -> np.ndarray:
    if len(idx) == 0:
        raise UserError(f"dataset {catalog.name!r} at {catalog.root} has no {what}; {fix}")
    return idx


def folders(samples: Sequence[Sample], idx: Iterable[int]) -> dict[tuple[int, int], list[int]]:
    """``(pid, cam)`` -> indices of that folder's images, sorted by file name."""
    out: dict[tuple[int, int], list[int]] = {}
    for i in idx:
        out.setdefault((samples[i].pid, samples[i].cam), []).append(int(i))
    return {k: sorted(v, key=lambda i: samples[i].path.name) for k, v in out.items()}


def python_random_gallery(samples: Sequence[Sample], idx: Iterable[int], cams: Sequence[int], seed: int) -> np.ndarray:
    """AGW / DEEN draw: ``random.seed(seed)``, then for each id in sorted order and each camera
    of ``cams`` in list order whose folder exists, one ``random.choice`` over the sorted file list.

    A private ``random.Random`` gives the same sequence as the global generator after ``random.seed``.
    """
    groups = folders(samples, idx)
    rng = random.Random(seed)
    picked = [rng.choice(groups[(pid, cam)]) for pid in sorted({p for p, _ in groups})
              for cam in cams if (pid, cam) in groups]
    return np.array(picked, dtype=np.int64)


class DatasetProtocol(Protocol):
    """Common attributes of the dataset protocols and the ``describe()`` built from them.

    Subclasses set ``direction``, ``num_trials``, ``shots``, ``exclusion``, ``cmc``,
    ``sampling`` and may add fields with ``extra()``. Re-ranking is never applied.
    """

    direction: str = ""
    num_trials: int = 1
    shots: Any = "all"
    exclusion: ExclusionRule = ExclusionRule()
    cmc: str = "image"
    sampling: str = "none"

    def set_common(self, query: str | None, gallery: str | None, distance: str, precision: str, cmc: str) -> None:
        self.set_scoring(query, gallery, distance, precision)
        self.cmc = check_level(cmc)

    def extra(self) -> dict[str, Any]:
        return {}

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "direction": self.direction,
            "trials": self.num_trials,
            "shots": self.shots,
            "distance": self.distance,
            "precision": self.precision,
            "re_ranking": False,
            "cmc": self.cmc,
            "exclusion": self.exclusion.describe(),
            "sampling": self.sampling,
            **self.extra(),
        }


def option_in(value: Any, choices: Sequence[Any], protocol: str, option: str) -> Any:
    if value not in choices:
        raise UserError(f"protocol {protocol!r} option {option}={value!r} must be one of: "
                        f"{', '.join(map(str, choices))}")
    return value


def int_option(value: Any, protocol: str, option: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise UserError(f"protocol {protocol!r} option {option}={value!r} must be an integer ≥ {low}")
    return int(value)


def bool_option(value: Any, protocol: str, option: str) -> bool:
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise UserError(f"protocol {protocol!r} option {option}={value!r} must be true or false")
    return value


def legacy_direction(direction: str | None, query: str | None, gallery: str | None,
                     protocol: str) -> tuple[str | None, str | None]:
    """``direction="visible->thermal"`` (the older spelling of RegDB / LLCM) as query and gallery."""
    if direction is None:
        return query, gallery
    if query is not None or gallery is not None:
        raise UserError(f"protocol {protocol!r}: give either direction= or query= and gallery=, not both")
    q, g = parse_direction(direction, f"protocol {protocol!r} option direction")
    return str(q), str(g)
