"""LLCM protocol: real sizes from the idx files, the DEEN draw re-done from the test folders,
same-id-same-camera removal and the deen_compat transposition by hand."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
from fixtures_real import LLCM_IDX, image_bytes, index_relpaths, write_files

from crossreid.data.registry import load_dataset
from crossreid.data.samples import Catalog, Sample
from crossreid.errors import UserError
from crossreid.evaluation import evaluate_protocol, get_protocol
from crossreid.modality import Modality

CAMS = {"vis": (1, 2, 3, 4, 5, 6, 7, 8, 9), "nir": (1, 2, 4, 5, 6, 7, 8, 9)}


@pytest.fixture(scope="module")
def llcm_test_tree(tmp_path_factory) -> Path:
    """The real test images as ``test_vis|test_nir/cam{c}/{pid}/`` (training files are not needed)."""
    if not LLCM_IDX.is_dir():
        pytest.skip("shared/data (real LLCM idx files) absent")
    root = tmp_path_factory.mktemp("llcm") / "LLCM"
    rels = index_relpaths(LLCM_IDX / f"test_{w}.txt" for w in ("vis", "nir"))
    write_files(root, (f"test_{r.split('/')[0]}/cam{int(r.split('_c')[1][:2])}/{r.split('/', 1)[1]}" for r in rels),
                image_bytes())
    for word in ("vis", "nir", "idx"):
        (root / word).mkdir()
    for f in LLCM_IDX.iterdir():
        (root / "idx" / f.name).write_bytes(f.read_bytes())
    return root


@pytest.fixture(scope="module")
def llcm_catalog(llcm_test_tree):
    return load_dataset("llcm", llcm_test_tree, test_source="folders", check_files=False)


def deen_gallery(root: Path, word: str, trial: int) -> list[Path]:
    """DEEN's process_gallery_llcm, re-done on the folders with the global ``random`` module."""
    state = random.getstate()
    try:
        random.seed(trial)
        ids = sorted({d for c in CAMS[word] if (root / f"test_{word}" / f"cam{c}").is_dir()
                      for d in os.listdir(root / f"test_{word}" / f"cam{c}")})
        out = []
        for pid in ids:
            for cam in CAMS[word]:
                folder = root / f"test_{word}" / f"cam{cam}" / pid
                if folder.is_dir():
                    out.append(folder / random.choice(sorted(os.listdir(folder))))
        return out
    finally:
        random.setstate(state)


@pytest.mark.parametrize("direction,queries,gallery,word", [("ir->rgb", 7166, 484, "vis"), ("rgb->ir", 8680, 619, "nir")])
def test_real_sizes_and_deen_draw(llcm_test_tree, llcm_catalog, direction, queries, gallery, word):
    trials = get_protocol("llcm", direction=direction).trials(llcm_catalog)
    assert len(trials) == 10
    for t, trial in enumerate(trials):
        assert len(trial.query) == queries and len(trial.gallery) == gallery
        assert [llcm_catalog.gallery[i].path for i in trial.gallery] == deen_gallery(llcm_test_tree, word, t)
        assert trial.cmc == "identity" and trial.exclusion.describe() == ["same pid+cam"]


def test_real_valid_queries(llcm_catalog):
    feats = np.random.default_rng(0).normal(size=(len(llcm_catalog.query), 4)).astype(np.float32)
    for direction, valid in (("ir->rgb", 7166), ("rgb->ir", 8670)):
        res = evaluate_protocol(get_protocol("llcm", direction=direction), llcm_catalog, feats, feats)
        assert {m.num_valid for m in res.trials} == {valid}
    res = evaluate_protocol(get_protocol("llcm", direction="rgb->ir", deen_compat=True), llcm_catalog, feats, feats)
    assert {m.num_queries for m in res.trials} == {619}
    (full,) = get_protocol("llcm", gallery="full").trials(llcm_catalog)
    assert (len(full.query), len(full.gallery)) == (7166, 8680)


def test_deen_compat_trials(llcm_catalog):
    natural = get_protocol("llcm", direction="rgb->ir").trials(llcm_catalog)
    compat = get_protocol("llcm", direction="vis->nir", deen_compat=True).trials(llcm_catalog)
    for n, c in zip(natural, compat):
        assert [llcm_catalog.query[i].path for i in c.query] == [llcm_catalog.gallery[i].path for i in n.gallery]
        assert len(c.gallery) == 8680 and {llcm_catalog.gallery[i].modality.value for i in c.gallery} == {"rgb"}


# -- hand-worked -------------------------------------------------------------------------------
# one image per (id, camera) folder, so every trial draws the same gallery
VIS = {(1, 4): 5.0, (1, 5): 0.0, (2, 4): 1.0, (2, 6): 2.0, (3, 7): 100.0}
NIR = {(1, 5): 0.1, (2, 6): 1.8, (3, 7): 100.0}


def small() -> tuple[Catalog, np.ndarray]:
    samples = [Sample(Path(f"{w}/{p:04d}/{p:04d}_c{c:02d}_s1_f1_{w}.jpg"), p, c, m, frame=str(x))
               for w, m, table in (("vis", Modality.RGB, VIS), ("nir", Modality.IR, NIR))
               for (p, c), x in table.items()]
    feats = np.array([[float(s.frame)] for s in samples], dtype=np.float32)
    return Catalog(Path("."), name="llcm", query=samples, gallery=list(samples)), feats


def test_hand_worked_ir_to_vis():
    # q 1@c5 x=0.1 loses VIS 1@c5 (same id, same camera): 2@c4, 2@c6, 1@c4 -> image rank 3, id rank 2, AP 1/3
    # q 2@c6 x=1.8 loses 2@c6: 2@c4 (0.8) first -> rank 1, AP 1
    # q 3@c7: its only match is in its own camera -> invalid
    cat, feats = small()
    for options in ({}, {"gallery": "full"}):
        res = evaluate_protocol(get_protocol("llcm", **options), cat, feats, feats)
        for m in res.trials:
            assert (m.num_queries, m.num_valid) == (3, 2)
            assert m.cmc[:2].tolist() == pytest.approx([0.5, 1])
            assert m.map == pytest.approx((1 / 3 + 1) / 2) and m.minp == pytest.approx((1 / 3 + 1) / 2)


def test_hand_worked_vis_to_ir_and_deen_compat():
    # natural: q 1@c4 x=5: 2@c6 (3.2), 1@c5 (4.9) -> rank 2, AP 1/2; q 2@c4 x=1: 2@c6 (0.8) first -> AP 1;
    # 1@c5, 2@c6, 3@c7 lose their only match (same camera) -> invalid
    cat, feats = small()
    (m, *_) = evaluate_protocol(get_protocol("llcm", direction="rgb->ir"), cat, feats, feats).trials
    assert (m.num_queries, m.num_valid) == (5, 2) and m.rank(1) == 0.5 and m.map == pytest.approx(0.75)
    # DEEN's transposition scores the 3 sampled NIR images against all VIS: here the IR->VIS numbers
    ir = evaluate_protocol(get_protocol("llcm"), cat, feats, feats).trials[0]
    compat = evaluate_protocol(get_protocol("llcm", direction="rgb->ir", deen_compat=True), cat, feats, feats)
    assert compat.trials[0].summary() == ir.summary() and compat.trials[0].num_queries == 3
    assert "deen_compat" in compat.protocol["direction"]
    # identity-level CMC as the natural direction (q 1@c5 ranks its id 2nd, its image 3rd)
    assert compat.trials[0].cmc_level == ir.cmc_level == "identity" and compat.trials[0].rank(2) == 1.0


def test_errors():
    with pytest.raises(UserError, match="deen_compat"):
        get_protocol("llcm", gallery="full", deen_compat=True)
    with pytest.raises(UserError, match="gallery_draw='half'"):
        get_protocol("llcm", gallery_draw="half")
    with pytest.raises(UserError, match="unknown modality 'half'"):
        get_protocol("llcm", gallery="half")  # gallery= names the gallery modality (or, as before, sampled/full)
    with pytest.raises(UserError, match="does not score rgb->depth"):
        get_protocol("llcm", direction="rgb->depth")
    with pytest.raises(UserError, match="deen_compat='yes'"):
        get_protocol("llcm", deen_compat="yes")


def test_hand_worked_idkl_llcm_test_removes_nothing():
    """IDKL's released LLCM test: one pass, whole gallery, and no item removed (its camera ids are 2 for
    every visible and 3 for every infrared image, so its same-camera filter never fires across modalities)."""
    cat, feats = small()
    # IR -> VIS: q 1@c5 x=0.1 ranks 1@c5, 2@c4, 2@c6, 1@c4, 3@c7 -> R1 hit, AP (1 + 2/4) / 2, INP 2/4;
    # q 2@c6 x=1.8: 2@c6, 2@c4 first -> AP 1, INP 1; q 3@c7 x=100 keeps its same-camera match -> AP 1
    res = evaluate_protocol(get_protocol("llcm_idkl"), cat, feats, feats)
    (m,) = res.trials
    assert (m.num_queries, m.num_valid, m.num_gallery) == (3, 3, 5) and m.rank(1) == 1.0
    assert m.map == pytest.approx((0.75 + 1 + 1) / 3) and m.minp == pytest.approx((0.5 + 1 + 1) / 3)
    assert res.protocol["exclusion"] == [] and res.protocol["cmc"] == "identity" and res.protocol["trials"] == 1
    # VIS -> IR: q 1@c4 x=5 ranks 2@c6 (3.2) before 1@c5 (4.9) -> identity rank 2, AP 1/2; the other four first
    (m,) = evaluate_protocol(get_protocol("llcm_idkl", query="rgb", gallery="ir"), cat, feats, feats).trials
    assert (m.num_queries, m.num_valid) == (5, 5) and m.rank(1) == pytest.approx(0.8) and m.rank(2) == 1.0
    assert m.map == pytest.approx((0.5 + 4) / 5)
    # the official full-gallery mode removes same id + camera: other numbers on the same features
    full = evaluate_protocol(get_protocol("llcm", gallery_draw="full"), cat, feats, feats).trials[0]
    assert full.num_valid == 2 and full.rank(1) == 0.5


def test_the_description_says_how_the_gallery_is_drawn():
    sampled, full = (get_protocol("llcm", gallery_draw=g).describe() for g in ("sampled", "full"))
    assert (sampled["trials"], sampled["shots"], full["trials"], full["shots"]) == (10, 1, 1, "all")
    assert sampled["sampling"] == "python random.seed(t), t=0..9; one random.choice per (id, cam), DEEN call order"
    assert full["sampling"] == "none: full gallery (not the official protocol)"
    assert (sampled["gallery"], full["gallery"], sampled["deen_compat"]) == ("sampled", "full", False)
