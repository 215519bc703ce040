"""RegDB protocol: real trial sizes, both directions, image-level CMC by hand, per-trial runs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from fixtures_real import REGDB_IDX, build_regdb, needs_shared

from crossreid.data.registry import load_dataset
from crossreid.data.samples import Catalog, Sample
from crossreid.engine.runs import find_trial_runs
from crossreid.errors import UserError
from crossreid.evaluation import evaluate_protocol, get_protocol
from crossreid.evaluation.regdb_protocols import combine_trials
from crossreid.modality import Modality


@needs_shared
@pytest.mark.parametrize("trial", [1, 7])
def test_real_trial_both_directions(tmp_path, trial):
    root = build_regdb(tmp_path / "RegDB", REGDB_IDX, trials=(trial,))
    cat = load_dataset("regdb", root, trial=trial)
    rng = np.random.default_rng(trial)
    feats = rng.normal(size=(len(cat.query), 8)).astype(np.float32)
    for direction, (qm, gm) in {"visible->thermal": (Modality.RGB, Modality.IR),
                                "thermal->visible": (Modality.IR, Modality.RGB)}.items():
        proto = get_protocol("regdb", direction=direction)
        (t,) = proto.trials(cat)
        assert len(t.query) == len(t.gallery) == 2060
        assert {cat.query[i].modality for i in t.query} == {qm} and {cat.gallery[i].modality for i in t.gallery} == {gm}
        assert t.cmc == "image" and t.exclusion.clauses == ()
        (m,) = evaluate_protocol(proto, cat, feats, feats).trials
        assert m.num_valid == m.num_queries == 2060
        assert proto.describe()["direction"] == direction


def catalog(visible: dict[str, int], thermal: dict[str, int]) -> Catalog:
    samples = [Sample(Path(f"Visible/{name}.bmp"), pid, 1, Modality.RGB, frame=name) for name, pid in visible.items()]
    samples += [Sample(Path(f"Thermal/{name}.bmp"), pid, 2, Modality.IR, frame=name) for name, pid in thermal.items()]
    return Catalog(Path("."), name="regdb", query=samples, gallery=list(samples))


def test_hand_worked_image_level_cmc():
    # visible->thermal, gallery b (pid 2, x=1), c (2, x=2), d (1, x=3):
    #   query a (1, x=0): b, c, d -> rank 3 (identity-level would say 2), AP 1/3
    #   query e (2, x=2.6): d 0.4, c 0.6, b 1.6 -> ranks 2, 3, AP (1/2 + 2/3)/2
    # thermal->visible, gallery a (1, x=0), e (2, x=2.6):
    #   b (2, x=1): a, e -> rank 2; c (2, x=2): e, a -> rank 1; d (1, x=3): e, a -> rank 2
    cat = catalog({"a": 1, "e": 2}, {"b": 2, "c": 2, "d": 1})
    x = {"a": 0.0, "e": 2.6, "b": 1.0, "c": 2.0, "d": 3.0}
    feats = np.array([[x[s.frame]] for s in cat.query], dtype=np.float32)
    (m,) = evaluate_protocol(get_protocol("regdb"), cat, feats, feats).trials
    assert m.num_valid == 2
    assert m.cmc[:3].tolist() == pytest.approx([0, 0.5, 1])
    assert m.map == pytest.approx((1 / 3 + (1 / 2 + 2 / 3) / 2) / 2)
    (r,) = evaluate_protocol(get_protocol("regdb", direction="thermal->visible"), cat, feats, feats).trials
    assert r.num_valid == 3
    assert r.cmc[:2].tolist() == pytest.approx([1 / 3, 1])
    assert r.map == pytest.approx((1 / 2 + 1 / 2 + 1) / 3)


def test_direction_errors():
    with pytest.raises(UserError, match="does not score rgb->depth"):
        get_protocol("regdb", direction="rgb->depth")
    assert get_protocol("regdb", direction="rgb->ir").describe()["direction"] == "visible->thermal"


def write_run(folder: Path, trial: int | None, dataset: str = "regdb") -> None:
    folder.mkdir(parents=True)
    options = "" if trial is None else f"\n  options:\n    trial: {trial}"
    (folder / "config.yaml").write_text(f"data:\n  dataset: {dataset}{options}\n")


def test_find_trial_runs(tmp_path):
    for t in range(1, 11):
        write_run(tmp_path / f"trial{t}", None if t == 1 else t)
    runs = find_trial_runs(str(tmp_path / "trial{t}"))
    assert runs == [tmp_path / f"trial{t}" for t in range(1, 11)]
    with pytest.raises(UserError, match="no \\{t\\}"):
        find_trial_runs(str(tmp_path / "trial"))
    with pytest.raises(UserError, match="trial 11 not found"):
        find_trial_runs(str(tmp_path / "trial{t}"), trials=range(1, 12))
    write_run(tmp_path / "bad3", 4)
    with pytest.raises(UserError, match="trained on regdb trial 4, not regdb trial 3"):
        find_trial_runs(str(tmp_path / "bad{t}"), trials=[3])


def test_combine_trials():
    cat = catalog({"a": 1, "e": 2}, {"b": 2, "c": 2, "d": 1})
    results = []
    for seed in range(4):
        feats = np.random.default_rng(seed).normal(size=(len(cat.query), 2)).astype(np.float32)
        results.append(evaluate_protocol(get_protocol("regdb"), cat, feats, feats))
    combined = combine_trials(results)
    assert combined.protocol["trials"] == 4 and len(combined.trials) == 4
    per = np.array([r.mean()["map"] for r in results])
    assert combined.mean()["map"] == pytest.approx(per.mean()) and combined.std()["map"] == pytest.approx(per.std())
    assert "±" in combined.format_table()
    first = results[0]
    assert (combined.distance, combined.dataset, combined.options, combined.rerank) == \
        (first.distance, first.dataset, first.options, first.rerank) == ("euclidean", cat.name, {}, None)
    cosine = [evaluate_protocol(get_protocol("regdb", distance="cosine"), cat, feats, feats)]
    alone = combine_trials(cosine)
    assert alone.distance == "cosine" and alone.protocol["trials"] == 1 and alone.trials == cosine[0].trials
    other = evaluate_protocol(get_protocol("regdb", direction="thermal->visible"), cat, feats, feats)
    with pytest.raises(UserError, match="cannot combine"):
        combine_trials(results + [other])
    with pytest.raises(UserError, match="cannot combine"):
        combine_trials([results[0], other])
    # the protocol options and the re-ranking settings of the trials are kept
    reranked = [dataclasses.replace(r, options={"direction": "visible->thermal"}, rerank={"k1": 20, "k2": 6})
                for r in results]
    kept = combine_trials(reranked)
    assert (kept.options, kept.rerank) == ({"direction": "visible->thermal"}, {"k1": 20, "k2": 6})
