"""Protocols: how a Catalog becomes evaluation trials, registered by name.

A protocol names its query and gallery samples (indices into ``catalog.query`` and
``catalog.gallery``), the exclusion rule and the CMC level of each trial. Every protocol
(SYSU-MM01, RegDB, LLCM, RGB-D, synthetic: one ``<family>_protocols.py`` each) subclasses
:class:`Protocol` and registers itself with :func:`register_protocol` without touching this
module. Here too: scoring a protocol's trials, and the chance R1 of a scored result.
"""

from __future__ import annotations

import dataclasses
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from crossreid.data.samples import Catalog, Sample, sample_arrays
from crossreid.errors import UserError
from crossreid.evaluation.chance import gallery_reach
from crossreid.evaluation.distance import check_metric, check_precision
from crossreid.evaluation.metrics import ExclusionRule, Metrics, check_level, compute_metrics
from crossreid.evaluation.results import ProtocolResult
from crossreid.modality import Modality, parse_direction
from crossreid.registry import Registry


@dataclass(frozen=True)
class Trial:
    """One evaluation round: index arrays into the query and gallery pools."""

    query: np.ndarray
    gallery: np.ndarray
    exclusion: ExclusionRule
    cmc: str = "image"


Pair = tuple[Modality, Modality]


@dataclass(frozen=True)
class Setting:
    """One row of a protocol's full table (``evaluate --all``): a label, a direction and the
    protocol options that make it (e.g. SYSU-MM01's ``mode`` and ``shots``)."""

    label: str
    query: Modality
    gallery: Modality
    options: tuple[tuple[str, Any], ...] = ()


class Protocol(ABC):
    """Base class of every protocol: subclasses set ``directions``, call :meth:`set_common` from
    ``__init__`` and implement ``trials``, which opens with :meth:`pools`; ``name`` is the one
    ``@register_protocol`` registers them under.

    Every protocol takes the same direction and scoring options: ``query`` and ``gallery``
    (modalities; ``directions`` lists the pairs it supports, its first the default, ``None``
    any pair), ``distance`` (euclidean or cosine) and ``precision`` (float64, or float32 for
    huge galleries). ``describe()`` records the attributes below (``extra()`` adds fields);
    ``re_ranking`` there is false (a protocol never re-ranks); a scored result records true
    when :func:`evaluate_protocol` re-ranked it (``evaluate --rerank``).
    """

    name: str = ""  # set by @register_protocol
    directions: tuple[Pair, ...] | None = None
    distance: str = "euclidean"
    precision: str = "float64"
    query_modality: Modality = Modality.RGB
    gallery_modality: Modality = Modality.DEPTH
    direction: str = ""          # as recorded, e.g. "ir->rgb" (set_common's default) or "visible->thermal"
    num_trials: int = 1
    shots: Any = "all"
    exclusion: ExclusionRule = ExclusionRule()
    cmc: str = "image"
    sampling: str = "none"
    query_cams: tuple[int, ...] | None = None    # the cameras :meth:`pools` takes (None: all)
    gallery_cams: tuple[int, ...] | None = None
    fix: str = "load a dataset whose test pools hold both modalities"  # what to do when a pool is empty
    options: dict[str, Any] = {}  # the options it was built with (set by get_protocol)
    settings: tuple[Setting, ...] = ()  # the full table (evaluate --all); default: one row per pair of directions

    @classmethod
    def table(cls) -> tuple[Setting, ...]:
        """The settings of the protocol's full table: ``settings``, else each fixed direction (none
        for a protocol that scores any pair)."""
        return cls.settings or tuple(Setting(f"{q}->{g}", q, g) for q, g in cls.directions or ())

    def set_common(self, query: str | None, gallery: str | None, distance: str, precision: str, cmc: str) -> None:
        """Check and set the direction (``None``: the protocol's default side), distance, precision and CMC level."""
        default = self.directions[0] if self.directions else (Modality.RGB, Modality.DEPTH)
        pair = (Modality.parse(query) if query is not None else default[0],
                Modality.parse(gallery) if gallery is not None else default[1])
        if self.directions is not None and pair not in self.directions:
            names = ", ".join(f"{q}->{g}" for q, g in self.directions)
            raise UserError(f"protocol {self.name!r} does not score {pair[0]}->{pair[1]}; it supports {names} "
                            "(set query= and gallery= to one of them, or choose another protocol)")
        self.query_modality, self.gallery_modality = pair
        self.direction = f"{pair[0]}->{pair[1]}"
        for option, value, check in (("distance", distance, check_metric), ("precision", precision, check_precision)):
            try:
                setattr(self, option, check(value))
            except ValueError as exc:
                raise UserError(f"protocol {self.name!r} option {option}: {exc}") from None
        self.cmc = check_level(cmc)

    def pools(self, catalog: Catalog) -> tuple[np.ndarray, np.ndarray]:
        """The opening of ``trials``: the query pool's images of the query modality and the gallery
        pool's of the gallery modality (in ``query_cams`` / ``gallery_cams``); an empty one is an error."""
        return (self.pool(catalog, "query", self.query_modality, self.query_cams),
                self.pool(catalog, "gallery", self.gallery_modality, self.gallery_cams))

    def pool(self, catalog: Catalog, pool: str, modality: Modality, cams: Sequence[int] | None = None) -> np.ndarray:
        """Indices into ``catalog.<pool>`` of ``modality`` (in ``cams``); none is an error naming ``fix``."""
        idx = select(catalog.pool(pool), modality, cams)
        if len(idx) == 0:
            where = f" in cams {', '.join(map(str, cams))}" if cams else ""
            raise UserError(f"dataset {catalog.name!r} at {catalog.root} has no {modality} {pool} images{where}; "
                            f"{self.fix}")
        return idx

    @abstractmethod
    def trials(self, catalog: Catalog) -> list[Trial]:
        """The trials of this protocol on ``catalog`` (deterministic for given options)."""

    def extra(self) -> dict[str, Any]:
        return {}

    def describe(self) -> dict[str, Any]:
        """name, direction, trials, shots, distance, precision, re_ranking, cmc, exclusion, sampling (JSON-ready)."""
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

    def aggregate(self, per_trial: list[Metrics]) -> list[Metrics]:
        """The reported trials' metrics from those of ``trials()`` (default: unchanged)."""
        return per_trial


def select(samples: Sequence[Sample], modality: Modality, cams: Iterable[int] | None = None) -> np.ndarray:
    """Indices of ``samples`` of ``modality`` (and, when given, one of ``cams``)."""
    keep = None if cams is None else set(cams)
    return np.array([i for i, s in enumerate(samples)
                     if s.modality == modality and (keep is None or s.cam in keep)], dtype=np.int64)


# Option checks shared by the protocols' constructors.
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


def setting_protocols(name: str, options: dict[str, Any] | None = None,
                      distance: str | None = None) -> dict[str, Protocol]:
    """Every setting of protocol ``name``'s full table (:meth:`Protocol.table`), label → protocol,
    with ``options`` (which may not set what a setting sets) and ``distance`` as the default distance."""
    factory = PROTOCOLS.get(name)
    table = factory.table() if isinstance(factory, type) and issubclass(factory, Protocol) else ()
    if not table:
        raise UserError(f"protocol {name!r} has no fixed table of settings (it scores any query/gallery pair); "
                        "drop --all and name the directions with --direction")
    set_here = sorted({key for s in table for key, _ in s.options} & set(options or {}))
    if set_here:
        raise UserError(f"--all scores every {set_here[0]} of protocol {name!r} itself; drop --option "
                        f"{set_here[0]}= (or drop --all to score one setting)")
    return {s.label: protocol_for(name, s.query, s.gallery, {**(options or {}), **dict(s.options)}, distance)
            for s in table}


def with_distance(options: dict[str, Any] | None, distance: str | None) -> dict[str, Any]:
    """``options`` with ``distance`` as the default of the distance option; a contradiction is an error."""
    options = dict(options or {})
    if distance is not None and options.setdefault("distance", distance) != distance:
        raise UserError(f"distance given twice: --metric / eval.metric says {distance!r}, protocol option "
                        f"distance={options['distance']!r}; give one of them")
    return options


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
        metrics = compute_metrics(
            q["pid"], g["pid"], q["cam"], g["cam"], **reranked,
            query_features=None if rerank else query_features[trial.query],
            gallery_features=None if rerank else gallery_features[trial.gallery],
            metric=protocol.distance, precision=protocol.precision, exclusion=trial.exclusion,
            query_keys=q, gallery_keys=g, cmc=trial.cmc, chunk_size=chunk_size)
        reach = gallery_reach(q, g, trial.exclusion)
        per_trial.append(dataclasses.replace(metrics, chance_rank1=reach.chance_rank1(trial.cmc),
                                             deepest_rank=reach.deepest_rank(trial.cmc)))
    description = {**protocol.describe(), "re_ranking": rerank is not None}
    return ProtocolResult(description, protocol.distance, protocol.aggregate(per_trial),
                          dataset=catalog.name, options=getattr(protocol, "options", {}),
                          rerank=rerank.describe() if rerank else None)


def first_trial(catalog: Catalog, result: ProtocolResult, spread: int | None = None):
    """The first trial of the protocol ``result`` was scored with: (protocol, trial, query rows
    (all, or ``spread`` evenly spaced ones), their columns, the gallery's columns, removal mask)."""
    protocol = get_protocol(result.protocol["name"], **result.options)
    trial = protocol.trials(catalog)[0]
    rows = trial.query
    if spread is not None:
        rows = rows[np.linspace(0, len(rows) - 1, min(spread, len(rows))).astype(int)]
    q_cols = sample_columns([catalog.query[i] for i in rows])
    g_cols = sample_columns([catalog.gallery[i] for i in trial.gallery])
    qcodes, gcodes = trial.exclusion.encode(q_cols, g_cols)
    removed = trial.exclusion.mask(qcodes, gcodes, np.arange(len(rows)))
    return protocol, trial, rows, q_cols, g_cols, removed
