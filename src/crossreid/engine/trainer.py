"""One trainer for every method: stages, parameter groups, schedules, checkpoints, resume.

A run folder holds ``config.yaml`` (resolved), ``metrics.jsonl``, ``checkpoints/``
(``<stage>-last`` and ``<stage>-best`` per stage) and ``model.safetensors``, the
selected final weights. Model selection uses the validation identities (drawn from
training identities), never the test set.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from crossreid.config import RunConfig, dump_config
from crossreid.data.pipeline import ImageStore, augment, normalize
from crossreid.data.samplers import CrossModalIdentitySampler
from crossreid.data.samples import Catalog
from crossreid.engine.checkpoint import load_checkpoint, save_checkpoint
from crossreid.engine.logging import MetricLog
from crossreid.errors import UserError
from crossreid.io import write_text
from crossreid.methods import Batch, Method, Stage, StageContext, build_method
from crossreid.modality import Modality


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


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


class Trainer:
    def __init__(self, cfg: RunConfig, run_dir: str | Path, catalog: Catalog, resume: bool = False,
                 overwrite: bool = False, progress: bool = True) -> None:
        self.cfg, self.run_dir, self.catalog, self.progress = cfg, Path(run_dir), catalog, progress
        self.ckpt_dir = self.run_dir / "checkpoints"
        if resume and not self.ckpt_dir.is_dir():
            raise UserError(f"{self.run_dir}: nothing to resume (no checkpoints/); drop --resume to start a new run")
        if not resume and self.run_dir.exists() and any(self.run_dir.iterdir()) and not overwrite:
            raise UserError(f"{self.run_dir}: run folder exists; pass --resume to continue it or --overwrite to replace it")
        if overwrite and not resume and self.ckpt_dir.is_dir():
            for f in self.ckpt_dir.glob("*.safetensors"):
                f.unlink()
            (self.run_dir / "metrics.jsonl").unlink(missing_ok=True)
        self.resume = resume
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        seed_everything(cfg.train.seed, cfg.train.deterministic)

        wanted = [Modality.parse(m) for m in cfg.data.modalities]
        self.modalities = [m for m in wanted if m in catalog.modalities]
        catalog.require_modalities(wanted, f"config data.modalities={cfg.data.modalities}")
        self.label_map = catalog.label_map
        self.method: Method = build_method(cfg, catalog.num_classes, self.modalities).to(self.device)
        if cfg.train.channels_last:
            self.method.to(memory_format=torch.channels_last)
        self.store = ImageStore(catalog.train, cfg.data.height, cfg.data.width, cache=cfg.data.cache == "memory")
        self.val_catalog = Catalog(catalog.name, catalog.root, query=catalog.val, gallery=catalog.val)
        self.val_store = ImageStore(catalog.val, cfg.data.height, cfg.data.width, cache=cfg.data.cache == "memory")
        self.augment_rng = torch.Generator().manual_seed(cfg.train.seed)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_text(self.run_dir / "config.yaml", dump_config(cfg))
        self.log = MetricLog(self.run_dir)

    # ------------------------------------------------------------------ training
    def _sampler(self, si: int, stage: Stage) -> CrossModalIdentitySampler:
        t = self.cfg.train
        return CrossModalIdentitySampler(self.catalog.train, self.stage_modalities(stage), t.ids_per_batch,
                                         t.images_per_id, paired=stage.paired, seed=t.seed + 1000 * si,
                                         iterations=t.iterations_per_epoch)

    def stage_modalities(self, stage: Stage) -> list[Modality]:
        return stage.modalities or self.modalities

    def fit(self) -> dict:
        stages = self.method.stages()
        # Build every stage's sampler first: a batch that cannot be filled fails before any training.
        samplers = [self._sampler(si, stage) for si, stage in enumerate(stages)]
        start_stage, start_epoch, best = 0, 0, None
        if self.resume:
            start_stage, start_epoch, best = self._restore(stages)
        summary = {}
        for si in range(start_stage, len(stages)):
            stage = stages[si]
            first_epoch = start_epoch if si == start_stage else 0
            best = best if si == start_stage else None
            summary[stage.name] = self._run_stage(si, stage, samplers[si], first_epoch, best)
        final = self.ckpt_dir / f"{stages[-1].name}-best.safetensors"
        weights, state, _, _ = load_checkpoint(final)
        self.method.load_state_dict(weights)
        save_checkpoint(self.run_dir / "model.safetensors", self.method, {**state, "final": True})
        self.log.close()
        return summary

    def _restore(self, stages: list[Stage]) -> tuple[int, int, float | None]:
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
        self.method.load_state_dict(weights)
        self._resume_optim, self._resume_rng = optim_state, rng
        epoch = state["epoch"] + 1
        if epoch >= stages[si].epochs and si + 1 < len(stages):
            best_weights, _, _, _ = load_checkpoint(self.ckpt_dir / f"{stages[si].name}-best.safetensors")
            self.method.load_state_dict(best_weights)
            self._resume_optim = None
            return si + 1, 0, None
        return si, epoch, state.get("best")

    def _run_stage(self, si: int, stage: Stage, sampler: CrossModalIdentitySampler, first_epoch: int,
                   best: float | None) -> dict:
        cfg = self.cfg
        self.store.preload(self.progress, desc="decoding training images")
        if self.catalog.val:
            self.val_store.preload(self.progress, desc="decoding validation images")
        self.method.on_stage_start(stage, StageContext(self.store, self.device, self.run_dir, resumed=first_epoch > 0))
        for name, p in self.method.named_parameters():
            p.requires_grad_(not (stage.frozen and name.startswith(tuple(stage.frozen))))
        optimizer = make_optimizer(self.method.param_groups(stage), cfg)
        base_lrs = [g["lr"] for g in optimizer.param_groups]
        if getattr(self, "_resume_optim", None) is not None and first_epoch > 0:
            optimizer.load_state_dict(self._resume_optim)
            self.augment_rng.set_state(self._resume_rng["augment"])
            torch.set_rng_state(self._resume_rng["torch"])
        self._resume_optim = None
        last_val: dict = {}
        for epoch in range(first_epoch, stage.epochs):
            for g, lr in zip(optimizer.param_groups, base_lrs):
                g["lr"] = lr * self._factor(epoch, stage)
            stats = self._train_epoch(sampler, optimizer, stage, epoch)
            record = {"stage": stage.name, "epoch": epoch, **stats, "lr": optimizer.param_groups[-1]["lr"]}
            if self.catalog.val and ((epoch + 1) % cfg.train.validate_every == 0 or epoch + 1 == stage.epochs):
                last_val = self.validate(stage)
                record.update({f"val/{k}": v for k, v in last_val.items()})
            score = last_val.get("mAP", -float(stats["loss"]))
            improved = best is None or score > best
            best = score if improved else best
            state = {"method": cfg.method.name, "stage": stage.name, "epoch": epoch, "best": best, "score": score,
                     "num_classes": self.catalog.num_classes, "modalities": [m.value for m in self.modalities]}
            rng = {"augment": self.augment_rng.get_state(), "torch": torch.get_rng_state()}
            save_checkpoint(self.ckpt_dir / f"{stage.name}-last.safetensors", self.method, state, optimizer, rng)
            if improved:
                save_checkpoint(self.ckpt_dir / f"{stage.name}-best.safetensors", self.method, state)
            record["best"] = best
            self.log.write(record, step=epoch)
            if self.progress:
                shown = ", ".join(f"{k}={v:.4g}" for k, v in record.items() if isinstance(v, float))
                tqdm.write(f"[{stage.name} {epoch + 1}/{stage.epochs}] {shown}")
        weights, _, _, _ = load_checkpoint(self.ckpt_dir / f"{stage.name}-best.safetensors")
        self.method.load_state_dict(weights)
        return {"best": best, **last_val}

    def _factor(self, epoch: int, stage: Stage) -> float:
        schedule = self.cfg.schedule
        if schedule.name == "cosine" and epoch >= schedule.warmup_epochs:
            span = max(1, stage.epochs - schedule.warmup_epochs)
            return 0.5 * (1 + math.cos(math.pi * (epoch - schedule.warmup_epochs) / span))
        return lr_factor(epoch, schedule)

    def _train_epoch(self, sampler, optimizer, stage: Stage, epoch: int) -> dict:
        cfg = self.cfg.train
        self.method.train()
        sampler.set_epoch(epoch)
        totals: dict[str, float] = {}
        seen, start = 0, time.perf_counter()
        amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
        scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16")
        bar = tqdm(sampler, desc=f"{stage.name} epoch {epoch + 1}/{stage.epochs}", disable=not self.progress,
                   leave=False)
        steps = 0
        modalities = self.stage_modalities(stage)
        for indices in bar:
            images = augment(self.store.batch(indices), self.augment_rng, flip=cfg.flip, pad=cfg.pad,
                             erasing=cfg.random_erasing, groups=len(modalities) if stage.paired else 1)
            images = normalize(images).to(self.device)
            if cfg.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            labels = torch.tensor([self.label_map[self.store.samples[i].pid] for i in indices], device=self.device)
            batch = Batch(images, labels, modalities, rows=len(indices) // len(modalities), indices=list(indices))
            with torch.autocast(self.device.type, dtype=amp, enabled=amp is not None):
                losses = self.method.training_step(batch, stage)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses["loss"]).backward()
            scaler.step(optimizer)
            scaler.update()
            for k, v in losses.items():
                totals[k] = totals.get(k, 0.0) + float(v.detach())
            steps += 1
            seen += len(indices)
            bar.set_postfix(loss=f"{totals['loss'] / steps:.3f}", img_s=f"{seen / (time.perf_counter() - start):.0f}")
        elapsed = time.perf_counter() - start
        return {**{k: v / max(steps, 1) for k, v in totals.items()}, "images_per_s": seen / elapsed}

    # ---------------------------------------------------------------- validation
    def validate(self, stage: Stage) -> dict:
        from crossreid.evaluation.runner import evaluate_directions

        directions = stage.val_directions or self.cfg.eval.directions
        results = evaluate_directions(self.method, self.val_catalog, self.val_store, self.val_store,
                                      directions, self.cfg.eval.metric,
                                      batch_size=self.cfg.eval.batch_size, device=self.device)
        maps = [r.mean()["map"] for r in results.values()]
        out = {f"{d}/mAP": r.mean()["map"] for d, r in results.items()}
        out["mAP"] = float(np.mean(maps)) if maps else float("nan")
        return out
