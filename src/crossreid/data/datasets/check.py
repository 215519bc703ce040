"""Validate a dataset: what its catalog and its protocols say, and every file it lists.

:func:`catalog_findings` is cheap (no image is opened): problems that make results wrong (an
empty pool, a person in both training and test pools, duplicates, a query id without gallery
images, a real dataset smaller than published, a file a registered protocol reads missing or
inconsistent, e.g. SYSU-MM01's ``exp/rand_perm_cam.mat``) and warnings about what quietly hurts
them (identities in one modality only, rgb and ir sharing camera ids, queries left without a
true match by the protocol's exclusion rule). ``train`` and ``evaluate`` run it first
(:func:`require_sound`) and refuse a problem unless told to ignore it.

:func:`check_dataset` runs the loader with its own missing-file check off, adds those findings,
lists every missing file (with the index-file or manifest line that lists it) and, unless
``decode_images=False``, decodes every image: an unreadable one is a problem, channels that
contradict the modality (:func:`~crossreid.data.images.modality_contradiction`, the rule
``embed`` refuses with) a warning. ``report.ok`` is False on any problem; ``crossreid check``
prints ``report.lines()``.
"""

from __future__ import annotations

import inspect
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossreid.data.datasets.published import size_problems
from crossreid.data.images import decode_image, modality_contradiction, open_image
from crossreid.data.registry import DatasetEntry, get_entry, resolve_root
from crossreid.data.samples import Catalog, Sample
from crossreid.errors import UserError
from crossreid.modality import Modality
from crossreid.progress import progress_bar

POOLS = ("train", "val", "query", "gallery")


@dataclass
class Findings:
    """What :func:`catalog_findings` found: problems (results would be wrong) and warnings."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class CheckReport:
    """What ``check_dataset`` found. ``counts`` maps (pool, modality, cam) to images,
    ``ids`` pool to identities and ``modality_ids`` (pool, modality) to identities."""

    name: str
    root: Path
    options: dict[str, Any] = field(default_factory=dict)
    counts: dict[tuple[str, str, int], int] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)
    modality_ids: dict[tuple[str, str], int] = field(default_factory=dict)
    files: int = 0
    decode: bool = True
    decoded: int = 0
    missing: list[Path] = field(default_factory=list)
    listed: dict[Path, str] = field(default_factory=dict)  # missing file -> the FILE:LINE that lists it
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    mismatched: list[tuple[Path, str]] = field(default_factory=list)  # channels contradict the modality
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

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
                out.append(f"    {modality:<6} {sum(n for m, _, n in rows if m == modality):>7}  "
                           f"{self.modality_ids.get((pool, modality), 0):>5} ids   {cams}")
        decoded = f", {self.decoded} decoded" if self.decode else ", not decoded"
        out.append(f"  files    {self.files} distinct{decoded}")
        listed = [f"{p} (listed at {self.listed[p]})" if p in self.listed else str(p) for p in self.missing]
        for label, items in (("missing", listed),
                             ("unreadable", [msg for _, msg in self.unreadable]),
                             ("problem", list(self.problems)),
                             ("warning", list(self.warnings)),
                             ("warning", [f"{p}: {why}" for p, why in self.mismatched])):
            for item in items[:max_listed]:
                out.append(f"  {label}: {item}")
            if len(items) > max_listed:
                out.append(f"  {label}: ... and {len(items) - max_listed} more")
        warned = len(self.warnings) + len(self.mismatched)
        warned_text = f"{warned} warning(s)" if warned else ""
        out.append(("OK" + (f" with {warned_text}" if warned else "")) if self.ok else
                   f"FAILED: {len(self.missing)} missing, {len(self.unreadable)} unreadable, "
                   f"{len(self.problems)} other problem(s)" + (f"; {warned_text}" if warned else ""))
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


# ---------------------------------------------------------------------------- catalog level (cheap)

def _structure_problems(catalog: Catalog, needed: Sequence[str]) -> list[str]:
    problems = []
    for pool in needed:
        if not catalog.pool(pool):
            problems.append(f"pool {pool} is empty")
    train_ids = {s.pid for s in catalog.train} | {s.pid for s in catalog.val}
    test_ids = {s.pid for s in catalog.query} | {s.pid for s in catalog.gallery}
    shared = train_ids & test_ids
    if shared:
        problems.append(f"{len(shared)} person id(s) are in both training and test pools, e.g. {min(shared)}: "
                        "test results would measure identities the model was trained on; split by person")
    for pool in POOLS:
        keys = Counter((s.path, s.modality) for s in catalog.pool(pool))
        dupes = [k for k, n in keys.items() if n > 1]
        if dupes:
            problems.append(f"pool {pool} lists {len(dupes)} image(s) twice, e.g. {dupes[0][0]}")
    lonely = {s.pid for s in catalog.query} - {s.pid for s in catalog.gallery}
    if lonely:
        problems.append(f"{len(lonely)} query id(s) have no gallery image, e.g. {min(lonely)}")
    return problems


def _one_modality_warnings(catalog: Catalog) -> list[str]:
    """Identities seen in only one of the catalog's modalities, for training and for test."""
    modalities = catalog.modalities
    if len(modalities) < 2:
        return []
    out = []
    for what, samples, effect in (
            ("training", catalog.train, "training draws identities present in every modality, so they are "
                                        "not trained on"),
            ("test", catalog.query + catalog.gallery, "their queries have no match in the other modality and "
                                                      "are not scored")):
        seen: dict[int, set[Modality]] = {}
        for s in samples:
            seen.setdefault(s.pid, set()).add(s.modality)
        partial = sorted(pid for pid, mods in seen.items() if len(mods) < len(modalities))
        if partial:
            pid = partial[0]
            only = "+".join(str(m) for m in modalities if m in seen[pid])
            out.append(f"{len(partial)} of {len(seen)} {what} id(s) have images in one modality only "
                       f"(e.g. {pid}: {only} only); {effect}")
    return out


def _shared_camera_ids(catalog: Catalog) -> list[int]:
    """Camera ids that both rgb and ir images carry."""
    cams = {m: set() for m in (Modality.RGB, Modality.IR)}
    for pool in POOLS:
        for s in catalog.pool(pool):
            if s.modality in cams:
                cams[s.modality].add(s.cam)
    return sorted(cams[Modality.RGB] & cams[Modality.IR])


def _directions(name: str, catalog: Catalog) -> list[tuple[Modality, Modality]]:
    """The directions protocol ``name`` scores on ``catalog``: its own, else every cross-modal pair."""
    from crossreid.evaluation.protocols import PROTOCOLS

    fixed = getattr(PROTOCOLS.get(name), "directions", None)
    have = catalog.modalities
    pairs = fixed if fixed is not None else [(q, g) for q in have for g in have if q != g]
    return [(q, g) for q, g in pairs if q in have and g in have]


def _protocol_findings(protocols: Sequence[tuple[str, Catalog]], shared: list[int],
                       warn_shared: bool) -> Findings:
    """Build each (protocol, catalog) on its directions and draw its trials (reading every file it
    needs); a failure is a problem. On the first trial, queries left without a true match by the
    exclusion rule are a warning, and so is the share of cross-modal galleries that the rule
    removes when rgb and ir share camera ids."""
    from crossreid.evaluation.chance import gallery_reach
    from crossreid.evaluation.protocols import protocol_for, sample_columns

    found, removal = Findings(), []
    for name, catalog in protocols:
        for q, g in _directions(name, catalog):
            where = f"protocol {name} ({q}->{g})"
            try:
                trial = protocol_for(name, q, g).trials(catalog)[0]
            except UserError as exc:
                found.problems.append(f"{where}: {exc}")
                continue
            qcols = sample_columns([catalog.query[i] for i in trial.query])
            gcols = sample_columns([catalog.gallery[i] for i in trial.gallery])
            reach = gallery_reach(qcols, gcols, trial.exclusion)
            rule = ", ".join(trial.exclusion.describe()) or "none"
            invalid = int((~reach.valid).sum())
            if invalid:
                found.warnings.append(f"{where}: {invalid} of {len(reach.valid)} queries keep no image of their "
                                      f"identity in the gallery after the exclusion rule ({rule}) and are not scored")
            if {q, g} == {Modality.RGB, Modality.IR} and len(trial.gallery):
                removal.append(f"{q}->{g} {100 * (1 - reach.kept.mean() / len(trial.gallery)):.0f} %")
    if shared and warn_shared:
        found.warnings.append(
            f"rgb and ir images share camera id(s) {', '.join(map(str, shared))}: protocols remove a query's "
            f"own-camera gallery items (the same-camera rule), so an rgb query also loses the ir images of its "
            f"camera id{' (' + '; '.join(removal) + ' of each gallery removed)' if removal else ''}; if they are "
            "different sensors, number their cameras apart (`crossreid manifest` does so unless told "
            "--shared-cameras)")
    return found


def catalog_findings(name: str, catalog: Catalog, options: dict[str, Any] | None = None,
                     protocols: Sequence[str] | None = None,
                     needed: Sequence[str] = ("train", "query", "gallery")) -> Findings:
    """What is wrong (problems) or doubtful (warnings) in ``catalog`` of dataset ``name``, without
    opening an image. ``protocols`` (default: the dataset's test protocol, and its validation
    protocol on the val pool when there is one) are built and their trials drawn; an empty pool
    of ``needed`` is a problem."""
    entry: DatasetEntry = get_entry(name)
    found = Findings(_structure_problems(catalog, needed) + size_problems(name, catalog, dict(options or {})),
                     _one_modality_warnings(catalog))
    if catalog.query and catalog.gallery:
        runs = [(p, catalog) for p in (protocols or [entry.protocol])]
        if protocols is None and catalog.val:
            runs.append((entry.val_protocol, Catalog(catalog.root, query=catalog.val, gallery=catalog.val,
                                                     name=catalog.name)))
        more = _protocol_findings(runs, _shared_camera_ids(catalog), not entry.shared_cameras)
        found.problems += more.problems
        found.warnings += more.warnings
    return found


def require_sound(name: str, catalog: Catalog, options: dict[str, Any] | None, ignore: bool, command: str,
                  protocols: Sequence[str] | None = None, say: bool = True) -> Findings:
    """:func:`catalog_findings` at the start of ``command`` (``train``: an empty test pool is no
    problem; ``evaluate``: an empty training pool is none): a problem is one UserError unless
    ``ignore``; warnings (and ignored problems) are printed on stderr when ``say``."""
    needed = ("train",) if command == "train" else ("query", "gallery")
    found = catalog_findings(name, catalog, options, protocols, needed)
    if found.problems and not ignore:
        more = f" (and {len(found.problems) - 1} more)" if len(found.problems) > 1 else ""
        given = "".join(f" --option {k}={v}" for k, v in (options or {}).items())
        raise UserError(f"dataset {name} at {catalog.root} fails `crossreid check`: {found.problems[0]}{more}; "
                        f"fix the data (`crossreid check {name} --root {catalog.root}{given}` lists everything) or "
                        f"pass --ignore-check to {command} anyway")
    for line in [f"ignored (--ignore-check): {p}" for p in found.problems] + found.warnings:
        if say:
            print(f"warning: {line}", file=sys.stderr)
    return found


# ---------------------------------------------------------------------------- files

def _count(report: CheckReport, catalog: Catalog) -> None:
    for pool in POOLS:
        samples = catalog.pool(pool)
        for s in samples:
            key = (pool, str(s.modality), s.cam)
            report.counts[key] = report.counts.get(key, 0) + 1
        report.ids[pool] = len({s.pid for s in samples})
        for modality in {s.modality for s in samples}:
            report.modality_ids[(pool, str(modality))] = len({s.pid for s in samples if s.modality is modality})


def _check_files(report: CheckReport, catalog: Catalog, decode_images: bool, progress: bool) -> None:
    files: dict[Path, Sample] = {}
    for pool in POOLS:
        for s in catalog.pool(pool):
            files.setdefault(s.path, s)
    report.files = len(files)
    present = []
    for p, s in files.items():
        if p.is_file():
            present.append(s)
            continue
        report.missing.append(p)
        if s.source:
            report.listed[p] = s.source
    if not decode_images:
        return
    for s in progress_bar(present, desc=f"decoding {report.name}", unit="img", enabled=progress):
        try:
            img = open_image(s.path)
            why = modality_contradiction(img, s.modality)
            decode_image(img, s.modality, s.path)
            report.decoded += 1
        except UserError as exc:
            report.unreadable.append((s.path, str(exc)))
            continue
        if why:
            report.mismatched.append((s.path, f"{why} (listed as {s.modality})"))


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
        report.problems.extend(getattr(exc, "problems", [str(exc)]))
        return report
    _count(report, catalog)
    found = catalog_findings(name, catalog, report.options)
    report.problems.extend(found.problems)
    report.warnings.extend(found.warnings)
    _check_files(report, catalog, decode_images, progress)
    return report
