"""Protocols: how a Catalog becomes evaluation trials, registered by name.

A protocol names its query and gallery samples (indices into ``catalog.query`` and
``catalog.gallery``), the exclusion rule and the CMC level of each trial. Dataset
protocols (SYSU-MM01, RegDB, LLCM, RGB-D) register themselves with
:func:`register_protocol` without touching this module's core.
"""

from __future__ import annotations

import difflib
import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from crossreid.data.samples import Catalog, sample_arrays
from crossreid.errors import UserError
from crossreid.evaluation.distance import check_metric
from crossreid.evaluation.metrics import SAME_CAMERA, ExclusionRule, Metrics, check_level, compute_metrics
from crossreid.evaluation.results import ProtocolResult
from crossreid.modality import Modality


@dataclass(frozen=True)
class Trial:
    """One evaluation round: index arrays into the query and gallery pools."""

    query: np.ndarray
    gallery: np.ndarray
    exclusion: ExclusionRule
    cmc: str = "image"


class Protocol(ABC):
    """Base class: subclasses set ``name`` and implement ``trials`` and ``describe``."""

    name: str = ""
    distance: str = "euclidean"

    @abstractmethod
    def trials(self, catalog: Catalog) -> list[Trial]:
        """The trials of this protocol on ``catalog`` (deterministic for given options)."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """name, direction, trials, shots, distance, re_ranking, cmc, exclusion (JSON-ready)."""

    def aggregate(self, per_trial: list[Metrics]) -> list[Metrics]:
        """The reported trials' metrics from those of ``trials()`` (default: unchanged)."""
        return per_trial


_PROTOCOLS: dict[str, Callable[..., Protocol]] = {}


def register_protocol(name: str) -> Callable:
    def wrap(factory: Callable[..., Protocol]) -> Callable[..., Protocol]:
        if name in _PROTOCOLS:
            raise ValueError(f"protocol {name!r} registered twice")
        _PROTOCOLS[name] = factory
        return factory
    return wrap


_BUILTIN = ("sysu_protocols", "regdb_protocols", "llcm_protocols", "rgbd_protocols")


def _load_builtin() -> None:
    """Import the dataset protocol modules; importing registers them."""
    import importlib

    for module in _BUILTIN:
        importlib.import_module(f"crossreid.evaluation.{module}")


def protocol_names() -> list[str]:
    _load_builtin()
    return sorted(_PROTOCOLS)


def get_protocol(name: str, **options: Any) -> Protocol:
    """Build a registered protocol; unknown names and options are user errors."""
    _load_builtin()
    if name not in _PROTOCOLS:
        close = difflib.get_close_matches(name, list(_PROTOCOLS), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(protocol_names())}"
        raise UserError(f"unknown protocol {name!r}; {hint}")
    factory = _PROTOCOLS[name]
    accepted = [p for p in inspect.signature(factory).parameters if p != "self"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UserError(f"protocol {name!r} has no option {unknown[0]!r}; options: {', '.join(accepted)}")
    return factory(**options)


@register_protocol("synthetic")
class SyntheticProtocol(Protocol):
    """Query modality against gallery modality; same-camera gallery items are removed.

    RGB and depth of one RGB-D camera share the camera id, so a query never meets its
    own co-registered frame. Image-level CMC. One trial over the whole test set, or
    ``trials`` seeded draws of ``gallery_per_id`` gallery images per identity.
    """

    name = "synthetic"

    def __init__(self, query: str = "rgb", gallery: str = "depth", trials: int = 1,
                 gallery_per_id: int | None = None, seed: int = 0, distance: str = "euclidean"):
        self.query_modality = Modality.parse(query)
        self.gallery_modality = Modality.parse(gallery)
        if int(trials) < 1:
            raise UserError(f"protocol option trials={trials} must be at least 1")
        if int(trials) > 1 and not gallery_per_id:
            raise UserError("protocol option trials > 1 needs gallery_per_id (images drawn per identity)")
        if gallery_per_id is not None and int(gallery_per_id) < 1:
            raise UserError(f"protocol option gallery_per_id={gallery_per_id} must be at least 1")
        try:
            self.distance = check_metric(distance)
        except ValueError as exc:
            raise UserError(f"protocol option distance: {exc}") from None
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
                      metric: str | None = None, chunk_size: int | None = None, rerank=None) -> ProtocolResult:
    """Run every trial; features cover the whole ``catalog.query`` / ``catalog.gallery`` pools.
    ``rerank`` (a :class:`crossreid.evaluation.rerank.Rerank`) re-ranks each trial's distances."""
    metric = check_metric(metric or protocol.distance)
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
                                                                  gallery_features[trial.gallery], metric)}
        per_trial.append(compute_metrics(
            q["pid"], g["pid"], q["cam"], g["cam"], **reranked,
            query_features=None if rerank else query_features[trial.query],
            gallery_features=None if rerank else gallery_features[trial.gallery],
            metric=metric, exclusion=trial.exclusion, query_keys=q, gallery_keys=g,
            cmc=trial.cmc, chunk_size=chunk_size))
    return ProtocolResult({**protocol.describe(), "distance": metric}, metric, protocol.aggregate(per_trial),
                          dataset=catalog.name, rerank=rerank.describe() if rerank else None)
