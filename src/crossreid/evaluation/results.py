"""Per-trial metrics of one protocol run, their mean ± std, JSON and a one-line table."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crossreid.evaluation.metrics import Metrics
from crossreid.io import write_json
from crossreid.version import __version__

FORMAT = "crossreid-results"


@dataclass
class ProtocolResult:
    """Metrics of every trial. Aggregates are plain means over trials; std is the
    population standard deviation (0 for one trial). Values are fractions."""

    protocol: dict[str, Any]
    distance: str
    trials: list[Metrics] = field(default_factory=list)
    dataset: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # the protocol's options: get_protocol(name, **options)
    rerank: dict | None = None  # re-ranking settings, None when off

    @property
    def ranks(self) -> tuple[int, ...]:
        return self.trials[0].ranks

    def values(self) -> dict[str, np.ndarray]:
        """Metric name (``rank1``…, ``map``, ``minp``) → per-trial values."""
        keys = self.trials[0].summary().keys()
        return {k: np.array([t.summary()[k] for t in self.trials]) for k in keys}

    def mean(self) -> dict[str, float]:
        return {k: float(v.mean()) for k, v in self.values().items()}

    def std(self) -> dict[str, float]:
        return {k: float(v.std()) for k, v in self.values().items()}

    @property
    def cmc(self) -> np.ndarray:
        """Mean CMC curve over trials (element-wise)."""
        return np.mean([t.cmc for t in self.trials], axis=0)

    def chance_rank1(self) -> float | None:
        """Mean over trials of the expected R1 of a random ranking (None when not recorded)."""
        values = [t.chance_rank1 for t in self.trials]
        return None if any(v is None for v in values) else float(np.mean(values))

    def deepest_rank(self) -> int | None:
        """The deepest CMC rank that is a result in every trial (None when not recorded)."""
        values = [t.deepest_rank for t in self.trials]
        return None if any(v is None for v in values) else min(values)

    def shown_ranks(self) -> tuple[int, ...]:
        """The CMC ranks that are results: those within the smallest ranked gallery."""
        deepest = self.deepest_rank()
        return tuple(k for k in self.ranks if deepest is None or k <= deepest)

    def counts(self) -> dict[str, tuple[int, int]]:
        """Queries, valid queries and gallery items: (smallest, largest) over trials."""
        per = {"queries": [t.num_queries for t in self.trials], "valid": [t.num_valid for t in self.trials],
               "gallery": [t.num_gallery for t in self.trials]}
        return {k: (min(v), max(v)) for k, v in per.items()}

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "crossreid_version": __version__,
            "dataset": self.dataset,
            "protocol": self.protocol,
            "distance": self.distance,
            "options": self.options,
            "rerank": self.rerank or "none",
            "mean": self.mean(),
            "std": self.std(),
            "cmc": self.cmc.tolist(),
            "chance_rank1": self.chance_rank1(),
            "deepest_rank": self.deepest_rank(),
            "trials": [{**t.summary(), "cmc": t.cmc.tolist(), "cmc_level": t.cmc_level,
                        "num_valid": t.num_valid, "num_queries": t.num_queries, "num_gallery": t.num_gallery,
                        "chance_rank1": t.chance_rank1, "deepest_rank": t.deepest_rank} for t in self.trials],
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ProtocolResult:
        """The result ``to_json`` wrote (per-query APs are not kept)."""
        if doc.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} record (format {doc.get('format')!r})")
        trials = []
        for t in doc["trials"]:
            ranks = tuple(sorted(int(k[len("rank"):]) for k in t if k.startswith("rank")))
            trials.append(Metrics(np.asarray(t["cmc"], dtype=np.float64), t["map"], t["minp"], t["num_valid"],
                                  t["num_queries"], ranks, t.get("cmc_level", "image"),
                                  num_gallery=t.get("num_gallery", 0), chance_rank1=t.get("chance_rank1"),
                                  deepest_rank=t.get("deepest_rank")))
        rerank = doc.get("rerank")
        return cls(dict(doc["protocol"]), doc["distance"], trials, dataset=doc.get("dataset"),
                   options=dict(doc.get("options") or {}), rerank=None if rerank in (None, "none") else dict(rerank))

    def save(self, path: str | os.PathLike) -> None:
        write_json(path, self.to_json())

    def cells(self) -> dict[str, str]:
        """Metric label (``R1``, …, ``mAP``, ``mINP``) → percent text, ``45.2 ± 1.3`` over several
        trials; CMC ranks beyond the smallest ranked gallery are left out (see ``shown_ranks``)."""
        mean, std = self.mean(), self.std()
        labels = {**{f"rank{k}": f"R{k}" for k in self.shown_ranks()}, "map": "mAP", "minp": "mINP"}
        spread = len(self.trials) > 1
        return {label: f"{100 * mean[k]:.1f}" + (f" ± {100 * std[k]:.1f}" if spread else "")
                for k, label in labels.items()}

    def format_table(self) -> str:
        """``R1 45.2 ± 1.3 | R5 … | mAP … | mINP …`` in percent (no ± for one trial)."""
        return " | ".join(f"{label} {text}" for label, text in self.cells().items())

    def setting(self, hide: Sequence[str] = ()) -> str:
        """The set-up behind the numbers in words: protocol and its options (but ``hide``), dataset,
        trials, CMC level, exclusion rule, distance, re-ranking."""
        p = self.protocol
        options = {k: v for k, v in self.options.items() if k not in ("query", "gallery", "distance", *hide)}
        shown = f" ({', '.join(f'{k}={v}' for k, v in options.items())})" if options else ""
        trials = len(self.trials)
        exclusion = ", ".join(p.get("exclusion") or []) or "none"
        rerank = (f"re-ranked (k1={self.rerank['k1']}, k2={self.rerank['k2']}, lambda={self.rerank['lambda_value']})"
                  if self.rerank else "no re-ranking")
        return (f"protocol {p.get('name')}{shown} on {self.dataset}: {trials} trial{'s' * (trials != 1)}, "
                f"{p.get('cmc', 'image')}-level CMC, exclusion {exclusion}; distance {self.distance}; {rerank}")


def _span(low: int, high: int) -> str:
    return str(low) if low == high else f"{low}-{high}"


def format_evaluation(results: Mapping[str, ProtocolResult]) -> str:
    """What ``crossreid evaluate`` (and ``score``) print: for each set-up, a line saying it (see
    ``ProtocolResult.setting``; options that differ between the rows, such as SYSU-MM01's mode and
    shots under ``--all``, are left to the row labels), then per row (a direction, or a setting of
    the protocol's table) the queries, valid queries (those with a true match left in their
    gallery), gallery items, chance R1 and the metrics, in percent. A CMC rank beyond the smallest
    gallery a query ranks is shown as '-' (a padded curve, not a result)."""
    seen: dict[str, set[str]] = {}
    for result in results.values():
        for key, value in result.options.items():
            seen.setdefault(key, set()).add(repr(value))
    varying = [k for k, values in seen.items() if len(values) > 1 and k not in ("query", "gallery", "distance")]
    groups: dict[str, list[tuple[str, ProtocolResult]]] = {}
    for direction, result in results.items():
        groups.setdefault(result.setting(hide=varying), []).append((direction, result))
    lines: list[str] = []
    for setting, rows in groups.items():
        labels = [*(f"R{k}" for k in rows[0][1].ranks), "mAP", "mINP"]
        head = ["setting" if varying else "direction", "queries", "valid", "gallery", "chance R1", *labels]
        body = []
        for direction, result in rows:
            counts, chance, cells = result.counts(), result.chance_rank1(), result.cells()
            body.append([direction, *(_span(*counts[k]) for k in ("queries", "valid", "gallery")),
                         "?" if chance is None else f"{100 * chance:.1f}", *(cells.get(lb, "-") for lb in labels)])
        widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
        lines.append(setting)
        for row in [head, *body]:
            lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        hidden = sorted({k for _, r in rows for k in r.ranks if k not in r.shown_ranks()})
        if hidden:
            deepest = min(r.deepest_rank() or 0 for _, r in rows if set(r.ranks) - set(r.shown_ranks()))
            unit = "identities" if rows[0][1].protocol.get("cmc") == "identity" else "images"
            lines.append(f"  - : {', '.join(f'R{k}' for k in hidden)} lie beyond the smallest gallery a query ranks "
                         f"({deepest} {unit}): there a query reaches its whole gallery, so the curve is padded, "
                         "not a result")
    return "\n".join(lines)
