"""check_dataset: counts per pool × modality × camera, missing and corrupt files, loader errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from crossreid.data.datasets.check import check_dataset
from crossreid.errors import UserError
from fixtures_real import build_sysu

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
