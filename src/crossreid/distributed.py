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


class _GatherRows(torch.autograd.Function):
    """All-gather along rows whose backward sums every process's gradient and keeps this process's rows."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows, ctx.rank = len(x), dist.get_rank()
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def all_gather_grad(x: torch.Tensor) -> torch.Tensor:
    """``x`` (equal shapes on every process) concatenated over the ranks of the process group, in
    rank order, with gradients. Every process computes its loss on the whole gathered batch; the
    backward sums their gradients and keeps this process's rows, so after DDP averages the
    parameter gradients they equal one process's on the whole batch. Unchanged without a process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return x
    return _GatherRows.apply(x)


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) whose backward sums the gradients the same way."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad


class CrossRankBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics (mean, biased variance for normalising, unbiased for the
    running estimate) are those of every process's rows together, with gradients through them:
    what ``torch.nn.SyncBatchNorm`` computes, for where that cannot run (it is CUDA-only; this
    runs on CPU processes over gloo). Alone, or in eval mode, it is a plain BatchNorm."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims, shape = [0, *range(2, x.dim())], (1, -1, *([1] * (x.dim() - 2)))
        xf = x.float()
        rows = xf.new_tensor([x.numel() // x.shape[1]], dtype=torch.float64)
        sums = _SumOverRanks.apply(torch.cat([xf.sum(dims).double(), rows]))
        n = float(sums[-1].detach())  # values per channel over all processes
        mean = (sums[:-1] / n).float()
        centred = xf - mean.view(shape)
        var = _SumOverRanks.apply(centred.pow(2).sum(dims)) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), m)
                self.running_var.lerp_((var.detach() * n / max(n - 1, 1)).to(self.running_var.dtype), m)
        return y.to(x.dtype)


def sync_batchnorm(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` with every BatchNorm computing its statistics over the process group: torch's
    ``SyncBatchNorm`` on CUDA, :class:`CrossRankBatchNorm` elsewhere. Parameters and buffers are
    the same tensors; use the returned module (a BatchNorm at the top is replaced, not changed)."""
    if device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(module, CrossRankBatchNorm):
        out = CrossRankBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                 module.track_running_stats)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        if module.track_running_stats:
            out.running_mean, out.running_var = module.running_mean, module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
        return out
    for name, child in module.named_children():
        module.add_module(name, sync_batchnorm(child, device))
    return module
