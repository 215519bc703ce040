"""Train one config on a catalog and evaluate it on the test pools (demo, reproduce, calibrate);
the one run-or-reuse loop of experiment sets; evaluate a finished run."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from crossreid.config import DataConfig, RunConfig, load_config
from crossreid.data.pipeline import ImageStore
from crossreid.data.samples import Catalog
from crossreid.device import check_amp, open_device, resolve_device
from crossreid.engine.trainer import Trainer
from crossreid.errors import UserError
from crossreid.evaluation.document import Evaluation
from crossreid.evaluation.examples import ranked_examples
from crossreid.io import read_json, write_json
from crossreid.retrieval.evaluate import evaluate_directions, pool_features, scorable_directions, table_protocols


@dataclass
class TestStores:
    """Decoded test pools, shared by every run on one catalog at one image size."""

    query: ImageStore
    gallery: ImageStore

    @classmethod
    def of(cls, catalog: Catalog, data: DataConfig) -> TestStores:
        """The pools at the size and depth encoding of ``data`` (the run config's data section)."""
        query = ImageStore.for_data(catalog.query, data)
        same = catalog.gallery is catalog.query or catalog.gallery == catalog.query  # e.g. a manifest's test split
        gallery = query if same else ImageStore.for_data(catalog.gallery, data)
        return cls(query, gallery)


@dataclass
class ExperimentResult:
    results: dict                      # {direction: ProtocolResult}
    features: tuple[np.ndarray, np.ndarray]
    method: object


def train_and_evaluate(cfg: RunConfig, run_dir: Path, catalog: Catalog, stores: TestStores,
                       protocol: str | None = None, protocol_options: dict | None = None,
                       overwrite: bool = False, progress: bool = True,
                       directions: list[str] | None = None, device=None, amp: str = "auto") -> ExperimentResult:
    """Train ``cfg`` into ``run_dir`` on ``device`` (default: CUDA when available), then score ``directions``
    (default ``eval.directions``) on the test pools, embedded there under ``amp`` (:mod:`crossreid.device`)."""
    trainer = Trainer(cfg, run_dir, catalog, overwrite=overwrite, progress=progress, device=device)
    trainer.fit()
    features = pool_features(trainer.method, stores.query, stores.gallery, cfg.eval.batch_size,
                             trainer.device, amp=amp)
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


RESULTS_FILE = "test_results.json"   # in a run folder: the test metrics of a finished run
# Keys that change neither what a run trains nor what it scores: a finished run made with other values is reused.
NOT_RESULTS = {"train.progress", "train.checkpoint_every_steps", "train.keep_checkpoints", "train.disk_cache",
               "train.cache_dir", "train.decode_workers"}


def config_difference(saved: RunConfig, now: RunConfig) -> str | None:
    """``"key: saved value, now value"`` for the first differing ``section.key`` (NOT_RESULTS aside), or None."""
    def flat(cfg: RunConfig) -> dict:
        return {f"{section}.{key}": json.dumps(value, sort_keys=True) for section, values in
                cfg.model_dump(mode="json").items() for key, value in values.items()}
    a, b = flat(saved), flat(now)
    diff = sorted(k for k in set(a) | set(b) if k not in NOT_RESULTS and a.get(k) != b.get(k))
    return f"{diff[0]}: {a.get(diff[0], '<unset>')} then, {b.get(diff[0], '<unset>')} now" if diff else None


class Runner:
    """Trains configs into run folders, or reuses a finished run made with the same config: the
    one loop of ``reproduce`` and ``calibrate``. Catalogs and decoded test pools are shared
    between runs on the same data. ``device`` and ``amp``: as :func:`train_and_evaluate`."""

    def __init__(self, overwrite: bool = False, progress: bool = True, device=None, amp: str = "auto") -> None:
        self.overwrite, self.progress = overwrite, progress
        self.device, self.amp = resolve_device(device), check_amp(amp)  # a bad one fails before any run
        self.catalogs: dict[str, Catalog] = {}
        self.stores: dict[tuple, TestStores] = {}

    def run(self, cfg: RunConfig, run_dir: Path, directions, announce: str, record: dict | None = None) -> dict:
        """The result record of ``cfg`` in ``run_dir`` (``RESULTS_FILE``): ``mean`` (per direction,
        fractions), ``chance_r1`` (per direction), ``wall_time_s`` and ``record``'s fields. A finished
        run is reused when its ``config.yaml`` is ``cfg`` (NOT_RESULTS aside); one made with another
        config is an error unless ``overwrite``. Else ``announce`` is printed and the run trained."""
        done = Path(run_dir) / RESULTS_FILE
        if done.is_file() and not self.overwrite:
            saved = Path(run_dir) / "config.yaml"
            diff = config_difference(load_config(saved), cfg) if saved.is_file() else "no config.yaml"
            if diff:
                raise UserError(f"{run_dir}: made with another config ({diff}); use another --out or pass --overwrite")
            return read_json(done)
        catalog, stores = self._data(cfg)
        click.echo(announce)
        start = time.perf_counter()
        run = train_and_evaluate(cfg, Path(run_dir), catalog, stores, overwrite=True, progress=self.progress,
                                 device=self.device, amp=self.amp)
        scored = [d for d in directions if d in run.results]
        out = {**(record or {}), "mean": {d: run.results[d].mean() for d in scored},
               "chance_r1": {d: run.results[d].chance_rank1() for d in scored},
               "protocol": {d: r.protocol for d, r in run.results.items()},
               "wall_time_s": round(time.perf_counter() - start, 1)}
        write_json(done, out)
        return out

    def _data(self, cfg: RunConfig) -> tuple[Catalog, TestStores]:
        from crossreid.data.open import open_catalog
        from crossreid.engine.process import setup_process

        data = cfg.data
        source = json.dumps([data.dataset, data.root, data.options, data.synth], sort_keys=True)
        if not self.catalogs:
            setup_process(cfg.train, self.device)
        if source not in self.catalogs:
            self.catalogs[source] = open_catalog(data, progress=self.progress)
        size = (source, data.height, data.width, data.depth_encoding)
        if size not in self.stores:
            self.stores[size] = TestStores.of(self.catalogs[source], data)
        return self.catalogs[source], self.stores[size]


def evaluate_run(run: str | Path, directions: list[str] | None = None, protocol: str | None = None,
                 protocol_options: dict | None = None, dataset: str | None = None, root: str | None = None,
                 data_options: dict | None = None, progress: bool = True, metric: str | None = None,
                 rerank=None, ignore_check: bool = False, all_settings: bool = False, *,
                 batch_size: int | None = None, device=None, amp: str = "auto") -> Evaluation | None:
    """A trained run scored on its (or another) dataset's test pools: ``results`` by direction, or,
    with ``all_settings``, by setting of the protocol's full table (SYSU-MM01's four, both
    directions of RegDB and LLCM), with a few ranked lists of each.

    A run pattern with ``{t}`` (RegDB: one model per trial, e.g. ``runs/agw_regdb/trial{t}``)
    evaluates the run of each trial 1-10 on its own trial and reports mean ± std over trials
    (ranked lists: trial 1's); a missing trial run is an error. ``metric`` (default: the run's
    ``eval.metric``) is the default of the protocol's ``distance`` option. Data that fails
    ``crossreid check`` (at catalog level: :func:`~crossreid.data.datasets.check.require_sound`)
    is refused unless ``ignore_check``.
    The pools are embedded on ``device`` (default: CUDA when available) under ``amp``, in batches of
    ``batch_size`` (default: the run's ``eval.batch_size``); under torchrun each rank embeds its share
    and rank 0 scores: the other ranks get None.
    """
    from crossreid.data.datasets.check import require_sound
    from crossreid.data.open import open_catalog
    from crossreid.data.registry import dataset_protocol
    from crossreid.engine.runs import kept_epoch, load_run
    from crossreid.evaluation.protocols import setting_protocols

    device, dist = open_device(device)
    if "{t}" in str(run):
        from crossreid.engine.runs import find_trial_runs
        from crossreid.evaluation.regdb_protocols import combine_trials

        per_trial = [evaluate_run(r, directions, protocol, protocol_options, dataset, root, data_options, progress,
                                  metric, rerank, ignore_check, all_settings, batch_size=batch_size,
                                  device=device, amp=amp)
                     for r in find_trial_runs(str(run))]
        if not dist.main:
            return None
        first = per_trial[0]
        return dataclasses.replace(
            first, run=str(Path(run).absolute()), kept=[line for e in per_trial for line in e.kept],
            results={d: combine_trials([e.results[d] for e in per_trial]) for d in first.results})
    cfg, method = load_run(run)
    updates = {k: v for k, v in (("dataset", dataset), ("root", root), ("options", data_options)) if v}
    if updates:
        cfg.data = cfg.data.model_copy(update=updates)
    name = protocol or dataset_protocol(cfg.data.dataset)
    if all_settings:  # a protocol without a table, or options that contradict it: said before any work
        setting_protocols(name, protocol_options, metric or cfg.eval.metric)
    catalog = open_catalog(cfg.data, progress=progress and dist.main, dist=dist)
    if all_settings:  # and a setting the data or the method cannot score, before any image is embedded
        table_protocols(method, catalog, name, protocol_options, metric or cfg.eval.metric)
    require_sound(cfg.data.dataset, catalog, cfg.data.options, ignore_check, "evaluate",
                  protocols=[protocol] if protocol else None, say=dist.main)
    image = {"height": cfg.data.height, "width": cfg.data.width, "depth_encoding": cfg.data.depth_encoding}
    evaluation = Evaluation(str(Path(run).absolute()), cfg.method.name, catalog.name, str(catalog.root),
                            [kept_epoch(run)], image, {})
    if not all_settings and not scorable_directions(method, catalog, directions or cfg.eval.directions):
        return evaluation if dist.main else None  # nothing to score: said before any image is embedded
    stores = TestStores.of(catalog, cfg.data)
    method = method.to(device)
    features = pool_features(method, stores.query, stores.gallery, batch_size or cfg.eval.batch_size, device,
                             progress and dist.main, amp, dist)
    if not dist.main:
        return None
    results = evaluate_directions(method, catalog, stores.query, stores.gallery, directions or cfg.eval.directions,
                                  metric or cfg.eval.metric, protocol=protocol, protocol_options=protocol_options,
                                  features=features, rerank=rerank, all_settings=all_settings)
    evaluation.results = record_test_feature(results, method)
    evaluation.examples = {label: ranked_examples(catalog, r, features) for label, r in results.items()}
    return evaluation
