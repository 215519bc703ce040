"""One trainer for every method: the training loop, with named collaborators.

A :class:`~crossreid.engine.run_folder.RunFolder` owns the folder's layout and policy, a
:class:`~crossreid.engine.checkpointer.Checkpointer` the checkpoints,
:func:`~crossreid.engine.schedule.lr_factor` the learning rate and a
:class:`~crossreid.engine.validator.Validator` the validation score (identities drawn
from training identities, never the test set) that ``train.select`` may keep an epoch by
(:mod:`~crossreid.engine.selection`). Process-wide set-up
(threads, deterministic kernels, the torchrun process group) belongs to the entry point
(:func:`~crossreid.engine.process.setup_process`); the trainer's randomness is its own
:class:`~crossreid.engine.process.RandomStream`, seeded by ``train.seed``.

Everything that can fail is checked before the first byte is written: config,
modalities, samplers, every training and validation image (decoded), and a resumed
checkpoint (read and matched to the config). ``<stage>-last`` is rewritten after every
epoch and, with ``train.checkpoint_every_steps``, every N steps; it holds weights,
optimiser, GradScaler, every RNG, the position (stage, epoch, step) and the config's
fingerprint, so a resumed run ends with the same weights as an uninterrupted one. Under
``torchrun`` each rank trains on its share of every batch (DDP); rank 0 alone writes
files, logs and draws progress bars.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import torch

from crossreid import distributed as D
from crossreid.config import RunConfig
from crossreid.data.pipeline import ImageStore, augment, normalize
from crossreid.data.samplers import CrossModalIdentitySampler
from crossreid.data.samples import Catalog
from crossreid.device import resolve_device
from crossreid.engine.checkpointer import Checkpointer, EpochPoint, Position, Progress, Resumed
from crossreid.engine.init import check_init, save_init, without_init
from crossreid.engine.process import RandomStream
from crossreid.engine.run_folder import RunFolder
from crossreid.engine.schedule import lr_factor
from crossreid.engine.selection import epoch_score, keeps, require_validation_ids
from crossreid.engine.state import restore_rng
from crossreid.engine.validator import Validator
from crossreid.errors import UserError
from crossreid.io import cache_dir
from crossreid.methods import Batch, Method, Stage, StageContext, build_method
from crossreid.methods.step import StepOutput
from crossreid.modality import Modality
from crossreid.models.weights import recording_loads
from crossreid.progress import progress_bar, write
from crossreid.retrieval.extract import embed_rows
from crossreid.tensor_cache import TensorCache

__all__ = ["EpochPoint", "Position", "Trainer", "learning_rates", "load_optimizer_state", "lr_factor",
           "make_optimizer", "stage_context"]


def make_optimizer(groups: list[dict], cfg: RunConfig, fused: bool | None = None) -> torch.optim.Optimizer:
    """SGD or Adam; ``fused=None`` fuses where every parameter is on the CPU or a CUDA device.

    The fused update is the same arithmetic in one kernel per step: on a 2-core CPU it cuts
    Adam's step for a ResNet-18 from 59 to 11 ms (docs/benchmarks.md, "Optimiser step").
    ``fused=False`` forces the per-tensor update (benchmarks and tests compare the two)."""
    o = cfg.optim
    if fused is None:
        fused = all(p.device.type in ("cpu", "cuda") for g in groups for p in g["params"]) or None
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0,
                               weight_decay=o.weight_decay, fused=fused)
    return torch.optim.Adam(groups, lr=o.lr, weight_decay=o.weight_decay, fused=fused)


def learning_rates(groups: list[dict], stage: Stage, optim) -> list[dict]:
    """The method's parameter groups (``Method.param_groups``) with their learning rates: the
    stage's (default ``optim.lr``), times ``optim.backbone_lr_scale`` for the trunk (``backbone``)."""
    lr = stage.lr or optim.lr
    return [{**g, "lr": lr * optim.backbone_lr_scale if g["name"] == "backbone" else lr} for g in groups]


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a checkpoint's optimiser state but keep this optimiser's fused / per-tensor choice,
    which belongs to the machine, not the run (torch would take the checkpoint's)."""
    ours = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in optimizer.param_groups]
    groups = [{**saved, **mine} for saved, mine in zip(state["param_groups"], ours)]
    optimizer.load_state_dict({**state, "param_groups": groups})


def stage_context(method: Method, store: ImageStore, device: torch.device, resumed: bool = False,
                  cache: TensorCache | None = None, dist: D.Dist = D.Dist(), batch_size: int = 128,
                  channels_last: bool = False) -> StageContext:
    """The context a stage of ``method`` starts with: the training pool and the services a method
    may call (the embedding service over ``store``, the tensor cache, the process group)."""
    embed = functools.partial(embed_rows, method, store, batch_size=batch_size, device=device,
                              channels_last=channels_last)
    return StageContext(store, device, resumed, embed, cache, dist)


class _Step(torch.nn.Module):
    """The method's training step as a forward, so DDP can wrap it."""

    def __init__(self, method: Method) -> None:
        super().__init__()
        self.method = method

    def forward(self, batch: Batch, stage: Stage) -> StepOutput:
        return self.method.training_step(batch, stage)


class Trainer:
    def __init__(self, cfg: RunConfig, run_dir: str | Path, catalog: Catalog, resume: bool = False,
                 overwrite: bool = False, progress: bool = True, dist: D.Dist | None = None,
                 device: str | torch.device | None = None) -> None:
        self.dist = dist or D.init_from_env()
        self.cfg, self.catalog = cfg, catalog
        self.folder = RunFolder(run_dir, self.dist)
        self.run_dir, self.ckpt_dir = self.folder.path, self.folder.ckpt_dir
        self.progress = progress and cfg.train.progress and self.dist.main
        self.folder.check(resume, overwrite)
        if not resume:
            check_init(cfg)
        self.device = self._device(device)
        self.random = RandomStream(cfg.train.seed)
        with self.random:
            self._build(catalog, resume)
        self.position, self._resume = Position(), None
        if resume:
            self.position, self._resume = self.checkpoints.restore(self.method.stages())
            self.folder.trim_log([s.name for s in self.method.stages()], self.position.stage, self.position.epoch)
        self.log = self.folder.start(cfg, overwrite, resume)
        if not resume and self.dist.main:  # a resumed run keeps the init.json of its start
            write(save_init(self.run_dir, cfg, self.init_loads), err=True)

    def _device(self, spec: str | torch.device | None) -> torch.device:
        """``spec`` (default: this process's GPU when there is one, else the CPU) checked against the config."""
        t = self.cfg.train
        device = resolve_device(spec, self.dist)
        if t.amp == "fp16" and device.type != "cuda":
            raise UserError("train.amp=fp16 needs a CUDA GPU (loss scaling); on CPU use train.amp=bf16 or off")
        if t.sync_bn and self.dist.active and device.type != "cuda":
            raise UserError("train.sync_bn needs CUDA (torch has no CPU SyncBatchNorm); set train.sync_bn=false")
        return device

    def _build(self, catalog: Catalog, resume: bool) -> None:
        """Method (initialised from ``model.pretrained``, unless resumed: the checkpoint holds its
        weights), image stores (decoded now: a bad image fails here), samplers, collaborators."""
        cfg, t = self.cfg, self.cfg.train
        wanted = [Modality.parse(m) for m in cfg.data.modalities]
        self.modalities = [m for m in wanted if m in catalog.modalities]
        catalog.require_modalities(wanted, f"config data.modalities={cfg.data.modalities}")
        self.label_map = catalog.label_map
        with recording_loads() as self.init_loads:
            self.method: Method = build_method(without_init(cfg) if resume else cfg, catalog.num_classes,
                                               self.modalities).to(self.device)
        if t.sync_bn and self.dist.active:
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.method)
        if t.channels_last:
            self.method.to(memory_format=torch.channels_last)
        store = dict(cache=cfg.data.cache == "memory", threads=t.decode_workers, root=catalog.root,
                     disk_dir=(Path(t.cache_dir) if t.cache_dir else cache_dir("images")) if t.disk_cache else None)
        self.store = ImageStore.for_data(catalog.train, cfg.data, **store)
        val = [s for s in catalog.val if s.modality in self.method.embeddable]
        require_validation_ids(t.select, len(val), catalog.name)
        self.val_catalog = Catalog(catalog.root, query=val, gallery=val, name=catalog.name)
        self.val_store = ImageStore.for_data(val, cfg.data, **store)
        self.augment_rng = torch.Generator().manual_seed(t.seed)
        self.samplers = [self._sampler(si, stage) for si, stage in enumerate(self.method.stages())]
        self._preload()
        self.validator = Validator(cfg, self.method, self.val_catalog, self.val_store, self.device, self.dist)
        self.checkpoints = Checkpointer(self.folder, cfg, self.method, self.dist, catalog.num_classes,
                                        self.modalities)

    def _sampler(self, si: int, stage: Stage) -> CrossModalIdentitySampler:
        t = self.cfg.train
        return CrossModalIdentitySampler(self.catalog.train, self.stage_modalities(stage), t.ids_per_batch,
                                         t.images_per_id, paired=stage.paired, seed=t.seed + 1000 * si,
                                         iterations=t.iterations_per_epoch, rank=self.dist.rank,
                                         world=self.dist.world, draw=t.identity_draw)

    def stage_modalities(self, stage: Stage) -> list[Modality]:
        return stage.modalities or self.modalities

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

    # ------------------------------------------------------------------ training
    def fit(self) -> dict:
        stages = self.method.stages()
        pos, summary = self.position, {}
        with self.random:
            for si in range(pos.stage, len(stages)):
                here = pos if si == pos.stage else Position(stage=si)
                summary[stages[si].name] = self._run_stage(si, stages[si], self.samplers[si], here)
        self.checkpoints.save_final(stages[-1].name)
        self.checkpoints.prune([s.name for s in stages], self.cfg.train.keep_checkpoints)
        if self.log is not None:
            self.log.close()
        D.barrier(self.dist)
        return summary

    def _wrap(self) -> torch.nn.Module:
        step = _Step(self.method)
        if not self.dist.active:
            return step
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        # Unused parameters are normal here (e.g. a classifier the distillation loss never reaches).
        return DistributedDataParallel(step, device_ids=ids, find_unused_parameters=True)

    def begin_stage(self, si: int, stage: Stage, pos: Position):
        """Start the stage, freeze, build optimiser and GradScaler (restored when resuming) and the
        (DDP-wrapped) step module; returns (model, optimizer, base lrs, scaler)."""
        self._preload()
        resumed = pos.epoch > 0 or pos.step > 0
        self.method.on_stage_start(stage, stage_context(
            self.method, self.store, self.device, resumed, TensorCache(self.run_dir / "cache"), self.dist,
            self.cfg.eval.batch_size, self.cfg.train.channels_last))
        for name, p in self.method.named_parameters():
            p.requires_grad_(not (stage.frozen and name.startswith(tuple(stage.frozen))))
        optimizer = make_optimizer(learning_rates(self.method.param_groups(stage), stage, self.cfg.optim), self.cfg)
        base_lrs = [g["lr"] for g in optimizer.param_groups]
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.cfg.train.amp == "fp16")
        r: Resumed | None
        r, self._resume = self._resume, None
        if r is not None:
            if r.stage == si and resumed:
                load_optimizer_state(optimizer, r.optimizer)
                if r.scaler:
                    scaler.load_state_dict(r.scaler)
            restore_rng(self.augment_rng, r.rng, r.rng_plain)
        return self._wrap(), optimizer, base_lrs, scaler

    def _run_stage(self, si: int, stage: Stage, sampler: CrossModalIdentitySampler, pos: Position) -> dict:
        model, optimizer, base_lrs, scaler = self.begin_stage(si, stage, pos)
        best, last_val = pos.best, {}
        for epoch in range(pos.epoch, stage.epochs):
            for g, lr in zip(optimizer.param_groups, base_lrs):
                g["lr"] = lr * lr_factor(epoch, self.cfg.schedule, stage.epochs)
            at = EpochPoint(si, stage, epoch, best)
            partial = pos if epoch == pos.epoch and pos.step else Position()
            stats = self.train_epoch(model, sampler, optimizer, scaler, at, partial)
            record = {"stage": stage.name, "epoch": epoch, **stats, "lr": optimizer.param_groups[-1]["lr"]}
            validated = self.validator.due(epoch, stage)
            if validated:
                last_val = self.validator(stage)
                record.update({f"val/{k}": v for k, v in last_val.items()})
            rule = self.cfg.train.select
            score = epoch_score(rule, stats["loss"], last_val["mAP"] if validated else None)
            improved = keeps(rule, score, best)
            at.best = best = score if improved else best
            self._log(record, at)
            done = Progress(step=len(sampler), done=True, score=score)
            self.checkpoints.save_last(at, done, optimizer, scaler, self.augment_rng)
            if improved:
                self.checkpoints.save_best(at, done)
        D.barrier(self.dist)
        kept = self.checkpoints.load_best(stage.name) if self.dist.main else None
        D.broadcast_module(self.dist, self.method)
        kept = D.broadcast_object(self.dist, kept)
        return {"select": self.cfg.train.select, "epoch": kept["epoch"], "epochs": stage.epochs,
                "score": kept.get("score"), **last_val}

    def _log(self, record: dict, at: EpochPoint) -> None:
        record["best"] = at.best
        if self.log is None:
            return
        self.log.write(record, step=at.epoch)
        if self.progress:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in record.items() if isinstance(v, float))
            write(f"[{at.stage.name} {at.epoch + 1}/{at.stage.epochs}] {shown}")

    def train_epoch(self, model, sampler, optimizer, scaler, at: EpochPoint, partial: Position) -> dict:
        """One epoch (from ``partial.step`` on): steps, the method's hooks, mid-epoch checkpoints."""
        stage, t = at.stage, self.cfg.train
        model.train()
        sampler.set_epoch(at.epoch)
        self.method.on_epoch_start(stage, at.epoch)
        totals = {k: torch.tensor(v, dtype=torch.float64, device=self.device)
                  for k, v in (partial.totals or {}).items()}
        seen, steps, here, start = partial.seen, partial.step, 0, time.perf_counter()
        mine = sampler.shard()
        bar = progress_bar(total=len(sampler), initial=steps, desc=f"{stage.name} epoch {at.epoch + 1}/{stage.epochs}",
                           enabled=self.progress, keep=False)
        for indices in sampler.global_batches(steps):
            batch = self.make_batch(indices, stage, mine)
            losses = self.step(model, batch, stage, optimizer, scaler)
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
                self.checkpoints.save_last(at, Progress(steps, False, totals, seen), optimizer, scaler,
                                           self.augment_rng)
        bar.close()
        elapsed = time.perf_counter() - start
        means = D.all_mean(self.dist, {k: float(v) / max(steps, 1) for k, v in totals.items()})
        return {**means, "images_per_s": here / elapsed if here else 0.0}

    def step(self, model, batch: Batch, stage: Stage, optimizer, scaler) -> dict[str, torch.Tensor]:
        """One optimiser step, then the method's ``after_step`` hook with the step's output (memory
        banks, EMA, prototypes); returns the step's named losses."""
        amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.cfg.train.amp)
        with torch.autocast(self.device.type, dtype=amp, enabled=amp is not None):
            output = model(batch, stage)
        if not isinstance(output, StepOutput):
            raise TypeError(f"{type(self.method).__name__}.training_step returned {type(output).__name__}; "
                            "declare the losses with LossTerms and return terms.output() (docs/extending.md)")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(output.losses["loss"]).backward()
        scaler.step(optimizer)
        scaler.update()
        with torch.no_grad():
            self.method.after_step(batch, stage, output)
        return output.losses

    def make_batch(self, indices: list[int], stage: Stage, mine: list[int]) -> Batch:
        """The input path: cached images of a global batch, augmented with the shared generator,
        then this rank's rows (``mine``), so inputs do not depend on the number of processes."""
        t, modalities = self.cfg.train, self.stage_modalities(stage)
        colour = None
        if t.random_grayscale:  # batches are modality-major: block k of the rows is modalities[k]
            per_block = len(indices) // len(modalities)
            colour = torch.tensor([m is Modality.RGB for m in modalities]).repeat_interleave(per_block)
        images = augment(self.store.batch(indices), self.augment_rng, flip=t.flip, pad=t.pad,
                         erasing=t.random_erasing, groups=len(modalities) if stage.paired else 1,
                         grayscale=t.random_grayscale, colour_rows=colour)
        if self.dist.active:
            images, indices = images[mine], [indices[p] for p in mine]
        images = normalize(images).to(self.device, non_blocking=True)
        if t.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = torch.tensor([self.label_map[self.store.samples[i].pid] for i in indices], device=self.device)
        return Batch(images, labels, modalities, rows=len(indices) // len(modalities), indices=list(indices))

    def validate(self, stage: Stage) -> dict:
        """Mean validation mAP over the stage's directions (see :class:`Validator`)."""
        return self.validator(stage)
