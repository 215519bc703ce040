"""The protocol registry, the synthetic protocol and result aggregation."""

import json
from pathlib import Path

import numpy as np
import pytest

from crossreid.data.samples import Catalog, Sample
from crossreid.errors import UserError
from crossreid.evaluation import ProtocolResult, evaluate_protocol, get_protocol, protocol_names
from crossreid.evaluation.distance import pairwise_distance
from crossreid.evaluation.metrics import SAME_CAMERA, compute_metrics
from crossreid.evaluation.reference import reference_metrics
from crossreid.modality import Modality


def rgbd_catalog(n_ids=4, cams=(1, 2, 3), frames=2):
    """Every (pid, cam, frame) has an RGB and a depth image sharing camera and frame."""
    samples = [Sample(Path(f"{m.value}/{p}_{c}_{f}.png"), p, c, m, frame=f"{p}-{c}-{f}")
               for p in range(n_ids) for c in cams for f in range(frames) for m in (Modality.RGB, Modality.DEPTH)]
    return Catalog(Path("."), name="toy", query=samples, gallery=list(samples))


def test_registry():
    assert "synthetic" in protocol_names()
    with pytest.raises(UserError, match="did you mean 'synthetic'"):
        get_protocol("synthetc")
    with pytest.raises(UserError, match="no option 'shots'"):
        get_protocol("synthetic", shots=3)
    with pytest.raises(UserError, match="unknown modality"):
        get_protocol("synthetic", query="sonar")
    with pytest.raises(UserError, match="gallery_per_id"):
        get_protocol("synthetic", trials=3)


def test_synthetic_trial_and_description():
    cat = rgbd_catalog()
    proto = get_protocol("synthetic", query="rgb", gallery="depth")
    (trial,) = proto.trials(cat)
    assert all(cat.query[i].modality is Modality.RGB for i in trial.query)
    assert all(cat.gallery[i].modality is Modality.DEPTH for i in trial.gallery)
    assert len(trial.query) == len(trial.gallery) == 4 * 3 * 2
    desc = proto.describe()
    assert desc["direction"] == "rgb->depth" and desc["cmc"] == "image" and desc["re_ranking"] is False
    assert desc["exclusion"] == ["same cam"] and desc["trials"] == 1 and desc["shots"] == "all"
    json.dumps(desc)


def test_same_camera_excludes_the_co_registered_frame():
    # depth features equal to their RGB frame: without the camera rule every query would hit rank 1 exactly
    cat = rgbd_catalog()
    rng = np.random.default_rng(0)
    base = {s.frame: rng.normal(size=8) for s in cat.query}
    feats = np.stack([base[s.frame] for s in cat.query]).astype(np.float32)
    res = evaluate_protocol(get_protocol("synthetic"), cat, feats, feats)
    (m,) = res.trials
    assert m.num_queries == 24 and m.num_valid == 24
    assert m.rank(1) < 1.0  # the identical co-registered frame was removed
    # the same numbers from the reference applying "remove same camera" itself
    q = [s for s in cat.query if s.modality is Modality.RGB]
    g = [s for s in cat.gallery if s.modality is Modality.DEPTH]
    d = pairwise_distance(np.stack([base[s.frame] for s in q]), np.stack([base[s.frame] for s in g]))
    ref = reference_metrics(d, [s.pid for s in q], [s.pid for s in g], [s.cam for s in q], [s.cam for s in g],
                            exclusion=SAME_CAMERA)
    assert np.array_equal(m.cmc, ref.cmc) and m.map == pytest.approx(ref.map, abs=1e-12)
    assert reference_metrics(d, [s.pid for s in q], [s.pid for s in g]).rank(1) == 1.0  # without the rule


def test_seeded_gallery_trials():
    cat = rgbd_catalog(n_ids=5, frames=3)
    proto = get_protocol("synthetic", trials=3, gallery_per_id=2, seed=1)
    trials = proto.trials(cat)
    assert len(trials) == 3
    for t in trials:
        pids = [cat.gallery[i].pid for i in t.gallery]
        assert sorted(set(pids)) == list(range(5)) and all(pids.count(p) == 2 for p in set(pids))
    assert not all(np.array_equal(trials[0].gallery, t.gallery) for t in trials[1:])
    again = get_protocol("synthetic", trials=3, gallery_per_id=2, seed=1).trials(cat)
    assert all(np.array_equal(a.gallery, b.gallery) for a, b in zip(trials, again))
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(len(cat.query), 4)).astype(np.float32)
    res = evaluate_protocol(get_protocol("synthetic", trials=3, gallery_per_id=2, seed=1, distance="cosine"),
                            cat, feats, feats)
    assert len(res.trials) == 3 and res.distance == "cosine" and res.protocol["shots"] == 2


def test_missing_modality_is_a_user_error():
    cat = rgbd_catalog()
    with pytest.raises(UserError, match="ir"):
        get_protocol("synthetic", gallery="ir").trials(cat)


def fake_result(values):
    trials = [compute_metrics([1], [2, 1, 1], distances=np.array([d], np.float32), ranks=(1, 5)) for d in values]
    return ProtocolResult({"name": "x"}, "euclidean", trials, dataset="toy")


def test_result_aggregation_json_and_table(tmp_path):
    res = fake_result([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]])  # trial 1: matches at 2,3; trial 2: at 1,2
    assert res.values()["rank1"].tolist() == [0.0, 1.0]
    assert res.mean()["rank1"] == 0.5 and res.std()["rank1"] == 0.5
    assert res.mean()["map"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + 1) / 2)
    assert res.format_table().startswith("R1 50.0 ± 50.0 | R5 100.0 ± 0.0 | mAP ")
    res.save(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["crossreid_version"] and data["protocol"] == {"name": "x"} and len(data["trials"]) == 2
    assert data["trials"][1]["rank1"] == 1.0 and data["distance"] == "euclidean"
    one = fake_result([[0.3, 0.2, 0.1]])
    assert "±" not in one.format_table() and one.format_table().startswith("R1 100.0 | R5 100.0 | mAP 100.0")


def test_direction_options_are_refused_and_the_table_of_a_two_direction_protocol():
    from crossreid.evaluation.protocols import protocol_for, setting_protocols

    for option in ("query", "gallery", "direction"):
        with pytest.raises(UserError, match=f"protocol option {option}= sets the direction"):
            protocol_for("regdb", "rgb", "ir", {option: "ir"})
    table = setting_protocols("regdb", distance="cosine")
    assert {label: (p.query_modality, p.gallery_modality, p.distance) for label, p in table.items()} == {
        "rgb->ir": (Modality.RGB, Modality.IR, "cosine"), "ir->rgb": (Modality.IR, Modality.RGB, "cosine")}


def test_official_draws_choose_over_the_folder_sorted_by_file_name():
    import random

    from crossreid.evaluation.gallery_draws import folders, python_random_gallery

    names = ["0003.jpg", "0001.jpg", "0002.jpg", "0010.jpg"]  # listed out of name order
    samples = [Sample(Path(f"cam1/0001/{n}"), 1, 1, Modality.IR) for n in names]
    assert folders(samples, range(4)) == {(1, 1): [1, 2, 0, 3]}
    for seed in range(5):
        assert python_random_gallery(samples, range(4), [1], seed).tolist() == [random.Random(seed).choice([1, 2, 0, 3])]
