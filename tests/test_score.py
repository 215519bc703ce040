"""Scoring a features .npz, with labels in the file or from a dataset manifest."""

import numpy as np
import pytest

from crossreid.errors import UserError
from crossreid.evaluation import evaluate_protocol, get_protocol
from crossreid.evaluation.score import catalog_from_arrays, score_features

IDS, CAMS = [0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2], [1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2]
MODS = ["rgb"] * 6 + ["depth"] * 6
PATHS = [f"images/{m}_{i}.png" for i, m in enumerate(MODS)]


def features(seed=0):
    return np.random.default_rng(seed).normal(size=(12, 6)).astype(np.float32)


def write(tmp_path, name="f.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def labelled(tmp_path, **override):
    arrays = dict(paths=np.array(PATHS), features=features(), ids=np.array(IDS), cameras=np.array(CAMS),
                  modalities=np.array(MODS))
    arrays.update(override)
    return write(tmp_path, **{k: v for k, v in arrays.items() if v is not None})


def test_labels_from_the_file(tmp_path):
    path = labelled(tmp_path)
    res = score_features(path, "synthetic", {"query": "rgb", "gallery": "depth"})
    data = np.load(path)
    cat = catalog_from_arrays(path, data)
    assert len(cat.query) == len(cat.gallery) == 12
    direct = evaluate_protocol(get_protocol("synthetic"), cat, features(), features())
    assert res.mean() == direct.mean()
    assert res.trials[0].num_queries == 6 and res.protocol["direction"] == "rgb->depth"
    assert score_features(path, "synthetic", {"query": "depth", "gallery": "rgb"}).protocol["direction"] == "depth->rgb"


@pytest.mark.parametrize("override,message", [
    ({"features": None}, "missing key\\(s\\) features"),
    ({"cameras": None}, "missing key\\(s\\) cameras"),
    ({"ids": np.array(IDS[:-1])}, "'ids' has 11 rows but 'features' has 12"),
    ({"features": np.where(np.arange(12)[:, None] == 4, np.nan, features())}, "NaN.*row 4"),
    ({"modalities": np.array(["rgb"] * 11 + ["sonar"])}, "row 11: bad label"),
    ({"paths": np.array(PATHS[:-1] + PATHS[:1])}, "duplicate"),
])
def test_bad_files(tmp_path, override, message):
    path = labelled(tmp_path, **override)
    with pytest.raises(UserError, match=message) as err:
        score_features(path, "synthetic")
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_unreadable_inputs(tmp_path):
    obj = write(tmp_path, "obj.npz", paths=np.array(PATHS, dtype=object), features=features())
    with pytest.raises(UserError, match="unicode"):
        score_features(obj, "synthetic")
    junk = tmp_path / "junk.npz"
    junk.write_text("not a zip")
    with pytest.raises(UserError, match="not a readable"):
        score_features(junk, "synthetic")
    with pytest.raises(UserError, match="not found"):
        score_features(tmp_path / "absent.npz", "synthetic")


@pytest.fixture
def dataset_root(tmp_path):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    rows = ["path,person,camera,modality,split"]
    for p, i, c, m in zip(PATHS, IDS, CAMS, MODS):
        (root / p).write_bytes(b"")
        rows.append(f"{p},{i},{c},{m},test")
    (root / "images" / "train.png").write_bytes(b"")
    rows.append("images/train.png,9,1,rgb,train")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


def test_labels_from_a_dataset(tmp_path, dataset_root):
    with_labels = score_features(labelled(tmp_path), "synthetic")
    order = np.random.default_rng(1).permutation(12)  # row order must not matter
    paths = [PATHS[i] for i in order]
    paths[0] = str(dataset_root / paths[0])  # absolute paths are accepted too
    extra = np.array(paths + ["images/train.png"])
    path = write(tmp_path, "d.npz", paths=extra, features=np.vstack([features()[order], np.ones((1, 6))]))
    res = score_features(path, "synthetic", dataset="generic", root=dataset_root)
    assert res.mean() == with_labels.mean() and res.dataset == "generic"


def test_dataset_mismatches(tmp_path, dataset_root):
    stray = write(tmp_path, "s.npz", paths=np.array(PATHS + ["images/other.png", "x/y.png"]),
                  features=np.zeros((14, 6), np.float32))
    with pytest.raises(UserError, match="2 of 14 paths are not in dataset 'generic'.*other.png"):
        score_features(stray, "synthetic", dataset="generic", root=dataset_root)
    short = write(tmp_path, "m.npz", paths=np.array(PATHS[:5] + PATHS[6:]), features=features()[:11])
    with pytest.raises(UserError, match="1 query image\\(s\\).*have no features.*rgb_5.png"):
        score_features(short, "synthetic", dataset="generic", root=dataset_root)
    # only the images the protocol uses are required: depth->rgb ignores nothing here, rgb->rgb skips depth
    rgb_only = write(tmp_path, "r.npz", paths=np.array(PATHS[:6]), features=features()[:6])
    res = score_features(rgb_only, "synthetic", {"query": "rgb", "gallery": "rgb"}, dataset="generic",
                         root=dataset_root)
    assert res.trials[0].num_queries == 6
