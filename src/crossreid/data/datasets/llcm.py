"""LLCM (low-light visible ↔ near-infrared, 1,064 ids, 9 cameras; NIR has no camera 3).

Layout: ``vis|nir/{pid:04d}/{pid:04d}_c{cc}_s{seq}_f{frame}_{vis|nir}.jpg``, the index
files ``idx/{train_vis,train_nir,test_vis,test_nir}.txt`` (``<relpath> <label>``) and
``idx/test_id.txt`` (one line of zero-padded ids, no final newline). Optional
camera-sorted test copies ``test_vis|test_nir/cam{c}/{pid:04d}/``.

The camera is the ``_cNN_`` part of the file name, the person id the folder (labels
ignored); a VIS and a NIR image with the same camera number come from one physical
camera. ``frame`` is None (VIS and NIR are not co-registered); ``sequence`` is ``{pid:04d}_c{cc}_s{seq}``.

Pools: ``train`` = the ``train_*`` lists; ``val`` = ``val_ids`` training ids drawn with
``seed`` (none by default). Both directions are evaluated, so ``query`` and ``gallery``
both hold every test image of both modalities (8,680 VIS + 7,166 NIR), read from the
``test_*`` folders when present (``test_source='auto'`` or ``'folders'``), else rebuilt
from ``vis/`` and ``nir/`` for the ids in ``test_id.txt`` (``'scan'``).
"""

from __future__ import annotations

import re
from pathlib import Path

from crossreid.data.datasets.common import (
    IndexLine,
    hold_out_ids,
    list_files,
    match_name,
    parse_int_dir,
    read_id_list,
    read_listed,
    require_dir,
    require_file,
    require_files,
    split_train_val,
)
from crossreid.data.registry import register_dataset
from crossreid.data.samples import Catalog, Sample
from crossreid.errors import UserError
from crossreid.modality import Modality

NAME = re.compile(r"(?P<pid>\d{4})_c(?P<cam>\d{2})_s(?P<seq>\d+)_f(?P<frame>\d+)_(?P<mod>vis|nir)\.jpg")
NAMING = "{pid:04d}_c{cc}_s{seq}_f{frame}_{vis|nir}.jpg"
MODALITIES = {"vis": Modality.RGB, "nir": Modality.IR}


def make_sample(path: Path, word: str, pid: int, where: str) -> Sample:
    """A sample from a file in ``<word>/<pid>/`` (or a test copy), checking the name agrees."""
    m = match_name(NAME, path.name, where, NAMING)
    if m["mod"] != word or int(m["pid"]) != pid:
        raise UserError(f"{where}: {path.name!r} does not belong to {word} person {pid:04d} "
                        "(name and folder disagree); move or rename it")
    return Sample(path=path, pid=pid, cam=int(m["cam"]), modality=MODALITIES[word], frame=None,
                  sequence=f"{m['pid']}_c{m['cam']}_s{m['seq']}")


def read_list(path: Path, root: Path, word: str) -> list[Sample]:
    def parse(line: IndexLine) -> Sample:
        parts = line.relpath.split("/")
        if len(parts) != 3 or parts[0] != word or not parts[1].isdigit():
            raise UserError(f"{line.where}: path {line.relpath!r} is not {word}/<pid>/<file>.jpg; "
                            "fix the line or restore the idx file")
        return make_sample(root.joinpath(*parts), word, int(parts[1]), line.where)

    return read_listed(path, parse)


def scan_test(root: Path, word: str, test_ids: list[int]) -> list[Sample]:
    """Test images of ``test_ids`` rebuilt from ``<word>/{pid:04d}/``."""
    out = []
    for pid in sorted(test_ids):
        folder = root / word / f"{pid:04d}"
        require_dir(folder, f"LLCM {word} test person", "restore it or the idx/test_id.txt list")
        out.extend(make_sample(f, word, pid, str(f)) for f in list_files(folder, ".jpg"))
    return out


def read_test_folders(root: Path, word: str, test_ids: list[int]) -> list[Sample]:
    """Test images from ``test_<word>/cam{c}/{pid:04d}/``, checking camera folders against names."""
    top = root / f"test_{word}"
    out = []
    for cam_dir in sorted(p for p in top.iterdir() if p.is_dir()):
        if not re.fullmatch(r"cam\d+", cam_dir.name):
            raise UserError(f"{cam_dir}: unexpected folder in {top}; LLCM test folders are cam1..cam9")
        cam = int(cam_dir.name[3:])
        for pid_dir in sorted(p for p in cam_dir.iterdir() if p.is_dir()):
            pid = parse_int_dir(pid_dir, "LLCM person")
            for f in list_files(pid_dir, ".jpg"):
                sample = make_sample(f, word, pid, str(f))
                if sample.cam != cam:
                    raise UserError(f"{f}: camera c{sample.cam:02d} in the name but stored under {cam_dir.name}; move it")
                out.append(sample)
    outside = sorted({s.pid for s in out} - set(test_ids))
    if outside:
        raise UserError(f"{top}: person {outside[0]:04d} is not in idx/test_id.txt; remove it or restore the list")
    return out


@register_dataset("llcm", folder="LLCM",
                  description="LLCM: 1,064 ids, 9 cameras, low-light visible and near-IR (both directions)",
                  protocol="llcm", shared_cameras=True)
def load_llcm(root: Path, idx_dir: str | Path | None = None, test_source: str = "auto", val_ids: int = 0,
              seed: int = 0, check_files: bool = True) -> Catalog:
    """Read the tree under ``root``; ``idx_dir`` overrides ``root/idx``."""
    root = Path(root)
    fix = f"is {root} the LLCM folder (it needs vis/, nir/ and idx/)?"
    for word in MODALITIES:
        require_dir(root / word, f"LLCM {word}", fix)
    idx = Path(idx_dir) if idx_dir is not None else root / "idx"
    require_dir(idx, "LLCM index (idx)", "restore idx/ from the LLCM archive or pass idx_dir=DIR")
    if test_source not in ("auto", "folders", "scan"):
        raise UserError(f"llcm test_source={test_source!r} must be 'auto', 'folders' or 'scan'")
    have_folders = all((root / f"test_{w}").is_dir() for w in MODALITIES)
    if test_source == "folders" and not have_folders:
        raise UserError(f"{root / 'test_vis'}: camera-sorted test folders not found (test_vis/, test_nir/); "
                        "use test_source='scan' to rebuild the test set from vis/ and nir/")
    test_ids = read_id_list(require_file(idx / "test_id.txt", "LLCM test id list", "restore idx/test_id.txt"))

    train: list[Sample] = []
    for word in MODALITIES:
        train.extend(read_list(require_file(idx / f"train_{word}.txt", f"LLCM train_{word} list",
                                            "restore it from the LLCM archive"), root, word))
    clash = sorted({s.pid for s in train} & set(test_ids))
    if clash:
        raise UserError(f"{idx / 'test_id.txt'}: person {clash[0]:04d} is also in the training lists; restore idx/")
    test: list[Sample] = []
    for word in MODALITIES:
        if have_folders and test_source != "scan":
            test.extend(read_test_folders(root, word, test_ids))
        else:
            test.extend(scan_test(root, word, test_ids))
    empty = sorted(set(test_ids) - {s.pid for s in test})
    if empty:
        raise UserError(f"{idx / 'test_id.txt'}: test person {empty[0]:04d} has no images "
                        f"({len(empty)} such ids); restore the images or the list")
    order = lambda s: (s.modality is Modality.IR, s.cam, s.pid, s.path.name)  # noqa: E731
    test.sort(key=order)
    catalog = Catalog(root=root)
    held = hold_out_ids((s.pid for s in train), val_ids, seed) if val_ids else set()
    catalog.train, catalog.val = split_train_val(train, held)
    catalog.query = list(test)
    catalog.gallery = list(test)
    if check_files:
        require_files(train, f"{idx}/train_*.txt")
    return catalog
