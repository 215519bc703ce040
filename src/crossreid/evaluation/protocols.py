"""Protocols: how a Catalog becomes evaluation trials, registered by name.

A protocol names its query and gallery samples (indices into ``catalog.query`` and
``catalog.gallery``), the exclusion rule and the CMC level of each trial. Dataset
protocols (SYSU-MM01, RegDB, LLCM, RGB-D) register themselves with
:func:`register_protocol` without touching this module's core.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from crossreid.data.samples import Catalog, sample_arrays
from crossreid.errors import UserError
from crossreid.evaluation.distance import check_metric, check_precision
from crossreid.evaluation.metrics import SAME_CAMERA, ExclusionRule, Metrics, check_level, compute_metrics
from crossreid.evaluation.results import ProtocolResult
from crossreid.modality import Modality
from crossreid.registry import Registry


@dataclass(frozen=True)
class Trial:
    """One evaluation round: index arrays into the query and gallery pools."""

    query: np.ndarray
    gallery: np.ndarray
    exclusion: ExclusionRule
    cmc: str = "image"


Pair = tuple[Modality, Modality]


class Protocol(ABC):
    """Base class: subclasses set ``directions`` and implement ``trials`` and ``describe``; ``name``
    is the one ``@register_protocol`` registers them under.

    Every protocol takes the same direction and scoring options: ``query`` and ``gallery``
    (modalities; ``directions`` lists the pairs it supports, its first the default, ``None``
    any pair), ``distance`` (euclidean or cosine) and ``precision`` (float64, or float32 for
    huge galleries). Subclasses call :meth:`set_scoring` from ``__init__``.
    """

    name: str = ""  # set by @register_protocol
    directions: tuple[Pair, ...] | None = None
    distance: str = "euclidean"
    precision: str = "float64"
    query_modality: Modality = Modality.RGB
    gallery_modality: Modality = Modality.DEPTH
    options: dict[str, Any] = {}  # the options it was built with (set by get_protocol)

    def set_scoring(self, query: str | None, gallery: str | None, distance: str, precision: str) -> None:
        """Check and set the direction (``None``: the protocol's default side), distance and precision."""
        default = self.directions[0] if self.directions else (Modality.RGB, Modality.DEPTH)
        pair = (Modality.parse(query) if query is not None else default[0],
                Modality.parse(gallery) if gallery is not None else default[1])
        if self.directions is not None and pair not in self.directions:
            names = ", ".join(f"{q}->{g}" for q, g in self.directions)
            raise UserError(f"protocol {self.name!r} does not score {pair[0]}->{pair[1]}; it supports {names} "
                            "(set query= and gallery= to one of them, or choose another protocol)")
        self.query_modality, self.gallery_modality = pair
        for option, value, check in (("distance", distance, check_metric), ("precision", precision, check_precision)):
            try:
                setattr(self, option, check(value))
            except ValueError as exc:
                raise UserError(f"protocol {self.name!r} option {option}: {exc}") from None

    @abstractmethod
    def trials(self, catalog: Catalog) -> list[Trial]:
        """The trials of this protocol on ``catalog`` (deterministic for given options)."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """name, direction, trials, shots, distance, precision, re_ranking, cmc, exclusion (JSON-ready)."""

    def aggregate(self, per_trial: list[Metrics]) -> list[Metrics]:
        """The reported trials' metrics from those of ``trials()`` (default: unchanged)."""
        return per_trial


PROTOCOLS: Registry[Callable[..., Protocol]] = Registry("protocol")


def register_protocol(name: str) -> Callable:
    """Decorator of a Protocol subclass (or factory). Built-in protocol modules are imported by
    ``crossreid.evaluation``'s ``__init__``."""
    return PROTOCOLS.decorator(name)


def protocol_names() -> list[str]:
    return PROTOCOLS.names()


def get_protocol(name: str, **options: Any) -> Protocol:
    """Build a registered protocol; unknown names and options are user errors."""
    factory = PROTOCOLS.get(name)
    accepted = [p for p in inspect.signature(factory).parameters if p != "self"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UserError(f"protocol {name!r} has no option {unknown[0]!r}; options: {', '.join(accepted)}")
    protocol = factory(**options)
    protocol.options = dict(options)
    return protocol


def protocol_for(name: str, query: str | Modality, gallery: str | Modality, options: dict[str, Any] | None = None,
                 distance: str | None = None) -> Protocol:
    """Protocol ``name`` pointed at query -> gallery; ``distance`` is the default of its distance option.

    Direction options in ``options`` are refused (the direction is given here), and so is a
    ``distance`` option that contradicts ``distance``: there is one distance knob.
    """
    options = with_distance(options, distance)
    given = sorted({"query", "gallery", "direction"} & set(options))
    if given:
        raise UserError(f"protocol option {given[0]}= sets the direction, which comes from the run's "
                        "eval.directions or --direction; drop the option (llcm's gallery draw is gallery_draw=)")
    return get_protocol(name, query=str(Modality.parse(query)), gallery=str(Modality.parse(gallery)), **options)


def with_distance(options: dict[str, Any] | None, distance: str | None) -> dict[str, Any]:
    """``options`` with ``distance`` as the default of the distance option; a contradiction is an error."""
    options = dict(options or {})
    if distance is not None and options.setdefault("distance", distance) != distance:
        raise UserError(f"distance given twice: --metric / eval.metric says {distance!r}, protocol option "
                        f"distance={options['distance']!r}; give one of them")
    return options


@register_protocol("synthetic")
class SyntheticProtocol(Protocol):
    """Query modality against gallery modality; same-camera gallery items are removed.

    RGB and depth of one RGB-D camera share the camera id, so a query never meets its
    own co-registered frame. Image-level CMC. One trial over the whole test set, or
    ``trials`` seeded draws of ``gallery_per_id`` gallery images per identity.
    """

    def __init__(self, query: str = "rgb", gallery: str = "depth", trials: int = 1,
                 gallery_per_id: int | None = None, seed: int = 0, distance: str = "euclidean",
                 precision: str = "float64"):
        self.set_scoring(query, gallery, distance, precision)
        if int(trials) < 1:
            raise UserError(f"protocol option trials={trials} must be at least 1")
        if int(trials) > 1 and not gallery_per_id:
            raise UserError("protocol option trials > 1 needs gallery_per_id (images drawn per identity)")
        if gallery_per_id is not None and int(gallery_per_id) < 1:
            raise UserError(f"protocol option gallery_per_id={gallery_per_id} must be at least 1")
        self.num_trials = int(trials)
        self.gallery_per_id = int(gallery_per_id) if gallery_per_id else None
        self.seed = int(seed)
        self.exclusion = SAME_CAMERA
        self.cmc = check_level("image")

    def trials(self, catalog: Catalog) -> list[Trial]:
        catalog.require_modalities([self.query_modality, self.gallery_modality], "the synthetic protocol")
        query = np.array([i for i, s in enumerate(catalog.query) if s.modality == self.query_modality], dtype=np.int64)
        gallery = np.array([i for i, s in enumerate(catalog.gallery) if s.modality == self.gallery_modality],
                           dtype=np.int64)
        for pool, idx, mod in (("query", query, self.query_modality), ("gallery", gallery, self.gallery_modality)):
            if len(idx) == 0:
                raise UserError(f"dataset {catalog.name!r} has no {mod} images in its {pool} pool; "
                                "check the test split or choose other modalities")
        if self.gallery_per_id is None:
            return [Trial(query, gallery, self.exclusion, self.cmc)]
        pids = np.array([catalog.gallery[i].pid for i in gallery])
        out = []
        for t in range(self.num_trials):
            rng = np.random.default_rng([self.seed, t])
            picked = [rng.choice(gallery[pids == p], size=min(self.gallery_per_id, int((pids == p).sum())),
                                 replace=False) for p in np.unique(pids)]
            out.append(Trial(query, np.sort(np.concatenate(picked)), self.exclusion, self.cmc))
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "direction": f"{self.query_modality}->{self.gallery_modality}",
            "trials": self.num_trials,
            "shots": self.gallery_per_id if self.gallery_per_id else "all",
            "seed": self.seed,
            "distance": self.distance,
            "precision": self.precision,
            "re_ranking": False,
            "cmc": self.cmc,
            "exclusion": self.exclusion.describe(),
        }


def sample_columns(samples: list) -> dict[str, Any]:
    """Key columns (pid, cam, frame, sequence, modality) for exclusion rules."""
    cols = sample_arrays(samples)
    return {"pid": cols["pids"], "cam": cols["cams"], "frame": cols["frames"],
            "sequence": cols["sequences"], "modality": cols["modalities"]}


def evaluate_protocol(protocol: Protocol, catalog: Catalog, query_features, gallery_features,
                      chunk_size: int | None = None, rerank=None) -> ProtocolResult:
    """Run every trial with the protocol's distance and precision; features cover the whole
    ``catalog.query`` / ``catalog.gallery`` pools. ``rerank`` (a
    :class:`crossreid.evaluation.rerank.Rerank`) re-ranks each trial's distances."""
    for pool, feats in (("query", query_features), ("gallery", gallery_features)):
        if len(feats) != len(catalog.pool(pool)):
            raise ValueError(f"{len(feats)} {pool} features for {len(catalog.pool(pool))} {pool} samples")
    per_trial: list[Metrics] = []
    for trial in protocol.trials(catalog):
        for name, feats, idx in (("query", query_features, trial.query), ("gallery", gallery_features, trial.gallery)):
            if not np.isfinite(feats[idx]).all():
                raise UserError(f"{protocol.name}: some {name} features are missing (NaN); the model does not "
                                "embed every modality this protocol uses")
        q = sample_columns([catalog.query[i] for i in trial.query])
        g = sample_columns([catalog.gallery[i] for i in trial.gallery])
        reranked = {} if rerank is None else {"distances": rerank(query_features[trial.query],
                                                                  gallery_features[trial.gallery], protocol.distance)}
        per_trial.append(compute_metrics(
            q["pid"], g["pid"], q["cam"], g["cam"], **reranked,
            query_features=None if rerank else query_features[trial.query],
            gallery_features=None if rerank else gallery_features[trial.gallery],
            metric=protocol.distance, precision=protocol.precision, exclusion=trial.exclusion,
            query_keys=q, gallery_keys=g, cmc=trial.cmc, chunk_size=chunk_size))
    return ProtocolResult(protocol.describe(), protocol.distance, protocol.aggregate(per_trial),
                          dataset=catalog.name, options=getattr(protocol, "options", {}),
                          rerank=rerank.describe() if rerank else None)
