"""Builders of fixture trees with the real datasets' naming and tiny (4x2) images.

They read the real split/index files from ``shared/data`` (never copied into the repo)
or take hand-written lists, and write the same few bytes to every image file.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED
from PIL import Image

DATA = SHARED / "data"
SYSU = DATA / "sysu_mm01"
REGDB_IDX = DATA / "regdb" / "idx"
LLCM_IDX = DATA / "llcm" / "idx"
BIWI_FRAME = DATA / "biwi_rgbd_id" / "sample_frame"
OPENREID = DATA / "open_reid_rgbd_splits"


def image_bytes(fmt: str = "JPEG", size=(4, 2)) -> bytes:
    """One tiny colour image encoded as ``fmt`` (JPEG, BMP, PNG)."""
    arr = np.arange(size[0] * size[1] * 3, dtype=np.uint8).reshape(size[1], size[0], 3) * 9
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format=fmt)
    return buf.getvalue()


def write_files(root: Path, relpaths: Iterable[str], data: bytes) -> int:
    """Write ``data`` to every ``root/relpath``; returns the number of files."""
    made: set[Path] = set()
    n = 0
    for rel in relpaths:
        path = root / rel
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        path.write_bytes(data)
        n += 1
    return n


# -- SYSU-MM01 ----------------------------------------------------------------------------

def sysu_counts(csv_path: Path = SYSU / "derived" / "image_counts.csv") -> list[tuple[int, int, int]]:
    with open(csv_path, newline="") as fh:
        return [(int(r["cam"]), int(r["pid"]), int(r["num_images"])) for r in csv.DictReader(fh)]


def build_sysu(root: Path, counts: Iterable[tuple[int, int, int]],
               splits: dict[str, list[int]] | None = None, perm: bool = False,
               image: Callable[[int, int], bytes] | None = None) -> Path:
    """``cam{c}/{pid:04d}/{k:04d}.jpg`` for every (cam, pid, n); ``exp/*.txt`` when ``splits`` is
    given; with ``perm``, an ``exp/rand_perm_cam.mat`` that fits the folders (``write_perm``).
    ``image(cam, pid)``: the JPEG bytes of that folder's images (default: one tiny image for all)."""
    counts = list(counts)
    for cam in range(1, 7):
        (root / f"cam{cam}").mkdir(parents=True, exist_ok=True)
    if image is None:
        write_files(root, (f"cam{c}/{p:04d}/{k:04d}.jpg" for c, p, n in counts for k in range(1, n + 1)),
                    image_bytes())
    for c, p, n in counts if image is not None else ():
        write_files(root, (f"cam{c}/{p:04d}/{k:04d}.jpg" for k in range(1, n + 1)), image(c, p))
    if splits is not None:
        (root / "exp").mkdir(exist_ok=True)
        for part, ids in splits.items():
            (root / "exp" / f"{part}_id.txt").write_text(",".join(str(i) for i in ids) + "\n")
    if perm:
        (root / "exp").mkdir(exist_ok=True)
        write_perm(root / "exp" / "rand_perm_cam.mat", counts)
    return root


def write_perm(path: Path, counts: Iterable[tuple[int, int, int]]) -> Path:
    """A rand_perm_cam.mat with the official nesting (6x1 cells of per-pid cells of uint8 10xn
    matrices) for every (cam, pid, n); row t is 1..n rolled by t + 1, so folder (1, 1) of two
    images alternates [2 1] / [1 2]."""
    from scipy.io import savemat

    counts = list(counts)
    pids = max([12] + [p for _, p, _ in counts])
    cells = np.empty((6, 1), dtype=object)
    for cam in range(1, 7):
        inner = np.empty((pids, 1), dtype=object)
        for pid in range(1, pids + 1):
            inner[pid - 1, 0] = np.zeros((0, 0), dtype=np.uint8)
        cells[cam - 1, 0] = inner
    for cam, pid, n in counts:
        rows = [np.roll(np.arange(1, n + 1), t) for t in range(1, 11)]
        cells[cam - 1, 0][pid - 1, 0] = np.array(rows, dtype=np.uint8)
    savemat(str(path), {"rand_perm_cam": cells})
    return path


# -- RegDB --------------------------------------------------------------------------------

def index_relpaths(files: Iterable[Path]) -> list[str]:
    return [line.split()[0] for f in files for line in f.read_text().splitlines() if line.strip()]


def build_regdb(root: Path, idx_dir: Path, trials: Iterable[int] = (1,), crlf: bool = False) -> Path:
    """Visible/Thermal BMPs named by the idx files of ``trials``; the idx files are rewritten under root."""
    files = [idx_dir / f"{s}_{m}_{t}.txt" for t in trials for s in ("train", "test")
             for m in ("visible", "thermal")]
    write_files(root, sorted(set(index_relpaths(files))), image_bytes("BMP"))
    (root / "idx").mkdir(exist_ok=True)
    for f in files:
        text = f.read_text()
        (root / "idx" / f.name).write_bytes((text.replace("\n", "\r\n") if crlf else text).encode())
    return root


# -- LLCM ---------------------------------------------------------------------------------

def build_llcm(root: Path, idx_dir: Path = LLCM_IDX, test_folders: bool = False) -> Path:
    """``vis/`` and ``nir/`` from the idx lists (+ ``test_vis|test_nir/cam{c}/{pid}/`` copies)."""
    data = image_bytes()
    names = ("train_vis", "train_nir", "test_vis", "test_nir")
    write_files(root, index_relpaths(idx_dir / f"{n}.txt" for n in names), data)
    if test_folders:
        tests = index_relpaths(idx_dir / f"{n}.txt" for n in ("test_vis", "test_nir"))
        write_files(root, (f"test_{rel.split('/')[0]}/cam{int(rel.split('_c')[1][:2])}/"
                           f"{rel.split('/')[1]}/{rel.split('/')[2]}" for rel in tests), data)
    (root / "idx").mkdir(exist_ok=True)
    for n in names + ("test_id",):
        (root / "idx" / f"{n}.txt").write_bytes((idx_dir / f"{n}.txt").read_bytes())
    return root


# -- open-reid RGB-D (BIWI / RobotPKU prepared by Hafner et al.) -------------------------

def build_openreid(root: Path, meta: dict | Path, splits: list | Path | None = None) -> Path:
    """``rgb/images`` and ``depth/images`` holding every file ``meta`` lists (+ meta/splits json)."""
    if isinstance(meta, Path):
        meta = json.loads(meta.read_text())
    names = [n for slot in meta["identities"] for cam in slot for n in cam]
    data = image_bytes()
    for mod in ("rgb", "depth"):
        write_files(root / mod / "images", names, data)
    (root / "meta.json").write_text(json.dumps(meta))
    if splits is not None:
        if isinstance(splits, Path):
            splits = json.loads(splits.read_text())
        (root / "splits.json").write_text(json.dumps(splits))
    return root


needs_shared = pytest.mark.skipif(not DATA.is_dir(), reason="shared/data (real split files) absent")
