"""Bring-your-own data: a CSV manifest with one row per image.

Columns: ``path`` (relative to the root), ``person``, ``camera``, ``modality`` (rgb,
depth, ir or an alias: :data:`crossreid.modality.ALIASES`), ``split`` (train, val, test,
or query/gallery for fixed pools), and the optional ``frame`` (co-registered pairs share
it) and ``sequence``; other columns (``crossreid manifest`` adds ``person_name`` and
``camera_name``) are kept for the reader and ignored. Test rows enter both the query and
the gallery pool; the protocol decides which modality queries. Every bad row is reported,
each by its line; two spellings of one modality (``nir`` and ``thermal``) are refused, since
crossreid would merge them into one.
"""

from __future__ import annotations

import csv
from pathlib import Path

from crossreid.data.datasets.common import require_files
from crossreid.data.registry import register_dataset
from crossreid.data.samples import Catalog, Sample
from crossreid.errors import UserError, UserErrors
from crossreid.modality import Modality

REQUIRED = ("path", "person", "camera", "modality", "split")
OPTIONAL = ("frame", "sequence")
SPLITS = ("train", "val", "test", "query", "gallery")


def _sample(row: dict, root: Path, where: str) -> tuple[Sample, str]:
    split = (row["split"] or "").strip().lower()
    if split not in SPLITS:
        raise ValueError(f"split {row['split']!r} is not one of {', '.join(SPLITS)}")
    return Sample(path=root / row["path"], pid=int(row["person"]), cam=int(row["camera"]),
                  modality=Modality.parse(row["modality"]), frame=row.get("frame") or None,
                  sequence=row.get("sequence") or None, source=where), split


def one_name_per_modality(names: dict[str, Modality], where: str) -> None:
    """Refuse two spellings of one modality (``nir`` and ``thermal`` would become one ir modality)."""
    by_modality: dict[Modality, list[str]] = {}
    for name, modality in names.items():
        by_modality.setdefault(modality, []).append(name)
    for modality, spelt in by_modality.items():
        if len(spelt) > 1:
            raise UserError(f"{where}: {' and '.join(repr(n) for n in sorted(spelt))} all mean {modality}; "
                            f"if they are one modality spell it one way, if not keep only one of them "
                            f"(crossreid knows rgb, depth and ir)")


def read_manifest(csv_path: Path, root: Path, check_files: bool = True) -> Catalog:
    if not csv_path.is_file():
        raise UserError(f"{csv_path}: manifest not found; write it with `crossreid manifest` or by hand "
                        f"(columns {', '.join(REQUIRED)})")
    catalog = Catalog(root=root)
    bad: list[str] = []
    spellings: dict[str, Modality] = {}
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            fix = " (`crossreid manifest` splits by person)" if missing == ["split"] else ""
            raise UserError(f"{csv_path}: missing column(s) {', '.join(missing)}; "
                            f"the header must include {', '.join(REQUIRED)}{fix}")
        for line, row in enumerate(reader, start=2):
            where = f"{csv_path}:{line}"
            try:
                sample, split = _sample(row, root, where)
            except (ValueError, TypeError, UserError) as exc:
                bad.append(f"{where}: bad row ({exc}); fix or remove it")
                continue
            spellings.setdefault(row["modality"].strip().lower(), sample.modality)
            if split in ("test", "query"):
                catalog.query.append(sample)
            if split in ("test", "gallery"):
                catalog.gallery.append(sample)
            if split in ("train", "val"):
                catalog.pool(split).append(sample)
    if bad:
        raise UserErrors(bad)
    one_name_per_modality(spellings, f"{csv_path}: modality column")
    if not catalog.train and not catalog.query:
        raise UserError(f"{csv_path}: manifest has no rows; add images or check the file")
    if check_files:
        require_files(catalog.train + catalog.val + catalog.query + catalog.gallery, str(csv_path))
    return catalog


@register_dataset("generic", folder="generic", protocol="synthetic",
                  description="any data described by a CSV manifest (bring your own)")
def load_generic(root: Path, manifest: str = "manifest.csv", check_files: bool = True) -> Catalog:
    return read_manifest(root / manifest, root, check_files=check_files)
