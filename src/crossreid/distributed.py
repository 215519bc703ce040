"""Distributed data parallel from the ``torchrun`` environment (gloo on CPU, nccl on CUDA).

Without ``WORLD_SIZE`` > 1 every helper is a no-op for a single process, so the same
trainer code runs alone or under ``torchrun --nproc_per_node N -m crossreid train ...``.
A leaf module: it imports nothing of crossreid but ``errors``, so every layer (engine,
methods, retrieval, the command line) takes its process-group helpers from here.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from crossreid.errors import UserError


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: ``rank`` of ``world`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def from_env() -> Dist:
    """This process's place as torchrun's RANK/WORLD_SIZE/LOCAL_RANK variables describe it (no group joined)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    return Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def init_from_env(cuda: bool | None = None) -> Dist:
    """Join the process group that torchrun's RANK/WORLD_SIZE/MASTER_* variables describe: nccl
    when this process works on its GPU (``cuda``; default: when torch sees one), else gloo."""
    d = from_env()
    if not d.active:
        return d
    if not dist.is_initialized():
        cuda = torch.cuda.is_available() if cuda is None else cuda
        if cuda:
            torch.cuda.set_device(d.local_rank)
        if not dist.is_available():
            raise UserError("WORLD_SIZE > 1 but this torch build has no torch.distributed; run one process")
        dist.init_process_group("nccl" if cuda else "gloo")
        atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    return d


def barrier(d: Dist) -> None:
    if d.active:
        dist.barrier()


def broadcast_object(d: Dist, obj):
    """``obj`` of rank 0, on every rank."""
    if not d.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_mean(d: Dist, values: dict[str, float]) -> dict[str, float]:
    """Mean over ranks of each value (same keys on every rank)."""
    if not d.active:
        return values
    keys = sorted(values)
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"  # nccl reduces GPU tensors only
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / d.world for k, v in zip(keys, t.tolist())}


def gather_rows(d: Dist, rows: np.ndarray, total: int) -> np.ndarray:
    """Concatenate each rank's rows ``rank::world`` of a ``total``-row array back into order."""
    if not d.active or total == 0:
        return rows
    parts: list = [None] * d.world
    dist.all_gather_object(parts, rows)
    dim = next(p.shape[1] for p in parts if p.size)
    out = np.empty((total, dim), dtype=np.float32)
    for r, part in enumerate(parts):
        if part.size:
            out[r::d.world] = part
    return out


def broadcast_module(d: Dist, module: torch.nn.Module, buffers_only: bool = False) -> None:
    """Copy rank 0's parameters and buffers (e.g. BN running statistics) to every rank, in place."""
    if not d.active:
        return
    with torch.no_grad():
        for t in (module.buffers() if buffers_only else module.state_dict().values()):
            dist.broadcast(t, src=0)


def gather_objects(d: Dist, obj) -> list:
    """Every rank's ``obj``, in rank order (a one-item list when alone)."""
    if not d.active:
        return [obj]
    out: list = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def all_gather_cat(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each tensor concatenated over the ranks of the current process group, in rank order
    (unchanged when alone). Ranks may hold different numbers of rows. No gradient flows."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensors
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, [t.detach().cpu() for t in tensors])
    device = tensors[0].device
    return tuple(torch.cat([p[i] for p in parts]).to(device) for i in range(len(tensors)))
