"""The protocols' exclusion rules by their numbers, hand-worked on tiny catalogs (no ``../shared``).

Features are points on a line, so every distance can be read off. Each case is worked so that the
rules disagree: SYSU-MM01's location rule (a cam-3 query loses every cam-2 gallery image, whatever
its identity), LLCM's same identity and camera, the synthetic protocol's plain same camera, RegDB's
none. The worked numbers are in the comments.
"""

from pathlib import Path

import numpy as np
import pytest
from fixtures_real import write_perm
from test_metrics import assert_same, random_case

from crossreid.data.samples import Catalog, Sample
from crossreid.evaluation import evaluate_protocol, get_protocol
from crossreid.evaluation.metrics import (
    NO_EXCLUSION,
    SAME_CAMERA,
    SAME_FRAME,
    SAME_ID_AND_CAMERA,
    SAME_ID_AND_SEQUENCE,
    SYSU_LOCATION,
    ExclusionRule,
    compute_metrics,
)
from crossreid.evaluation.reference import reference_metrics
from crossreid.modality import Modality

RGB, IR, DEPTH = Modality.RGB, Modality.IR, Modality.DEPTH


def sample(pid, cam, modality, x, k=1):
    """A sample at position ``x`` on the line (kept in ``frame`` for the features)."""
    return Sample(Path(f"cam{cam}/{pid:04d}/{k:04d}.jpg"), pid, cam, modality, frame=str(x))


def line(samples):
    return np.array([[float(s.frame)] for s in samples], dtype=np.float32)


def score(protocol, cat):
    res = evaluate_protocol(protocol, cat, line(cat.query), line(cat.gallery))
    return res.trials


def summary(m):
    return m.rank(1), m.rank(5), m.map, m.minp, m.num_valid


# -- SYSU-MM01: IR queries (cams 3, 6) vs RGB gallery (cams 1, 2, 4, 5) ---------------------------
SYSU_QUERY = [sample(1, 3, IR, 0.0), sample(1, 6, IR, 0.0), sample(2, 3, IR, 2.9)]
SYSU_GALLERY = [sample(1, 1, RGB, 3.0), sample(1, 2, RGB, 0.2), sample(2, 2, RGB, 0.5), sample(2, 4, RGB, 2.0),
                sample(3, 5, RGB, 4.0)]
# q1 (id 1, cam 3, x=0): cam 2 removed -> id2c4 (2.0), id1c1 (3.0), id3c5 (4.0): rank 2, AP 1/2, INP 1/2
# q2 (id 1, cam 6, x=0): nothing removed -> id1c2 (.2), id2c2 (.5), id2c4, id1c1, id3c5: rank 1,
#     AP (1/1 + 2/4) / 2 = 3/4, INP 2/4
# q3 (id 2, cam 3, x=2.9): cam 2 removed -> id1c1 (.1), id2c4 (.9), id3c5 (1.1): rank 2, AP 1/2, INP 1/2
SYSU_EXPECTED = (1 / 3, 1.0, (1 / 2 + 3 / 4 + 1 / 2) / 3, (1 / 2 + 1 / 2 + 1 / 2) / 3, 3)


def sysu_catalog(root=Path(".")):
    return Catalog(root, name="sysu_mm01", query=list(SYSU_QUERY), gallery=list(SYSU_GALLERY))


def test_sysu_agw_location_rule_by_hand():
    (*trials,) = score(get_protocol("sysu_mm01_agw"), sysu_catalog())
    assert len(trials) == 10                     # one image per folder: every trial draws the same gallery
    for m in trials:
        assert summary(m) == pytest.approx(SYSU_EXPECTED)


def test_sysu_official_location_rule_by_hand(tmp_path):
    (tmp_path / "exp").mkdir()
    write_perm(tmp_path / "exp" / "rand_perm_cam.mat", [(s.cam, s.pid, 1) for s in SYSU_GALLERY])
    for m in score(get_protocol("sysu_mm01"), sysu_catalog(tmp_path)):
        assert summary(m) == pytest.approx(SYSU_EXPECTED)


def test_sysu_indoor_mode_keeps_cams_1_and_2_only():
    # gallery id1c1 (3.0), id1c2 (.2), id2c2 (.5); q1 and q3 lose cam 2: q1 rank 1 (id1c1 alone), AP 1;
    # q3's id 2 is only in cam 2: invalid. q2: id1c2, id2c2, id1c1: rank 1, AP (1 + 2/3)/2 = 5/6, INP 2/3
    (m, *_) = score(get_protocol("sysu_mm01_agw", mode="indoor"), sysu_catalog())
    assert summary(m) == pytest.approx((1.0, 1.0, (1 + 5 / 6) / 2, (1 + 2 / 3) / 2, 2))


# -- LLCM: same identity and camera number removed --------------------------------------------------
LLCM_QUERY = [sample(1, 1, IR, 0.0), sample(2, 2, IR, 10.0)]
LLCM_GALLERY = [sample(1, 1, RGB, 0.1), sample(2, 1, RGB, 0.3), sample(1, 2, RGB, 0.5), sample(2, 2, RGB, 10.1),
                sample(1, 3, RGB, 9.8), sample(2, 4, RGB, 11.0)]
# q1 (id 1, cam 1, x=0): id1c1 removed; id2c1 (.3) stays -> ids 2, 1, 1, 2, 2: identity rank 2,
#     AP (1/2 + 2/3) / 2 = 7/12, INP 2/3
# q2 (id 2, cam 2, x=10): id2c2 removed; id1c3 (.2), id2c4 (1), id1c2, id2c1, id1c1 -> rank 2,
#     AP (1/2 + 2/4) / 2 = 1/2, INP 2/4
LLCM_EXPECTED = (0.0, 1.0, (7 / 12 + 1 / 2) / 2, (2 / 3 + 1 / 2) / 2, 2)


def test_llcm_same_identity_and_camera_rule_by_hand():
    cat = Catalog(Path("."), name="llcm", query=list(LLCM_QUERY), gallery=list(LLCM_GALLERY))
    trials = score(get_protocol("llcm"), cat)
    assert len(trials) == 10
    for m in trials:
        assert summary(m) == pytest.approx(LLCM_EXPECTED)
    (full,) = score(get_protocol("llcm", gallery_draw="full"), cat)
    assert summary(full) == pytest.approx(LLCM_EXPECTED)


def test_the_camera_rules_give_different_results():
    """The LLCM case under each rule, by compute_metrics directly (identity-level CMC as LLCM)."""
    q, g = line(LLCM_QUERY), line(LLCM_GALLERY)
    qp, gp = [s.pid for s in LLCM_QUERY], [s.pid for s in LLCM_GALLERY]
    qc, gc = [s.cam for s in LLCM_QUERY], [s.cam for s in LLCM_GALLERY]

    def run(rule):
        return summary(compute_metrics(qp, gp, qc, gc, query_features=q, gallery_features=g,
                                       exclusion=rule, cmc="identity"))

    assert run(SAME_ID_AND_CAMERA) == pytest.approx(LLCM_EXPECTED)
    # same camera: q1 also loses id2c1 -> id1c2 (.5), id1c3 (9.8), ...: rank 1, AP 1, INP 1;
    # q2 also loses id1c2 -> id1c3, id2c4, id2c1 (9.7), id1c1: rank 2, AP (1/2 + 2/3)/2 = 7/12, INP 2/3
    assert run(SAME_CAMERA) == pytest.approx((0.5, 1.0, (1 + 7 / 12) / 2, (1 + 2 / 3) / 2, 2))
    # nothing removed: q1 meets id1c1 first, id 1 at ranks 1, 3, 4: AP (1 + 2/3 + 3/4)/3, INP 3/4;
    # q2 meets id2c2 first, then id1c3 (.2), id2c4 (1), id1c2, id2c1: ranks 1, 3, 5: AP (1 + 2/3 + 3/5)/3, INP 3/5
    aps = ((1 + 2 / 3 + 3 / 4) / 3, (1 + 2 / 3 + 3 / 5) / 3)
    assert run(NO_EXCLUSION) == pytest.approx((1.0, 1.0, sum(aps) / 2, (3 / 4 + 3 / 5) / 2, 2))
    # SYSU's location rule is the same camera after cam 3 -> 2: id1c3 counts as cam 2, so q2 loses it too
    # -> id2c4 (1), id2c1, id1c1: rank 1, AP 1; q1 as under the same-camera rule: rank 1, AP 1
    assert run(SYSU_LOCATION) == pytest.approx((1.0, 1.0, 1.0, 1.0, 2))


def test_regdb_removes_nothing():
    # RegDB: visible query vs thermal gallery, image-level CMC, no exclusion even for the same camera
    query = [sample(1, 1, RGB, 0.0), sample(2, 1, RGB, 5.0)]
    gallery = [sample(1, 1, IR, 1.0), sample(2, 1, IR, 0.5), sample(2, 1, IR, 5.2, k=2), sample(1, 1, IR, 4.0, k=2)]
    # q1 (x=0): id2 (.5), id1 (1), id1 (4), id2 (5.2): id 1 at ranks 2, 3 -> AP (1/2 + 2/3)/2 = 7/12, INP 2/3
    # q2 (x=5): id2 (.2 away), id1 (1), id1 (4), id2 (4.5): id 2 at ranks 1, 4 -> AP (1 + 2/4)/2 = 3/4, INP 2/4
    cat = Catalog(Path("."), name="regdb", query=query, gallery=gallery)
    (m,) = score(get_protocol("regdb"), cat)
    assert summary(m) == pytest.approx((0.5, 1.0, (7 / 12 + 3 / 4) / 2, (2 / 3 + 1 / 2) / 2, 2))
    assert m.cmc_level == "image"


def test_synthetic_protocol_removes_the_same_camera_only():
    # rgb query vs depth gallery; the co-registered depth frame shares the camera and goes
    query = [sample(1, 1, RGB, 0.0), sample(2, 2, RGB, 3.0)]
    gallery = [sample(1, 1, DEPTH, 0.0), sample(1, 2, DEPTH, 1.0), sample(2, 1, DEPTH, 0.5),
               sample(2, 2, DEPTH, 3.0), sample(2, 1, DEPTH, 2.0, k=2)]
    # q1 (cam 1): cam-1 items removed -> id1c2 (1.0) alone: rank 1, AP 1
    # q2 (cam 2): id1c2 and id2c2 removed -> id2c1 (2.0, 1.0 away), id2c1 (.5, 2.5 away): rank 1, AP 1
    cat = Catalog(Path("."), name="synthetic", query=query, gallery=gallery)
    (m,) = score(get_protocol("synthetic"), cat)
    assert summary(m) == pytest.approx((1.0, 1.0, 1.0, 1.0, 2))
    # without the rule: q1 meets its own frame, then id2 (.5), id1c2 (1): id 1 at ranks 1, 3 -> AP 5/6;
    # q2 meets id2c2 (0), id2 (1.0 away), id1c2 (2.0), id2 (2.5), id1c1: id 2 at 1, 2, 4 -> AP (1 + 1 + 3/4)/3
    d = np.abs(line(query) - line(gallery).T)
    free = compute_metrics([1, 2], [s.pid for s in gallery], distances=d)
    assert free.map == pytest.approx((5 / 6 + (1 + 1 + 3 / 4) / 3) / 2)


def test_rgbd_frame_and_sequence_rules_by_hand():
    """The RGB-D rules (Hafner et al.): the co-registered frame, or the whole sequence of the same id."""
    q = [Sample(Path("q1"), 1, 1, RGB, frame="a1", sequence="A"), Sample(Path("q2"), 2, 1, RGB, frame="b1", sequence="B")]
    g = [Sample(Path("g1"), 1, 1, DEPTH, frame="a1", sequence="A"),   # q1's own frame, x = 0
         Sample(Path("g2"), 1, 1, DEPTH, frame="a2", sequence="A"),   # same sequence, x = .1
         Sample(Path("g3"), 2, 1, DEPTH, frame="b9", sequence="B"),   # x = .2
         Sample(Path("g4"), 1, 2, DEPTH, frame="c1", sequence="C"),   # another sequence of id 1, x = .3
         Sample(Path("g5"), 2, 2, DEPTH, frame="d1", sequence="D")]   # x = 5
    qx, gx = np.array([0.0, 5.0]), np.array([0.0, 0.1, 0.2, 0.3, 5.0])
    d = np.abs(qx[:, None] - gx[None, :])
    keys = lambda ss: {"frame": [s.frame for s in ss], "sequence": [s.sequence for s in ss]}  # noqa: E731

    def run(rule):
        m = compute_metrics([1, 2], [s.pid for s in g], distances=d, exclusion=rule,
                            query_keys=keys(q), gallery_keys=keys(g))
        return m.rank(1), m.map

    # frame: q1 loses g1 -> g2 (id 1) first: rank 1, AP (1 + 2/3)/2 (g4 at 3rd). q2 (x=5): g5 (0) id 2 first,
    #   then g4 (4.7, id 1), g3 (4.8, id 2): AP (1 + 2/3)/2
    assert run(SAME_FRAME) == pytest.approx((1.0, 5 / 6))
    # sequence: q1 loses g1 and g2 -> g3 (id 2), g4 (id 1): rank 2, AP 1/2; q2 loses g3 -> g5 first: AP 1
    assert run(SAME_ID_AND_SEQUENCE) == pytest.approx((0.5, 0.75))


# The evaluator's less travelled paths against the per-query reference (found by mutation testing):
# float64 distances whose exact ties with a true match send some rows of a chunk to the sorting kernel
# while an exclusion rule removes pairs, and rules built from text or a results file.
@pytest.mark.parametrize("rule", [SAME_ID_AND_CAMERA, SAME_CAMERA, SYSU_LOCATION, SAME_FRAME, SAME_ID_AND_SEQUENCE,
                                  ExclusionRule.parse("pid+cam", "frame"), ExclusionRule.parse("cam", "frame")])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_float64_ties_under_exclusion_equal_the_reference(rule, seed):
    rng = np.random.default_rng(seed)
    q, g, d32 = random_case(rng, 30, 50, ties=True)
    d = d32.astype(np.float64)
    d[::3] += rng.normal(scale=1e-3, size=d[::3].shape)  # a third of the rows have no exact tie
    ref = reference_metrics(d, q["ids"], g["ids"], q["cams"], g["cams"], exclusion=rule,
                            query_keys=q["keys"], gallery_keys=g["keys"], cmc="identity")
    for method, chunk in (("count", 7), ("count", None), ("auto", 4), ("sort", 5)):
        fast = compute_metrics(q["ids"], g["ids"], q["cams"], g["cams"], distances=d, exclusion=rule,
                               query_keys=q["keys"], gallery_keys=g["keys"], cmc="identity", per_query=True,
                               method=method, chunk_size=chunk)
        assert_same(fast, ref)


def test_a_float64_distance_matrix_is_ranked_in_float64():
    # the true match (gallery 1) is closer by 1e-12, below float32's resolution at 1.0: rounded to
    # float32 the two tie and gallery order would put the wrong identity first
    d = np.array([[1.0 + 1e-12, 1.0]])
    assert compute_metrics([0], [1, 0], distances=d).cmc[0] == 1.0
    assert compute_metrics([0], [1, 0], distances=d.astype(np.float32)).cmc[0] == 0.0


def test_rules_from_text_and_from_a_results_file():
    rule = ExclusionRule.parse(" pid + cam ", "frame", relabel={"cam": {3: 2}})
    assert rule.clauses == (("pid", "cam"), ("frame",)) and rule.keys == ("cam", "frame", "pid")
    assert ExclusionRule.from_dict(rule.to_dict()) == rule
    assert rule.to_dict() == {"clauses": [["pid", "cam"], ["frame"]], "relabel": {"cam": [[3, 2]]}}
    assert ExclusionRule.from_dict({}) == ExclusionRule()
    assert ExclusionRule.from_dict(SAME_ID_AND_CAMERA.to_dict()).describe() == ["same pid+cam"]
    with pytest.raises(ValueError, match="empty clause"):
        ExclusionRule.parse("pid+cam", " + ")
