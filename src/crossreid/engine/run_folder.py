"""A run folder's layout and policy: what may be written when, and which message a user gets.

``config.yaml`` is written only once the run has been validated (images decoded, a
resumed checkpoint read and matched to the config), so a run that fails before that
leaves nothing behind. A folder that holds files but no checkpoint (a run stopped before
its first epoch ended) can only be started again with ``--overwrite``.
"""

from __future__ import annotations

import json
from pathlib import Path

from crossreid import distributed as D
from crossreid.config import RunConfig, dump_config
from crossreid.engine.logging import MetricLog
from crossreid.errors import UserError
from crossreid.io import write_text


class RunFolder:
    def __init__(self, path: str | Path, dist: D.Dist) -> None:
        self.path, self.dist = Path(path), dist
        self.ckpt_dir = self.path / "checkpoints"
        self.config_path = self.path / "config.yaml"
        self.model_path = self.path / "model.safetensors"
        self.log_path = self.path / "metrics.jsonl"

    def last(self, stage: str) -> Path:
        return self.ckpt_dir / f"{stage}-last.safetensors"

    def best(self, stage: str) -> Path:
        return self.ckpt_dir / f"{stage}-best.safetensors"

    def has_checkpoint(self) -> bool:
        return self.ckpt_dir.is_dir() and any(self.ckpt_dir.glob("*-last.safetensors"))

    def check(self, resume: bool, overwrite: bool) -> None:
        """The resume / overwrite policy, checked before anything is written."""
        if resume and overwrite:
            raise UserError("--resume and --overwrite contradict each other; choose one")
        used = self.path.exists() and any(self.path.iterdir())
        if resume and not self.has_checkpoint():
            where = "holds no checkpoint (the run stopped before its first epoch ended); start it again with " \
                    "--overwrite" if used else "does not exist; drop --resume to start a new run"
            raise UserError(f"{self.path}: nothing to resume: the run folder {where}")
        if not resume and used and not overwrite:
            fix = "pass --resume to continue it or --overwrite to replace it" if self.has_checkpoint() else \
                "it holds no checkpoint to resume; pass --overwrite to replace it or choose another --out"
            raise UserError(f"{self.path}: run folder exists; {fix}")

    def start(self, cfg: RunConfig, overwrite: bool, resume: bool) -> MetricLog | None:
        """Rank 0: clear a replaced run's checkpoints and log, write ``config.yaml``; the metric log."""
        D.barrier(self.dist)  # every rank has validated before rank 0 writes
        if not self.dist.main:
            return None
        if overwrite and not resume and self.ckpt_dir.is_dir():
            for f in self.ckpt_dir.glob("*.safetensors"):
                f.unlink()
        if overwrite and not resume:
            self.log_path.unlink(missing_ok=True)
            self.model_path.unlink(missing_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)
        write_text(self.config_path, dump_config(cfg))
        return MetricLog(self.path)

    def trim_log(self, stage_names: list[str], stage: int, epoch: int) -> None:
        """Drop metric lines written after the checkpoint being resumed (they will be rewritten)."""
        if not self.dist.main or not self.log_path.is_file():
            return
        lines = [line for line in self.log_path.read_text(encoding="utf-8").splitlines() if line.strip()]
        keep = [line for line in lines
                if (stage_names.index(json.loads(line)["stage"]), json.loads(line)["epoch"]) < (stage, epoch)]
        write_text(self.log_path, "".join(line + "\n" for line in keep))
