"""SYSU-MM01 protocols: real set sizes, the official sampler entry by entry against
rand_perm_cam.mat, the AGW draw re-done from the folders, and a hand-worked 2-id example."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
from fixtures_real import SYSU, build_sysu, sysu_counts, write_perm
from scipy.io import loadmat

from crossreid.data.datasets.common import read_id_list
from crossreid.data.registry import load_dataset
from crossreid.errors import UserError
from crossreid.evaluation import evaluate_protocol, get_protocol, score_features

PERM = SYSU / "evaluation_data_split" / "rand_perm_cam.mat"
EXPECTED_GALLERY = {("all", 1): 301, ("indoor", 1): 112, ("all", 10): 3010, ("indoor", 10): 1120}


@pytest.fixture(scope="module")
def sysu_test_tree(tmp_path_factory) -> Path:
    """The real test ids' folders with their real image counts (+ one train and one val id)."""
    if not PERM.is_file():
        pytest.skip("shared/data (real SYSU-MM01 split files) absent")
    test = read_id_list(SYSU / "exp" / "test_id.txt")
    splits = {"train": read_id_list(SYSU / "exp" / "train_id.txt")[:1],
              "val": read_id_list(SYSU / "exp" / "val_id.txt")[:1], "test": test}
    keep = {p for ids in splits.values() for p in ids}
    root = tmp_path_factory.mktemp("sysu") / "SYSU-MM01"
    return build_sysu(root, [c for c in sysu_counts() if c[1] in keep], splits)


@pytest.fixture(scope="module")
def sysu_catalog(sysu_test_tree):
    return load_dataset("sysu_mm01", sysu_test_tree)


@pytest.mark.parametrize("mode,shots", sorted(EXPECTED_GALLERY))
def test_official_sizes(sysu_catalog, mode, shots):
    trials = get_protocol("sysu_mm01", mode=mode, shots=shots, perm_file=str(PERM)).trials(sysu_catalog)
    assert len(trials) == 10
    for t in trials:
        assert len(t.query) == 3803 and len(t.gallery) == EXPECTED_GALLERY[(mode, shots)]
        assert len(set(t.gallery.tolist())) == len(t.gallery)
        assert t.cmc == "identity" and t.exclusion.describe() == ["same cam (cam 3->2)"]


@pytest.mark.parametrize("mode,shots", sorted(EXPECTED_GALLERY))
def test_official_sampler_entry_by_entry(sysu_catalog, mode, shots):
    cells = loadmat(str(PERM))["rand_perm_cam"]  # read independently of the loader's reader
    test = sorted(read_id_list(SYSU / "exp" / "test_id.txt"))
    trials = get_protocol("sysu_mm01", mode=mode, shots=shots, perm_file=str(PERM)).trials(sysu_catalog)
    cams = (1, 2, 4, 5) if mode == "all" else (1, 2)
    for t, trial in enumerate(trials):
        expected = [(cam, pid, int(k) - 1) for cam in cams for pid in test
                    if pid <= cells[cam - 1, 0].shape[0] and cells[cam - 1, 0][pid - 1, 0].size
                    for k in cells[cam - 1, 0][pid - 1, 0][t, :shots]]
        got = [(s.cam, s.pid, int(s.path.stem) - 1) for s in (sysu_catalog.gallery[i] for i in trial.gallery)]
        assert got == expected


def test_valid_queries(sysu_catalog):
    rng = np.random.default_rng(0)
    qf = rng.normal(size=(len(sysu_catalog.query), 4)).astype(np.float32)
    gf = rng.normal(size=(len(sysu_catalog.gallery), 4)).astype(np.float32)
    for mode, valid in (("all", 3803), ("indoor", 2208)):
        res = evaluate_protocol(get_protocol("sysu_mm01", mode=mode, perm_file=str(PERM)), sysu_catalog, qf, gf)
        assert [m.num_valid for m in res.trials] == [valid] * 10
        assert all(m.num_queries == 3803 and m.cmc_level == "identity" for m in res.trials)


def agw_gallery(root: Path, test_ids: list[int], cams: tuple[int, ...], trial: int) -> list[Path]:
    """AGW's process_gallery_sysu, re-done on the folders with the global ``random`` module."""
    state = random.getstate()
    try:
        random.seed(trial)
        out = []
        for pid in sorted(f"{i:04d}" for i in test_ids):
            for cam in cams:
                folder = root / f"cam{cam}" / pid
                if folder.is_dir():
                    out.append(folder / random.choice(sorted(os.listdir(folder))))
        return out
    finally:
        random.setstate(state)


@pytest.mark.parametrize("mode,cams", [("all", (1, 2, 4, 5)), ("indoor", (1, 2))])
def test_agw_draw_equals_agw_call_order(sysu_test_tree, sysu_catalog, mode, cams):
    test = read_id_list(SYSU / "exp" / "test_id.txt")
    trials = get_protocol("sysu_mm01_agw", mode=mode).trials(sysu_catalog)
    assert len(trials) == 10
    for t, trial in enumerate(trials):
        assert len(trial.query) == 3803 and len(trial.gallery) == EXPECTED_GALLERY[(mode, 1)]
        assert [sysu_catalog.gallery[i].path for i in trial.gallery] == agw_gallery(sysu_test_tree, test, cams, t)
    assert not np.array_equal(trials[0].gallery, trials[1].gallery)


# -- a hand-worked example ------------------------------------------------------------------

SMALL = [(1, 1, 2), (2, 1, 1), (3, 1, 1), (6, 1, 1), (2, 2, 1), (4, 2, 1), (3, 2, 1), (2, 3, 1), (3, 3, 1),
         (1, 10, 1), (3, 10, 1), (1, 11, 1), (3, 11, 1)]
X = {"cam1/0001/0001.jpg": 10.0, "cam1/0001/0002.jpg": 0.0, "cam2/0001/0001.jpg": 1.0, "cam2/0002/0001.jpg": 2.0,
     "cam2/0003/0001.jpg": 3.0, "cam4/0002/0001.jpg": 2.5,
     "cam3/0001/0001.jpg": 3.9, "cam3/0002/0001.jpg": 0.1, "cam3/0003/0001.jpg": 3.0, "cam6/0001/0001.jpg": 2.3}


@pytest.fixture
def small(tmp_path) -> Path:
    root = build_sysu(tmp_path / "SYSU-MM01", SMALL, {"train": [10], "val": [11], "test": [1, 2, 3]})
    write_perm(root / "exp" / "rand_perm_cam.mat", SMALL)
    np.savez(tmp_path / "feats.npz", paths=np.array(sorted(X), dtype=str),
             features=np.array([[X[p]] for p in sorted(X)], dtype=np.float32))
    return root


def test_hand_worked_all_search(small):
    # trial 0 gallery: 1@c1 (0002, x=0), 1@c2 (1), 2@c2 (2), 3@c2 (3), 2@c4 (2.5)
    # q 1@c3 x=3.9: cam2 removed -> 2@c4, 1@c1: rank 2, AP 1/2, INP 1/2
    # q 2@c3 x=0.1: cam2 removed -> 1@c1, 2@c4: rank 2, AP 1/2, INP 1/2
    # q 3@c3: its only match is in cam2 -> invalid
    # q 1@c6 x=2.3: 2@c4, 2@c2, 3@c2, 1@c2, 1@c1: image ranks 4, 5; ids 2, 3, 1 -> rank 3;
    #   AP (1/4 + 2/5)/2 = 0.325, INP 2/5
    res = score_features(small.parent / "feats.npz", "sysu_mm01", dataset="sysu_mm01", root=small)
    m = res.trials[0]
    assert (m.num_queries, m.num_valid) == (4, 3)
    assert m.cmc[:3].tolist() == pytest.approx([0, 2 / 3, 1])
    assert m.map == pytest.approx((0.5 + 0.5 + 0.325) / 3)
    assert m.minp == pytest.approx((0.5 + 0.5 + 0.4) / 3)
    cat = load_dataset("sysu_mm01", small)
    trials = get_protocol("sysu_mm01").trials(cat)
    first = [(cat.gallery[i].cam, cat.gallery[i].pid, cat.gallery[i].path.name) for i in trials[0].gallery]
    assert first == [(1, 1, "0002.jpg"), (2, 1, "0001.jpg"), (2, 2, "0001.jpg"), (2, 3, "0001.jpg"),
                     (4, 2, "0001.jpg")]
    assert cat.gallery[trials[1].gallery[0]].path.name == "0001.jpg"  # row 2 of the permutation is [1 2]


def test_hand_worked_indoor(small):
    # gallery 1@c1, 1@c2, 2@c2, 3@c2: q 2@c3 and q 3@c3 are left without a match
    # q 1@c3 x=3.9: only 1@c1 -> rank 1; q 1@c6 x=2.3: 2@c2 0.3, 3@c2 0.7, 1@c2 1.3, 1@c1 2.3 -> ranks 3, 4
    res = score_features(small.parent / "feats.npz", "sysu_mm01", {"mode": "indoor"}, dataset="sysu_mm01", root=small)
    m = res.trials[0]
    assert (m.num_queries, m.num_valid) == (4, 2)
    assert m.cmc[:3].tolist() == pytest.approx([0.5, 0.5, 1])
    assert m.map == pytest.approx((1 + (1 / 3 + 2 / 4) / 2) / 2)
    assert res.protocol["mode"] == "indoor" and res.protocol["re_ranking"] is False


def test_multi_shot_takes_what_a_short_folder_has(small):
    cat = load_dataset("sysu_mm01", small)
    (trial, *_) = get_protocol("sysu_mm01", shots=10).trials(cat)
    assert sorted(cat.gallery[i].path.name for i in trial.gallery if cat.gallery[i].cam == 1) == ["0001.jpg",
                                                                                                 "0002.jpg"]


def test_errors(small, tmp_path):
    cat = load_dataset("sysu_mm01", small)
    (small / "exp" / "rand_perm_cam.mat").unlink()
    with pytest.raises(UserError, match="rand_perm_cam.mat not found.*perm_file"):
        get_protocol("sysu_mm01").trials(cat)
    wrong = write_perm(tmp_path / "wrong.mat", [(c, p, n + 1) for c, p, n in SMALL])
    with pytest.raises(UserError, match="lists 3 images for cam1/0001, which holds 2"):
        get_protocol("sysu_mm01", perm_file=str(wrong)).trials(cat)
    with pytest.raises(UserError, match="shots=5"):
        get_protocol("sysu_mm01", shots=5)
    with pytest.raises(UserError, match="mode='outdoor'"):
        get_protocol("sysu_mm01_agw", mode="outdoor")
    with pytest.raises(UserError, match="no option 'shots'"):
        get_protocol("sysu_mm01_agw", shots=10)


def test_validation_scores_held_out_ids_with_the_agw_draw(small):
    # The official galleries come from rand_perm_cam.mat, written for the test ids; validation during
    # training (hold_out_val) uses the same query cameras and rules with AGW's file-free draw.
    from crossreid.data.samples import Catalog
    from crossreid.modality import Modality
    from crossreid.retrieval.evaluate import evaluate_directions

    class Embeds:
        embeddable = [Modality.RGB, Modality.IR]

    (small / "exp" / "rand_perm_cam.mat").unlink()
    cat = load_dataset("sysu_mm01", small, hold_out_val=True)
    val = Catalog(cat.root, name=cat.name, query=cat.val, gallery=cat.val)
    feats = np.ones((len(val.query), 2), dtype=np.float32)
    (res,) = evaluate_directions(Embeds(), val, None, None, ["ir->rgb"], features=(feats, feats),
                                 validation=True).values()
    assert res.protocol["name"] == "sysu_mm01_agw" and res.trials[0].num_valid == 1
    with pytest.raises(UserError, match="rand_perm_cam.mat not found"):
        evaluate_directions(Embeds(), val, None, None, ["ir->rgb"], features=(feats, feats))


def test_the_full_table_builds_each_setting_with_its_own_mode_and_shots():
    from crossreid.evaluation.protocols import setting_protocols

    official = setting_protocols("sysu_mm01")
    assert {label: (p.mode, p.shots) for label, p in official.items()} == {
        "all-search single-shot": ("all", 1), "all-search multi-shot": ("all", 10),
        "indoor-search single-shot": ("indoor", 1), "indoor-search multi-shot": ("indoor", 10)}
    agw = setting_protocols("sysu_mm01_agw")
    assert {label: p.mode for label, p in agw.items()} == {"all-search single-shot": "all",
                                                           "indoor-search single-shot": "indoor"}
    assert all(p.direction == "ir->rgb" for p in [*official.values(), *agw.values()])
    assert agw["all-search single-shot"].describe()["sampling"] == \
        "python random.seed(t), t=0..9; one random.choice per (id, cam), AGW call order"
