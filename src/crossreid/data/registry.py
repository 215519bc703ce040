"""Datasets registered by name. A loader takes a root folder and options, returns a Catalog.

Each registration names the protocol its test pools are scored with and the one its
held-out validation ids are scored with during training (default: the same).

The root comes from the caller or from ``$CROSSREID_DATA/<folder>``; no path is
written in the code.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossreid.data.samples import Catalog
from crossreid.errors import UserError
from crossreid.registry import Registry

Loader = Callable[..., Catalog]


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    loader: Loader
    folder: str
    description: str
    protocol: str
    val_protocol: str
    shared_cameras: bool = False  # one camera id = one physical camera across rgb and ir (LLCM)

    def load(self, root: Path, **options: Any) -> Catalog:
        """The loader's catalog, named by the registration (the one place a dataset's name is written)."""
        catalog = self.loader(root, **options)
        catalog.name = self.name
        return catalog


DATASETS: Registry[DatasetEntry] = Registry("dataset")


def register_dataset(name: str, folder: str, description: str, *, protocol: str,
                     val_protocol: str | None = None, shared_cameras: bool = False) -> Callable[[Loader], Loader]:
    """Decorator of a loader; ``protocol`` scores its test pools, ``val_protocol`` (default the
    same) its held-out validation ids. ``shared_cameras``: an rgb and an ir image with one camera
    id come from one physical camera, so ``crossreid check`` does not warn that the same-camera
    rule removes cross-modal gallery items. Built-in loaders are imported by ``crossreid.data.datasets``."""
    return DATASETS.decorator(name, lambda fn: DatasetEntry(name, fn, folder, description, protocol,
                                                            val_protocol or protocol, shared_cameras))


def dataset_names() -> list[str]:
    return DATASETS.names()


def get_entry(name: str) -> DatasetEntry:
    return DATASETS.get(name)


def resolve_root(name: str, root: str | os.PathLike | None) -> Path:
    entry = get_entry(name)
    if root is not None:
        path = Path(root).expanduser()
    elif os.environ.get("CROSSREID_DATA"):
        path = Path(os.environ["CROSSREID_DATA"]).expanduser() / entry.folder
    else:
        raise UserError(f"no root given for dataset {name!r}; pass --root DIR or set CROSSREID_DATA "
                        f"to the folder that holds {entry.folder}/")
    if path.is_file():
        raise UserError(f"{path}: is a file, not the dataset folder for {name!r}; pass the folder that holds "
                        f"the dataset (--root DIR)")
    if not path.is_dir():
        raise UserError(f"{path}: dataset folder for {name!r} not found; check --root or CROSSREID_DATA")
    return path


def load_dataset(name: str, root: str | os.PathLike | None = None, **options: Any) -> Catalog:
    return get_entry(name).load(resolve_root(name, root), **options)


def dataset_protocol(name: str, validation: bool = False) -> str:
    """The protocol dataset ``name`` is scored with (``validation``: its held-out val ids during training)."""
    entry = get_entry(name)
    return entry.val_protocol if validation else entry.protocol
