"""SYSU-MM01 (RGB cams 1, 2, 4, 5; near-infrared cams 3, 6).

Layout: ``cam{1..6}/{pid:04d}/{k:04d}.jpg`` with k = 1..n per folder, and the split
files ``exp/{train,val,test}_id.txt`` (one line of comma-separated ids; the ``.mat``
versions with variable ``id`` are read when the text files are absent).

Pools: ``train`` = every image of the train + val ids (the baselines' 395 ids);
with ``hold_out_val=True`` the val ids go to ``val`` instead. The official protocol
is one-directional, so ``query`` = the IR images (cams 3, 6) of the test ids and
``gallery`` = their RGB images (cams 1, 2, 4, 5). Ids in no split (those seen in one
modality only) are ignored.

Every pool is sorted by (cam, pid, k); ``int(sample.path.stem) - 1`` is the zero-based
position the official sampler (``rand_perm_cam.mat``) indexes, and ``sequence`` is
``cam{c}/{pid:04d}``. ``frame`` is None: no two SYSU images are co-registered. The IR
files are 3-channel JPEGs with nearly equal channels; ``images.decode`` reads
Modality.IR as luminance (one channel) on purpose.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from crossreid.data.datasets.common import (
    list_files,
    load_mat,
    read_id_list,
    read_id_mat,
    require_dir,
    require_file,
    split_train_val,
)
from crossreid.data.registry import register_dataset
from crossreid.data.samples import Catalog, Sample
from crossreid.errors import UserError
from crossreid.modality import Modality

RGB_CAMS = (1, 2, 4, 5)
IR_CAMS = (3, 6)
CAMS = (1, 2, 3, 4, 5, 6)


def camera_modality(cam: int) -> Modality:
    return Modality.IR if cam in IR_CAMS else Modality.RGB


def read_split(exp_dir: Path, part: str) -> list[int]:
    """Ids of ``part`` (train, val, test, available) from ``exp_dir``: ``.txt`` first, then ``.mat``."""
    txt, mat = exp_dir / f"{part}_id.txt", exp_dir / f"{part}_id.mat"
    if txt.is_file():
        return read_id_list(txt)
    if mat.is_file():
        return read_id_mat(mat)
    raise UserError(f"{txt}: SYSU-MM01 split file not found (nor {mat.name}); "
                    "restore exp/ from SYSU-MM01.zip or pass exp_dir=<folder with the split files>")


def _scan_folder(folder: Path, cam: int, pid: int) -> list[Sample]:
    files = list_files(folder, ".jpg")
    ks = []
    for f in files:
        if not f.stem.isdigit():
            raise UserError(f"{f}: SYSU-MM01 images must be named <k:04d>.jpg; rename or remove it")
        ks.append(int(f.stem))
    if sorted(ks) != list(range(1, len(ks) + 1)):
        raise UserError(f"{folder}: images are not numbered 1..{len(ks)} consecutively, which the official "
                        "sampler relies on; re-extract this folder from SYSU-MM01.zip")
    modality = camera_modality(cam)
    return [Sample(path=f, pid=pid, cam=cam, modality=modality, frame=None,
                   sequence=f"cam{cam}/{pid:04d}") for f in sorted(files, key=lambda p: int(p.stem))]


@register_dataset("sysu_mm01", folder="SYSU-MM01",
                  description="SYSU-MM01: 491 ids, 4 RGB + 2 near-IR cameras (query IR, gallery RGB)",
                  protocol="sysu_mm01", val_protocol="sysu_mm01_agw")
def load_sysu_mm01(root: Path, exp_dir: str | Path | None = None, hold_out_val: bool = False) -> Catalog:
    """Read the tree under ``root``; ``exp_dir`` overrides where the split files are read from."""
    root = Path(root)
    for cam in CAMS:
        require_dir(root / f"cam{cam}", f"SYSU-MM01 camera {cam}",
                    f"is {root} the extracted SYSU-MM01 folder (it needs cam1..cam6 and exp/)?")
    exp = Path(exp_dir) if exp_dir is not None else root / "exp"
    require_dir(exp, "SYSU-MM01 split (exp)", "restore exp/ from SYSU-MM01.zip or pass exp_dir=DIR")
    parts = {part: read_split(exp, part) for part in ("train", "val", "test")}
    seen: dict[int, str] = {}
    for part, ids in parts.items():
        for pid in ids:
            if pid in seen:
                raise UserError(f"{exp}: person {pid} is in both {seen[pid]} and {part} ids; "
                                "restore the split files from SYSU-MM01.zip")
            seen[pid] = part

    by_part: dict[str, list[Sample]] = {part: [] for part in parts}
    found: set[int] = set()
    for cam in CAMS:
        for pid in sorted(pid for pid in seen if (root / f"cam{cam}" / f"{pid:04d}").is_dir()):
            samples = _scan_folder(root / f"cam{cam}" / f"{pid:04d}", cam, pid)
            if samples:
                found.add(pid)
            by_part[seen[pid]].extend(samples)
    for part, ids in parts.items():
        absent = [pid for pid in ids if pid not in found]
        if absent:
            raise UserError(f"{exp / (part + '_id.txt')}: id {absent[0]} ({len(absent)} id(s) in all) has no images "
                            f"in any of {root}/cam1..cam6/{absent[0]:04d}/; restore the images or the split file")

    catalog = Catalog(root=root)
    train_val = by_part["train"] + by_part["val"]
    if hold_out_val:
        catalog.train, catalog.val = split_train_val(train_val, set(parts["val"]))
    else:
        catalog.train = train_val
    catalog.train.sort(key=lambda s: (s.cam, s.pid, int(s.path.stem)))
    catalog.val.sort(key=lambda s: (s.cam, s.pid, int(s.path.stem)))
    catalog.query = [s for s in by_part["test"] if s.modality is Modality.IR]
    catalog.gallery = [s for s in by_part["test"] if s.modality is Modality.RGB]
    return catalog


def read_rand_perm_cam(path: str | Path) -> dict[tuple[int, int], np.ndarray]:
    """The official gallery permutations: ``{(cam, pid): int64 array (10, n)}``, zero-based.

    Row t is the permutation of folder positions used in trial t + 1. Reads the 6×1
    cell of N×1 cells of ``uint8`` 10×n matrices without ``squeeze_me`` (n may be 1).
    """
    path = require_file(Path(path), "rand_perm_cam.mat",
                        "it ships in SYSU-MM01's evaluation/data_split/ folder")
    mat = load_mat(path)
    if "rand_perm_cam" not in mat:
        raise UserError(f"{path}: no variable 'rand_perm_cam'; is this the official file?")
    cells = mat["rand_perm_cam"]
    if cells.dtype != object or cells.shape != (6, 1):
        raise UserError(f"{path}: rand_perm_cam is {cells.shape} {cells.dtype}, expected a 6x1 cell array")
    out: dict[tuple[int, int], np.ndarray] = {}
    for cam in CAMS:
        per_pid = cells[cam - 1, 0]
        for pid in range(1, per_pid.shape[0] + 1):
            perm = np.asarray(per_pid[pid - 1, 0])
            if perm.size == 0:
                continue
            perm = perm.astype(np.int64) - 1
            n = perm.shape[1]
            if perm.ndim != 2 or perm.shape[0] != 10 or np.any(np.sort(perm, axis=1) != np.arange(n)):
                raise UserError(f"{path}: entry (cam {cam}, pid {pid}) is not 10 permutations of 1..{n}")
            out[(cam, pid)] = perm
    return out
