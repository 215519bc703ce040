"""Re-ranking's parameters by their numbers: k1/2 rounded as the reference code rounds it (at k1 where
floor and round disagree), k2, lambda (the original-distance term worked out here), and the CLI's
option spelling reaching the algorithm."""

import numpy as np
import pytest

from crossreid.errors import UserError
from crossreid.evaluation import rerank as rerank_module
from crossreid.evaluation.rerank import Rerank, k_reciprocal_dense, k_reciprocal_rerank


def clustered(rng, n, ids=8, dim=6, noise=0.6):
    centres = rng.normal(size=(ids, dim))
    return (centres[rng.integers(0, ids, n)] + noise * rng.normal(size=(n, dim))).astype(np.float32)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("k1", [7, 11, 15])  # k1/2 = 3.5, 5.5, 7.5: round -> 4, 6, 8; floor -> 3, 5, 7
def test_half_k1_is_rounded_as_the_reference_code(metric, k1, monkeypatch):
    # (At k1 = 3 no rounding matters: a candidate's R(j, 1) or R(j, 2) can only pass the 2/3 test when
    # it adds nothing new.)
    rng = np.random.default_rng(k1)
    q, g = clustered(rng, 12), clustered(rng, 40)
    sparse = k_reciprocal_rerank(q, g, k1, 3, 0.3, metric, chunk=16)
    np.testing.assert_allclose(sparse, k_reciprocal_dense(q, g, k1, 3, 0.3, metric), atol=1e-5)
    # the data is sensitive to the rounding: flooring k1/2 gives other distances
    monkeypatch.setattr(rerank_module.np, "around", np.floor)
    floored = k_reciprocal_rerank(q, g, k1, 3, 0.3, metric, chunk=16)
    assert np.abs(floored - sparse).max() > 1e-3


def original_term(q, g, metric):
    """lambda = 1: d(q, g)^2 / max_j d(j, q)^2 over every query and gallery row j, by loops."""
    x = np.concatenate([q, g]).astype(np.float64)

    def d2(a, b):
        if metric == "euclidean":
            return float(((a - b) ** 2).sum())
        return float((1 - a @ b / np.linalg.norm(a) / np.linalg.norm(b)) ** 2)

    out = np.empty((len(q), len(g)))
    for i in range(len(q)):
        col_max = max(d2(x[j], x[i]) for j in range(len(x)))
        for j in range(len(g)):
            out[i, j] = d2(x[i], x[len(q) + j]) / col_max
    return out


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_lambda_weighs_the_original_distance_against_the_jaccard_distance(metric):
    rng = np.random.default_rng(1)
    q, g = clustered(rng, 9), clustered(rng, 30)
    only_original = k_reciprocal_rerank(q, g, 6, 3, 1.0, metric)
    np.testing.assert_allclose(only_original, original_term(q, g, metric), rtol=1e-4, atol=1e-6)
    only_jaccard = k_reciprocal_rerank(q, g, 6, 3, 0.0, metric)
    assert 0.0 <= only_jaccard.min() and only_jaccard.max() <= 1.0 + 1e-6
    for lam in (0.3, 0.75):
        mixed = k_reciprocal_rerank(q, g, 6, 3, lam, metric)
        np.testing.assert_allclose(mixed, lam * only_original + (1 - lam) * only_jaccard, atol=1e-5)


@pytest.mark.parametrize("k2", [1, 2, 5])
def test_k2_query_expansion_equals_the_reference(k2):
    rng = np.random.default_rng(k2)
    q, g = clustered(rng, 10), clustered(rng, 35)
    sparse = k_reciprocal_rerank(q, g, 7, k2, 0.0)
    np.testing.assert_allclose(sparse, k_reciprocal_dense(q, g, 7, k2, 0.0), atol=1e-5)
    if k2 > 1:  # expansion changes the Jaccard distances
        assert np.abs(sparse - k_reciprocal_rerank(q, g, 7, 1, 0.0)).max() > 1e-3


def test_cli_options_reach_the_algorithm():
    rng = np.random.default_rng(2)
    q, g = clustered(rng, 8), clustered(rng, 25)
    rr = Rerank.from_options({"k1": "7", "k2": "2", "lambda": "0.6"})
    assert (rr.k1, rr.k2, rr.lambda_value) == (7, 2, 0.6)
    for metric in ("euclidean", "cosine"):
        np.testing.assert_allclose(rr(q, g, metric), k_reciprocal_dense(q, g, 7, 2, 0.6, metric), atol=1e-5)
    assert rr.describe() == {"method": "k-reciprocal (Zhong et al. 2017)", "k1": 7, "k2": 2, "lambda_value": 0.6}
    defaults = Rerank()
    np.testing.assert_allclose(defaults(q, g), k_reciprocal_dense(q, g, 20, 6, 0.3), atol=1e-5)


def test_option_bounds_and_spellings():
    for ok in (dict(k1=1, k2=1, lambda_value=0.0), dict(k1=1, k2=1, lambda_value=1.0)):
        Rerank(**ok)                                      # the smallest k and both ends of lambda are valid
    for bad in (dict(k1=0), dict(k2=0), dict(lambda_value=-0.01), dict(lambda_value=1.01)):
        with pytest.raises(UserError, match="re-ranking"):
            Rerank(**bad)
    assert Rerank.from_options({"lambda_value": "0.2"}).lambda_value == 0.2
    with pytest.raises(UserError, match="unknown; use k1, k2 or lambda"):
        Rerank.from_options({"k3": "1"})


def test_an_unknown_distance_is_an_error_not_euclidean():
    q, g = clustered(np.random.default_rng(3), 4), clustered(np.random.default_rng(4), 9)
    with pytest.raises(ValueError, match="unknown distance 'cosin'"):
        k_reciprocal_rerank(q, g, metric="cosin")
    with pytest.raises(ValueError, match="unknown distance"):
        Rerank()(q, g, "manhattan")


def test_zhongs_defaults_k1_20_k2_6_lambda_0_3():
    rng = np.random.default_rng(5)
    q, g = clustered(rng, 10, ids=4), clustered(rng, 40, ids=4)   # 50 points: k1 = 20 and 21 differ
    paper = k_reciprocal_dense(q, g, 20, 6, 0.3)
    np.testing.assert_allclose(k_reciprocal_dense(q, g), paper, atol=1e-6)
    np.testing.assert_allclose(k_reciprocal_rerank(q, g), paper, atol=1e-5)
    for other in ((21, 6, 0.3), (20, 7, 0.3), (20, 6, 0.4)):         # and the data tells each one apart
        assert np.abs(k_reciprocal_dense(q, g, *other) - paper).max() > 1e-4


@pytest.mark.parametrize("rerank", [k_reciprocal_rerank, k_reciprocal_dense])
def test_float64_features_rerank_bit_for_bit_as_float32(rerank):
    rng = np.random.default_rng(6)
    q, g = clustered(rng, 7), clustered(rng, 25)
    q64, g64 = q.astype(np.float64) + 1e-9, g.astype(np.float64) - 1e-9   # rounds back to the same float32
    single = rerank(q, g, 5, 2, 0.3)
    assert single.dtype == np.float32 and single.shape == (7, 25)
    double = rerank(q64, g64, 5, 2, 0.3)
    assert double.dtype == np.float32
    np.testing.assert_array_equal(double, single)


@pytest.mark.parametrize("q_shape, g_shape", [((3, 4), (5, 6)), ((3, 4), (5,)), ((4,), (5, 4))])
def test_features_must_be_2d_with_equal_dims(q_shape, g_shape):
    with pytest.raises(ValueError, match="must be 2-D with equal dims"):
        k_reciprocal_rerank(np.ones(q_shape, np.float32), np.ones(g_shape, np.float32))


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_pair_distances_in_any_chunking_equal_the_dense_matrix(metric):
    import torch

    x = torch.from_numpy(clustered(np.random.default_rng(8), 12))
    rows, cols = np.array([3, 0, 7, 11, 5, 5, 2]), np.array([1, 9, 7, 0, 2, 10, 4])
    xn = x / x.norm(dim=1, keepdim=True)
    full = ((1 - xn @ xn.T) ** 2 if metric == "cosine" else torch.cdist(x, x) ** 2).numpy()
    for chunk in (1, 3, 1 << 15):
        got = rerank_module._pair_sq_distances(x, rows, cols, metric, chunk=chunk)
        np.testing.assert_allclose(got, full[rows, cols], rtol=1e-5, atol=1e-5)


def test_jaccard_distances_in_any_chunking_are_the_same():
    """Large galleries split the queries into chunks; the last one is partial."""
    rng = np.random.default_rng(9)
    q, g = clustered(rng, 7), clustered(rng, 20)
    x = rerank_module._all_features(q, g)
    rank, col_max = rerank_module._neighbours(x, 6, "euclidean", 64)
    v = rerank_module._encodings(x, rank, np.where(col_max > 0, col_max, 1.0), 5, 2, "euclidean")
    whole = rerank_module._jaccard(v, 7, 64)
    for chunk in (1, 3, 5):
        np.testing.assert_array_equal(rerank_module._jaccard(v, 7, chunk), whole)


def test_one_query_empty_sets_small_features_and_query_chunks():
    rng = np.random.default_rng(10)
    q, g = clustered(rng, 9) * 0.05, clustered(rng, 30) * 0.05   # every squared distance below 1
    dense = k_reciprocal_dense(q, g, 6, 3, 0.3)
    for chunk in (4, 1024):                                       # 9 queries: chunks of 4, 4, 1
        np.testing.assert_allclose(k_reciprocal_rerank(q, g, 6, 3, 0.3, chunk=chunk), dense, atol=1e-5)
    one = k_reciprocal_rerank(q[:1], g, 6, 3, 0.3)
    np.testing.assert_allclose(one, k_reciprocal_dense(q[:1], g, 6, 3, 0.3), atol=1e-5)
    assert one.min() > 0
    for qq, gg, shape in ((q[:0], g, (0, 30)), (q, g[:0], (9, 0))):
        out = k_reciprocal_rerank(qq, gg)
        assert out.shape == shape and out.dtype == np.float32
