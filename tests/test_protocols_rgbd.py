"""RGB-D protocol (Hafner et al., paper version): draws on the real BIWI split 0 and the
paired-frame, sequence and camera rules on a hand-worked example."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from fixtures_real import OPENREID, needs_shared

from crossreid.data.registry import load_dataset
from crossreid.data.samples import Catalog, Sample
from crossreid.errors import UserError
from crossreid.evaluation import evaluate_protocol, get_protocol
from crossreid.evaluation.gallery_draws import draw_per_id
from crossreid.modality import Modality


@needs_shared
@pytest.mark.parametrize("query,gallery", [("rgb", "depth"), ("depth", "rgb")])
def test_real_biwi_split_draws(tmp_path, query, gallery):
    for folder in ("rgb", "depth"):
        (tmp_path / folder / "images").mkdir(parents=True)
    cat = load_dataset("biwi", tmp_path, meta_dir=OPENREID / "biwi", check_files=False)
    proto = get_protocol("rgbd", query=query, gallery=gallery)
    trials = proto.trials(cat)
    assert len(trials) == 20  # a single-shot and a <= 20-per-id trial per repeat
    per_id = Counter(s.pid for s in cat.gallery if s.modality.value == gallery)
    assert len(per_id) == 38
    for single, full in zip(trials[::2], trials[1::2]):
        assert np.array_equal(single.query, full.query)
        qs = [cat.query[i] for i in full.query]
        assert {s.modality.value for s in qs} == {query}
        assert Counter(s.pid for s in qs) == {p: min(20, n) for p, n in per_id.items()}
        assert Counter(cat.gallery[i].pid for i in full.gallery) == {p: min(20, n) for p, n in per_id.items()}
        picked = [cat.gallery[i] for i in single.gallery]
        assert sorted(s.pid for s in picked) == sorted(per_id) and {s.modality.value for s in picked} == {gallery}
        assert not {(s.pid, s.frame) for s in picked} & {(s.pid, s.frame) for s in qs}  # no query's pair
        assert single.cmc == full.cmc == "image"
    assert not np.array_equal(trials[0].gallery, trials[2].gallery)
    again = get_protocol("rgbd", query=query, gallery=gallery).trials(cat)
    assert all(np.array_equal(a.gallery, b.gallery) and np.array_equal(a.query, b.query)
               for a, b in zip(trials, again))


# id 0: frames a (cam 0), b (cam 1); id 1: c (cam 0), d (cam 1); RGB and depth of a frame have equal features
FRAMES = {"a": (0, 0, 0.0), "b": (0, 1, 3.0), "c": (1, 0, 1.2), "d": (1, 1, 2.0)}


def small() -> tuple[Catalog, np.ndarray]:
    samples = [Sample(Path(f"{m.value}/images/{f}.jpg"), pid, cam, m, frame=f, sequence=f"{pid}_{cam}")
               for f, (pid, cam, _) in FRAMES.items() for m in (Modality.RGB, Modality.DEPTH)]
    feats = np.array([[FRAMES[s.frame][2]] for s in samples], dtype=np.float32)
    return Catalog(Path("."), name="biwi", query=samples, gallery=list(samples)), feats


def test_hand_worked_paired_frame_excluded():
    # mAP (all images): q a (0) loses depth a: c 1.2, d 2, b 3 -> rank 3; q b (3) loses b: d, c, a -> rank 3;
    #   q c (1.2): d 0.8 first; q d (2): c 0.8 first -> mAP (1/3 + 1/3 + 1 + 1) / 4
    # single shot: both frames of an id are query pairs, so the drawn image of each id leaves one of
    #   its queries invalid; id 0's other query ranks it 2nd (behind id 1's image), id 1's ranks it 1st
    cat, feats = small()
    res = evaluate_protocol(get_protocol("rgbd", repeats=3), cat, feats, feats)
    assert len(res.trials) == 3
    for m in res.trials:
        assert m.cmc[:2].tolist() == pytest.approx([0.5, 1])
        assert m.map == pytest.approx((1 / 3 + 1 / 3 + 1 + 1) / 4) and m.minp == pytest.approx(m.map)
        assert (m.num_queries, m.num_valid) == (4, 4)
    assert res.std()["map"] == 0 and res.protocol["exclude"] == "frame"


def test_hand_worked_camera_and_sequence_rules():
    # camera: q a loses every cam-0 image (a, c): d 2, b 3 -> rank 2; q b loses b, d: c, a -> rank 2;
    #   q c loses a, c: d first; q d loses b, d: c first -> mAP (1/2 + 1/2 + 1 + 1) / 4
    cat, feats = small()
    (m, *_) = evaluate_protocol(get_protocol("rgbd", exclude="camera"), cat, feats, feats).trials
    assert m.map == pytest.approx(0.75)
    # sequence (same id and recording) removes only the pair here: the frame numbers again
    (s, *_) = evaluate_protocol(get_protocol("rgbd", exclude="sequence", query="depth", gallery="rgb"),
                                cat, feats, feats).trials
    assert s.map == pytest.approx((1 / 3 + 1 / 3 + 1 + 1) / 4)


def test_single_shot_avoids_the_query_pair():
    cat, _ = small()
    for single, _full in zip(*[iter(get_protocol("rgbd", max_per_id=1, seed=3).trials(cat))] * 2):
        queries = {cat.query[i].pid: cat.query[i].frame for i in single.query}
        for i in single.gallery:
            assert cat.gallery[i].frame != queries[cat.gallery[i].pid]


def test_description_and_errors():
    desc = get_protocol("rgbd", query="depth", gallery="rgb", exclude="sequence").describe()
    assert desc["direction"] == "depth->rgb" and desc["exclusion"] == ["same pid+sequence"]
    assert desc["re_ranking"] is False and desc["trials"] == 10 and desc["cmc"] == "image"
    assert (desc["exclude"], desc["max_per_id"], desc["seed"]) == ("sequence", 20, 0)
    assert desc["sampling"].startswith("numpy default_rng([seed, r]), r=0..9: at most 20 query and gallery")
    assert "r=0..2: at most 4 " in get_protocol("rgbd", repeats=3, max_per_id=4).describe()["sampling"]
    with pytest.raises(UserError, match="exclude='person'"):
        get_protocol("rgbd", exclude="person")
    with pytest.raises(UserError, match="does not score rgb->rgb"):
        get_protocol("rgbd", gallery="rgb")
    with pytest.raises(UserError, match="repeats=0"):
        get_protocol("rgbd", repeats=0)


def test_the_paired_trials_report_rank_k_and_chance_of_the_single_shot_gallery():
    cat, feats = small()
    protocol = get_protocol("rgbd", repeats=1)
    single, full = (evaluate_protocol(get_protocol("synthetic"), cat, feats, feats).trials[0],) * 2
    single = dataclasses.replace(single, cmc=np.full(8, 0.5), num_gallery=2, chance_rank1=0.5, deepest_rank=2)
    full = dataclasses.replace(full, cmc=np.full(8, 0.9), num_gallery=8, chance_rank1=0.125, deepest_rank=7, map=0.3)
    (m,) = protocol.aggregate([single, full])
    assert (m.cmc[0], m.num_gallery, m.chance_rank1, m.deepest_rank, m.map) == (0.5, 2, 0.5, 2, 0.3)


def test_draw_per_id_keeps_an_identity_with_fewer_than_k_images_whole():
    pids = np.array([0, 0, 0, 1, 2, 2])
    drawn = draw_per_id(np.random.default_rng(0), pids, np.arange(10, 16), 2)
    assert drawn.tolist() == sorted(drawn.tolist()) and len(set(drawn.tolist())) == 5
    assert sorted(pids[drawn - 10].tolist()) == [0, 0, 1, 2, 2]
