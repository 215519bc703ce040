"""Open the catalog a run config names (generating the synthetic default when needed)."""

from __future__ import annotations

from crossreid.data.registry import load_dataset
from crossreid.data.samples import Catalog


def open_catalog(data, progress: bool = True) -> Catalog:
    """The catalog of ``data``, a run config's data section (``dataset``, ``root``, ``options``,
    ``synth``; data knows no config type, as :meth:`ImageStore.for_data`)."""
    if data.dataset == "synthetic" and data.root is None:
        from crossreid.data.synth import SynthParams, cached_dataset

        root = cached_dataset(SynthParams(**data.synth), progress=progress)
        return load_dataset("synthetic", root, **data.options)
    return load_dataset(data.dataset, data.root, **data.options)
