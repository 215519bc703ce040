"""Process-wide set-up, owned by the entry point (``crossreid train``, ``demo``, ``reproduce``),
and the private random stream of one training run.

A Trainer never seeds or reconfigures the process: it draws its randomness from its own
:class:`RandomStream` (seeded by ``train.seed``), swapped in while it builds or trains and
swapped out afterwards, so a second run in one process neither disturbs nor depends on
the first.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from crossreid import distributed as D
from crossreid.device import training_kernels


def setup_process(train, device=None) -> D.Dist:
    """Threads, GPU kernel choices and the torchrun process group, from a ``TrainConfig``; the
    group's backend is nccl when the process trains on a GPU (``device``, a ``torch.device``;
    default: when torch sees one), else gloo.

    GPUs: cuDNN autotunes its convolutions for the (fixed) training shapes and float32 matmuls and
    convolutions run in TF32 (:func:`crossreid.device.training_kernels`), unless
    ``train.deterministic`` asks for repeatable runs: then deterministic algorithms, no autotuning
    and true float32."""
    if train.threads:
        torch.set_num_threads(train.threads)
    training_kernels(fast=not train.deterministic)
    if train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
        torch.use_deterministic_algorithms(True, warn_only=True)
    return D.init_from_env(cuda=None if device is None else device.type == "cuda")


def _capture() -> tuple:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda


def _restore(state: tuple) -> None:
    py, np_state, cpu, cuda = state
    random.setstate(py)
    np.random.set_state(np_state)
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


class RandomStream:
    """The Python, NumPy and torch generators of one run: ``with stream:`` makes them the
    global ones; on exit the run's state is kept and the caller's is put back."""

    def __init__(self, seed: int) -> None:
        outer = _capture()
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        self._state = _capture()
        _restore(outer)
        self._outer: tuple | None = None
        self._depth = 0

    def __enter__(self) -> RandomStream:
        if self._depth == 0:
            self._outer = _capture()
            _restore(self._state)
        self._depth += 1
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._state = _capture()
            _restore(self._outer)
