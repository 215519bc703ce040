"""Writing and reading a run's checkpoints: ``<stage>-last`` (exact resume), ``<stage>-best``
(the epoch ``train.select`` keeps) and the final ``model.safetensors``."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from crossreid import distributed as D
from crossreid.config import RunConfig
from crossreid.engine.checkpoint import load_checkpoint, save_checkpoint
from crossreid.engine.run_folder import RunFolder
from crossreid.engine.state import capture_rng, check_same_config, config_hash, resume_view
from crossreid.errors import UserError
from crossreid.methods import Method, Stage


@dataclass
class Position:
    """Where training (re)starts: stage, epoch, steps done in it, and that epoch's partial sums."""

    stage: int = 0
    epoch: int = 0
    step: int = 0
    best: float | None = None
    totals: dict[str, float] | None = None
    seen: int = 0


@dataclass
class EpochPoint:
    """The epoch being trained: its stage (and index), epoch number and the best score so far."""

    stage_index: int
    stage: Stage
    epoch: int
    best: float | None = None


@dataclass
class Progress:
    """Where a ``-last`` checkpoint is taken inside an epoch: steps done, whether the epoch is
    complete, its running loss sums and images seen, and the epoch's score once it has one."""

    step: int
    done: bool
    totals: dict = field(default_factory=dict)
    seen: int = 0
    score: float | None = None


@dataclass
class Resumed:
    """What a ``-last`` checkpoint restores besides the weights."""

    stage: int
    optimizer: dict | None
    rng: dict
    rng_plain: dict
    scaler: dict | None


class Checkpointer:
    def __init__(self, folder: RunFolder, cfg: RunConfig, method: Method, dist: D.Dist,
                 num_classes: int, modalities: list) -> None:
        self.folder, self.cfg, self.method, self.dist = folder, cfg, method, dist
        self.num_classes, self.modalities = num_classes, [m.value for m in modalities]

    def state(self, at: EpochPoint, progress: Progress) -> dict:
        return {"method": self.cfg.method.name, "stage": at.stage.name, "epoch": at.epoch, "step": progress.step,
                "epoch_done": progress.done, "best": at.best, "score": progress.score, "select": self.cfg.train.select,
                "stage_epochs": at.stage.epochs,
                "num_classes": self.num_classes, "modalities": self.modalities,
                "config_hash": config_hash(self.cfg), "config": resume_view(self.cfg), "world": self.dist.world}

    def save_last(self, at: EpochPoint, progress: Progress, optimizer, scaler, augment_rng: torch.Generator) -> None:
        """``<stage>-last`` (rank 0) with everything an exact resume needs; every rank must call it."""
        per_rank = D.gather_objects(self.dist, {k: float(v) for k, v in dict(progress.totals).items()})
        if not self.dist.main:
            return
        tensors, plain = capture_rng(augment_rng)
        state = {**self.state(at, progress), "rng": plain, "totals": per_rank, "seen": progress.seen,
                 "scaler": scaler.state_dict() if scaler.is_enabled() else None}
        save_checkpoint(self.folder.last(at.stage.name), self.method, state, optimizer, tensors)

    def save_best(self, at: EpochPoint, progress: Progress) -> None:
        if self.dist.main:
            save_checkpoint(self.folder.best(at.stage.name), self.method, self.state(at, progress))

    def load_best(self, stage: str) -> dict:
        """Load the stage's kept weights; returns their state (``epoch``, ``score``, ...)."""
        path = self.folder.best(stage)
        if not path.is_file() and self.folder.model_path.is_file():
            path = self.folder.model_path  # a finished, pruned run: its final weights are the last stage's kept ones
        weights, state, _, _ = load_checkpoint(path)
        self.method.load_state_dict(weights)
        return state

    def save_final(self, last_stage: str) -> None:
        """``model.safetensors``: the kept weights of the last stage (rank 0)."""
        best = self.folder.best(last_stage)
        if self.dist.main and best.is_file():  # else a resumed, pruned run whose best stayed in model.safetensors
            _, state, _, _ = load_checkpoint(best)
            save_checkpoint(self.folder.model_path, self.method, {**state, "final": True})

    def prune(self, stages: list[str], keep: str) -> None:
        """After a finished run (rank 0): drop the checkpoints ``train.keep_checkpoints`` does not
        keep (``last``: the last stage's ``-last`` only; ``none``: every one; ``all``: none dropped)."""
        if not self.dist.main or keep == "all":
            return
        kept = {self.folder.last(stages[-1])} if keep == "last" else set()
        for stage in stages:
            for path in (self.folder.best(stage), self.folder.last(stage)):
                if path not in kept:
                    path.unlink(missing_ok=True)
        if keep == "none" and self.folder.ckpt_dir.is_dir() and not any(self.folder.ckpt_dir.iterdir()):
            self.folder.ckpt_dir.rmdir()

    def restore(self, stages: list[Stage]) -> tuple[Position, Resumed]:
        """Load the latest ``-last`` checkpoint into the method, after checking it belongs to this config."""
        names = [s.name for s in stages]
        found = [(i, self.folder.last(n)) for i, n in enumerate(names) if self.folder.last(n).is_file()]
        if not found:
            raise UserError(f"{self.folder.ckpt_dir}: no '<stage>-last.safetensors' for stages {names}; "
                            "the run folder does not belong to this method")
        si, path = found[-1]
        weights, state, optim_state, rng = load_checkpoint(path)
        if state.get("method") != self.cfg.method.name:
            raise UserError(f"{path}: written by method {state.get('method')!r}, config says "
                            f"{self.cfg.method.name!r}; resume with the run's own config.yaml")
        check_same_config(self.cfg, state, str(path))
        self.method.load_state_dict(weights)
        resumed = Resumed(si, optim_state, rng, state["rng"], state.get("scaler"))
        epoch, step = (state["epoch"] + 1, 0) if state["epoch_done"] else (state["epoch"], state["step"])
        if epoch >= stages[si].epochs and si + 1 < len(stages):
            self.load_best(stages[si].name)
            return Position(stage=si + 1), resumed
        return Position(si, epoch, step, state.get("best"), self._totals(state.get("totals")),
                        state.get("seen", 0)), resumed

    def _totals(self, totals):
        if isinstance(totals, list):  # one dict per rank; another world size gets their mean
            return totals[self.dist.rank] if len(totals) == self.dist.world else \
                {k: sum(t[k] for t in totals) / len(totals) for k in totals[0]}
        return totals
