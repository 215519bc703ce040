"""One trainer for every method: stages, parameter groups, schedules, checkpoints, resume.

A run folder holds ``config.yaml`` (resolved), ``metrics.jsonl``, ``checkpoints/``
(``<stage>-last`` and ``<stage>-best`` per stage) and ``model.safetensors``, the
selected final weights. Model selection uses the validation identities (drawn from
training identities), never the test set.

``<stage>-last`` is rewritten after every epoch and, with ``train.checkpoint_every_steps``,
every N steps; it holds weights, optimiser, GradScaler, every RNG, the position (stage,
epoch, step) and the config's fingerprint, so a resumed run ends with the same weights
as an uninterrupted one. Under ``torchrun`` each rank trains on its share of every
batch (DDP); rank 0 alone writes files, logs and draws progress bars.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from crossreid.config import RunConfig, dump_config
from crossreid.data.pipeline import ImageStore, augment, normalize
from crossreid.data.samplers import CrossModalIdentitySampler
from crossreid.data.samples import Catalog
from crossreid.engine import distributed as D
from crossreid.engine.checkpoint import load_checkpoint, save_checkpoint
from crossreid.engine.state import capture_rng, check_same_config, config_hash, resume_view, restore_rng
from crossreid.engine.logging import MetricLog
from crossreid.errors import UserError
from crossreid.io import write_text
from crossreid.retrieval.extract import extract_features
from crossreid.methods import Batch, Method, Stage, StageContext, build_method
from crossreid.modality import Modality


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def lr_factor(epoch: int, schedule) -> float:
    """Multiplier of the base learning rate at ``epoch`` (0-based), warm-up included."""
    if epoch < schedule.warmup_epochs:
        # Linear from warmup_factor (epoch 0) to 1 (last warm-up epoch); factor 1/W gives AGW's (e+1)/W.
        w = schedule.warmup_factor
        return w + (1.0 - w) * epoch / max(1, schedule.warmup_epochs - 1)
    if schedule.name == "step":
        return schedule.gamma ** sum(epoch >= m for m in schedule.milestones)
    return 1.0


def make_optimizer(groups: list[dict], cfg: RunConfig) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0,
                               weight_decay=o.weight_decay)
    return torch.optim.Adam(groups, lr=o.lr, weight_decay=o.weight_decay)


def default_cache_dir() -> Path:
    return Path(os.environ.get("CROSSREID_CACHE", "~/.cache/crossreid")).expanduser() / "images"


@dataclass
class Position:
    """Where training (re)starts: stage, epoch, steps done in it, and that epoch's partial sums."""

    stage: int = 0
    epoch: int = 0
    step: int = 0
    best: float | None = None
    totals: dict[str, float] | None = None
    seen: int = 0


class _Step(torch.nn.Module):
    """The method's training step as a forward, so DDP can wrap it."""

    def __init__(self, method: Method) -> None:
        super().__init__()
        self.method = method

    def forward(self, batch: Batch, stage: Stage) -> dict[str, torch.Tensor]:
        return self.method.training_step(batch, stage)


class Trainer:
    def __init__(self, cfg: RunConfig, run_dir: str | Path, catalog: Catalog, resume: bool = False,
                 overwrite: bool = False, progress: bool = True) -> None:
        self.dist = D.init_from_env()
        self.cfg, self.run_dir, self.catalog = cfg, Path(run_dir), catalog
        self.progress = progress and cfg.train.progress and self.dist.main
        self.ckpt_dir = self.run_dir / "checkpoints"
        if resume and not self.ckpt_dir.is_dir():
            raise UserError(f"{self.run_dir}: nothing to resume (no checkpoints/); drop --resume to start a new run")
        if not resume and self.run_dir.exists() and any(self.run_dir.iterdir()) and not overwrite:
            raise UserError(f"{self.run_dir}: run folder exists; pass --resume to continue it or --overwrite to replace it")
        t = cfg.train
        self.device = torch.device(f"cuda:{self.dist.local_rank}" if torch.cuda.is_available() else "cpu")
        if t.amp == "fp16" and self.device.type != "cuda":
            raise UserError("train.amp=fp16 needs a CUDA GPU (loss scaling); on CPU use train.amp=bf16 or off")
        if t.sync_bn and self.dist.active and self.device.type != "cuda":
            raise UserError("train.sync_bn needs CUDA (torch has no CPU SyncBatchNorm); set train.sync_bn=false")
        D.barrier(self.dist)  # every rank has checked the folder before rank 0 writes to it
        if overwrite and not resume and self.ckpt_dir.is_dir() and self.dist.main:
            for f in self.ckpt_dir.glob("*.safetensors"):
                f.unlink()
            (self.run_dir / "metrics.jsonl").unlink(missing_ok=True)
        self.resume = resume
        self._resume: dict | None = None
        if t.threads:
            torch.set_num_threads(t.threads)
        seed_everything(t.seed, t.deterministic)

        wanted = [Modality.parse(m) for m in cfg.data.modalities]
        self.modalities = [m for m in wanted if m in catalog.modalities]
        catalog.require_modalities(wanted, f"config data.modalities={cfg.data.modalities}")
        self.label_map = catalog.label_map
        self.method: Method = build_method(cfg, catalog.num_classes, self.modalities).to(self.device)
        if t.sync_bn and self.dist.active:
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.method)
        if t.channels_last:
            self.method.to(memory_format=torch.channels_last)
        store = dict(cache=cfg.data.cache == "memory", threads=t.decode_workers, root=catalog.root,
                     disk_dir=(Path(t.cache_dir) if t.cache_dir else default_cache_dir()) if t.disk_cache else None)
        self.store = ImageStore.for_data(catalog.train, cfg.data, **store)
        val = [s for s in catalog.val if s.modality in self.method.embeddable]
        self.val_catalog = Catalog(catalog.name, catalog.root, query=val, gallery=val)
        self.val_store = ImageStore.for_data(val, cfg.data, **store)
        self.augment_rng = torch.Generator().manual_seed(t.seed)
        # Every stage's sampler now: a batch that cannot be filled fails before anything is written.
        self.samplers = [self._sampler(si, stage) for si, stage in enumerate(self.method.stages())]
        self.log: MetricLog | None = None
        if self.dist.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_text(self.run_dir / "config.yaml", dump_config(cfg))
            self.log = MetricLog(self.run_dir)

    # ------------------------------------------------------------------ training
    def _sampler(self, si: int, stage: Stage) -> CrossModalIdentitySampler:
        t = self.cfg.train
        return CrossModalIdentitySampler(self.catalog.train, self.stage_modalities(stage), t.ids_per_batch,
                                         t.images_per_id, paired=stage.paired, seed=t.seed + 1000 * si,
                                         iterations=t.iterations_per_epoch, rank=self.dist.rank,
                                         world=self.dist.world)

    def stage_modalities(self, stage: Stage) -> list[Modality]:
        return stage.modalities or self.modalities

    def fit(self) -> dict:
        stages = self.method.stages()
        pos = self._restore(stages) if self.resume else Position()
        summary = {}
        for si in range(pos.stage, len(stages)):
            here = pos if si == pos.stage else Position(stage=si)
            summary[stages[si].name] = self._run_stage(si, stages[si], self.samplers[si], here)
        if self.dist.main:
            _, state, _, _ = load_checkpoint(self.ckpt_dir / f"{stages[-1].name}-best.safetensors")
            save_checkpoint(self.run_dir / "model.safetensors", self.method, {**state, "final": True})
            self.log.close()
        D.barrier(self.dist)
        return summary

    def _restore(self, stages: list[Stage]) -> Position:
        names = [s.name for s in stages]
        found = [(i, self.ckpt_dir / f"{n}-last.safetensors") for i, n in enumerate(names)]
        found = [(i, p) for i, p in found if p.is_file()]
        if not found:
            raise UserError(f"{self.ckpt_dir}: no '<stage>-last.safetensors' for stages {names}; "
                            "the run folder does not belong to this method")
        si, path = found[-1]
        weights, state, optim_state, rng = load_checkpoint(path)
        if state.get("method") != self.cfg.method.name:
            raise UserError(f"{path}: written by method {state.get('method')!r}, config says "
                            f"{self.cfg.method.name!r}; resume with the run's own config.yaml")
        check_same_config(self.cfg, state, str(path))
        self.method.load_state_dict(weights)
        self._resume = {"stage": si, "optimizer": optim_state, "rng": rng, "rng_plain": state["rng"],
                        "scaler": state.get("scaler")}
        epoch, step = (state["epoch"] + 1, 0) if state["epoch_done"] else (state["epoch"], state["step"])
        totals = state.get("totals")
        if isinstance(totals, list):  # one dict per rank; another world size gets their mean
            totals = totals[self.dist.rank] if len(totals) == self.dist.world else \
                {k: sum(t[k] for t in totals) / len(totals) for k in totals[0]}
        if epoch >= stages[si].epochs and si + 1 < len(stages):
            best_weights, _, _, _ = load_checkpoint(self.ckpt_dir / f"{stages[si].name}-best.safetensors")
            self.method.load_state_dict(best_weights)
            pos = Position(stage=si + 1)
        else:
            pos = Position(si, epoch, step, state.get("best"), totals, state.get("seen", 0))
        self._trim_log(names, pos)
        return pos

    def _trim_log(self, names: list[str], pos: Position) -> None:
        """Drop metric lines written after the checkpoint being resumed (they will be rewritten)."""
        path = self.run_dir / "metrics.jsonl"
        if not self.dist.main or not path.is_file():
            return
        import json

        keep = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
                and (names.index(json.loads(line)["stage"]), json.loads(line)["epoch"]) < (pos.stage, pos.epoch)]
        write_text(path, "".join(line + "\n" for line in keep))

    def _preload(self) -> None:
        """Decode (or open the disk cache); with a disk cache rank 0 builds it before the others open it."""
        first = not self.cfg.train.disk_cache or self.dist.main
        for turn in (True, False):
            if turn == first:
                self.store.preload(self.progress, desc="decoding training images")
                if self.val_store.samples:
                    self.val_store.preload(self.progress, desc="decoding validation images")
            if turn:
                D.barrier(self.dist)

    def _wrap(self) -> torch.nn.Module:
        step = _Step(self.method)
        if not self.dist.active:
            return step
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        # Unused parameters are normal here (e.g. a classifier the distillation loss never reaches).
        return DistributedDataParallel(step, device_ids=ids, find_unused_parameters=True)

    def begin_stage(self, si: int, stage: Stage, pos: Position):
        """Decode, start the stage, freeze, build optimiser and GradScaler (restored when resuming)
        and the (DDP-wrapped) step module; returns (model, optimizer, base lrs, scaler)."""
        cfg = self.cfg
        self._preload()
        resumed = pos.epoch > 0 or pos.step > 0
        self.method.on_stage_start(stage, StageContext(self.store, self.device, self.run_dir, resumed=resumed))
        for name, p in self.method.named_parameters():
            p.requires_grad_(not (stage.frozen and name.startswith(tuple(stage.frozen))))
        optimizer = make_optimizer(self.method.param_groups(stage), cfg)
        base_lrs = [g["lr"] for g in optimizer.param_groups]
        scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.train.amp == "fp16")
        r, self._resume = self._resume, None
        if r is not None:
            if r["stage"] == si and resumed:
                optimizer.load_state_dict(r["optimizer"])
                if r["scaler"]:
                    scaler.load_state_dict(r["scaler"])
            restore_rng(self.augment_rng, r["rng"], r["rng_plain"])
        return self._wrap(), optimizer, base_lrs, scaler

    def _run_stage(self, si: int, stage: Stage, sampler: CrossModalIdentitySampler, pos: Position) -> dict:
        cfg = self.cfg
        model, optimizer, base_lrs, scaler = self.begin_stage(si, stage, pos)
        best, last_val = pos.best, {}
        for epoch in range(pos.epoch, stage.epochs):
            for g, lr in zip(optimizer.param_groups, base_lrs):
                g["lr"] = lr * self._factor(epoch, stage)
            partial = pos if epoch == pos.epoch and pos.step else Position()
            ctx = (si, stage, epoch, best)
            stats = self.train_epoch(model, sampler, optimizer, scaler, ctx, partial)
            record = {"stage": stage.name, "epoch": epoch, **stats, "lr": optimizer.param_groups[-1]["lr"]}
            if self.val_store.samples and ((epoch + 1) % cfg.train.validate_every == 0 or epoch + 1 == stage.epochs):
                last_val = self.validate(stage)
                record.update({f"val/{k}": v for k, v in last_val.items()})
            score = last_val.get("mAP", -float(stats["loss"]))
            improved = best is None or score > best
            best = score if improved else best
            record["best"] = best
            if self.dist.main:
                self.log.write(record, step=epoch)
                if self.progress:
                    shown = ", ".join(f"{k}={v:.4g}" for k, v in record.items() if isinstance(v, float))
                    tqdm.write(f"[{stage.name} {epoch + 1}/{stage.epochs}] {shown}")
            self._checkpoint(optimizer, scaler, (si, stage, epoch, best), len(sampler), True, [], 0, score)
            if improved and self.dist.main:
                save_checkpoint(self.ckpt_dir / f"{stage.name}-best.safetensors", self.method,
                                self._state(stage, epoch, len(sampler), True, best, score))
        D.barrier(self.dist)
        if self.dist.main:
            weights, _, _, _ = load_checkpoint(self.ckpt_dir / f"{stage.name}-best.safetensors")
            self.method.load_state_dict(weights)
        D.broadcast_module(self.dist, self.method)
        return {"best": best, **last_val}

    def _state(self, stage: Stage, epoch: int, step: int, done: bool, best, score) -> dict:
        return {"method": self.cfg.method.name, "stage": stage.name, "epoch": epoch, "step": step,
                "epoch_done": done, "best": best, "score": score, "num_classes": self.catalog.num_classes,
                "modalities": [m.value for m in self.modalities], "config_hash": config_hash(self.cfg),
                "config": resume_view(self.cfg), "world": self.dist.world}

    def _checkpoint(self, optimizer, scaler, ctx, step: int, done: bool, totals, seen: int, score=None) -> None:
        """Write ``<stage>-last`` (rank 0) with everything an exact resume needs; every rank must call it."""
        _, stage, epoch, best = ctx
        per_rank = D.gather_objects(self.dist, {k: float(v) for k, v in dict(totals).items()})
        if not self.dist.main:
            return
        tensors, plain = capture_rng(self.augment_rng)
        state = {**self._state(stage, epoch, step, done, best, score), "rng": plain, "totals": per_rank,
                 "seen": seen, "scaler": scaler.state_dict() if scaler.is_enabled() else None}
        save_checkpoint(self.ckpt_dir / f"{stage.name}-last.safetensors", self.method, state, optimizer, tensors)

    def _factor(self, epoch: int, stage: Stage) -> float:
        schedule = self.cfg.schedule
        if schedule.name == "cosine" and epoch >= schedule.warmup_epochs:
            span = max(1, stage.epochs - schedule.warmup_epochs)
            return 0.5 * (1 + math.cos(math.pi * (epoch - schedule.warmup_epochs) / span))
        return lr_factor(epoch, schedule)

    def train_epoch(self, model, sampler, optimizer, scaler, ctx, partial: Position) -> dict:
        """One epoch (from ``partial.step`` on); ``ctx`` is (stage index, stage, epoch, best so far)."""
        _, stage, epoch, _ = ctx
        t = self.cfg.train
        model.train()
        sampler.set_epoch(epoch)
        self.method.on_epoch_start(stage, epoch)
        totals = {k: torch.tensor(v, dtype=torch.float64, device=self.device)
                  for k, v in (partial.totals or {}).items()}
        seen, steps, here, start = partial.seen, partial.step, 0, time.perf_counter()
        amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.amp)
        mine = sampler.shard()
        bar = tqdm(total=len(sampler), initial=steps, desc=f"{stage.name} epoch {epoch + 1}/{stage.epochs}",
                   disable=not self.progress, leave=False)
        for indices in sampler.global_batches(steps):
            batch = self.make_batch(indices, stage, mine)
            with torch.autocast(self.device.type, dtype=amp, enabled=amp is not None):
                losses = model(batch, stage)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses["loss"]).backward()
            scaler.step(optimizer)
            scaler.update()
            with torch.no_grad():
                self.method.after_step(batch, stage)
            for k, v in losses.items():
                totals[k] = totals[k] + v.detach().double() if k in totals else v.detach().double()
            steps += 1
            seen += len(batch.indices) * self.dist.world
            here += len(batch.indices) * self.dist.world
            bar.update()
            if self.progress and (steps % 10 == 0 or steps == len(sampler)):
                bar.set_postfix(loss=f"{float(totals['loss']) / steps:.3f}",
                                img_s=f"{here / (time.perf_counter() - start):.0f}")
            if t.checkpoint_every_steps and steps % t.checkpoint_every_steps == 0 and steps < len(sampler):
                self._checkpoint(optimizer, scaler, ctx, steps, False, totals, seen)
        bar.close()
        elapsed = time.perf_counter() - start
        means = D.all_mean(self.dist, {k: float(v) / max(steps, 1) for k, v in totals.items()})
        return {**means, "images_per_s": here / elapsed if here else 0.0}

    def make_batch(self, indices: list[int], stage: Stage, mine: list[int]) -> Batch:
        """The input path: cached images of a global batch, augmented with the shared generator,
        then this rank's rows (``mine``), so inputs do not depend on the number of processes."""
        t, modalities = self.cfg.train, self.stage_modalities(stage)
        images = augment(self.store.batch(indices), self.augment_rng, flip=t.flip, pad=t.pad,
                         erasing=t.random_erasing, groups=len(modalities) if stage.paired else 1)
        if self.dist.active:
            images, indices = images[mine], [indices[p] for p in mine]
        images = normalize(images).to(self.device, non_blocking=True)
        if t.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = torch.tensor([self.label_map[self.store.samples[i].pid] for i in indices], device=self.device)
        return Batch(images, labels, modalities, rows=len(indices) // len(modalities), indices=list(indices))

    # ---------------------------------------------------------------- validation
    def validate(self, stage: Stage) -> dict:
        """Mean validation mAP over the stage's directions; under DDP each rank embeds every
        world-th image, rank 0 gathers the features and scores them, every rank gets the result."""
        from crossreid.evaluation.runner import evaluate_directions

        d, n = self.dist, len(self.val_store)
        D.broadcast_module(d, self.method, buffers_only=True)  # each rank's BN statistics saw only its rows
        rows = range(d.rank, n, d.world)
        feats = extract_features(self.method, self.val_store, rows, batch_size=self.cfg.eval.batch_size,
                                 device=self.device, channels_last=self.cfg.train.channels_last)
        feats = D.gather_rows(d, feats, n)
        out = None
        if d.main:
            directions = stage.val_directions or self.cfg.eval.directions
            results = evaluate_directions(self.method, self.val_catalog, self.val_store, self.val_store,
                                          directions, self.cfg.eval.metric, features=(feats, feats))
            maps = [r.mean()["map"] for r in results.values()]
            out = {f"{k}/mAP": r.mean()["map"] for k, r in results.items()}
            out["mAP"] = float(np.mean(maps)) if maps else float("nan")
        return D.broadcast_object(d, out)
