"""Gallery draws shared by the protocols: per-(id, camera) folders, the AGW / DEEN Python
``random`` draw (SYSU-MM01, LLCM) and the seeded NumPy draw per identity (RGB-D, synthetic)."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

import numpy as np

from crossreid.data.samples import Sample


def folders(samples: Sequence[Sample], idx: Iterable[int]) -> dict[tuple[int, int], list[int]]:
    """``(pid, cam)`` -> indices of that folder's images, sorted by file name."""
    out: dict[tuple[int, int], list[int]] = {}
    for i in idx:
        out.setdefault((samples[i].pid, samples[i].cam), []).append(int(i))
    return {k: sorted(v, key=lambda i: samples[i].path.name) for k, v in out.items()}


def python_random_gallery(samples: Sequence[Sample], idx: Iterable[int], cams: Sequence[int], seed: int) -> np.ndarray:
    """AGW / DEEN draw: ``random.seed(seed)``, then for each id in sorted order and each camera
    of ``cams`` in list order whose folder exists, one ``random.choice`` over the sorted file list.

    A private ``random.Random`` gives the same sequence as the global generator after ``random.seed``.
    """
    groups = folders(samples, idx)
    rng = random.Random(seed)
    picked = [rng.choice(groups[(pid, cam)]) for pid in sorted({p for p, _ in groups})
              for cam in cams if (pid, cam) in groups]
    return np.array(picked, dtype=np.int64)


def draw_per_id(rng: np.random.Generator, pids: np.ndarray, idx: np.ndarray, k: int) -> np.ndarray:
    """At most ``k`` of ``idx`` per identity (``pids``: the id of each), without replacement,
    identities in sorted order; returned sorted."""
    return np.sort(np.concatenate([rng.choice(idx[pids == p], size=min(k, int((pids == p).sum())), replace=False)
                                   for p in np.unique(pids)]))
