"""Train one config on a catalog and evaluate it on the test pools: shared by demo and reproduce."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crossreid.config import RunConfig
from crossreid.data.pipeline import ImageStore
from crossreid.data.samples import Catalog
from crossreid.engine.trainer import Trainer
from crossreid.evaluation.runner import evaluate_directions, pool_features


@dataclass
class TestStores:
    """Decoded test pools, shared by every run on one catalog at one image size."""

    query: ImageStore
    gallery: ImageStore

    @classmethod
    def of(cls, catalog: Catalog, height: int, width: int) -> "TestStores":
        query = ImageStore(catalog.query, height, width)
        gallery = query if catalog.gallery is catalog.query else ImageStore(catalog.gallery, height, width)
        return cls(query, gallery)


@dataclass
class ExperimentResult:
    results: dict                      # {direction: ProtocolResult}
    features: tuple[np.ndarray, np.ndarray]
    method: object


def train_and_evaluate(cfg: RunConfig, run_dir: Path, catalog: Catalog, stores: TestStores,
                       protocol: str | None = None, protocol_options: dict | None = None,
                       overwrite: bool = False, progress: bool = True) -> ExperimentResult:
    trainer = Trainer(cfg, run_dir, catalog, overwrite=overwrite, progress=progress)
    trainer.fit()
    features = pool_features(trainer.method, catalog, stores.query, stores.gallery, cfg.eval.batch_size,
                             trainer.device)
    results = evaluate_directions(trainer.method, catalog, stores.query, stores.gallery, cfg.eval.directions,
                                  cfg.eval.metric, protocol=protocol, features=features,
                                  protocol_options=protocol_options)
    return ExperimentResult(results, features, trainer.method)
