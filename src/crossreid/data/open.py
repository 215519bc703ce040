"""Open the catalog a run config names (generating the synthetic default when needed)."""

from __future__ import annotations

from crossreid import distributed as D
from crossreid.data.registry import load_dataset
from crossreid.data.samples import Catalog


def open_catalog(data, progress: bool = True, dist: D.Dist = D.Dist()) -> Catalog:
    """The catalog of ``data``, a run config's data section (``dataset``, ``root``, ``options``,
    ``synth``; data knows no config type, as :meth:`ImageStore.for_data`). Under torchrun
    (``dist``) rank 0 opens it first (generating the synthetic data once), then the others."""
    if not dist.main:
        D.barrier(dist)
    catalog = _open(data, progress)
    if dist.main:
        D.barrier(dist)
    return catalog


def _open(data, progress: bool) -> Catalog:
    if data.dataset == "synthetic" and data.root is None:
        from crossreid.data.synth import SynthParams, cached_dataset

        root = cached_dataset(SynthParams(**data.synth), progress=progress)
        return load_dataset("synthetic", root, **data.options)
    return load_dataset(data.dataset, data.root, **data.options)
