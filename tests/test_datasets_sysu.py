"""SYSU-MM01 loader: a full-scale tree from the real per-folder counts, and small broken trees."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from fixtures_real import SYSU, build_sysu, needs_shared, sysu_counts
from scipy.io import savemat

from crossreid.data.datasets.common import read_id_list, read_id_mat
from crossreid.data.datasets.sysu_mm01 import load_sysu_mm01, read_rand_perm_cam
from crossreid.data.images import decode
from crossreid.data.registry import load_dataset
from crossreid.errors import UserError
from crossreid.modality import Modality


@pytest.fixture(scope="session")
def sysu_full(tmp_path_factory) -> Path:
    if not SYSU.is_dir():
        pytest.skip("shared/data (real SYSU-MM01 split files) absent")
    return build_sysu(tmp_path_factory.mktemp("sysu") / "SYSU-MM01", sysu_counts())


@needs_shared
def test_full_scale_pools(sysu_full):
    cat = load_dataset("sysu_mm01", sysu_full, exp_dir=SYSU / "exp")
    assert len(cat.query) == 3803 and len({s.pid for s in cat.query}) == 96
    assert Counter(s.cam for s in cat.query) == {3: 1883, 6: 1920}
    assert {s.modality for s in cat.query} == {Modality.IR}
    assert {s.modality for s in cat.gallery} == {Modality.RGB} and {s.cam for s in cat.gallery} == {1, 2, 4, 5}
    assert {s.pid for s in cat.gallery} == {s.pid for s in cat.query}
    assert cat.num_classes == 395
    mods = Counter(s.modality for s in cat.train)
    assert mods == {Modality.RGB: 22258, Modality.IR: 11909}
    assert not cat.val and not ({s.pid for s in cat.train} & {s.pid for s in cat.query})
    # sorted by (cam, pid, k) with k = 1..n per folder, so position = int(frame) - 1
    keys = [(s.cam, s.pid, int(s.path.stem)) for s in cat.query]
    assert keys == sorted(keys)
    first = [s for s in cat.gallery if (s.cam, s.pid) == (cat.gallery[0].cam, cat.gallery[0].pid)]
    assert [int(s.path.stem) for s in first] == list(range(1, len(first) + 1))
    assert all(s.frame is None for s in cat.query + cat.gallery)  # nothing is co-registered
    assert first[0].path == sysu_full / f"cam{first[0].cam}" / f"{first[0].pid:04d}" / "0001.jpg"


@needs_shared
def test_hold_out_val_and_all_cameras(sysu_full):
    cat = load_sysu_mm01(sysu_full, exp_dir=SYSU / "exp", hold_out_val=True)
    assert cat.num_classes == 296
    assert sorted({s.pid for s in cat.val}) == sorted(read_id_list(SYSU / "exp" / "val_id.txt"))
    test = set(read_id_list(SYSU / "exp" / "test_id.txt"))
    expected = Counter()
    for cam, pid, n in sysu_counts():
        if pid in test and cam in (1, 2, 4, 5):
            expected[cam] += n
    assert Counter(s.cam for s in cat.gallery) == expected


@needs_shared
def test_rand_perm_cam_matches_folder_counts():
    perms = read_rand_perm_cam(SYSU / "evaluation_data_split" / "rand_perm_cam.mat")
    counts = {(c, p): n for c, p, n in sysu_counts()}
    assert set(perms) == set(counts)
    for key, perm in perms.items():
        assert perm.shape == (10, counts[key]) and perm.min() == 0 and perm.max() == counts[key] - 1
    assert perms[(1, 1)].dtype == np.int64


@needs_shared
def test_mat_split_files_equal_text():
    for part in ("train", "val", "test", "available"):
        assert read_id_mat(SYSU / "exp" / f"{part}_id.mat") == read_id_list(SYSU / "exp" / f"{part}_id.txt")


SMALL = [(1, 1, 3), (3, 1, 2), (2, 2, 2), (6, 2, 2), (4, 7, 2), (3, 7, 2), (5, 9, 2)]
SPLITS = {"train": [1], "val": [2], "test": [7]}


@pytest.fixture
def small(tmp_path) -> Path:
    return build_sysu(tmp_path / "SYSU-MM01", SMALL, SPLITS)


def test_small_tree_pools_and_ir_decode(small):
    cat = load_sysu_mm01(small)
    assert [(s.cam, s.pid) for s in cat.query] == [(3, 7), (3, 7)]
    assert [(s.cam, s.pid) for s in cat.gallery] == [(4, 7), (4, 7)]
    assert cat.train_pids == [1, 2] and Counter(s.cam for s in cat.train) == {1: 3, 3: 2, 2: 2, 6: 2}
    assert decode(cat.query[0].path, cat.query[0].modality).ndim == 2  # IR read as luminance


def test_mat_split_fallback(small):
    for part, ids in SPLITS.items():
        (small / "exp" / f"{part}_id.txt").unlink()
        savemat(small / "exp" / f"{part}_id.mat", {"id": np.array([ids], dtype=np.float64)})
    assert load_sysu_mm01(small, hold_out_val=True).val[0].pid == 2


def test_wrong_root(tmp_path):
    with pytest.raises(UserError, match=str(tmp_path / "cam1")):
        load_dataset("sysu_mm01", tmp_path)


def test_missing_camera_folder(small):
    (small / "cam5").rename(small / "cam5_old")
    with pytest.raises(UserError, match="cam5"):
        load_sysu_mm01(small)


def test_split_id_without_images(small):
    (small / "exp" / "test_id.txt").write_text("7,8\n")
    with pytest.raises(UserError, match=r"test_id\.txt: id 8"):
        load_sysu_mm01(small)


def test_gap_in_numbering(small):
    (small / "cam1" / "0001" / "0002.jpg").unlink()
    with pytest.raises(UserError, match=r"cam1/0001.*consecutively"):
        load_sysu_mm01(small)


def test_malformed_split_file(small):
    (small / "exp" / "val_id.txt").write_text("2,x\n")
    with pytest.raises(UserError, match=r"val_id\.txt:1"):
        load_sysu_mm01(small)
