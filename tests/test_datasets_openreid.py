"""Open-reid RGB-D loaders (biwi, robotpku) against Hafner et al.'s real meta/splits files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from fixtures_real import OPENREID, build_openreid, needs_shared

from crossreid.data.datasets.rgbd_openreid import load_openreid_rgbd
from crossreid.data.registry import load_dataset
from crossreid.errors import UserError
from crossreid.modality import Modality

# Hafner et al. 2022, appendix (design = trainval, test = query = gallery), and fold-0 validation ids.
BIWI_DESIGN = [0, 1, 4, 5, 6, 7, 9, 11, 12, 13, 15, 16, 17, 18, 19, 20, 25, 26, 34, 35, 38, 39, 40, 43, 50,
               56, 57, 58, 59, 61, 62, 65, 66, 67, 69, 70, 73, 74, 76, 77]
BIWI_TEST = [2, 3, 8, 10, 14, 21, 22, 23, 24, 27, 28, 29, 30, 31, 32, 33, 36, 37, 41, 42, 44, 45, 46, 47, 48,
             49, 51, 52, 53, 54, 55, 60, 63, 64, 68, 71, 72, 75]
BIWI_VAL0 = [1, 4, 11, 26, 59, 69, 73, 76]
PKU_DESIGN = [0, 2, 3, 15, 16, 18, 19, 20, 21, 22, 23, 25, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 41, 43,
              44, 45, 46, 47, 52, 54, 55, 58, 59, 60, 63, 66, 67, 68, 72, 73, 74, 77, 78, 80, 82, 83, 84, 87, 88]
PKU_TEST = [1, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 17, 24, 26, 38, 39, 40, 42, 48, 49, 50, 51, 53, 56, 57,
            61, 62, 64, 65, 69, 70, 71, 75, 76, 79, 81, 85, 86, 89]


def tree(tmp_path_factory, name: str) -> Path:
    if not OPENREID.is_dir():
        pytest.skip("shared/data (open-reid meta/splits) absent")
    return build_openreid(tmp_path_factory.mktemp(name) / name, OPENREID / name / "meta.json")


@pytest.fixture(scope="module")
def biwi_root(tmp_path_factory):
    return tree(tmp_path_factory, "biwi")


@pytest.fixture(scope="module")
def pku_root(tmp_path_factory):
    return tree(tmp_path_factory, "robotpku")


def all_samples(cat):
    return cat.train + cat.val + cat.query


@needs_shared
def test_biwi_split0_and_counts(biwi_root):
    cat = load_dataset("biwi", biwi_root, meta_dir=OPENREID / "biwi")
    assert cat.train_pids == BIWI_DESIGN and sorted({s.pid for s in cat.query}) == BIWI_TEST
    counts = Counter(s.modality for s in all_samples(cat))
    assert counts == {Modality.RGB: 22038, Modality.DEPTH: 22038}
    assert cat.query == cat.gallery
    # slot 1 (person 0, test session) has two cameras: Still (0) and Walking (1)
    slot1 = [s for s in cat.train if s.pid == 1]
    assert {s.cam for s in slot1} == {0, 1} and slot1[0].frame == "00000000_01_0000.jpg"
    assert {s.sequence for s in slot1} == {"1_0", "1_1"}
    # RGB and depth of one frame share the file name as frame key and differ only in folder
    by_frame = Counter(s.frame for s in cat.query)
    assert set(by_frame.values()) == {2}
    rgb = next(s for s in cat.query if s.modality is Modality.RGB)
    assert rgb.path == biwi_root / "rgb" / "images" / rgb.frame


@needs_shared
def test_biwi_hold_out_val(biwi_root):
    cat = load_openreid_rgbd("biwi", biwi_root, hold_out_val=True, meta_dir=OPENREID / "biwi")
    assert sorted({s.pid for s in cat.val}) == BIWI_VAL0
    assert cat.train_pids == sorted(set(BIWI_DESIGN) - set(BIWI_VAL0))
    other = load_openreid_rgbd("biwi", biwi_root, split=1, meta_dir=OPENREID / "biwi")
    assert other.train_pids != cat.train_pids


@needs_shared
def test_robotpku_split0_and_counts(pku_root):
    cat = load_dataset("robotpku", pku_root, meta_dir=OPENREID / "robotpku")
    assert cat.train_pids == PKU_DESIGN
    assert sorted({s.pid for s in cat.query}) == [p for p in PKU_TEST if p != 89]  # slot 89 is empty
    samples = all_samples(cat)
    assert Counter(s.modality for s in samples) == {Modality.RGB: 16512, Modality.DEPTH: 16512}
    assert Counter(s.cam for s in samples if s.modality is Modality.RGB) == {0: 10054, 1: 6458}


def small(root: Path) -> Path:
    meta = {"name": "x", "shot": "multiple", "num_cameras": 2,
            "identities": [[["00000000_00_0000.jpg", "00000000_00_0001.jpg"]],
                           [["00000000_01_0000.jpg"], ["00000000_02_0000.jpg"]],
                           [["00000001_00_0000.jpg"]]]}
    splits = [{"trainval": [0, 2], "train": [0], "val": [2], "query": [1], "gallery": [1]}]
    return build_openreid(root, meta, splits)


def test_small_and_bad_input(tmp_path):
    root = small(tmp_path / "biwi")
    cat = load_dataset("robotpku", root)
    assert cat.train_pids == [0, 2] and len(cat.query) == 4
    with pytest.raises(UserError, match="split=1"):
        load_dataset("biwi", root, split=1)
    (root / "depth" / "images" / "00000000_02_0000.jpg").unlink()
    with pytest.raises(UserError, match=r"depth/images/00000000_02_0000\.jpg: listed in"):
        load_dataset("biwi", root)
    (root / "splits.json").write_text(json.dumps([{"trainval": [0, 5], "train": [], "val": [],
                                                   "query": [1], "gallery": [1]}]))
    with pytest.raises(UserError, match=r"splits\.json: split 0 trainval lists slot 5"):
        load_dataset("biwi", root)
    (root / "meta.json").write_text("{not json")
    with pytest.raises(UserError, match=r"meta\.json: not valid JSON"):
        load_dataset("biwi", root)
    with pytest.raises(UserError, match=str(tmp_path / "rgb" / "images")):
        load_dataset("biwi", tmp_path)
