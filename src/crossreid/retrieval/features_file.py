"""Which images to extract (a folder or a CSV manifest) and the features file ``crossreid score`` reads.

A folder is walked for image files; each file's modality is ``--modality`` or the first
path component named after one (``rgb/``, ``depth/``, ``ir/``, …). A manifest is the
bring-your-own CSV (``path``, ``modality``; optional ``person``, ``camera``, ``frame``,
``sequence``, ``split``), paths relative to the CSV's folder.

The features ``.npz`` holds absolute ``paths``, ``features``, ``modalities``; ``ids``,
``cameras``, ``frames``, ``sequences`` when every image has them; and ``model``, a JSON
string naming the run, the sha256 of its weights (what indexes check) and the run's distance
(``metric``: the default of ``score`` and ``index``).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crossreid.data.images import IMAGE_SUFFIXES
from crossreid.data.samples import Sample
from crossreid.errors import UserError
from crossreid.io import atomic_path
from crossreid.modality import Modality


@dataclass(frozen=True)
class ImageEntry:
    path: Path
    modality: Modality
    pid: int | None = None
    cam: int | None = None
    frame: str | None = None
    sequence: str | None = None

    def sample(self) -> Sample:
        return Sample(self.path, -1 if self.pid is None else self.pid, -1 if self.cam is None else self.cam,
                      self.modality, self.frame, self.sequence)


def _modality_from_path(rel: Path) -> Modality | None:
    for part in rel.parts[:-1]:
        try:
            return Modality.parse(part)
        except UserError:
            continue
    return None


def _from_folder(folder: Path, modality: Modality | None) -> list[ImageEntry]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    out = []
    for f in files:
        m = modality or _modality_from_path(f.relative_to(folder))
        if m is None:
            raise UserError(f"{f}: cannot tell its modality; pass --modality, or keep images in rgb/, depth/ "
                            "and ir/ sub-folders")
        out.append(ImageEntry(f.resolve(), m))
    return out


def _optional_int(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None


def _from_manifest(csv_path: Path, splits: set[str] | None) -> list[ImageEntry]:
    out = []
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("path", "modality") if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"{csv_path}: missing column(s) {', '.join(missing)}; an image list needs path and "
                            "modality (optional: person, camera, frame, sequence, split)")
        if splits and "split" not in (reader.fieldnames or []):
            raise UserError(f"{csv_path}: --split given but the manifest has no split column; drop --split")
        for line, row in enumerate(reader, start=2):
            if splits and row["split"].strip().lower() not in splits:
                continue
            try:
                path = (csv_path.parent / row["path"]).resolve()
                out.append(ImageEntry(path, Modality.parse(row["modality"]), _optional_int(row.get("person")),
                                      _optional_int(row.get("camera")), row.get("frame") or None,
                                      row.get("sequence") or None))
            except (ValueError, UserError) as exc:
                raise UserError(f"{csv_path}:{line}: bad row ({exc}); fix or remove it") from None
            if not path.is_file():
                raise UserError(f"{csv_path}:{line}: {path} not found; fix the path or remove the row")
    return out


def read_image_list(source: str | os.PathLike, modality: str | None = None, splits: Sequence[str] = (),
                    only: Sequence[str] = ()) -> list[ImageEntry]:
    """Images of a folder or manifest; ``only`` keeps those modalities, ``splits`` those manifest splits."""
    source = Path(source)
    if source.is_dir():
        entries = _from_folder(source, Modality.parse(modality) if modality else None)
    elif source.is_file() and source.suffix.lower() == ".csv":
        entries = _from_manifest(source, {s.lower() for s in splits} or None)
        if modality:
            only = [*only, modality]
    else:
        raise UserError(f"{source}: not a folder or a .csv manifest; pass --images DIR or --images MANIFEST.csv")
    if only:
        keep = {Modality.parse(m) for m in only}
        entries = [e for e in entries if e.modality in keep]
    if not entries:
        raise UserError(f"{source}: no images found{' for ' + ', '.join(only) if only else ''}; "
                        "check the folder, --modality and --split")
    return entries


def features_arrays(entries: Sequence[ImageEntry], features: np.ndarray, model: dict | None) -> dict[str, np.ndarray]:
    """The arrays of a features file; label columns only when every image has them."""
    arrays = {"paths": np.array([str(e.path) for e in entries], dtype=str),
              "features": np.ascontiguousarray(features, dtype=np.float32),
              "modalities": np.array([e.modality.value for e in entries], dtype=str)}
    for key, attr, dtype in (("ids", "pid", np.int64), ("cameras", "cam", np.int64),
                             ("frames", "frame", str), ("sequences", "sequence", str)):
        values = [getattr(e, attr) for e in entries]
        if all(v is not None for v in values):
            arrays[key] = np.array(values, dtype=dtype)
    if model is not None:
        arrays["model"] = np.array(json.dumps(model, sort_keys=True))
    return arrays


def save_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write an uncompressed ``.npz`` atomically (nothing is left on failure)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
