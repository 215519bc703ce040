"""Train one config on a catalog and evaluate it on the test pools: shared by demo and reproduce."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crossreid.config import DataConfig, RunConfig
from crossreid.data.pipeline import ImageStore
from crossreid.data.samples import Catalog
from crossreid.engine.trainer import Trainer
from crossreid.retrieval.evaluate import evaluate_directions, pool_features


@dataclass
class TestStores:
    """Decoded test pools, shared by every run on one catalog at one image size."""

    query: ImageStore
    gallery: ImageStore

    @classmethod
    def of(cls, catalog: Catalog, data: DataConfig) -> "TestStores":
        """The pools at the size and depth encoding of ``data`` (the run config's data section)."""
        query = ImageStore.for_data(catalog.query, data)
        gallery = query if catalog.gallery is catalog.query else ImageStore.for_data(catalog.gallery, data)
        return cls(query, gallery)


@dataclass
class ExperimentResult:
    results: dict                      # {direction: ProtocolResult}
    features: tuple[np.ndarray, np.ndarray]
    method: object


def train_and_evaluate(cfg: RunConfig, run_dir: Path, catalog: Catalog, stores: TestStores,
                       protocol: str | None = None, protocol_options: dict | None = None,
                       overwrite: bool = False, progress: bool = True,
                       directions: list[str] | None = None) -> ExperimentResult:
    """Train ``cfg`` into ``run_dir``, then score ``directions`` (default ``eval.directions``) on the test pools."""
    trainer = Trainer(cfg, run_dir, catalog, overwrite=overwrite, progress=progress)
    trainer.fit()
    features = pool_features(trainer.method, catalog, stores.query, stores.gallery, cfg.eval.batch_size,
                             trainer.device)
    results = evaluate_directions(trainer.method, catalog, stores.query, stores.gallery,
                                  directions or cfg.eval.directions,
                                  cfg.eval.metric, protocol=protocol, features=features,
                                  protocol_options=protocol_options)
    return ExperimentResult(record_test_feature(results, trainer.method), features, trainer.method)


def record_test_feature(results: dict, method) -> dict:
    """Add the method's ``retrieval_settings()`` (if any) to each result's protocol record."""
    settings = method.retrieval_settings()
    for result in results.values():
        if settings:
            result.protocol["test_feature"] = settings
    return results


def evaluate_run(run: str | Path, directions: list[str] | None = None, protocol: str | None = None,
                 protocol_options: dict | None = None, dataset: str | None = None, root: str | None = None,
                 data_options: dict | None = None, progress: bool = True, metric: str | None = None,
                 rerank=None, ignore_check: bool = False) -> dict:
    """``{direction: ProtocolResult}`` of a trained run on its (or another) dataset's test pools.

    A run pattern with ``{t}`` (RegDB: one model per trial, e.g. ``runs/agw_regdb/trial{t}``)
    evaluates the run of each trial 1-10 on its own trial and reports mean ± std over trials;
    a missing trial run is an error. ``metric`` (default: the run's ``eval.metric``) is the
    default of the protocol's ``distance`` option. Data that fails ``crossreid check`` (at catalog
    level: :func:`~crossreid.data.datasets.check.require_sound`) is refused unless ``ignore_check``.
    """
    from crossreid.data.datasets.check import require_sound
    from crossreid.data.open import open_catalog
    from crossreid.engine.runs import load_run

    if "{t}" in str(run):
        from crossreid.engine.runs import find_trial_runs
        from crossreid.evaluation.regdb_protocols import combine_trials

        per_trial = [evaluate_run(r, directions, protocol, protocol_options, dataset, root, data_options, progress,
                                  metric, rerank, ignore_check) for r in find_trial_runs(str(run))]
        return {d: combine_trials([res[d] for res in per_trial]) for d in per_trial[0]}
    cfg, method = load_run(run)
    updates = {k: v for k, v in (("dataset", dataset), ("root", root), ("options", data_options)) if v}
    if updates:
        cfg.data = cfg.data.model_copy(update=updates)
    catalog = open_catalog(cfg.data, progress=progress)
    require_sound(cfg.data.dataset, catalog, cfg.data.options, ignore_check, "evaluate",
                  protocols=[protocol] if protocol else None)
    stores = TestStores.of(catalog, cfg.data)
    results = evaluate_directions(method, catalog, stores.query, stores.gallery, directions or cfg.eval.directions,
                                  metric or cfg.eval.metric, protocol=protocol, protocol_options=protocol_options,
                                  batch_size=cfg.eval.batch_size, progress=progress, rerank=rerank)
    return record_test_feature(results, method)
