"""The distance a protocol scores with, by its numbers: every path that takes a distance (protocol
option, ``evaluate_directions``' metric, ``score_arrays``, re-ranking) gives the metrics of a reference
ranking over distances computed here with loops, on unnormalised features where cosine and Euclidean
rank differently."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from crossreid.data.samples import Catalog, Sample
from crossreid.evaluation import evaluate_protocol, get_protocol
from crossreid.evaluation.distance import GalleryDistance, pairwise_distance
from crossreid.evaluation.metrics import SAME_CAMERA, compute_metrics
from crossreid.evaluation.reference import reference_metrics
from crossreid.evaluation.rerank import Rerank, k_reciprocal_dense
from crossreid.evaluation.score import score_arrays
from crossreid.modality import Modality
from crossreid.retrieval.evaluate import evaluate_directions


def naive(q: np.ndarray, g: np.ndarray, metric: str) -> np.ndarray:
    out = np.empty((len(q), len(g)))
    for i, a in enumerate(q.astype(np.float64).tolist()):
        for j, b in enumerate(g.astype(np.float64).tolist()):
            if metric == "euclidean":
                out[i, j] = math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))
            else:
                dot = sum(x * y for x, y in zip(a, b))
                out[i, j] = 1.0 - dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))
    return out


def features(n, dim=6, seed=0):
    """Rows with very different norms, so the two distances order galleries differently."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, dim)) * rng.uniform(0.2, 5.0, size=(n, 1))).astype(np.float32)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("nq", [3, 40])          # few queries: the numpy path; 32 or more: addmm
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_gallery_distance_equals_the_definition(metric, nq, precision):
    q, g = features(nq, seed=1), features(9, seed=2)
    tol = 1e-10 if precision == "float64" else 2e-5
    dist = GalleryDistance(g, metric, precision, block_rows=4)   # gallery terms in three blocks
    np.testing.assert_allclose(dist(q).numpy(), naive(q, g, metric), rtol=tol, atol=tol)
    np.testing.assert_allclose(pairwise_distance(q, g, metric, chunk_size=2, precision=precision),
                               naive(q, g, metric), rtol=tol, atol=tol)
    # scores + finish on a column subset, as search does
    prepared = dist.queries(q)
    part = dist.finish(prepared, dist.scores(prepared, 2, 7))
    np.testing.assert_allclose(part.numpy(), naive(q, g, metric)[:, 2:7], rtol=tol, atol=tol)


def test_a_float16_gallery_kept_unconverted_gives_the_same_distances():
    q, g = features(5, seed=3), features(12, seed=4).astype(np.float16)
    for metric in ("euclidean", "cosine"):
        kept = GalleryDistance(g, metric, "float32", block_rows=5, convert=False)
        assert kept.gallery.dtype == np.float16
        np.testing.assert_allclose(kept(q).numpy(), naive(q, g.astype(np.float32), metric), rtol=1e-5, atol=1e-5)


def test_the_defaults_and_the_edges_of_the_distance_code():
    q, g = features(4, seed=5), features(7, seed=6)
    # defaults: Euclidean, float64, the whole gallery held converted
    dist = GalleryDistance(g)
    assert dist.gallery.dtype == torch.float64 and dist(q).dtype == torch.float64
    np.testing.assert_allclose(dist(q).numpy(), naive(q, g, "euclidean"), rtol=1e-10, atol=1e-10)
    # search reads block_rows back to size its gallery chunks
    assert GalleryDistance(g, block_rows=3).block_rows == 3
    # a tensor that requires grad (features straight from a model) is taken as it is
    tq = torch.from_numpy(q).requires_grad_()
    np.testing.assert_allclose(pairwise_distance(tq, g).detach().numpy(), naive(q, g, "euclidean"), rtol=2e-5, atol=2e-5)
    # no query rows, or no gallery rows: an empty matrix, not an error (both query paths)
    assert pairwise_distance(q[:0], g).shape == (0, 7)
    for nq in (3, 40):
        empty = GalleryDistance(g[:0])(features(nq, seed=7))
        assert empty.shape == (nq, 0) and empty.dtype == torch.float64


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_queries_follow_the_gallery_to_its_device(metric):
    # torch's "meta" device stands in for a GPU on a CPU-only machine: a query left on the CPU, or a
    # numpy step on the gallery's device, fails there
    dist = GalleryDistance(torch.empty(7, 6, device="meta"), metric)
    for nq in (3, 40):  # the few-query and the addmm paths
        out = dist(features(nq, seed=8))
        assert out.device.type == "meta" and out.shape == (nq, 7)


def catalog(n_ids=5, per_cam=2):
    samples = [Sample(Path(f"{m.value}/{p}_{c}_{k}.png"), p, c, m, frame=f"{p}-{c}-{k}")
               for p in range(n_ids) for c in (1, 2) for k in range(per_cam) for m in (Modality.RGB, Modality.DEPTH)]
    return Catalog(Path("."), name="synthetic", query=samples, gallery=list(samples))


def expected(cat, feats, metric, rerank=None):
    """Metrics of the synthetic protocol (rgb -> depth, same camera removed) by the reference code."""
    qi = [i for i, s in enumerate(cat.query) if s.modality is Modality.RGB]
    gi = [i for i, s in enumerate(cat.gallery) if s.modality is Modality.DEPTH]
    d = naive(feats[qi], feats[gi], metric) if rerank is None else rerank(feats[qi], feats[gi], metric)
    return reference_metrics(d, [cat.query[i].pid for i in qi], [cat.gallery[i].pid for i in gi],
                             [cat.query[i].cam for i in qi], [cat.gallery[i].cam for i in gi], exclusion=SAME_CAMERA)


def assert_same(result_metrics, ref):
    got, want = result_metrics.summary(), ref.summary()
    assert got == pytest.approx(want, abs=1e-12), (got, want)


def test_the_protocol_distance_decides_the_numbers():
    cat = catalog()
    f = features(len(cat.query), seed=5)
    cos, euc = expected(cat, f, "cosine"), expected(cat, f, "euclidean")
    assert cos.map != pytest.approx(euc.map, abs=1e-3)              # the two distances disagree here
    for metric, ref in (("cosine", cos), ("euclidean", euc)):
        for precision in ("float64", "float32"):
            res = evaluate_protocol(get_protocol("synthetic", distance=metric, precision=precision), cat, f, f)
            assert_same(res.trials[0], ref)
            assert res.distance == res.protocol["distance"] == metric


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_evaluate_directions_and_score_arrays_score_with_the_given_metric(metric):
    cat = catalog()
    f = features(len(cat.query), seed=6)
    ref = expected(cat, f, metric)

    class Embeds:
        embeddable = [Modality.RGB, Modality.DEPTH]

    out = evaluate_directions(Embeds(), cat, None, None, ["rgb->depth"], metric, features=(f, f))
    assert_same(out["rgb->depth"].trials[0], ref)
    s = cat.query
    scored = score_arrays(f, [x.pid for x in s], [x.cam for x in s], [x.modality for x in s], "synthetic",
                          {"query": "rgb", "gallery": "depth"}, metric=metric)
    assert_same(scored.trials[0], ref)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_re_ranking_uses_the_protocol_distance(metric):
    cat = catalog(n_ids=6, per_cam=3)
    f = features(len(cat.query), seed=7)
    rr = Rerank(k1=5, k2=2, lambda_value=0.4)
    ref = expected(cat, f, metric, rerank=lambda q, g, m: k_reciprocal_dense(q, g, 5, 2, 0.4, m))
    res = evaluate_protocol(get_protocol("synthetic", distance=metric), cat, f, f, rerank=rr)
    assert_same(res.trials[0], ref)
    assert res.rerank == rr.describe()
    other = "euclidean" if metric == "cosine" else "cosine"
    wrong = expected(cat, f, other, rerank=lambda q, g, m: k_reciprocal_dense(q, g, 5, 2, 0.4, m))
    assert wrong.map != pytest.approx(ref.map, abs=1e-4)


def test_compute_metrics_from_features_uses_its_metric():
    q, g = features(7, seed=8), features(15, seed=9)
    qid, gid = np.arange(7) % 4, np.arange(15) % 4
    for metric in ("cosine", "euclidean"):
        got = compute_metrics(qid, gid, query_features=q, gallery_features=g, metric=metric)
        assert_same(got, reference_metrics(naive(q, g, metric), qid, gid))
        fed = compute_metrics(qid, gid, query_features=torch.from_numpy(q), gallery_features=torch.from_numpy(g),
                              metric=metric, chunk_size=2)
        assert_same(fed, reference_metrics(naive(q, g, metric), qid, gid))
