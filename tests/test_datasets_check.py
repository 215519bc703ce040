"""check_dataset: counts per pool × modality × camera, missing and corrupt files, loader errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures_real import build_sysu

from crossreid.data.datasets.check import check_dataset
from crossreid.data.registry import load_dataset
from crossreid.errors import UserError

COUNTS = [(1, 1, 3), (3, 1, 2), (2, 2, 2), (6, 2, 2), (4, 7, 2), (3, 7, 2), (5, 7, 1)]
SPLITS = {"train": [1], "val": [2], "test": [7]}


@pytest.fixture
def sysu(tmp_path) -> Path:
    return build_sysu(tmp_path / "SYSU-MM01", COUNTS, SPLITS, perm=True)


def test_good_tree(sysu):
    report = check_dataset("sysu_mm01", sysu, progress=False)
    assert report.ok and report.decoded == report.files == 14
    assert report.counts == {("train", "rgb", 1): 3, ("train", "ir", 3): 2, ("train", "rgb", 2): 2,
                             ("train", "ir", 6): 2, ("query", "ir", 3): 2, ("gallery", "rgb", 4): 2,
                             ("gallery", "rgb", 5): 1}
    assert report.ids == {"train": 2, "val": 0, "query": 1, "gallery": 1}
    text = str(report)
    assert "  query          2 images      1 ids" in text and "c4:2  c5:1" in text and text.endswith("OK")


def test_corrupt_and_skip_decoding(sysu):
    bad = sysu / "cam4" / "0007" / "0002.jpg"
    bad.write_bytes(bad.read_bytes()[:40])
    report = check_dataset("sysu_mm01", sysu, progress=False)
    assert not report.ok and [p for p, _ in report.unreadable] == [bad]
    assert str(bad) in str(report) and "1 unreadable" in str(report)
    assert check_dataset("sysu_mm01", sysu, decode_images=False, progress=False).ok


def test_missing_files_all_listed(tmp_path):
    from test_datasets_regdb import small_tree

    root = small_tree(tmp_path / "RegDB")
    gone = [root / "Visible" / "10" / "male_front_v_00100_10.bmp", root / "Thermal" / "21" / "male_front_t_00101_21.bmp"]
    for p in gone:
        p.unlink()
    report = check_dataset("regdb", root, progress=False)
    assert not report.ok and sorted(report.missing) == sorted(gone) and report.decoded == report.files - 2


def test_loader_error_becomes_problem(sysu):
    (sysu / "exp" / "test_id.txt").write_text("7,99\n")
    report = check_dataset("sysu_mm01", sysu, progress=False)
    assert not report.ok and "id 99" in report.problems[0] and report.files == 0
    assert "FAILED" in str(report)


def test_structure_problem(sysu):
    (sysu / "exp" / "test_id.txt").write_text("7,9\n")
    (sysu / "cam3" / "0009").mkdir()
    (sysu / "cam3" / "0009" / "0001.jpg").write_bytes((sysu / "cam3" / "0007" / "0001.jpg").read_bytes())
    report = check_dataset("sysu_mm01", sysu, progress=False)
    assert report.problems == ["1 query id(s) have no gallery image, e.g. 9"]


def test_wrong_root_and_option(tmp_path, sysu):
    with pytest.raises(UserError, match="not found"):
        check_dataset("sysu_mm01", tmp_path / "nowhere")
    with pytest.raises(UserError, match="bad option"):
        check_dataset("sysu_mm01", sysu, trial=3)


def test_real_dataset_is_compared_with_its_published_size(tmp_path):
    from fixtures_real import SYSU, sysu_counts

    if not (SYSU / "exp" / "test_id.txt").is_file():
        pytest.skip("shared/data (real SYSU-MM01 split files) absent")
    root = build_sysu(tmp_path / "SYSU-MM01", sysu_counts())
    (root / "exp").mkdir()
    for part in ("train", "val", "test"):
        (root / "exp" / f"{part}_id.txt").write_bytes((SYSU / "exp" / f"{part}_id.txt").read_bytes())
    perm = SYSU / "evaluation_data_split" / "rand_perm_cam.mat"
    (root / "exp" / "rand_perm_cam.mat").write_bytes(perm.read_bytes())
    assert check_dataset("sysu_mm01", root, decode_images=False, progress=False).ok
    test_id = int((SYSU / "exp" / "test_id.txt").read_text().split(",")[0])
    folder = next(root / f"cam{c}" / f"{test_id:04d}" for c in (2, 1, 4, 5)
                  if (root / f"cam{c}" / f"{test_id:04d}").is_dir())
    lost = len(list(folder.iterdir()))
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()  # a partial extraction: one person's folder of one camera is gone
    report = check_dataset("sysu_mm01", root, decode_images=False, progress=False)
    cam = int(folder.parent.name[3:])
    assert not report.ok and len(report.problems) == 1
    assert report.problems[0].startswith(f"gallery rgb cam {cam}: ") and f"missing {lost}:" in report.problems[0]


# -- what the protocols read (SYSU-MM01's rand_perm_cam.mat) --------------------------------

def test_missing_rand_perm_cam_fails_check_and_train(sysu):
    from crossreid.data.datasets.check import require_sound

    (sysu / "exp" / "rand_perm_cam.mat").unlink()
    report = check_dataset("sysu_mm01", sysu, decode_images=False, progress=False)
    assert not report.ok and len(report.problems) == 1
    assert report.problems[0].startswith(f"protocol sysu_mm01 (ir->rgb): {sysu / 'exp' / 'rand_perm_cam.mat'}: "
                                         "rand_perm_cam.mat not found")
    catalog = load_dataset("sysu_mm01", sysu)
    with pytest.raises(UserError, match="fails `crossreid check`: protocol sysu_mm01.*--ignore-check to train"):
        require_sound("sysu_mm01", catalog, {}, False, "train")
    assert require_sound("sysu_mm01", catalog, {}, True, "train", say=False).problems == report.problems


def test_rand_perm_cam_that_does_not_fit_the_folders(sysu):
    from fixtures_real import write_perm

    write_perm(sysu / "exp" / "rand_perm_cam.mat", [(c, p, n + 1) for c, p, n in COUNTS])
    report = check_dataset("sysu_mm01", sysu, decode_images=False, progress=False)
    assert [p.split(": ", 2)[2] for p in report.problems] == [
        "lists 3 images for cam4/0007, which holds 2; use the official file with the unmodified SYSU-MM01 folders"]


# -- index files and manifests: every bad line, by file and line -----------------------------

def test_regdb_bad_labels_are_each_named_by_file_and_line(tmp_path):
    from test_datasets_regdb import small_tree

    root = small_tree(tmp_path / "RegDB")
    idx = root / "idx" / "train_visible_1.txt"
    lines = idx.read_text().splitlines()  # pids 10, 10, 11, 11 with labels 0, 0, 1, 1
    lines[1] = lines[1].replace(" 0", " -1")
    lines[3] = lines[3].replace(" 1", " 0")
    idx.write_text("\n".join(lines) + "\n")
    report = check_dataset("regdb", root, progress=False)
    assert report.problems == [
        f"{idx}:2: negative label -1; labels are 0..N-1, restore the index file",
        f"{idx}:4: person 11 has label 0 here but 1 at line 3; restore the index file",
        f"{idx}:4: label 0 is person 11 here but person 10 at line 1; restore the index file"]
    with pytest.raises(UserError, match=r":2: negative label -1.*\(and 2 more; `crossreid check` lists them all\)"):
        load_dataset("regdb", root)


def test_missing_image_is_named_with_the_line_that_lists_it(tmp_path):
    from test_datasets_regdb import small_tree

    root = small_tree(tmp_path / "RegDB")
    gone = root / "Thermal" / "21" / "male_front_t_00101_21.bmp"
    gone.unlink()
    report = check_dataset("regdb", root, progress=False)
    where = f"{root / 'idx' / 'test_thermal_1.txt'}:4"
    assert report.missing == [gone] and report.listed == {gone: where}
    assert f"  missing: {gone} (listed at {where})" in str(report)
    with pytest.raises(UserError, match=f"listed in {where} but missing"):
        load_dataset("regdb", root)


def test_every_bad_manifest_row_is_reported(tmp_path):
    from conftest import write_tiny_dataset

    root = write_tiny_dataset(tmp_path / "tiny")
    lines = (root / "manifest.csv").read_text().splitlines()
    lines[2] = lines[2].replace(",1,1,", ",x,1,", 1)          # person not an integer
    lines[5] = lines[5].replace(",rgb,", ",rgbd,", 1)          # unknown modality
    lines[7] = lines[7].replace(",train,", ",later,", 1)       # unknown split
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    report = check_dataset("generic", root, progress=False)
    manifest = root / "manifest.csv"
    assert [p.split(": bad row")[0] for p in report.problems] == [f"{manifest}:3", f"{manifest}:6", f"{manifest}:8"]
    assert "unknown modality 'rgbd'; use one of: rgb (visible, vis, color, colour)" in report.problems[1]
    assert "split 'later' is not one of train, val, test, query, gallery" in report.problems[2]
