"""From a dataset tree to the paper's table: check -> train (a paper config, CPU-sized) -> evaluate
--all -> report, on synthetic images written in the SYSU-MM01 layout with the real split files and
rand_perm_cam.mat (docs/datasets.md, "From check to the paper's table"); RegDB's ten trial runs
and the bad input of evaluate --all and report."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fixtures_real import REGDB_IDX, SYSU, build_regdb, build_sysu, sysu_counts
from PIL import Image

from crossreid.cli import cli
from crossreid.data.datasets.common import read_id_list

PERM = SYSU / "evaluation_data_split" / "rand_perm_cam.mat"
SMALL = ["model.arch=resnet18", "model.base_width=8", "model.pretrained=none", "data.height=32", "data.width=16",
         "train.epochs=1", "train.iterations_per_epoch=2", "train.ids_per_batch=2", "train.images_per_id=2",
         "eval.batch_size=512", "train.progress=false"]
# all-search / indoor-search × single / multi-shot: (gallery size, valid queries) on the real split
SYSU_TABLE = {"all-search single-shot": (301, 3803), "all-search multi-shot": (3010, 3803),
              "indoor-search single-shot": (112, 2208), "indoor-search multi-shot": (1120, 2208)}


def person_jpeg(cam: int, pid: int, infrared: bool) -> bytes:
    """A 32x16 synthetic person: colours drawn from the person id (grey levels in infrared), noise
    drawn from the camera, so identities differ and cameras disturb them."""
    rng = np.random.default_rng([pid, cam])
    body = np.random.default_rng(pid).integers(30, 225, (3, 3))  # head, torso, legs
    img = np.concatenate([np.tile(part, (h, 16, 1)) for part, h in zip(body, (6, 12, 14))]).astype(float)
    if infrared:
        img = np.repeat(img.mean(axis=2, keepdims=True), 3, axis=2)
    img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img, "RGB").save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def invoke(*args: str):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def sysu_tree(tmp_path_factory) -> Path:
    """The real test ids' folders at their real sizes, a few training ids, the real split files'
    test ids and the official rand_perm_cam.mat in exp/."""
    if not PERM.is_file():
        pytest.skip("shared/data (real SYSU-MM01 split files) absent")
    splits = {"train": read_id_list(SYSU / "exp" / "train_id.txt")[:4], "val": read_id_list(SYSU / "exp" / "val_id.txt")[:1],
              "test": read_id_list(SYSU / "exp" / "test_id.txt")}
    keep = {p for ids in splits.values() for p in ids}
    root = build_sysu(tmp_path_factory.mktemp("sysu") / "SYSU-MM01", [c for c in sysu_counts() if c[1] in keep],
                      splits, image=lambda cam, pid: person_jpeg(cam, pid, cam in (3, 6)))
    shutil.copyfile(PERM, root / "exp" / "rand_perm_cam.mat")
    return root


@pytest.fixture(scope="module")
def sysu_run(sysu_tree, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "agw_sysu"
    code, out = invoke("train", "agw_sysu", f"data.root={sysu_tree}", *SMALL, "--out", run, "--quiet")
    assert code == 0, out
    assert re.search(r"finished: kept epoch 1 of 1 \(train.select=last: the last epoch; its training loss [\d.]+\)",
                     out), out
    return run


def test_check_then_one_evaluate_gives_the_four_sysu_settings(sysu_tree, sysu_run, tmp_path):
    code, out = invoke("check", "sysu_mm01", "--root", sysu_tree, "--no-decode", "--quiet")
    assert code == 0 and out.rstrip().endswith("OK"), out
    code, out = invoke("evaluate", sysu_run, "--all", "--quiet")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith(f"agw run {sysu_run}: kept epoch 1 of 1 (train.select=last")
    assert lines[1].startswith("protocol sysu_mm01 on sysu_mm01: 10 trials, identity-level CMC") and \
        "distance cosine; no re-ranking" in lines[1] and "mode=" not in lines[1]  # one table: mode and shots in rows
    rows = {" ".join(r.split()[:2]): r.split()[2:] for r in lines[3:7]}
    for label, (gallery, valid) in SYSU_TABLE.items():
        queries, valid_got, gallery_got = rows[label][:3]
        assert (int(queries), int(valid_got), int(gallery_got)) == (3803, valid, gallery), label
    assert lines[-1] == f"wrote {sysu_run / 'evaluation.json'}"
    doc = json.loads((sysu_run / "evaluation.json").read_text())
    assert list(doc["results"]) == list(SYSU_TABLE) and doc["kept"][0].startswith("kept epoch 1 of 1")
    # each row is the protocol with its mode and shots, scored the same as one setting at a time
    from crossreid.data.open import open_catalog
    from crossreid.engine.runs import load_run
    from crossreid.evaluation import evaluate_protocol, get_protocol
    from crossreid.experiment import TestStores
    from crossreid.retrieval.evaluate import pool_features

    cfg, method = load_run(sysu_run)
    catalog = open_catalog(cfg.data, progress=False)
    stores = TestStores.of(catalog, cfg.data)
    feats = pool_features(method, stores.query, stores.gallery, 512)
    for label, (mode, shots) in zip(SYSU_TABLE, [("all", 1), ("all", 10), ("indoor", 1), ("indoor", 10)]):
        one = evaluate_protocol(get_protocol("sysu_mm01", mode=mode, shots=shots, distance="cosine"), catalog, *feats)
        assert doc["results"][label]["mean"] == pytest.approx(one.mean(), abs=1e-6), label
        assert doc["results"][label]["options"]["shots"] == shots
    # the report of this (non-demo) run: one table row per setting, the kept epoch, ranked lists from disk
    code, out = invoke("report", sysu_run, "--out", tmp_path / "report.html")
    assert code == 0, out
    page = (tmp_path / "report.html").read_text()
    for label in SYSU_TABLE:
        assert f"<td class='l'>{label}</td>" in page
    assert "train.select=last: the last epoch" in page and "no re-ranking" in page
    assert page.count("data:image/png;base64") >= 1 + 4 * 4  # a CMC plot, 4 ranked lists per setting
    assert "Synthetic data" not in page  # a real dataset's layout: no synthetic banner


def test_evaluate_all_bad_input_is_one_line_and_writes_nothing(sysu_run, tmp_path):
    before = (sysu_run / "evaluation.json").read_bytes() if (sysu_run / "evaluation.json").exists() else None
    cases = [(["--all", "--option", "mode=indoor"], "--all scores every mode of protocol 'sysu_mm01' itself"),
             (["--all", "--direction", "ir:rgb"], "give one of them"),
             (["--all", "--protocol", "synthetic"], "has no fixed table of settings")]
    for extra, message in cases:
        code, out = invoke("evaluate", sysu_run, "--quiet", *extra)
        assert code == 2 and message in out and out.count("\n") == 1, out
    after = (sysu_run / "evaluation.json").read_bytes() if (sysu_run / "evaluation.json").exists() else None
    assert after == before


def test_report_refuses_runs_of_different_datasets_and_an_existing_page(sysu_run, tmp_path):
    other = tmp_path / "elsewhere.json"
    doc = json.loads((sysu_run / "evaluation.json").read_text()) if (sysu_run / "evaluation.json").exists() else None
    if doc is None:
        assert invoke("evaluate", sysu_run, "--quiet")[0] == 0
        doc = json.loads((sysu_run / "evaluation.json").read_text())
    doc["dataset"] = "regdb"
    other.write_text(json.dumps(doc))
    code, out = invoke("report", sysu_run, other, "--out", tmp_path / "r.html")
    assert code == 2 and "different datasets" in out and not (tmp_path / "r.html").exists()
    code, out = invoke("report", tmp_path / "never-evaluated", "--out", tmp_path / "r.html")
    assert code == 2 and "not evaluated yet" in out
    (tmp_path / "r.html").write_text("mine")
    code, out = invoke("report", sysu_run, "--out", tmp_path / "r.html")
    assert code == 2 and "--overwrite" in out and (tmp_path / "r.html").read_text() == "mine"


# ---------------------------------------------------------------- RegDB: ten trial runs, one table
def small_regdb_idx(folder: Path, ids_per_trial: int = 3) -> Path:
    """Index files of ten trials in the real format, a few ids each (the real files' first lines)."""
    folder.mkdir(parents=True)
    for t in range(1, 11):
        for split in ("train", "test"):
            for m in ("visible", "thermal"):
                lines = (REGDB_IDX / f"{split}_{m}_{t}.txt").read_text().splitlines()
                keep = sorted({ln.split()[0].split("/")[1] for ln in lines})[:ids_per_trial]
                (folder / f"{split}_{m}_{t}.txt").write_text(
                    "\n".join(ln for ln in lines if ln.split()[0].split("/")[1] in keep) + "\n")
    return folder


@pytest.fixture(scope="module")
def regdb_runs(tmp_path_factory) -> tuple[Path, Path]:
    """One small run per RegDB trial (trial 1 trained; the others its copies, each recording its trial)."""
    if not REGDB_IDX.is_dir():
        pytest.skip("shared/data (real RegDB idx files) absent")
    base = tmp_path_factory.mktemp("regdb")
    root = build_regdb(base / "RegDB", small_regdb_idx(base / "idx"), trials=range(1, 11))
    runs = base / "runs"
    code, out = invoke("train", "agw_regdb", f"data.root={root}", *SMALL, "--out", runs / "trial1", "--quiet")
    assert code == 0, out
    for t in range(2, 11):
        shutil.copytree(runs / "trial1", runs / f"trial{t}")
        config = runs / f"trial{t}" / "config.yaml"
        config.write_text(config.read_text().replace("options: {}", f"options:\n    trial: {t}"))
    return root, runs


def test_regdb_ten_trial_runs_both_directions_in_one_table(regdb_runs):
    _, runs = regdb_runs
    code, out = invoke("evaluate", runs / "trial{t}", "--all", "--quiet")
    assert code == 0, out
    assert "(trial run 1 of 10; every run's kept epoch is in evaluation.json)" in out.splitlines()[0]
    assert "protocol regdb on regdb: 10 trials" in out
    rows = [ln.split() for ln in out.splitlines() if ln.startswith(("rgb->ir", "ir->rgb"))]
    assert [r[0] for r in rows] == ["rgb->ir", "ir->rgb"] and all("±" in " ".join(r) for r in rows)
    doc = json.loads((runs / "evaluation.json").read_text())
    assert len(doc["kept"]) == 10 and {len(r["trials"]) for r in doc["results"].values()} == {10}


def test_regdb_pattern_missing_a_trial_is_one_line(regdb_runs, tmp_path):
    _, runs = regdb_runs
    partial = tmp_path / "partial"
    for t in (1, 2, 3):
        shutil.copytree(runs / f"trial{t}", partial / f"trial{t}")
    code, out = invoke("evaluate", partial / "trial{t}", "--all", "--quiet")
    assert code == 2 and "run folder for RegDB trial 4 not found" in out and out.count("\n") == 1
    assert not (partial / "evaluation.json").exists()


# ---------------------------------------------------------------- the full walkthrough (slow)
def write_sysu_from_synthetic(root: Path, synth: Path) -> Path:
    """The full SYSU-MM01 tree (every folder at its real size, the real split files and
    rand_perm_cam.mat) filled with crossreid's synthetic persons: SYSU person n (in sorted order)
    is synthetic person n, visible cams 1, 4 / 2, 5 are synthetic RGB cams 1 / 2, infrared cams
    3 / 6 synthetic IR cams 3 / 4, and image k of a folder time step (k - 1) mod 6."""
    pids = sorted({p for _, p, _ in sysu_counts()})
    person = {p: i + 1 for i, p in enumerate(pids)}
    source_cam = {1: 1, 4: 1, 2: 2, 5: 2, 3: 3, 6: 4}
    cache: dict[tuple[int, int, int], bytes] = {}

    def jpeg(cam: int, pid: int, t: int) -> bytes:
        key = (source_cam[cam], person[pid], t)
        if key not in cache:
            mod = "ir" if cam in (3, 6) else "rgb"
            c, n = key[0], key[1]
            img = Image.open(synth / "images" / mod / f"cam{c:02d}" / f"{n:04d}" / f"{n:04d}_c{c:02d}_t{t:03d}.png")
            buf = io.BytesIO()
            img.convert("RGB").save(buf, format="JPEG", quality=90)
            cache[key] = buf.getvalue()
        return cache[key]

    for cam, pid, n in sysu_counts():
        folder = root / f"cam{cam}" / f"{pid:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(1, n + 1):
            (folder / f"{k:04d}.jpg").write_bytes(jpeg(cam, pid, (k - 1) % 6))
    (root / "exp").mkdir()
    for part in ("train", "val", "test"):
        shutil.copyfile(SYSU / "exp" / f"{part}_id.txt", root / "exp" / f"{part}_id.txt")
    shutil.copyfile(PERM, root / "exp" / "rand_perm_cam.mat")
    return root


@pytest.mark.slow
def test_the_sysu_walkthrough_of_the_docs_on_synthetic_persons(tmp_path):
    """docs/datasets.md, SYSU-MM01: check -> train agw_sysu (CPU-sized) -> evaluate --all -> report."""
    if not PERM.is_file():
        pytest.skip("shared/data (real SYSU-MM01 split files) absent")
    from crossreid.data.synth import SynthParams, generate

    persons = len({pid for _, pid, _ in sysu_counts()})  # 513 folders' persons, the 491 of the splits among them
    synth = generate(tmp_path / "synth", SynthParams(identities=persons, val_identities=0, rgbd_cameras=2, ir_cameras=2,
                                                      images_per_camera=6, modalities=["rgb", "ir"], height=64,
                                                      width=32), progress=False)
    root = write_sysu_from_synthetic(tmp_path / "SYSU-MM01", synth)
    code, out = invoke("check", "sysu_mm01", "--root", root, "--quiet")
    assert code == 0 and out.rstrip().endswith("OK") and "44745 distinct" in out, out
    run = tmp_path / "runs" / "agw_sysu"
    code, out = invoke("train", "agw_sysu", f"data.root={root}", *SMALL, "--out", run, "--quiet")
    assert code == 0 and "finished: kept epoch 1 of 1 (train.select=last" in out, out
    code, out = invoke("evaluate", run, "--all", "--quiet")
    assert code == 0, out
    print(out)
    rows = {" ".join(r.split()[:2]): r.split()[2:] for r in out.splitlines()[3:7]}
    assert {k: (int(v[2]), int(v[1])) for k, v in rows.items()} == SYSU_TABLE
    code, out = invoke("evaluate", run, "--all", "--protocol", "sysu_mm01_agw", "--quiet",
                       "--json", tmp_path / "agw_draw.json")
    assert code == 0 and "all-search single-shot" in out and "multi-shot" not in out, out
    code, out = invoke("report", run, tmp_path / "agw_draw.json", "--out", tmp_path / "report.html")
    assert code == 0, out
