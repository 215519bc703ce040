"""Dataset -> protocol -> direction -> distance: one owner each; the former silent fallbacks are errors."""

from pathlib import Path

import numpy as np
import pytest

from crossreid.data.registry import dataset_names, dataset_protocol, get_entry
from crossreid.data.samples import Catalog, Sample
from crossreid.errors import UserError
from crossreid.evaluation import evaluate_protocol, get_protocol, protocol_names
from crossreid.evaluation.metrics import compute_metrics
from crossreid.evaluation.protocols import protocol_for, with_distance
from crossreid.modality import Modality, parse_direction
from crossreid.report.html import protocol_notes
from crossreid.retrieval.evaluate import evaluate_directions


class Embeds:
    """What evaluate_directions asks of a method when features are given."""

    def __init__(self, *modalities):
        self.embeddable = list(modalities)


def catalog(name="synthetic", n_ids=4, cams=(1, 2)):
    samples = [Sample(Path(f"{m.value}/{p}_{c}.png"), p, c, m, frame=f"{p}-{c}")
               for p in range(n_ids) for c in cams for m in (Modality.RGB, Modality.DEPTH)]
    return Catalog(Path("."), name=name, query=samples, gallery=list(samples))


def features(cat, seed=0):
    rng = np.random.default_rng(seed)
    base = {p: rng.normal(size=6) for p in {s.pid for s in cat.query}}
    return np.stack([base[s.pid] + 0.3 * rng.normal(size=6) for s in cat.query]).astype(np.float32)


def test_every_dataset_names_a_registered_protocol():
    for name in dataset_names():
        entry = get_entry(name)
        assert entry.protocol in protocol_names() and entry.val_protocol in protocol_names(), name
    assert dataset_protocol("biwi") == "rgbd" and dataset_protocol("sysu_mm01") == "sysu_mm01"
    assert dataset_protocol("sysu_mm01", validation=True) == "sysu_mm01_agw"


def test_unregistered_dataset_is_an_error_not_the_synthetic_protocol():
    cat = catalog(name="my_own_data")
    f = features(cat)
    with pytest.raises(UserError, match="unknown dataset 'my_own_data'"):
        evaluate_directions(Embeds(Modality.RGB, Modality.DEPTH), cat, None, None, ["rgb->depth"], features=(f, f))
    # naming the protocol scores it
    out = evaluate_directions(Embeds(Modality.RGB, Modality.DEPTH), cat, None, None, ["rgb->depth"],
                              protocol="synthetic", features=(f, f))
    assert out["rgb->depth"].protocol["direction"] == "rgb->depth"


def test_each_direction_reaches_the_protocol():
    cat = catalog(name="biwi")  # scored with the rgbd protocol
    f = features(cat)
    out = evaluate_directions(Embeds(Modality.RGB, Modality.DEPTH), cat, None, None, ["rgb->depth", "depth->rgb"],
                              features=(f, f), protocol_options={"repeats": 2, "max_per_id": 2})
    assert {d: r.protocol["direction"] for d, r in out.items()} == {"rgb->depth": "rgb->depth",
                                                                   "depth->rgb": "depth->rgb"}
    assert {r.protocol["name"] for r in out.values()} == {"rgbd"}


@pytest.mark.parametrize("name,query,gallery", [("sysu_mm01", "rgb", "ir"), ("sysu_mm01_agw", "rgb", "rgb"),
                                                ("regdb", "rgb", "depth"), ("llcm", "depth", "rgb"),
                                                ("rgbd", "ir", "rgb")])
def test_every_protocol_takes_query_and_gallery_and_refuses_unsupported_pairs(name, query, gallery):
    with pytest.raises(UserError, match=f"does not score {query}->{gallery}"):
        get_protocol(name, query=query, gallery=gallery)


def test_direction_options_mean_the_same_everywhere():
    assert get_protocol("sysu_mm01_agw", query="ir", gallery="rgb").describe()["direction"] == "ir->rgb"
    assert get_protocol("regdb", query="ir", gallery="rgb").describe()["direction"] == "thermal->visible"
    assert get_protocol("llcm", query="rgb", gallery="ir").describe()["direction"] == "rgb->ir"
    # the older spellings still work and agree
    assert get_protocol("regdb", direction="thermal->visible").describe() == \
        get_protocol("regdb", query="ir", gallery="rgb").describe()
    assert get_protocol("llcm", gallery="full").describe()["gallery"] == "full"
    with pytest.raises(UserError, match="either direction= or query="):
        get_protocol("regdb", direction="rgb->ir", query="rgb")
    with pytest.raises(UserError, match="sets the direction"):
        protocol_for("regdb", "rgb", "ir", {"direction": "ir->rgb"})
    with pytest.raises(UserError, match="must look like rgb:depth or 'rgb->depth'"):
        parse_direction("rgb-depth")


def test_one_distance_knob():
    assert protocol_for("synthetic", "rgb", "depth", None, "cosine").distance == "cosine"
    assert protocol_for("synthetic", "rgb", "depth", {"distance": "cosine"}, None).distance == "cosine"
    assert protocol_for("synthetic", "rgb", "depth", {"distance": "cosine"}, "cosine").distance == "cosine"
    with pytest.raises(UserError, match="distance given twice"):
        with_distance({"distance": "cosine"}, "euclidean")
    cat = catalog()
    f = features(cat)
    out = evaluate_directions(Embeds(Modality.RGB, Modality.DEPTH), cat, None, None, ["rgb->depth"], "cosine",
                              features=(f, f))
    assert out["rgb->depth"].distance == out["rgb->depth"].protocol["distance"] == "cosine"


def test_precision_is_recorded_and_float64_by_default():
    cat = catalog()
    f = features(cat)
    exact = evaluate_protocol(get_protocol("synthetic"), cat, f, f)
    fast = evaluate_protocol(get_protocol("synthetic", precision="float32"), cat, f, f)
    assert exact.protocol["precision"] == "float64" and fast.protocol["precision"] == "float32"
    assert exact.to_json()["options"] == {} and fast.to_json()["options"] == {"precision": "float32"}
    with pytest.raises(UserError, match="precision"):
        get_protocol("synthetic", precision="float16")


# Query q and two gallery items: g0 (another person, index 0) and g1 (the same person, index 1).
# Exactly, |q - g1| = 0.9 < |q - g0| = 1.0, so the true match is first: R1 = 1, AP = 1.
# In float32, |q|² = |g0|² = |g1|² round to 1e8 (the spacing there is 8) and q·g rounds to 1e8 too,
# so both distances become 0: a tie, which the stable order breaks by gallery index -> R1 = 0, AP = 1/2.
NEAR_TIE_Q = np.array([[1e4, 0.0]])
NEAR_TIE_G = np.array([[1e4, 1.0], [1e4, 0.9]])


@pytest.mark.parametrize("method", ["auto", "count", "sort"])
def test_near_tie_is_ranked_by_the_exact_distance(method):
    kw = dict(query_ids=[1], gallery_ids=[2, 1], query_features=NEAR_TIE_Q, gallery_features=NEAR_TIE_G,
              ranks=(1, 2), method=method)
    exact = compute_metrics(**kw)
    assert exact.cmc.tolist() == [1.0, 1.0] and exact.map == 1.0
    fast = compute_metrics(**kw, precision="float32")
    assert fast.cmc.tolist() == [0.0, 1.0] and fast.map == 0.5


@pytest.mark.parametrize("method", ["auto", "count", "sort"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exact_ties_keep_gallery_order(method, dtype):
    # official MATLAB `sort` and NumPy kind="stable": equal distances in gallery order
    d = np.array([[0.5, 0.2, 0.2, 0.2, 0.1]], dtype=dtype)
    # ids: 9 (0.5), 7 (0.2), 1 (0.2, match), 1 (0.2, match), 8 (0.1) -> order 8, 7, 1, 1, 9: ranks 3, 4
    r = compute_metrics([1], [9, 7, 1, 1, 8], distances=d, ranks=(1, 2, 3), method=method)
    assert r.cmc.tolist() == [0, 0, 1] and r.map == pytest.approx((1 / 3 + 2 / 4) / 2) and r.minp == 0.5
    ident = compute_metrics([1], [9, 7, 1, 1, 8], distances=d, ranks=(1, 2, 3), method=method, cmc="identity")
    assert ident.cmc.tolist() == [0, 0, 1]


def test_float64_counting_matches_sorting_with_many_ties():
    rng = np.random.default_rng(3)
    d = rng.integers(0, 4, size=(40, 60)).astype(np.float64)  # many exact ties
    q, g = rng.integers(0, 5, 40), rng.integers(0, 5, 60)
    for cmc in ("image", "identity"):
        a = compute_metrics(q, g, distances=d, method="count", cmc=cmc, per_query=True)
        b = compute_metrics(q, g, distances=d, method="sort", cmc=cmc, per_query=True)
        c = compute_metrics(q, g, distances=d.astype(np.float32), method="count", cmc=cmc, per_query=True)
        for other in (b, c):
            assert np.array_equal(a.cmc, other.cmc) and a.map == other.map and a.minp == other.minp


def test_report_describes_the_protocol_each_result_used():
    cat = catalog()
    f = features(cat)
    res = evaluate_protocol(get_protocol("synthetic"), cat, f, f)
    sysu_like = evaluate_protocol(get_protocol("sysu_mm01_agw", distance="cosine"), sysu_catalog(), *sysu_features())
    notes = protocol_notes({"m": {"rgb->depth": res, "ir->rgb": sysu_like}})
    assert any("synthetic (rgb->depth): image-level CMC" in n and "same cam" in n for n in notes)
    assert any("sysu_mm01_agw (ir->rgb): identity-level CMC" in n and "cosine distance in float64" in n
               for n in notes)


def sysu_catalog():
    query = [Sample(Path(f"cam{c}/{p:04d}/0001.jpg"), p, c, Modality.IR) for p in (1, 2) for c in (3, 6)]
    gallery = [Sample(Path(f"cam{c}/{p:04d}/0001.jpg"), p, c, Modality.RGB) for p in (1, 2) for c in (1, 4)]
    return Catalog(Path("."), name="sysu_mm01", query=query, gallery=gallery)


def sysu_features():
    cat = sysu_catalog()
    return (np.array([[s.pid + 0.1 * s.cam] for s in cat.query]), np.array([[float(s.pid)] for s in cat.gallery]))


def test_report_ranked_lists_rebuild_the_recorded_protocol():
    from crossreid.evaluation.examples import ranked_examples

    cat = catalog()
    f = features(cat)
    res = evaluate_protocol(get_protocol("synthetic", query="depth", gallery="rgb", distance="cosine"), cat, f, f)
    examples = ranked_examples(cat, res, (f, f), queries=2, top=3)
    assert len(examples) == 2
    for example in examples:
        q = example["query"]
        assert q["modality"] == "depth" and len(example["ranked"]) == 3
        assert all(g["modality"] == "rgb" and g["cam"] != q["cam"] and g["same"] == (g["pid"] == q["pid"])
                   for g in example["ranked"])


def test_recorded_chance_rank1_by_hand():
    cat = catalog()  # 4 persons, cameras 1 and 2: an RGB query meets the 4 depth images of the other camera
    f = features(cat)
    res = evaluate_protocol(get_protocol("synthetic", query="rgb", gallery="depth"), cat, f, f)
    assert res.chance_rank1() == 0.25
    sysu_like = evaluate_protocol(get_protocol("sysu_mm01_agw"), sysu_catalog(), *sysu_features())
    assert sysu_like.chance_rank1() == 0.5  # identity-level CMC: one over the 2 gallery persons
