"""k-reciprocal re-ranking: the sparse implementation equals the dense reference algorithm."""

import numpy as np
import pytest

from crossreid.errors import UserError
from crossreid.evaluation.rerank import Rerank, k_reciprocal_dense, k_reciprocal_rerank


def clustered(rng, n, ids=25, dim=32, noise=0.7):
    centres = rng.normal(size=(ids, dim))
    return (centres[rng.integers(0, ids, n)] + noise * rng.normal(size=(n, dim))).astype(np.float32)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("k1, k2, lam", [(20, 6, 0.3), (6, 1, 0.5), (9, 3, 0.0), (4, 8, 1.0)])
def test_sparse_equals_dense_reference(metric, k1, k2, lam):
    rng = np.random.default_rng(k1 * 10 + k2)
    q, g = clustered(rng, 37), clustered(rng, 181)
    sparse = k_reciprocal_rerank(q, g, k1, k2, lam, metric, chunk=50)  # several row chunks
    dense = k_reciprocal_dense(q, g, k1, k2, lam, metric)
    assert sparse.shape == (37, 181)
    np.testing.assert_allclose(sparse, dense, atol=1e-5)


def test_rerank_changes_the_ranking_and_helps_multi_shot_galleries():
    """Clustered identities with several gallery images each: re-ranking raises mean AP."""
    from crossreid.evaluation.metrics import compute_metrics

    rng = np.random.default_rng(3)
    ids, dim = 40, 16
    centres = rng.normal(size=(ids, dim))
    gid = np.repeat(np.arange(ids), 6)
    qid = np.arange(ids)
    g = (centres[gid] + 1.1 * rng.normal(size=(len(gid), dim))).astype(np.float32)
    q = (centres[qid] + 1.1 * rng.normal(size=(ids, dim))).astype(np.float32)
    plain = compute_metrics(qid, gid, query_features=q, gallery_features=g)
    reranked = compute_metrics(qid, gid, distances=k_reciprocal_rerank(q, g, 8, 3, 0.3))
    assert reranked.summary()["map"] > plain.summary()["map"]


def test_options_are_checked():
    assert Rerank.from_options({"k1": "10", "lambda": 0.5}) == Rerank(10, 6, 0.5)
    with pytest.raises(UserError, match="unknown; use k1, k2 or lambda"):
        Rerank.from_options({"k3": 1})
    with pytest.raises(UserError, match="must lie in"):
        Rerank(lambda_value=2.0)
    assert Rerank().describe()["method"].startswith("k-reciprocal")
