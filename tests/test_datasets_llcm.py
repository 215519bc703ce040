"""LLCM loader: a full tree named from the real idx files, with and without the test_* folders."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from fixtures_real import LLCM_IDX, build_llcm, image_bytes, needs_shared, write_files

from crossreid.data.datasets.llcm import load_llcm
from crossreid.data.registry import load_dataset
from crossreid.errors import UserError
from crossreid.modality import Modality

TEST_VIS_CAMS = {1: 139, 2: 12, 3: 2773, 4: 3063, 5: 1994, 6: 18, 7: 345, 8: 252, 9: 84}
TEST_NIR_CAMS = {1: 19, 2: 47, 4: 58, 5: 2119, 6: 4276, 7: 217, 8: 311, 9: 119}


@pytest.fixture(scope="module")
def llcm_full(tmp_path_factory) -> Path:
    if not LLCM_IDX.is_dir():
        pytest.skip("shared/data (real LLCM idx files) absent")
    return build_llcm(tmp_path_factory.mktemp("llcm") / "LLCM", test_folders=True)


def key(s):
    return (s.modality, s.pid, s.cam, s.path.name)


@needs_shared
def test_full_tree_counts(llcm_full):
    cat = load_dataset("llcm", llcm_full)
    train = Counter(s.modality for s in cat.train)
    test = Counter(s.modality for s in cat.query)
    assert (train[Modality.RGB], train[Modality.IR], test[Modality.RGB], test[Modality.IR]) == \
        (16946, 13975, 8680, 7166)
    assert cat.num_classes == 713 and len({s.pid for s in cat.query}) == 351
    assert 3 not in {s.cam for s in cat.train + cat.query if s.modality is Modality.IR}
    assert Counter(s.cam for s in cat.query if s.modality is Modality.RGB) == TEST_VIS_CAMS
    assert Counter(s.cam for s in cat.query if s.modality is Modality.IR) == TEST_NIR_CAMS
    assert cat.query == cat.gallery
    assert all(s.path.parts[-4].startswith("test_") for s in cat.query)  # read from the test folders
    assert 0 in {s.pid for s in cat.train + cat.query}  # pid 0000 exists


@needs_shared
def test_scan_equals_folders(llcm_full):
    folders = load_llcm(llcm_full, test_source="folders")
    scanned = load_llcm(llcm_full, test_source="scan", idx_dir=LLCM_IDX)
    assert sorted(map(key, folders.query)) == sorted(map(key, scanned.query))
    assert all(s.path.parts[-3] in ("vis", "nir") for s in scanned.query)


NAMES = {  # pid -> files (vis and nir); 1 and 2 train, 0 and 5 test; NIR never in cam 3
    1: ["0001_c03_s101010_f10_vis.jpg", "0001_c05_s101011_f11_nir.jpg"],
    2: ["0002_c04_s101010_f20_vis.jpg", "0002_c06_s101011_f21_nir.jpg"],
    0: ["0000_c03_s111111_f1_vis.jpg", "0000_c04_s111112_f200_vis.jpg", "0000_c06_s111113_f3_nir.jpg"],
    5: ["0005_c01_s121212_f5_vis.jpg", "0005_c02_s121213_f6_nir.jpg"],
}


def small_tree(root: Path, test_folders: bool = False) -> Path:
    rels = {"vis": {}, "nir": {}}
    for pid, names in NAMES.items():
        for name in names:
            word = name[-7:-4]
            rels[word].setdefault(pid, []).append(f"{word}/{pid:04d}/{name}")
    write_files(root, [r for w in rels.values() for rs in w.values() for r in rs], image_bytes())
    (root / "idx").mkdir()
    for part, pids in (("train", (1, 2)), ("test", (0, 5))):
        for word in ("vis", "nir"):
            lines = [f"{rel} {i}\n" for i, pid in enumerate(pids) for rel in rels[word].get(pid, [])]
            (root / "idx" / f"{part}_{word}.txt").write_text("".join(lines))
    (root / "idx" / "test_id.txt").write_text("0005,0000")  # zero-padded, no final newline
    if test_folders:
        write_files(root, [f"test_{name[-7:-4]}/cam{int(name[6:8])}/{pid:04d}/{name}"
                           for pid in (0, 5) for name in NAMES[pid]], image_bytes())
    return root


def test_small_tree_scan(tmp_path):
    cat = load_llcm(small_tree(tmp_path / "LLCM"))
    assert cat.train_pids == [1, 2] and {s.pid for s in cat.query} == {0, 5}
    s = next(s for s in cat.query if s.path.name.startswith("0000_c04"))
    assert (s.cam, s.modality, s.frame, s.sequence) == (4, Modality.RGB, None, "0000_c04_s111112")
    assert [s.modality for s in cat.query] == sorted((s.modality for s in cat.query), key=lambda m: m is Modality.IR)


def test_small_tree_folders_and_camera_mismatch(tmp_path):
    root = small_tree(tmp_path / "LLCM", test_folders=True)
    assert {s.path.parts[-4] for s in load_llcm(root).query} == {"test_vis", "test_nir"}
    wrong = root / "test_vis" / "cam1" / "0000"
    wrong.mkdir(parents=True)
    (root / "test_vis" / "cam3" / "0000" / "0000_c03_s111111_f1_vis.jpg").rename(wrong / "0000_c03_s111111_f1_vis.jpg")
    with pytest.raises(UserError, match=r"0000_c03_s111111_f1_vis\.jpg: camera c03 .* under cam1"):
        load_llcm(root)


def test_bad_input(tmp_path):
    root = small_tree(tmp_path / "LLCM")
    with pytest.raises(UserError, match="test_source"):
        load_llcm(root, test_source="folders")
    (root / "idx" / "test_id.txt").write_text("0005,0000,0009")
    with pytest.raises(UserError, match=str(root / "vis" / "0009")):
        load_llcm(root)
    (root / "idx" / "test_id.txt").write_text("0005,0000")
    (root / "idx" / "train_nir.txt").write_text("nir/0001/0001_c05_s101011_f11_vis.jpg 0\n")
    with pytest.raises(UserError, match=r"train_nir\.txt:1: .*does not belong to nir person 0001"):
        load_llcm(root)
    (root / "idx" / "train_nir.txt").write_text("nir/0001/0001_c5_s1_f11_nir.jpg 0\n")
    with pytest.raises(UserError, match=r"train_nir\.txt:1: .*does not follow the dataset naming"):
        load_llcm(root)
    (root / "idx" / "train_nir.txt").write_text("nir/0001/0001_c05_s101011_f99_nir.jpg 0\n")
    with pytest.raises(UserError, match=r"0001_c05_s101011_f99_nir\.jpg: listed in"):
        load_llcm(root)
    with pytest.raises(UserError, match=str(tmp_path / "vis")):
        load_llcm(tmp_path)
