"""The device a command runs on, and the precision inference runs at there.

:func:`resolve_device` is the one place a ``--device`` value (``cpu``, ``cuda``, ``cuda:N``;
default: CUDA when available, else the CPU) becomes a ``torch.device``, or one clear error.
:func:`inference` is the context of every inference pass (evaluation, extraction, the embed
API, the export's check): the ``--amp`` autocast, and a CUDA out-of-memory error turned into
:class:`DeviceOutOfMemory`, which names the batch and how to make it smaller.

A leaf module; torch (and :mod:`crossreid.distributed`) are imported on use, so the command
line can list ``AMP_MODES`` without them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from crossreid.errors import UserError

if TYPE_CHECKING:
    import torch

    from crossreid.distributed import Dist

# Inference autocast: auto = bfloat16 on CUDA (float16 where the GPU lacks bfloat16), none on the
# CPU; off = float32 throughout (on CUDA with TF32 off too, the CPU's arithmetic); bf16 / fp16 forced.
AMP_MODES = ("auto", "off", "bf16", "fp16")


def resolve_device(spec: str | torch.device | None = None, dist: Dist | None = None,
                   option: str = "--device") -> torch.device:
    """``spec`` as a usable device. ``None`` or ``auto``: ``cuda`` when torch sees a GPU, else
    ``cpu``. ``cuda`` is the GPU of this process: ``cuda:LOCAL_RANK`` under torchrun, else
    ``cuda:0``. A GPU that is not there is a UserError naming ``option``."""
    import torch

    from crossreid import distributed as D

    dist = dist or D.from_env()
    text = str(spec if spec is not None else "auto").strip().lower()
    if text == "cpu":
        return torch.device("cpu")
    if text == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        text = "cuda"
    where = f"{option} {spec}" if spec is not None else "the default device (cuda)"
    kind, colon, index = text.partition(":")
    if kind != "cuda" or (colon and not index.isdigit()):
        raise UserError(f"{where}: unknown device; use cpu, cuda or cuda:N (N: a GPU's index)")
    if not torch.cuda.is_available():
        build = " (a CPU-only build)" if torch.version.cuda is None else ""
        raise UserError(f"{where}: no CUDA GPU is visible to torch {torch.__version__}{build}; use {option} cpu")
    count = torch.cuda.device_count()
    n = int(index) if index else dist.local_rank
    if dist.active and n != dist.local_rank:
        raise UserError(f"{where}: under torchrun each process uses the GPU of its LOCAL_RANK ({dist.local_rank} "
                        f"here); pass {option} cuda and choose the GPUs with CUDA_VISIBLE_DEVICES")
    if n >= count:
        if not index:
            raise UserError(f"{where}: process LOCAL_RANK={n} has no GPU of its own ({count} visible); "
                            f"start at most {count} processes per machine")
        raise UserError(f"{where}: there is no GPU {n}; this machine has {count} "
                        f"(cuda:0{f' to cuda:{count - 1}' if count > 1 else ''})")
    return torch.device("cuda", n)


def open_device(spec: str | torch.device | None = None, option: str = "--device") -> tuple[torch.device, Dist]:
    """This process's device (:func:`resolve_device`) and its place in a torchrun job, whose
    process group it joins (nccl when it works on a GPU, else gloo)."""
    from crossreid import distributed as D

    device = resolve_device(spec, D.from_env(), option)
    return device, D.init_from_env(cuda=device.type == "cuda")


def check_amp(amp: str) -> str:
    """``amp`` if it is one of :data:`AMP_MODES`, else a UserError."""
    if amp not in AMP_MODES:
        raise UserError(f"--amp {amp}: unknown; use one of {', '.join(AMP_MODES)}")
    return amp


def autocast_dtype(device: torch.device, amp: str | None = "auto") -> torch.dtype | None:
    """The autocast dtype of ``amp`` on ``device``; None for no autocast (``off``, or ``None``: as the process is set)."""
    import torch

    if amp is None:
        return None
    check_amp(amp)
    if amp == "auto":
        if device.type != "cuda":
            return None
        native_bf16 = torch.version.hip is not None or torch.cuda.get_device_properties(device).major >= 8  # Ampere on
        return torch.bfloat16 if native_bf16 else torch.float16
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


class DeviceOutOfMemory(UserError):
    """A batch did not fit in the GPU's memory. ``fix`` says how to make it smaller (``{batch}``:
    the batch that failed); for an inference batch (``during`` empty) the command line puts in
    its own way of setting the batch. ``during``: what ran out, e.g. "a training step" (whose
    ``fix`` is final)."""

    def __init__(self, device, batch: int, fix: str = "pass a smaller --batch-size (now {batch})",
                 during: str = "") -> None:
        super().__init__()
        self.device, self.batch, self.fix, self.during = device, batch, fix, during

    def __str__(self) -> str:
        fix = self.fix.format(batch=self.batch)
        where = f" in {self.during}" if self.during else ""
        return f"{self.device}: out of GPU memory{where} with a batch of {self.batch} images; {fix}"


def tf32_switches() -> list[tuple[object, str, object]]:
    """(object, attribute, value for true float32) of torch's TF32 switches for CUDA matmuls and
    convolutions: the ``fp32_precision`` interface where torch has it (2.9 on; torch refuses a mix of
    it and the older flags, and recommends it), else the ``allow_tf32`` flags."""
    import torch

    if hasattr(torch.backends.cudnn, "conv"):
        return [(torch.backends.cuda.matmul, "fp32_precision", "ieee"),
                (torch.backends.cudnn.conv, "fp32_precision", "ieee")]
    return [(torch.backends.cuda.matmul, "allow_tf32", False), (torch.backends.cudnn, "allow_tf32", False)]


def training_kernels(fast: bool) -> None:
    """The process's CUDA kernel choices for training. ``fast``: cuDNN autotunes its convolution
    algorithms for the input shapes (fixed in training) and float32 matmuls and convolutions run
    in TF32 on tensor cores; else (``train.deterministic``) deterministic cuDNN algorithms, no
    autotuning, true float32. Switches only; nothing runs on a GPU here."""
    import torch

    torch.backends.cudnn.benchmark = fast
    torch.backends.cudnn.deterministic = not fast
    for obj, name, strict in tf32_switches():
        setattr(obj, name, ("tf32" if name == "fp32_precision" else True) if fast else strict)


@contextlib.contextmanager
def _ieee_fp32() -> Iterator[None]:
    """CUDA matmuls and convolutions in true float32 (no TF32) inside, as on the CPU; the process's
    settings are put back after."""
    switches = tf32_switches()
    saved = [getattr(obj, name) for obj, name, _ in switches]
    try:
        for obj, name, strict in switches:
            setattr(obj, name, strict)
        yield
    finally:
        for (obj, name, _), value in zip(switches, saved):
            setattr(obj, name, value)


@contextlib.contextmanager
def inference(device: torch.device, amp: str | None = "auto", batch: int = 0) -> Iterator[None]:
    """Run inference on ``device`` inside: no gradients, ``amp``'s autocast (:data:`AMP_MODES`; None
    leaves autocast and TF32 as the process set them), and a CUDA out-of-memory error raised as
    :class:`DeviceOutOfMemory` for batches of ``batch``."""
    import torch

    dtype = autocast_dtype(device, amp)
    if amp is None:
        cast = contextlib.nullcontext()
    else:
        cast = torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
    strict = _ieee_fp32() if device.type == "cuda" and amp == "off" else contextlib.nullcontext()
    try:
        with torch.no_grad(), strict, cast:
            yield
    except torch.cuda.OutOfMemoryError:
        raise DeviceOutOfMemory(device, batch) from None
