"""Validate a dataset on disk: load it, count its pools, find missing and unreadable images.

``check_dataset(name, root, **options)`` runs the registered loader (with its own
missing-file check switched off, so every missing file is listed), then checks each
referenced file exists and, unless ``decode=False``, decodes it for its modality.
A real dataset (SYSU-MM01, RegDB, LLCM with its official split files) is also compared
with its published size per pool, modality and camera (``published.py``), so a tree with
person folders missing fails; a user-built dataset keeps the checks above.
``report.ok`` is False on any problem; ``crossreid check`` prints ``report.lines()``.
"""

from __future__ import annotations

import inspect
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from crossreid.data.datasets.published import size_problems
from crossreid.data.images import decode
from crossreid.data.registry import get_entry, resolve_root
from crossreid.data.samples import Catalog
from crossreid.errors import UserError
from crossreid.modality import Modality

POOLS = ("train", "val", "query", "gallery")


@dataclass
class CheckReport:
    """What ``check_dataset`` found. ``counts`` maps (pool, modality, cam) to images."""

    name: str
    root: Path
    options: dict[str, Any] = field(default_factory=dict)
    counts: dict[tuple[str, str, int], int] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)
    files: int = 0
    decode: bool = True
    decoded: int = 0
    missing: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unreadable or self.problems)

    def lines(self, max_listed: int = 20) -> list[str]:
        opts = "".join(f" {k}={v}" for k, v in self.options.items())
        out = [f"dataset {self.name} at {self.root}{opts}"]
        for pool in POOLS:
            rows = sorted((m, c, n) for (p, m, c), n in self.counts.items() if p == pool)
            total = sum(n for _, _, n in rows)
            if not rows:
                out.append(f"  {pool:<8} empty")
                continue
            out.append(f"  {pool:<8} {total:>7} images  {self.ids.get(pool, 0):>5} ids")
            for modality in sorted({m for m, _, _ in rows}):
                cams = "  ".join(f"c{c}:{n}" for m, c, n in rows if m == modality)
                out.append(f"    {modality:<6} {sum(n for m, _, n in rows if m == modality):>7}   {cams}")
        decoded = f", {self.decoded} decoded" if self.decode else ", not decoded"
        out.append(f"  files    {self.files} distinct{decoded}")
        for label, items in (("missing", [str(p) for p in self.missing]),
                             ("unreadable", [msg for _, msg in self.unreadable]),
                             ("problem", list(self.problems))):
            for item in items[:max_listed]:
                out.append(f"  {label}: {item}")
            if len(items) > max_listed:
                out.append(f"  {label}: ... and {len(items) - max_listed} more")
        out.append("OK" if self.ok else
                   f"FAILED: {len(self.missing)} missing, {len(self.unreadable)} unreadable, "
                   f"{len(self.problems)} other problem(s)")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def _structure_problems(catalog: Catalog) -> list[str]:
    problems = []
    for pool in ("train", "query", "gallery"):
        if not catalog.pool(pool):
            problems.append(f"pool {pool} is empty")
    train_ids = {s.pid for s in catalog.train} | {s.pid for s in catalog.val}
    test_ids = {s.pid for s in catalog.query} | {s.pid for s in catalog.gallery}
    shared = train_ids & test_ids
    if shared:
        problems.append(f"{len(shared)} person id(s) are in both training and test pools, e.g. {min(shared)}")
    for pool in POOLS:
        keys = Counter((s.path, s.modality) for s in catalog.pool(pool))
        dupes = [k for k, n in keys.items() if n > 1]
        if dupes:
            problems.append(f"pool {pool} lists {len(dupes)} image(s) twice, e.g. {dupes[0][0]}")
    lonely = {s.pid for s in catalog.query} - {s.pid for s in catalog.gallery}
    if lonely:
        problems.append(f"{len(lonely)} query id(s) have no gallery image, e.g. {min(lonely)}")
    return problems


def check_dataset(name: str, root: str | Path | None = None, decode_images: bool = True,
                  progress: bool = True, **options: Any) -> CheckReport:
    """Load ``name`` from ``root`` with ``options`` and report counts and problems (see module doc)."""
    entry = get_entry(name)
    path = resolve_root(name, root)
    report = CheckReport(name=name, root=path, options=dict(options), decode=decode_images)
    signature = inspect.signature(entry.loader)
    try:
        signature.bind(path, **options)
    except TypeError as exc:
        raise UserError(f"dataset {name!r}: bad option ({exc}); see docs/datasets.md for its options") from None
    if "check_files" in signature.parameters:
        options = {**options, "check_files": False}
    try:
        catalog = entry.load(path, **options)
    except UserError as exc:
        report.problems.append(str(exc))
        return report

    for pool in POOLS:
        samples = catalog.pool(pool)
        for s in samples:
            key = (pool, str(s.modality), s.cam)
            report.counts[key] = report.counts.get(key, 0) + 1
        report.ids[pool] = len({s.pid for s in samples})
    report.problems.extend(_structure_problems(catalog))
    report.problems.extend(size_problems(name, catalog, report.options))

    files: dict[Path, Modality] = {}
    for pool in POOLS:
        for s in catalog.pool(pool):
            files.setdefault(s.path, s.modality)
    report.files = len(files)
    present = []
    for p, modality in files.items():
        (present.append((p, modality)) if p.is_file() else report.missing.append(p))
    if decode_images:
        for p, modality in tqdm(present, desc=f"decoding {name}", unit="img", disable=not progress,
                                mininterval=1.0):
            try:
                decode(p, modality)
                report.decoded += 1
            except UserError as exc:
                report.unreadable.append((p, str(exc)))
    return report
