"""The small notebook API in crossreid/__init__.py: light to import, lazy, and it scores arrays."""

import subprocess
import sys

import numpy as np
import pytest

import crossreid
from crossreid.evaluation.metrics import SAME_CAMERA, compute_metrics


def test_import_crossreid_is_light():
    code = "import sys, crossreid; print('torch' in sys.modules, crossreid.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", crossreid.__version__]


def test_every_public_name_resolves():
    for name in crossreid.__all__:
        assert getattr(crossreid, name) is not None
    with pytest.raises(AttributeError):
        crossreid.no_such_name  # noqa: B018


def test_score_arrays_equals_the_metrics_on_the_same_split():
    rng = np.random.default_rng(0)
    ids = np.repeat(np.arange(5), 4)
    cams = np.tile([1, 1, 2, 2], 5)
    mods = np.tile(["rgb", "depth"], 10)
    feats = rng.normal(size=(20, 6)) + ids[:, None]
    res = crossreid.score_arrays(feats, ids, cams, mods, "synthetic", {"query": "depth", "gallery": "rgb"})
    q, g = mods == "depth", mods == "rgb"
    ref = compute_metrics(ids[q], ids[g], cams[q], cams[g], query_features=feats[q], gallery_features=feats[g],
                          exclusion=SAME_CAMERA)
    assert res.protocol["direction"] == "depth->rgb" and res.protocol["precision"] == "float64"
    assert np.array_equal(res.trials[0].cmc, ref.cmc) and res.trials[0].map == ref.map
    with pytest.raises(crossreid.errors.UserError, match="'ids' has 3 rows"):
        crossreid.score_arrays(feats, ids[:3], cams, mods)
