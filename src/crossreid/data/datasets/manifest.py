"""Bring-your-own data: a CSV manifest with one row per image.

Columns: ``path`` (relative to the root), ``person``, ``camera``, ``modality`` (rgb,
depth, ir), ``split`` (train, val, test, or query/gallery for fixed pools), and the
optional ``frame`` (co-registered pairs share it) and ``sequence``. Test rows enter
both the query and the gallery pool; the protocol decides which modality queries.
"""

from __future__ import annotations

import csv
from pathlib import Path

from crossreid.data.registry import register_dataset
from crossreid.data.samples import Catalog, Sample
from crossreid.errors import UserError
from crossreid.modality import Modality

REQUIRED = ("path", "person", "camera", "modality", "split")
OPTIONAL = ("frame", "sequence")
SPLITS = ("train", "val", "test", "query", "gallery")


def read_manifest(csv_path: Path, root: Path, check_files: bool = True) -> Catalog:
    if not csv_path.is_file():
        raise UserError(f"{csv_path}: manifest not found; write a CSV with columns {', '.join(REQUIRED)}")
    catalog = Catalog(root=root)
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"{csv_path}: missing column(s) {', '.join(missing)}; "
                            f"the header must include {', '.join(REQUIRED)}")
        for line, row in enumerate(reader, start=2):
            try:
                split = row["split"].strip().lower()
                if split not in SPLITS:
                    raise ValueError(f"split {row['split']!r} is not one of {', '.join(SPLITS)}")
                sample = Sample(
                    path=root / row["path"],
                    pid=int(row["person"]),
                    cam=int(row["camera"]),
                    modality=Modality.parse(row["modality"]),
                    frame=(row.get("frame") or None),
                    sequence=(row.get("sequence") or None),
                )
            except (ValueError, UserError) as exc:
                raise UserError(f"{csv_path}:{line}: bad row ({exc}); fix or remove it") from None
            if split in ("test", "query"):
                catalog.query.append(sample)
            if split in ("test", "gallery"):
                catalog.gallery.append(sample)
            if split in ("train", "val"):
                catalog.pool(split).append(sample)
    if not catalog.train and not catalog.query:
        raise UserError(f"{csv_path}: manifest has no rows; add images or check the file")
    if check_files:
        for pool in (catalog.train, catalog.val, catalog.query):
            for s in pool:
                if not s.path.is_file():
                    raise UserError(f"{s.path}: listed in {csv_path} but missing; restore it or regenerate the manifest")
    return catalog


@register_dataset("generic", folder="generic", protocol="synthetic",
                  description="any data described by a CSV manifest (bring your own)")
def load_generic(root: Path, manifest: str = "manifest.csv", check_files: bool = True) -> Catalog:
    return read_manifest(root / manifest, root, check_files=check_files)
