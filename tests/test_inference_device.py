"""Inference on the user's device: the CPU numbers pinned, --device, autocast, sharded evaluation, bad input."""

import numpy as np
import pytest

import crossreid

from retrieval_helpers import seeded_run

# Features of the seeded run (torch's initialisation under seed 0; 32×16 tiny images) as the
# CPU inference path computed them before --device existed: the first eight dimensions and the
# norm of the first test image of each modality, and the sum of every test feature.
PINNED = {
    "rgb/0006_c1_t0.png": ([0.02947, 0.0, 0.01034, 0.828264, 0.27431, 0.125084, 0.823932, 0.093865], 8.89245),
    "depth/0006_c1_t0.png": ([0.077261, 0.0, 0.080285, 1.095169, 0.280014, 0.224331, 1.260214, 0.338133], 13.70086),
    "ir/0006_c3_t0.png": ([0.049918, 0.0, 0.082379, 0.880513, 0.290812, 0.358203, 1.04116, 0.335436], 12.7556),
}
PINNED_SUM = 7163.841610942067


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    return seeded_run(tmp_path_factory.mktemp("seeded"))


def _pool(run, root, **options):
    from crossreid.data.registry import load_dataset
    from crossreid.experiment import TestStores
    from crossreid.retrieval.evaluate import pool_features

    embedder = crossreid.load_run(run, **options)
    catalog = load_dataset("generic", root)
    stores = TestStores.of(catalog, embedder.cfg.data)
    return catalog, pool_features(embedder.method, catalog, stores.query, stores.gallery, 5)[0]


def test_cpu_features_are_pinned(seeded):
    """The evaluation pass and the embed API give the features they gave before devices existed."""
    run, root = seeded
    catalog, qf = _pool(run, root)
    assert qf.dtype == np.float32
    assert float(qf.sum(dtype=np.float64)) == pytest.approx(PINNED_SUM, rel=1e-6)
    embedder = crossreid.load_run(run)
    for rel, (head, norm) in PINNED.items():
        row = next(i for i, s in enumerate(catalog.query) if s.path == root / rel)
        np.testing.assert_allclose(qf[row, :8], head, atol=2e-6)
        assert float(np.linalg.norm(qf[row])) == pytest.approx(norm, abs=1e-4)
        api = embedder.embed([root / rel], rel.split("/")[0])
        assert api.dtype == np.float32
        np.testing.assert_allclose(api[0], qf[row], atol=1e-5)
