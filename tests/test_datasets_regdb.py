"""RegDB loader: trees named from the real idx files (LF and CRLF), hand-made small trees, bad lines."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from fixtures_real import REGDB_IDX, build_regdb, image_bytes, needs_shared, write_files

from crossreid.data.datasets.common import read_index_file
from crossreid.data.datasets.regdb import load_regdb
from crossreid.data.registry import load_dataset
from crossreid.errors import UserError
from crossreid.modality import Modality


@pytest.fixture(scope="module")
def regdb_crlf(tmp_path_factory) -> Path:
    if not REGDB_IDX.is_dir():
        pytest.skip("shared/data (real RegDB idx files) absent")
    return build_regdb(tmp_path_factory.mktemp("regdb") / "RegDB", REGDB_IDX, trials=(1, 2), crlf=True)


@needs_shared
def test_every_real_idx_file_has_2060_lines():
    files = sorted(REGDB_IDX.glob("*.txt"))
    assert len(files) == 40
    assert all(len(read_index_file(f)) == 2060 for f in files)


@needs_shared
def test_trial_pools_from_crlf_files(regdb_crlf):
    assert b"\r\n" in (regdb_crlf / "idx" / "train_visible_1.txt").read_bytes()
    cat = load_dataset("regdb", regdb_crlf)
    assert Counter(s.modality for s in cat.train) == {Modality.RGB: 2060, Modality.IR: 2060}
    assert cat.num_classes == 206 and len({s.pid for s in cat.query}) == 206
    assert cat.query == cat.gallery and len(cat.query) == 4120
    assert {(s.modality, s.cam) for s in cat.query} == {(Modality.RGB, 1), (Modality.IR, 2)}
    first = cat.train[0]  # trial 1 train starts with pid 285 (label 0)
    assert first.pid == 285 and first.path.parent == regdb_crlf / "Visible" / "285"
    # visible and thermal of one capture share the frame key, and every frame has both
    frames = Counter(s.frame for s in cat.train)
    assert set(frames.values()) == {2} and first.frame == f"285_{first.path.stem.split('_')[3]}"
    assert {s.pid for s in cat.train}.isdisjoint({s.pid for s in cat.query})


@needs_shared
def test_trials_differ_and_lf_in_place(regdb_crlf):
    two = load_regdb(regdb_crlf, trial=2, idx_dir=REGDB_IDX)
    one = load_regdb(regdb_crlf, trial=1)
    assert {s.pid for s in one.train} != {s.pid for s in two.train}
    assert {s.pid for s in two.train} | {s.pid for s in two.query} == set(range(1, 413))


@needs_shared
def test_val_ids_held_out(regdb_crlf):
    cat = load_regdb(regdb_crlf, val_ids=20, seed=3)
    assert len({s.pid for s in cat.val}) == 20 and cat.num_classes == 186
    assert {s.pid for s in cat.val} == {s.pid for s in load_regdb(regdb_crlf, val_ids=20, seed=3).val}


def small_tree(root: Path) -> Path:
    """4 pids × 2 captures; pid 10/11 train, 20/21 test, trial 1; one trailing blank line."""
    for part, pids in (("train", (10, 11)), ("test", (20, 21))):
        for word, folder, flag in (("visible", "Visible", "v"), ("thermal", "Thermal", "t")):
            rels = [f"{folder}/{p}/male_front_{flag}_{100 + k:05d}_{p}.bmp" for p in pids for k in range(2)]
            write_files(root, rels, image_bytes("BMP"))
            (root / "idx").mkdir(parents=True, exist_ok=True)
            body = "".join(f"{rel} {i // 2}\n" for i, rel in enumerate(rels)) + "\n"
            (root / "idx" / f"{part}_{word}_1.txt").write_text(body)
    return root


def test_small_tree(tmp_path):
    cat = load_regdb(small_tree(tmp_path / "RegDB"))
    assert cat.train_pids == [10, 11] and sorted({s.frame for s in cat.query}) == ["20_00100", "20_00101",
                                                                                   "21_00100", "21_00101"]


@pytest.mark.parametrize("line, needle", [
    ("Visible/10/male_front_v_00100_10.bmp", "expected '<relative path> <integer label>'"),
    ("Visible/10/male_front_v_00100_10.bmp x", "expected '<relative path> <integer label>'"),
    ("Thermal/10/male_front_t_00100_10.bmp 0", "is not Visible/<pid>/<file>.bmp"),
    ("Visible/10/male_front_t_00100_10.bmp 0", "does not belong in Visible/10/"),
    ("Visible/10/male_front_v_00100_11.bmp 0", "does not belong in Visible/10/"),
    ("Visible/10/person_00100.bmp 0", "does not follow the dataset naming"),
])
def test_malformed_lines(tmp_path, line, needle):
    root = small_tree(tmp_path / "RegDB")
    path = root / "idx" / "train_visible_1.txt"
    path.write_text(path.read_text().rstrip("\n") + "\n" + line + "\n")
    with pytest.raises(UserError, match=rf"train_visible_1\.txt:5: .*{needle.replace('<', '.').replace('>', '.')}"):
        load_regdb(root)


def test_bad_input(tmp_path):
    root = small_tree(tmp_path / "RegDB")
    with pytest.raises(UserError, match="trial=11"):
        load_regdb(root, trial=11)
    with pytest.raises(UserError, match=r"train_visible_2\.txt: RegDB train list for trial 2 not found"):
        load_regdb(root, trial=2)
    (root / "Thermal" / "21" / "male_front_t_00101_21.bmp").unlink()
    with pytest.raises(UserError, match=r"male_front_t_00101_21\.bmp: listed in"):
        load_regdb(root)
    (root / "Thermal").rename(root / "thermal_old")
    with pytest.raises(UserError, match=str(root / "Thermal")):
        load_regdb(root)
