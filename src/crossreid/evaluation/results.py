"""Per-trial metrics of one protocol run, their mean ± std, JSON and a one-line table."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crossreid.version import __version__
from crossreid.evaluation.metrics import Metrics
from crossreid.io import write_json

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
            "trials": [{**t.summary(), "cmc": t.cmc.tolist(), "cmc_level": t.cmc_level,
                        "num_valid": t.num_valid, "num_queries": t.num_queries} for t in self.trials],
        }

    def save(self, path: str | os.PathLike) -> None:
        write_json(path, self.to_json())

    def format_table(self) -> str:
        """``R1 45.2 ± 1.3 | R5 … | mAP … | mINP …`` in percent (no ± for one trial)."""
        mean, std = self.mean(), self.std()
        labels = {**{f"rank{k}": f"R{k}" for k in self.ranks}, "map": "mAP", "minp": "mINP"}
        spread = len(self.trials) > 1
        cells = [f"{label} {100 * mean[k]:.1f}" + (f" ± {100 * std[k]:.1f}" if spread else "")
                 for k, label in labels.items()]
        return " | ".join(cells)
