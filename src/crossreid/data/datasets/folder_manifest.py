"""``crossreid manifest``: a folder of images in a layout becomes the ``generic`` dataset's manifest.

A pattern names the parts of each image's path under the folder, e.g.
``{modality}/{person}/cam{camera}_{n}.png``. Fields:

* ``modality`` (required): a modality name or alias (:data:`crossreid.modality.ALIASES`);
* ``person`` (required): any name. All-integer names are kept as ids; others are numbered
  1..N in sorted order. The name is kept in the ``person_name`` column;
* ``camera``: any name, numbered 1..K per modality (a visible and an infrared ``cam1`` are two
  cameras, so the same-camera rule keeps cross-modal pairs), or per name across modalities
  with ``shared_cameras`` (one co-registered sensor, e.g. RGB-D). Without it, each modality is
  one camera. The name is kept in ``camera_name``;
* ``split``: the layout's own split (train, val, test, query, gallery) instead of a drawn one;
* ``frame``, ``sequence``: keys that co-registered images / one recording share (they are
  made unique per person and camera);
* ``n``: an image number (digits), not used;
* ``*`` matches any text within one folder or file name.

Persons are split with ``seed`` by ``fractions`` (train / val / test; they must add up to 1)
unless the pattern has ``{split}``. Every image's header is read: images of one modality with
mixed modes are refused, and so are mixed sizes unless ``mixed_sizes`` (crops are resized to
the config's height × width anyway). The manifest is written atomically; ``crossreid check
generic --root FOLDER`` passes on it when the images are sound.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from crossreid.data.datasets.manifest import one_name_per_modality
from crossreid.data.images import IMAGE_SUFFIXES
from crossreid.errors import UserError
from crossreid.io import write_text
from crossreid.modality import Modality, accepted_names

FIELDS = ("modality", "person", "camera", "split", "frame", "sequence", "n")
SPLITS = ("train", "val", "test", "query", "gallery")
DRAWN = ("train", "val", "test")
COLUMNS = ("path", "person", "camera", "modality", "split", "frame", "sequence", "person_name", "camera_name")
DEFAULT_FRACTIONS = {"train": 0.5, "test": 0.5}


@dataclass(frozen=True)
class Match:
    """One matched file: its path relative to the folder and the pattern's fields."""

    rel: str
    fields: dict

    @property
    def modality(self) -> Modality:
        return Modality.parse(self.fields["modality"])


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """The pattern as a regular expression over '/'-separated relative paths."""
    out, pos = [], 0
    for m in re.finditer(r"\{([^{}]*)\}", pattern):
        out.append(re.escape(pattern[pos:m.start()]).replace(r"\*", r"[^/]*"))
        name = m.group(1)
        if name not in FIELDS:
            raise UserError(f"--pattern {pattern!r}: unknown field {{{name}}}; fields: "
                            + ", ".join(f"{{{f}}}" for f in FIELDS))
        if f"(?P<{name}>" in "".join(out):
            raise UserError(f"--pattern {pattern!r}: field {{{name}}} appears twice; name each part once")
        out.append(rf"(?P<{name}>\d+)" if name == "n" else rf"(?P<{name}>[^/]+?)")
        pos = m.end()
    out.append(re.escape(pattern[pos:]).replace(r"\*", r"[^/]*"))
    regex = "".join(out)
    for need in ("modality", "person"):
        if f"(?P<{need}>" not in regex:
            raise UserError(f"--pattern {pattern!r}: needs a {{{need}}} field, e.g. "
                            "'{modality}/{person}/cam{camera}_{n}.png'")
    return re.compile(regex)


def match_images(folder: Path, pattern: str) -> tuple[list[Match], list[str]]:
    """Images under ``folder`` whose relative path matches ``pattern``, and those that do not."""
    regex = compile_pattern(pattern)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                   if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    matched, other = [], []
    for rel in files:
        m = regex.fullmatch(rel)
        (matched.append(Match(rel, m.groupdict())) if m else other.append(rel))
    if not matched:
        seen = f"none of the {len(files)} image files (e.g. {files[0]})" if files else "no image files"
        raise UserError(f"--pattern {pattern!r} matches {seen} under {folder}; write the pattern for the paths "
                        "under the folder, e.g. '{modality}/{person}/cam{camera}_{n}.png'")
    return matched, other


def _modalities(images: list[Match], folder: Path) -> dict[str, Modality]:
    names = {}
    for img in images:
        name = img.fields["modality"]
        if name not in names:
            try:
                names[name] = Modality.parse(name)
            except UserError:
                raise UserError(f"{folder / img.rel}: {{modality}} is {name!r}, not a modality; accepted: "
                                f"{accepted_names()}; rename the folder or fix --pattern") from None
    one_name_per_modality({n.lower(): m for n, m in names.items()}, f"{folder}: modality names")
    return names


def _numbered(names: set[str]) -> dict[str, int]:
    """Names to integers: all-integer names keep their value, others are numbered 1..N sorted."""
    if all(n.isdigit() for n in names) and len({int(n) for n in names}) == len(names):
        return {n: int(n) for n in names}
    return {n: i for i, n in enumerate(sorted(names), start=1)}


def _camera_ids(images: list[Match], shared: bool) -> dict[tuple[Modality, str], int]:
    """(modality, camera name) -> id: one id per name across modalities when ``shared``, else per modality."""
    keys = sorted({(img.modality, img.fields.get("camera") or "") for img in images},
                  key=lambda k: (list(Modality).index(k[0]), k[1]))
    if shared:
        by_name = {name: i for i, name in enumerate(sorted({n for _, n in keys}), start=1)}
        return {k: by_name[k[1]] for k in keys}
    return {k: i for i, k in enumerate(keys, start=1)}


def parse_fractions(text: str) -> dict[str, float]:
    """``train=0.6,val=0.1,test=0.3`` into fractions that add up to 1."""
    out: dict[str, float] = {}
    for item in (t for t in text.split(",") if t.strip()):
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        try:
            share = float(value)
        except ValueError:
            share = -1.0
        if not sep or name not in DRAWN or share < 0 or name in out:
            raise UserError(f"--split {text!r}: write person fractions as train=F,val=F,test=F (each once, "
                            "F >= 0), e.g. train=0.5,test=0.5")
        out[name] = share
    if abs(sum(out.values()) - 1.0) > 1e-6:
        raise UserError(f"--split {text!r}: the fractions add up to {sum(out.values()):g}, not 1; fix them")
    return {k: v for k, v in out.items() if v > 0}


def draw_split(persons: list[str], fractions: dict[str, float], seed: int, spec: str) -> dict[str, str]:
    """Person name -> split: a seeded permutation cut by the fractions (largest remainders round)."""
    n = len(persons)
    raw = {k: f * n for k, f in fractions.items()}
    sizes = {k: int(v) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: raw[k] - sizes[k], reverse=True)[:n - sum(sizes.values())]:
        sizes[k] += 1
    need = {"train": 2, "val": 1, "test": 2}
    short = [k for k in fractions if sizes[k] < need[k]]
    if short:
        k = short[0]
        raise UserError(f"--split {spec}: {n} persons are too few: {k} gets {sizes[k]} (it needs at least "
                        f"{need[k]}); add persons or change the fractions")
    order = [persons[i] for i in np.random.default_rng(seed).permutation(n)]
    out, start = {}, 0
    for k in DRAWN:
        for p in order[start:start + sizes.get(k, 0)]:
            out[p] = k
        start += sizes.get(k, 0)
    return out


def _header_check(folder: Path, images: list[Match], mixed_sizes: bool) -> None:
    """One mode (and, unless ``mixed_sizes``, one size) per modality, read from the file headers."""
    seen: dict[Modality, dict[str, Counter]] = {}
    example: dict[tuple, str] = {}
    for img in images:
        try:
            with Image.open(folder / img.rel) as im:
                mode, size = im.mode, f"{im.width}x{im.height}"
        except (UnidentifiedImageError, OSError) as exc:
            raise UserError(f"{folder / img.rel}: unreadable image ({exc}); remove or replace it") from None
        for kind, value in (("mode", mode), ("size", size)):
            seen.setdefault(img.modality, {"mode": Counter(), "size": Counter()})[kind][value] += 1
            example.setdefault((img.modality, kind, value), img.rel)
    for modality, kinds in seen.items():
        for kind, counts in kinds.items():
            if len(counts) < 2 or (kind == "size" and mixed_sizes):
                continue
            (common, n), (rare, m) = counts.most_common(2)
            fix = ("convert them to one mode, or file each under its real modality" if kind == "mode" else
                   "crop them to one size, or pass --mixed-sizes (images are resized to the config's "
                   "height x width)")
            raise UserError(f"{folder / example[(modality, kind, rare)]}: {modality} images have mixed {kind}s: "
                            f"{rare} ({m} images) besides {common} ({n}, e.g. {example[(modality, kind, common)]}); "
                            f"{fix}")


@dataclass
class BuiltManifest:
    path: Path
    rows: list[dict]
    modality_names: dict[str, Modality]
    cameras: dict[tuple[Modality, str], int]
    unmatched: list[str]

    def summary(self) -> list[str]:
        splits = Counter(r["split"] for r in self.rows)
        persons = {s: len({r["person"] for r in self.rows if r["split"] == s}) for s in splits}
        mods = Counter(r["modality"] for r in self.rows)
        out = [f"wrote {self.path}: {len(self.rows)} images, {len({r['person'] for r in self.rows})} persons ("
               + ", ".join(f"{s} {persons[s]}" for s in SPLITS if s in persons) + ")",
               "  modalities: " + ", ".join(f"{name} -> {m} ({mods[m.value]} images)"
                                            for name, m in sorted(self.modality_names.items())),
               "  cameras (modality and name -> camera id): " + ", ".join(
                   f"{m}{' ' + name if name else ''} -> {cam}" for (m, name), cam in self.cameras.items())]
        if self.unmatched:
            out.append(f"  left out: {len(self.unmatched)} image file(s) that do not match the pattern, "
                       f"e.g. {self.unmatched[0]}")
        return out


def build_manifest(folder: str | Path, pattern: str, fractions: str | None = None, seed: int = 0,
                   shared_cameras: bool = False, mixed_sizes: bool = False, name: str = "manifest.csv",
                   overwrite: bool = False) -> BuiltManifest:
    """Write ``folder/name`` from the images matching ``pattern`` (see module doc)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: folder not found; pass the folder that holds the images")
    out = folder / name
    if out.exists() and not overwrite:
        raise UserError(f"{out}: already exists; pass --overwrite to replace it or --name to write another file")
    images, unmatched = match_images(folder, pattern)
    names = _modalities(images, folder)
    has_split = "split" in compile_pattern(pattern).groupindex
    if has_split and fractions is not None:
        raise UserError("--split: the pattern has a {split} field, so the layout gives the split; drop --split")
    _header_check(folder, images, mixed_sizes)
    person_ids = _numbered({img.fields["person"] for img in images})
    cameras = _camera_ids(images, shared_cameras)
    if has_split:
        splits = {img.rel: img.fields["split"].lower() for img in images}
        odd = next((img for img in images if splits[img.rel] not in SPLITS), None)
        if odd is not None:
            raise UserError(f"{folder / odd.rel}: {{split}} is {odd.fields['split']!r}; split folders must be named "
                            f"{', '.join(SPLITS)}")
    else:
        spec = fractions or ",".join(f"{k}={v}" for k, v in DEFAULT_FRACTIONS.items())
        by_person = draw_split(sorted(person_ids, key=person_ids.get), parse_fractions(spec), seed, spec)
        splits = {img.rel: by_person[img.fields["person"]] for img in images}
    rows = []
    for img in images:
        f, cam = img.fields, f"{img.fields.get('camera') or ''}"
        owner = f"{f['person']}/{cam}/" if cam else f"{f['person']}/"
        rows.append({"path": img.rel, "person": person_ids[f["person"]], "camera": cameras[(img.modality, cam)],
                     "modality": img.modality.value, "split": splits[img.rel],
                     "frame": owner + f["frame"] if f.get("frame") else "",
                     "sequence": owner + f["sequence"] if f.get("sequence") else "",
                     "person_name": f["person"], "camera_name": cam})
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(out, text.getvalue())
    return BuiltManifest(out, rows, names, cameras, unmatched)
