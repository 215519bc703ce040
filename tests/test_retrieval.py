"""From a trained run to person search: embed API, extract, index, search, bad input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from retrieval_helpers import train_tiny_run

import crossreid
from crossreid.evaluation.distance import pairwise_distance
from crossreid.retrieval.search import ExactSearcher


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("retrieval"))


def cli(*args, cwd=None):
    proc = subprocess.run([sys.executable, "-m", "crossreid", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)
    return proc.returncode, proc.stdout, proc.stderr


def one_error_line(code, err, needle):
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err


def test_embed_equals_evaluation_features(trained):
    from crossreid.data.registry import load_dataset
    from crossreid.experiment import TestStores
    from crossreid.retrieval.evaluate import pool_features

    run, root = trained
    embedder = crossreid.load_run(run)
    catalog = load_dataset("generic", root)
    stores = TestStores.of(catalog, embedder.cfg.data)
    qf, _ = pool_features(embedder.method, stores.query, stores.gallery)
    for modality in ("rgb", "depth", "ir"):
        rows = [i for i, s in enumerate(catalog.query) if s.modality.value == modality]
        paths = [catalog.query[i].path for i in rows]
        np.testing.assert_allclose(embedder.embed(paths, modality), qf[rows], atol=1e-5)
        # PIL images and decoded arrays go through the same preprocessing.
        pil = [Image.open(p) for p in paths[:2]]
        np.testing.assert_allclose(embedder.embed(pil, modality), qf[rows[:2]], atol=1e-5)
        arrays = [np.asarray(im) for im in pil]
        np.testing.assert_allclose(embedder.embed(arrays, modality), qf[rows[:2]], atol=1e-5)
    assert embedder.embed(paths[0], "ir").shape == (1, qf.shape[1])


def test_extract_score_round_trip(trained, tmp_path):
    from crossreid.data.registry import load_dataset
    from crossreid.evaluation.protocols import evaluate_protocol, get_protocol
    from crossreid.evaluation.score import score_features
    from crossreid.experiment import TestStores
    from crossreid.retrieval.evaluate import pool_features

    run, root = trained
    out = tmp_path / "feats.npz"
    code, stdout, err = cli("extract", run, "--images", root / "manifest.csv", "--split", "test", "--out", out,
                            "--quiet", "--batch-size", "7")
    assert code == 0, err
    with np.load(out, allow_pickle=False) as npz:
        assert {"paths", "features", "ids", "cameras", "modalities", "frames", "model"} <= set(npz.files)
        assert json.loads(str(npz["model"]))["weights_sha256"]
    proto = get_protocol("synthetic", query="rgb", gallery="depth")
    via_file = score_features(out, proto)
    catalog = load_dataset("generic", root)
    embedder = crossreid.load_run(run)
    stores = TestStores.of(catalog, embedder.cfg.data)
    qf, gf = pool_features(embedder.method, stores.query, stores.gallery)
    direct = evaluate_protocol(proto, catalog, qf, gf)
    assert via_file.mean() == pytest.approx(direct.mean(), abs=1e-9)
    # Folder input: modality from the rgb/ depth/ ir/ sub-folders; no labels.
    out2 = tmp_path / "folder.npz"
    assert cli("extract", run, "--images", root, "--out", out2, "--quiet", "--only", "ir")[0] == 0
    with np.load(out2, allow_pickle=False) as npz:
        assert set(npz["modalities"].tolist()) == {"ir"} and "ids" not in npz.files


def test_extract_under_torchrun_equals_one_process(trained, tmp_path):
    from test_engine_ddp import _torchrun

    run, root = trained
    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    assert cli("extract", run, "--images", root / "manifest.csv", "--out", one, "--quiet")[0] == 0
    _torchrun("-m", "crossreid", "extract", str(run), "--images", str(root / "manifest.csv"), "--out", str(two),
              "--quiet", "--batch-size", "5")
    with np.load(one, allow_pickle=False) as a, np.load(two, allow_pickle=False) as b:
        assert a["paths"].tolist() == b["paths"].tolist()
        np.testing.assert_allclose(a["features"], b["features"], atol=1e-5)


def test_exact_search_equals_brute_force():
    rng = np.random.default_rng(0)
    gallery, queries = rng.normal(size=(3000, 24)).astype(np.float32), rng.normal(size=(37, 24)).astype(np.float32)
    for metric in ("euclidean", "cosine"):
        full = pairwise_distance(queries, gallery, metric)
        expect = np.argsort(full, axis=1, kind="stable")[:, :15]
        for chunk in (None, 256):  # several gallery chunks merge into the same top-K
            dist, rows = ExactSearcher(gallery.astype(np.float16).astype(np.float32), metric, chunk).search(queries, 15)
            ref = pairwise_distance(queries, gallery.astype(np.float16).astype(np.float32), metric)
            np.testing.assert_array_equal(rows, np.argsort(ref, axis=1, kind="stable")[:, :15])
            np.testing.assert_allclose(dist, np.take_along_axis(ref, rows, 1), atol=1e-4)
        assert (ExactSearcher(gallery, metric).search(queries, 15)[1] == expect).all()


def test_filters_and_exclusions():
    from crossreid.retrieval.index import GalleryIndex
    from crossreid.retrieval.search import Queries, SearchOptions, search_index

    rng = np.random.default_rng(1)
    n = 400
    feats = rng.normal(size=(n, 8)).astype(np.float32)
    mods = np.array(["rgb", "depth", "ir", "rgb"] * (n // 4))
    cams = np.arange(n) % 5
    frames = np.array([f"f{i // 2}" for i in range(n)])
    index = GalleryIndex(Path("mem"), {"dim": 8, "metric": "euclidean"}, feats, np.array([f"{i}.png" for i in range(n)]),
                         mods, np.arange(n) // 4, cams, frames)
    q = Queries(feats[:6] + 0.01, [f"{i}.png" for i in range(6)], list(mods[:6]), np.arange(6) // 4, cams[:6],
                frames[:6])
    full = pairwise_distance(q.features, feats)
    opts = SearchOptions(k=5, gallery_modalities=["depth", "ir"], cameras=[1, 2, 3],
                         exclude=["same-camera", "same-frame"])
    dist, rows, engine = search_index(index, q, opts)
    assert engine == "exact"
    for r in range(6):
        ok = np.isin(mods, ["depth", "ir"]) & np.isin(cams, [1, 2, 3]) & (cams != cams[r]) & (frames != frames[r])
        allowed = np.flatnonzero(ok)
        expect = allowed[np.argsort(full[r, allowed], kind="stable")[:5]]
        assert rows[r].tolist() == expect.tolist()
    pytest.importorskip("faiss")
    from crossreid.retrieval.ann import build_faiss

    index.faiss_index, _ = build_faiss(feats, "euclidean", "hnsw", ef_search=400)
    index.header["faiss"] = {"kind": "hnsw"}
    _, approx, engine = search_index(index, q, opts)
    assert engine == "hnsw" and (approx == rows).all()


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("exclude, rule", [(["same-camera"], "SAME_CAMERA"), (["same-frame"], "SAME_FRAME"),
                                           (["same-camera", "same-frame"], None)])
def test_search_ranks_the_gallery_as_evaluation_does(metric, exclude, rule):
    """Same features, same rule: the full ranked list of `crossreid search` gives exactly the
    per-query AP and first-match rank that the evaluation computes (float32, as an index stores)."""
    from crossreid.evaluation import metrics as M
    from crossreid.evaluation.metrics import ExclusionRule, compute_metrics
    from crossreid.retrieval.index import GalleryIndex
    from crossreid.retrieval.search import Queries, SearchOptions, exclusion_rule, search_index

    rng = np.random.default_rng(3)
    n, nq = 90, 24
    ids, cams = np.arange(n) % 12, rng.integers(1, 4, n)
    feats = (rng.normal(size=(12, 6))[ids] + 0.8 * rng.normal(size=(n, 6))).astype(np.float32)
    feats[40:50] = feats[10:20]            # exact ties, between items of other ids: broken by gallery order
    frames = np.array([f"t{i % 7}" for i in range(n)])
    frames[40:50] = frames[10:20]
    q_rows = rng.choice(n, nq, replace=False)
    qf = feats[q_rows] + np.float32(0.05) * rng.normal(size=(nq, 6)).astype(np.float32)
    qf[:4] = feats[10:14]                   # queries sitting exactly on tied gallery pairs
    qids, qcams, qframes = ids[q_rows], cams[q_rows], frames[q_rows]
    qids[:4], qcams[:4], qframes[:4] = ids[10:14], cams[10:14], frames[10:14]

    expected = ExclusionRule.parse("cam", "frame") if rule is None else getattr(M, rule)
    assert exclusion_rule(exclude) == expected  # search's rule is the evaluation's
    index = GalleryIndex(Path("mem"), {"dim": 6, "metric": metric}, feats, np.array([f"{i}.png" for i in range(n)]),
                         np.full(n, "rgb"), ids, cams, frames)
    queries = Queries(qf, [f"q{i}.png" for i in range(nq)], ["rgb"] * nq, qids, qcams, qframes)
    _, rows, _ = search_index(index, queries, SearchOptions(k=n, exclude=exclude))

    evaluated = compute_metrics(qids, ids, qcams, cams, query_features=qf, gallery_features=feats, metric=metric,
                                exclusion=expected, query_keys={"frame": qframes}, gallery_keys={"frame": frames},
                                precision="float32", per_query=True, ranks=(1,))
    ap, first = np.full(nq, np.nan), []
    for r in range(nq):
        hits = ids[rows[r][rows[r] >= 0]] == qids[r]
        if hits.any():
            ranks = np.flatnonzero(hits) + 1
            ap[r] = np.mean(np.arange(1, len(ranks) + 1) / ranks)
            first.append(ranks[0])
    np.testing.assert_allclose(ap, evaluated.ap, rtol=0, atol=1e-12)
    assert evaluated.rank(1) == np.mean(np.array(first) == 1)


@pytest.fixture(scope="module")
def indexed(trained, tmp_path_factory):
    run, root = trained
    d = tmp_path_factory.mktemp("indexed")
    assert cli("extract", run, "--images", root / "manifest.csv", "--split", "test", "--out", d / "g.npz",
               "--quiet")[0] == 0
    assert cli("index", d / "g.npz", "--out", d / "g.idx.npz")[0] == 0
    return run, root, d


def test_search_cli_depth_query_table_json_html(indexed, tmp_path):
    run, root, d = indexed
    query = root / "depth" / "0008_c1_t0.png"
    code, out, err = cli("search", d / "g.idx.npz", "--query", query, "--modality", "depth", "--run", run,
                         "--top", "4", "--gallery-modality", "rgb", "--gallery-modality", "ir", "--query-id", "8",
                         "--json", tmp_path / "r.json", "--html", tmp_path / "r.html")
    assert code == 0, err
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["queries"][0]["query"]["id"] == 8   # results of person 8 are marked (✓, green frame)
    ranked = doc["queries"][0]["results"]
    assert [line.endswith("✓") for line in out.splitlines()[2:6]] == [r["id"] == 8 for r in ranked]
    assert len(ranked) == 4 and {r["modality"] for r in ranked} <= {"rgb", "ir"}
    assert [r["distance"] for r in ranked] == sorted(r["distance"] for r in ranked)
    assert doc["rerank"] == "none" and doc["model"]["weights_sha256"]
    assert ranked[0]["path"] in out
    page = (tmp_path / "r.html").read_text()
    assert page.count("data:image/png;base64") == 5


def test_rerank_option_in_search_and_score(indexed, tmp_path):
    run, root, d = indexed
    code, _, err = cli("search", d / "g.idx.npz", "--query-features", d / "g.npz", "--top", "3", "--rerank",
                       "--rerank-option", "k1=6", "--json", tmp_path / "s.json", "--quiet")
    assert code == 0, err
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["rerank"]["k1"] == 6 and doc["engine"].endswith("re-ranking")
    code, _, err = cli("score", d / "g.npz", "--protocol", "synthetic", "--rerank", "--json", tmp_path / "sc.json")
    assert code == 0, err
    assert json.loads((tmp_path / "sc.json").read_text())["rerank"]["k1"] == 20
    assert cli("score", d / "g.npz", "--protocol", "synthetic", "--json", tmp_path / "plain.json")[0] == 0
    assert json.loads((tmp_path / "plain.json").read_text())["rerank"] == "none"


def test_index_refuses_another_model(indexed, tmp_path):
    run, root, d = indexed
    other, _ = train_tiny_run(tmp_path / "other")
    code, _, err = cli("search", d / "g.idx.npz", "--query", root / "rgb" / "0008_c1_t0.png", "--modality", "rgb",
                       "--run", other, "--top", "2")
    one_error_line(code, err, "index was built with the model of")
    # Features of another dimension.
    bad = tmp_path / "q.npz"
    np.savez(bad, paths=np.array(["a.png"]), features=np.zeros((1, 7), np.float32))
    code, _, err = cli("search", d / "g.idx.npz", "--query-features", bad, "--top", "2")
    one_error_line(code, err, "512-d features but the queries are 7-d")


@pytest.mark.parametrize("case", ["wrong-modality", "corrupt", "k-too-large", "nan", "empty", "not-embeddable-size"])
def test_bad_input_is_one_line_and_leaves_nothing(indexed, tmp_path, case):
    run, root, d = indexed
    out = tmp_path / "out.json"
    if case == "wrong-modality":
        args = ["search", d / "g.idx.npz", "--query", root / "rgb" / "0008_c1_t0.png", "--modality", "ir",
                "--run", run, "--json", out]
        needle = "colour image given as ir"
    elif case == "corrupt":
        broken = tmp_path / "broken.npz"
        broken.write_bytes((d / "g.idx.npz").read_bytes()[:2000])
        args, needle = ["search", broken, "--query-features", d / "g.npz", "--json", out], "corrupt or unreadable index"
    elif case == "k-too-large":
        args, needle = ["search", d / "g.idx.npz", "--query-features", d / "g.npz", "--top", "1000",
                        "--json", out], "larger than the gallery"
    elif case == "nan":
        feats = tmp_path / "nan.npz"
        f = np.ones((3, 512), np.float32)
        f[1, 4] = np.nan
        np.savez(feats, paths=np.array(["a", "b", "c"]), features=f)
        out = tmp_path / "nan.idx.npz"
        args, needle = ["index", feats, "--out", out], "contain NaN"
    elif case == "empty":
        feats = tmp_path / "empty.npz"
        np.savez(feats, paths=np.array([], dtype=str), features=np.zeros((0, 512), np.float32))
        out = tmp_path / "empty.idx.npz"
        args, needle = ["index", feats, "--out", out], "has no rows"
    else:
        wide = tmp_path / "wide.png"
        Image.new("RGB", (200, 40), (10, 200, 30)).save(wide)
        args, needle = ["search", d / "g.idx.npz", "--query", wide, "--modality", "rgb", "--run", run,
                        "--json", out], "crop the person first"
    code, _, err = cli(*args)
    one_error_line(code, err, needle)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_index_never_unpickles(indexed, tmp_path):
    from crossreid.errors import UserError
    from crossreid.retrieval.index import load_index

    _, _, d = indexed
    with np.load(d / "g.idx.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["features"] = np.array([object()] * 2, dtype=object)
    evil = tmp_path / "evil.npz"
    np.savez(evil, **arrays)
    with pytest.raises(UserError, match="corrupt or unreadable index"):
        load_index(evil)
