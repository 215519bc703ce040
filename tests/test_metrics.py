"""Metric oracles (datasets.md §8) and the fast evaluator against the per-query reference."""

import numpy as np
import pytest

from crossreid.errors import UserError
from crossreid.evaluation.distance import pairwise_distance
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

RULES = [NO_EXCLUSION, SAME_CAMERA, SAME_ID_AND_CAMERA, SYSU_LOCATION, SAME_FRAME, SAME_ID_AND_SEQUENCE,
         ExclusionRule.parse("frame", "pid+cam")]
LINE = np.array([[0.1, 0.2, 0.3, 0.4, 0.5]], dtype=np.float32)


@pytest.mark.parametrize("method", ["count", "sort"])
def test_single_match_at_rank_three(method):
    for impl in (lambda **kw: compute_metrics(method=method, **kw), lambda **kw: reference_metrics(kw.pop("distances"), **kw)):
        r = impl(distances=LINE, query_ids=[1], gallery_ids=[2, 3, 1, 4, 5], ranks=(1, 2, 3, 4, 5))
        assert r.map == pytest.approx(1 / 3) and r.minp == pytest.approx(1 / 3)
        assert r.cmc.tolist() == [0, 0, 1, 1, 1]


@pytest.mark.parametrize("method", ["count", "sort"])
def test_matches_at_ranks_one_and_four(method):
    r = compute_metrics([1], [1, 3, 2, 1, 5], distances=LINE, method=method)
    assert r.map == 0.75 and r.minp == 0.5 and r.rank(1) == 1.0


def test_sysu_location_rule_makes_cam3_query_invalid():
    # query 0: cam3, its only same-id item is in cam2 (same location) -> invalid; query 1: cam6, valid
    d = np.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]], dtype=np.float32)
    kw = dict(query_ids=[7, 8], gallery_ids=[7, 8, 9], query_cams=[3, 6], gallery_cams=[2, 1, 4])
    fast = compute_metrics(distances=d, exclusion=SYSU_LOCATION, **kw, per_query=True)
    assert fast.num_valid == 1 and fast.num_queries == 2 and np.isnan(fast.ap[0])
    assert reference_metrics(d, exclusion=SYSU_LOCATION, **kw).num_valid == 1
    assert compute_metrics(distances=d, exclusion=SAME_ID_AND_CAMERA, **kw).num_valid == 2
    # the location rule removes cam2 for a cam3 query whatever the id: gallery 8 (cam2) too
    d2 = np.array([[0.1, 0.2, 0.3]], dtype=np.float32)
    r = compute_metrics([8], [7, 8, 8], [3], [2, 2, 1], distances=d2, exclusion=SYSU_LOCATION, ranks=(1,))
    assert r.rank(1) == 1.0 and r.map == 1.0


def test_identity_dedup_differs_from_image_level():
    # ranked ids: 5 5 5 1 -> image-level rank 4, identity-level rank 2; AP is not de-duplicated
    d = np.array([[0.1, 0.2, 0.3, 0.4]], dtype=np.float32)
    args = ([1], [5, 5, 5, 1])
    img = compute_metrics(*args, distances=d, ranks=(1, 2, 3, 4))
    ident = compute_metrics(*args, distances=d, cmc="identity", ranks=(1, 2, 3, 4))
    assert img.cmc.tolist() == [0, 0, 0, 1] and ident.cmc.tolist() == [0, 1, 1, 1]
    assert img.map == ident.map == 0.25
    assert reference_metrics(d, *args, cmc="identity", ranks=(1, 2, 3, 4)).cmc.tolist() == [0, 1, 1, 1]


@pytest.mark.parametrize("method", ["count", "sort"])
def test_ties_keep_gallery_order(method):
    d = np.zeros((1, 4), dtype=np.float32)
    r = compute_metrics([1], [2, 1, 3, 1], distances=d, ranks=(1, 2), method=method)
    assert r.cmc.tolist() == [0, 1] and r.map == (1 / 2 + 2 / 4) / 2
    neg = compute_metrics([1], [1, 2, 1], distances=np.full((1, 3), -1.5, np.float32), method=method)
    assert neg.map == (1 + 2 / 3) / 2  # negative tied distances keep order too
    zeros = compute_metrics([1], [2, 1], distances=np.array([[0.0, -0.0]], np.float32), method=method)
    assert zeros.map == 0.5  # -0.0 == 0.0


def test_short_gallery_cmc_is_padded():
    r = compute_metrics([1], [2, 1], distances=np.array([[0.1, 0.2]], np.float32))
    assert len(r.cmc) == 20 and r.cmc[1:].tolist() == [1.0] * 19 and r.rank(20) == 1.0


def test_no_valid_query_is_a_user_error():
    with pytest.raises(UserError, match="no valid query"):
        compute_metrics([1], [2, 3], distances=np.zeros((1, 2), np.float32))


def test_missing_value_never_excludes():
    d = np.array([[0.1, 0.2]], np.float32)
    r = compute_metrics([1], [1, 1], distances=d, exclusion=SAME_FRAME,
                        query_keys={"frame": [None]}, gallery_keys={"frame": [None, "a"]})
    assert r.map == 1.0
    d3 = np.array([[0.1, 0.2, 0.3]], np.float32)
    r = compute_metrics([1], [1, 2, 1], distances=d3, exclusion=SAME_FRAME,
                        query_keys={"frame": ["a"]}, gallery_keys={"frame": ["a", None, None]})
    assert r.map == 0.5  # the co-registered frame at rank 1 is gone; the other match is at rank 2


def test_rule_round_trip_and_description():
    assert ExclusionRule.from_dict(SYSU_LOCATION.to_dict()) == SYSU_LOCATION
    assert SYSU_LOCATION.describe() == ["same cam (cam 3->2)"]
    assert SAME_ID_AND_CAMERA.describe() == ["same pid+cam"]


def random_case(rng, nq, ng, ties):
    n_ids = int(rng.integers(2, 9))
    cols = lambda n: {"frame": [None if rng.random() < 0.2 else f"f{v}" for v in rng.integers(0, 6, n)],  # noqa: E731
                      "sequence": [f"s{v}" for v in rng.integers(0, 3, n)]}
    q = dict(ids=rng.integers(0, n_ids, nq), cams=rng.integers(1, 7, nq), keys=cols(nq))
    g = dict(ids=rng.integers(0, n_ids, ng), cams=rng.integers(1, 7, ng), keys=cols(ng))
    g["ids"][0] = q["ids"][0]  # at least one query has a match without exclusion
    if ties:
        d = (rng.integers(-3, 4, (nq, ng)) / 2).astype(np.float32)
    else:
        d = rng.normal(size=(nq, ng)).astype(np.float32)
    return q, g, d


def assert_same(fast, ref):
    assert fast.num_valid == ref.num_valid and fast.num_queries == ref.num_queries
    assert np.array_equal(fast.cmc, ref.cmc)
    assert fast.map == ref.map and fast.minp == ref.minp
    assert np.array_equal(fast.ap, ref.ap, equal_nan=True)


@pytest.mark.parametrize("seed,nq,ng,ties", [(0, 1, 1, False), (1, 9, 40, True), (2, 30, 25, False),
                                             (3, 23, 120, True), (4, 50, 300, False)])
def test_fast_equals_reference(seed, nq, ng, ties):
    rng = np.random.default_rng(seed)
    q, g, d = random_case(rng, nq, ng, ties)
    checked = 0
    for rule in RULES:
        for level in ("image", "identity"):
            common = dict(exclusion=rule, query_keys=q["keys"], gallery_keys=g["keys"], cmc=level, ranks=(1, 3, 5))
            try:
                ref = reference_metrics(d, q["ids"], g["ids"], q["cams"], g["cams"], **common)
            except UserError:
                with pytest.raises(UserError):
                    compute_metrics(q["ids"], g["ids"], q["cams"], g["cams"], distances=d, **common)
                continue
            for method in ("count", "sort", "auto"):
                for chunk in (1, 7, None):
                    fast = compute_metrics(q["ids"], g["ids"], q["cams"], g["cams"], distances=d, method=method,
                                           chunk_size=chunk, per_query=True, **common)
                    assert_same(fast, ref)
                    checked += 1
    assert checked > 0


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_features_equal_distance_matrix(metric):
    rng = np.random.default_rng(5)
    qf, gf = rng.normal(size=(37, 16)).astype(np.float32), rng.normal(size=(90, 16)).astype(np.float32)
    qid, gid = rng.integers(0, 6, 37), rng.integers(0, 6, 90)
    qc, gc = rng.integers(1, 4, 37), rng.integers(1, 4, 90)
    for chunk in (1, 7, 37):
        d = pairwise_distance(qf, gf, metric, chunk_size=chunk)
        ref = reference_metrics(d, qid, gid, qc, gc, exclusion=SAME_CAMERA, cmc="identity")
        fast = compute_metrics(qid, gid, qc, gc, query_features=qf, gallery_features=gf, metric=metric,
                               exclusion=SAME_CAMERA, cmc="identity", chunk_size=chunk, per_query=True)
        assert_same(fast, ref)


def test_distances_match_definitions():
    rng = np.random.default_rng(6)
    qf, gf = rng.normal(size=(5, 8)), rng.normal(size=(7, 8))
    eu = np.sqrt(((qf[:, None] - gf[None]) ** 2).sum(-1))
    cos = 1 - (qf / np.linalg.norm(qf, axis=1, keepdims=True)) @ (gf / np.linalg.norm(gf, axis=1, keepdims=True)).T
    d = pairwise_distance(qf, gf)
    assert d.dtype == np.float32 and np.allclose(d, eu, atol=1e-5)
    assert np.allclose(pairwise_distance(qf, gf, "cosine", chunk_size=2), cos, atol=1e-6)
    import torch
    t = pairwise_distance(torch.from_numpy(qf), torch.from_numpy(gf))
    assert isinstance(t, torch.Tensor) and np.allclose(t.numpy(), eu, atol=1e-5)
    with pytest.raises(ValueError, match="unknown distance"):
        pairwise_distance(qf, gf, "manhattan")


def test_float64_and_integer_distance_matrices():
    rng = np.random.default_rng(7)
    q, g, _ = random_case(rng, 20, 50, False)
    for d in (rng.normal(size=(20, 50)), rng.integers(0, 5, (20, 50))):
        ref = reference_metrics(d, q["ids"], g["ids"], cmc="identity")
        assert_same(compute_metrics(q["ids"], g["ids"], distances=d, cmc="identity", per_query=True), ref)


def test_bad_inputs():
    with pytest.raises(ValueError, match="NaN"):
        compute_metrics([1], [1], distances=np.array([[np.nan]]))
    with pytest.raises(ValueError, match="expected"):
        compute_metrics([1], [1, 2], distances=np.zeros((1, 1)))
    with pytest.raises(ValueError, match="'frame' column"):
        compute_metrics([1], [1], distances=np.zeros((1, 1)), exclusion=SAME_FRAME)
    with pytest.raises(ValueError, match="CMC level"):
        compute_metrics([1], [1], distances=np.zeros((1, 1)), cmc="person")


@pytest.mark.parametrize("method", ["count", "sort"])
def test_a_match_ranked_after_more_than_65535_items(method):
    # the counting kernel sums in uint16 blocks of at most 65535 columns; one more would overflow
    ng = 70_000
    d = np.arange(ng, dtype=np.float32)[None, :]           # the true match is the farthest item
    m = compute_metrics([0], [1] * (ng - 1) + [0], distances=d, method=method, ranks=(1,))
    assert m.map == pytest.approx(1 / ng) and m.minp == pytest.approx(1 / ng)
