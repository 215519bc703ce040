"""Your own data: a folder layout becomes a dataset (`crossreid manifest`), `check` reports what
hurts results, `train` and `evaluate` refuse what it fails, and the lab-layout example of
docs/datasets.md runs as written on synthetic images copied into that layout."""

from __future__ import annotations

import csv
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from crossreid.cli import cli
from crossreid.data.datasets.check import check_dataset
from crossreid.data.datasets.folder_manifest import build_manifest
from crossreid.errors import UserError

DOCS = Path(__file__).resolve().parents[1] / "docs" / "datasets.md"
PATTERN = "{modality}/{person}/cam{camera}_{n}.png"
# The docs' commands at test size: no ImageNet download, a small net, a few steps.
SMALL = ["model.pretrained=null", "model.arch=resnet18", "model.base_width=16", "data.height=64", "data.width=32",
         "train.epochs=1", "train.iterations_per_epoch=3", "train.ids_per_batch=4", "train.images_per_id=2",
         "train.threads=1", "train.keep_checkpoints=none"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from crossreid.data.synth import SynthParams, generate

    return generate(tmp_path_factory.mktemp("synth") / "syn",
                    SynthParams(identities=16, modalities=["rgb", "ir"], images_per_camera=3), progress=False)


def copy_to_lab(synth_root: Path, lab: Path) -> Path:
    """The synthetic images as ``visible|infrared/p<id>/cam<k>_<n>.png``, cameras numbered 1, 2 in
    each modality (as labs number them; the synthetic IR cameras are 3, 4)."""
    with open(synth_root / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    cams = {m: sorted({int(r["camera"]) for r in rows if r["modality"] == m}) for m in ("rgb", "ir")}
    for r in rows:
        k = cams[r["modality"]].index(int(r["camera"])) + 1
        n = int(r["path"].rsplit("_t", 1)[1].split(".")[0])
        dst = lab / {"rgb": "visible", "ir": "infrared"}[r["modality"]] / f"p{int(r['person']):02d}" / f"cam{k}_{n}.png"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(synth_root / r["path"], dst)
    return lab


def crossreid(*args, cwd: Path) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "crossreid", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)
    return proc.returncode, proc.stdout, proc.stderr


def invoke(*args) -> tuple[int, str, str]:
    res = CliRunner().invoke(cli, [str(a) for a in args])
    return res.exit_code, res.stdout, res.stderr


def one_error_line(code: int, err: str, needle: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err


def doc_commands() -> list[list[str]]:
    text = DOCS.read_text(encoding="utf-8")
    block = text[text.index("<!-- lab-example:start -->"):text.index("<!-- lab-example:end -->")]
    return [shlex.split(line) for line in block.splitlines() if line.startswith("crossreid ")]


def doc_output() -> list[str]:
    """The evaluate output printed in the docs right after the example."""
    text = DOCS.read_text(encoding="utf-8")
    after = text[text.index("<!-- lab-example:end -->"):]
    return after.split("```\n", 2)[1].strip().splitlines()


# ---------------------------------------------------------------------------- the docs' example

@pytest.fixture(scope="module")
def lab_run(synth, tmp_path_factory):
    """The docs' four commands, as written but for the folders and the SMALL training settings: the
    data folder is relative (the run must store it absolute) and evaluate runs from another folder."""
    base = tmp_path_factory.mktemp("lab")
    copy_to_lab(synth, base / "lab")
    (base / "elsewhere").mkdir()
    outputs = []
    for args in doc_commands():
        args = [a.replace("/data/lab", "lab").replace("runs/lab", str(base / "runs" / "lab")) for a in args]
        assert args[0] == "crossreid"
        extra = SMALL if args[1] == "train" else []
        code, out, err = crossreid(*args[1:], *extra,
                                   cwd=base / ("elsewhere" if args[1] in ("evaluate", "report") else ""))
        assert code == 0, (args, out, err)
        outputs.append((args[1], out, err))
    return base, dict((cmd, (out, err)) for cmd, out, err in outputs)


def test_docs_lab_example_runs_as_written(lab_run):
    base, out = lab_run
    assert [c[1] for c in doc_commands()] == ["manifest", "check", "train", "evaluate", "report"]
    assert "infrared -> ir (96 images), visible -> rgb (96 images)" in out["manifest"][0]
    assert "rgb 1 -> 1, rgb 2 -> 2, ir 1 -> 3, ir 2 -> 4" in out["manifest"][0]
    assert out["check"][0].rstrip().endswith("OK")  # cameras numbered apart: no warning
    run = base / "runs" / "lab"
    config = (run / "config.yaml").read_text()
    assert f"root: {base / 'lab'}\n" in config  # stored absolute: evaluate ran from another folder
    printed = out["evaluate"][0].strip().splitlines()
    assert printed[0] == doc_output()[0].replace("…", str(base))  # the kept epoch, as the docs show it
    assert printed[1:3] == doc_output()[1:3]  # the set-up line and the header the docs show
    assert [line.split()[0] for line in printed[3:5]] == ["ir->rgb", "rgb->ir"]
    queries, valid, gallery, chance = printed[3].split()[1:5]
    assert (queries, valid, gallery, chance) == ("48", "48", "48", "12.5")  # 8 test ids x 6 images; 6/48
    saved = json.loads((run / "evaluation.json").read_text())
    assert saved["results"]["ir->rgb"]["chance_rank1"] == pytest.approx(0.125)
    assert "lab.html" in out["report"][0] and (base / "elsewhere" / "lab.html").is_file()
    assert json.loads((run / "data_check.json").read_text())["warnings"] == []


def test_score_and_index_take_the_runs_distance(lab_run, tmp_path):
    base, _ = lab_run
    run = base / "runs" / "lab"
    feats = tmp_path / "f.npz"
    code, out, err = invoke("extract", run, "--images", base / "lab" / "manifest.csv", "--split", "test",
                            "--out", feats, "--quiet")
    assert code == 0, err
    code, out, err = invoke("score", feats, "--protocol", "synthetic", "--option", "query=ir",
                            "--option", "gallery=rgb")
    assert code == 0 and "distance cosine" in out, err  # own_data_vi evaluates with cosine
    code, out, err = invoke("score", feats, "--protocol", "synthetic", "--option", "query=ir",
                            "--option", "gallery=rgb", "--metric", "euclidean")
    assert code == 0 and "distance euclidean" in out
    code, out, err = invoke("index", feats, "--out", tmp_path / "i.npz")
    assert code == 0 and out.strip().endswith("cosine"), out


def test_evaluate_refuses_a_leaking_split_unless_told(lab_run):
    base, _ = lab_run
    lab = base / "lab"
    leak = write_leak(lab)
    args = ["evaluate", base / "runs" / "lab", "--data-option", f"manifest={leak.name}", "--quiet"]
    code, out, err = invoke(*args)
    one_error_line(code, err, "in both training and test pools")
    assert "--ignore-check" in err
    code, out, err = invoke(*args, "--ignore-check")
    assert code == 0 and "chance R1" in out and "ignored (--ignore-check)" in err


def write_leak(lab: Path) -> Path:
    """A copy of the manifest whose first test person's visible images moved to the training split."""
    with open(lab / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    person = next(r["person"] for r in rows if r["split"] == "test")
    for r in rows:
        if r["person"] == person and r["modality"] == "rgb":
            r["split"] = "train"
    leak = lab / "leak.csv"
    with open(leak, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return leak


def test_train_refuses_a_leaking_split_unless_told(synth, tmp_path):
    lab = copy_to_lab(synth, tmp_path / "lab")
    build_manifest(lab, PATTERN)
    leak = write_leak(lab)
    args = ["train", "own_data_vi", "--out", tmp_path / "run", f"data.root={lab}", f"data.options.manifest={leak.name}",
            *SMALL, "train.iterations_per_epoch=1", "--quiet"]
    code, out, err = invoke(*args)
    one_error_line(code, err, "1 person id(s) are in both training and test pools")
    assert f"--option manifest={leak.name}" in err and not (tmp_path / "run").exists()
    code, out, err = invoke(*args, "--ignore-check")
    assert code == 0, err
    record = json.loads((tmp_path / "run" / "data_check.json").read_text())
    assert record["ignored_problems"][0].startswith("1 person id(s) are in both training and test pools")
    assert any("one modality only" in w for w in record["warnings"])
    assert "warning: ignored (--ignore-check)" in err


# ---------------------------------------------------------------------------- crossreid manifest

def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_manifest_maps_names_numbers_cameras_and_splits_by_person(synth, tmp_path):
    lab = copy_to_lab(synth, tmp_path / "lab")
    build_manifest(lab, PATTERN, seed=3)
    rows = read_rows(lab / "manifest.csv")
    assert len(rows) == 192 and {r["person_name"] for r in rows} == {f"p{i:02d}" for i in range(1, 17)}
    assert all(int(r["person"]) == int(r["person_name"][1:]) for r in rows)  # sorted names -> 1..16
    cams = {(r["modality"], r["camera_name"]): int(r["camera"]) for r in rows}
    assert cams == {("rgb", "1"): 1, ("rgb", "2"): 2, ("ir", "1"): 3, ("ir", "2"): 4}
    split = {}
    for r in rows:
        assert split.setdefault(r["person"], r["split"]) == r["split"]  # one split per person
    assert sorted(split.values()).count("train") == 8 and sorted(split.values()).count("test") == 8
    again = build_manifest(lab, PATTERN, seed=3, name="again.csv").rows
    other = build_manifest(lab, PATTERN, seed=4, name="other.csv").rows
    assert [r["split"] for r in again] == [r["split"] for r in rows]
    assert [r["split"] for r in other] != [r["split"] for r in rows]
    report = check_dataset("generic", lab, progress=False)
    assert report.ok and not report.warnings and not report.mismatched
    assert report.modality_ids == {(p, m): 8 for p in ("train", "query", "gallery") for m in ("rgb", "ir")}

    shared = build_manifest(lab, PATTERN, shared_cameras=True, name="shared.csv", fractions="train=0.5,val=0.25,test=0.25")
    assert {(r["modality"], r["camera_name"]): int(r["camera"]) for r in shared.rows} == {
        ("rgb", "1"): 1, ("rgb", "2"): 2, ("ir", "1"): 1, ("ir", "2"): 2}
    assert [len({r["person"] for r in shared.rows if r["split"] == s}) for s in ("train", "val", "test")] == [8, 4, 4]
    report = check_dataset("generic", lab, manifest="shared.csv", decode_images=False, progress=False)
    assert report.ok
    (warning,) = [w for w in report.warnings if "share camera id" in w]
    assert "share camera id(s) 1, 2" in warning and "rgb->ir 50 %; ir->rgb 50 %" in warning


def test_manifest_split_from_the_layout(synth, tmp_path):
    lab = copy_to_lab(synth, tmp_path / "lab" / "train")
    for f in sorted(lab.glob("*/p1[0-6]")):  # persons 10-16 are test persons
        dst = tmp_path / "lab" / "test" / f.relative_to(lab)
        dst.parent.mkdir(parents=True, exist_ok=True)
        f.rename(dst)
    built = build_manifest(tmp_path / "lab", "{split}/" + PATTERN)
    assert {r["split"] for r in built.rows if int(r["person"]) >= 10} == {"test"}
    assert {r["split"] for r in built.rows if int(r["person"]) < 10} == {"train"}
    with pytest.raises(UserError, match="drop --split"):
        build_manifest(tmp_path / "lab", "{split}/" + PATTERN, fractions="train=1", overwrite=True)


def _grey_visible(lab: Path) -> None:
    f = next((lab / "visible").rglob("*.png"))
    Image.open(f).convert("L").save(f)


def _small_visible(lab: Path) -> None:
    f = next((lab / "visible").rglob("*.png"))
    Image.open(f).resize((30, 60)).save(f)


def _thermal_folder(lab: Path) -> None:
    shutil.copytree(lab / "infrared" / "p01", lab / "thermal" / "p01")


@pytest.mark.parametrize("case, args, prepare, needle", [
    ("nothing", ["--pattern", "{modality}/{person}/img_{n}.jpg"], None, "matches none of the 192 image files"),
    ("field", ["--pattern", "{modality}/{person}/{cam}_{n}.png"], None, "unknown field {cam}"),
    ("no-person", ["--pattern", "{modality}/*/cam{camera}_{n}.png"], None, "needs a {person} field"),
    ("modality", ["--pattern", "{person}/{modality}/cam{camera}_{n}.png"], None, "not a modality"),
    ("two-names", ["--pattern", PATTERN], _thermal_folder, "'infrared' and 'thermal' all mean ir"),
    ("modes", ["--pattern", PATTERN], _grey_visible, "rgb images have mixed modes: L (1 images) besides RGB"),
    ("sizes", ["--pattern", PATTERN], _small_visible, "rgb images have mixed sizes: 30x60 (1 images)"),
    ("sum", ["--pattern", PATTERN, "--split", "train=0.5,test=0.4"], None, "add up to 0.9, not 1"),
    ("syntax", ["--pattern", PATTERN, "--split", "train:0.5"], None, "--split 'train:0.5'"),
    ("few", ["--pattern", PATTERN, "--split", "train=0.9,val=0.05,test=0.05"], None,
     "16 persons are too few: test gets 1"),
])
def test_manifest_bad_input_is_one_line_and_writes_nothing(synth, tmp_path, case, args, prepare, needle):
    lab = copy_to_lab(synth, tmp_path / "lab")
    if prepare:
        prepare(lab)
    code, out, err = invoke("manifest", lab, *args)
    one_error_line(code, err, needle)
    assert not (lab / "manifest.csv").exists()


def test_manifest_mixed_sizes_on_request_and_no_silent_overwrite(synth, tmp_path):
    lab = copy_to_lab(synth, tmp_path / "lab")
    _small_visible(lab)
    code, out, err = invoke("manifest", lab, "--pattern", PATTERN, "--mixed-sizes")
    assert code == 0 and "next: crossreid check generic --root" in out
    before = (lab / "manifest.csv").read_bytes()
    code, out, err = invoke("manifest", lab, "--pattern", PATTERN, "--seed", "5")
    one_error_line(code, err, "already exists; pass --overwrite")
    assert (lab / "manifest.csv").read_bytes() == before
    assert invoke("manifest", lab, "--pattern", PATTERN, "--seed", "5", "--overwrite", "--mixed-sizes")[0] == 0


# ---------------------------------------------------------------------------- check on own data

def test_check_lists_one_modality_ids_and_contradicting_channels(synth, tmp_path):
    lab = copy_to_lab(synth, tmp_path / "lab")
    shutil.rmtree(lab / "infrared" / "p02")  # person 2: visible only
    build_manifest(lab, PATTERN)
    grey = next((lab / "visible" / "p05").glob("*.png"))
    Image.open(grey).convert("L").save(grey)  # a 1-channel image filed as visible
    colour = next((lab / "infrared" / "p06").glob("*.png"))
    arr = np.zeros((128, 64, 3), np.uint8)
    arr[..., 0] = 200
    Image.fromarray(arr).save(colour)  # a colour image filed as infrared
    code, out, err = invoke("check", "generic", "--root", lab, "--quiet")
    assert code == 0 and re.search(r"\nOK with \d warning\(s\)\n$", out), out
    if {r["split"] for r in read_rows(lab / "manifest.csv") if r["person_name"] == "p02"} == {"train"}:
        assert "1 of 8 training id(s) have images in one modality only (e.g. 2: rgb only)" in out
    else:
        assert "1 of 8 test id(s) have images in one modality only (e.g. 2: rgb only)" in out
        assert "protocol synthetic (rgb->ir): 6 of 48 queries keep no image of their identity" in out
    assert f"warning: {grey}: single-channel image (mode L) given as rgb; is it ir or depth? (listed as rgb)" in out
    assert f"warning: {colour}: colour image given as ir" in out
    help_text = invoke("check", "--help")[1]
    assert "Modality names accepted" in help_text and "ir (nir, infrared, thermal)" in help_text


def test_embed_and_check_apply_one_modality_test(lab_run, tmp_path):
    """Each case: `embed` and `extract` refuse exactly the images `check` warns about, with the same reason."""
    import crossreid
    from crossreid.data.images import modality_contradiction
    from crossreid.modality import Modality

    base, _ = lab_run
    embedder = crossreid.load_run(base / "runs" / "lab")
    rgb = np.asarray(Image.open(next((base / "lab" / "visible").rglob("*.png"))).convert("RGB"))
    near_grey = np.repeat(rgb.mean(axis=2, keepdims=True), 3, axis=2).astype(np.uint8)
    near_grey[..., 1] = np.clip(near_grey[..., 1].astype(int) + 10, 0, 255)  # channels within COLOUR_SPREAD
    cases = {"grey-as-rgb": (Image.fromarray(rgb).convert("L"), "rgb"),
             "colour-as-ir": (Image.fromarray(rgb), "ir"),
             "near-grey-as-ir": (Image.fromarray(near_grey), "ir"),
             "grey-as-ir": (Image.fromarray(rgb).convert("L"), "ir"),
             "colour-as-rgb": (Image.fromarray(rgb), "rgb")}
    verdicts = {}
    for name, (img, modality) in cases.items():
        path = tmp_path / f"{name}.png"
        img.save(path)
        try:
            embedder.embed(path, modality)
            refused = None
        except UserError as exc:
            refused = str(exc)
        reason = modality_contradiction(Image.open(path), Modality.parse(modality))
        assert (refused is None) == (reason is None), name
        if reason:
            assert reason in refused, name
        (tmp_path / f"{name}.csv").write_text(f"path,person,camera,modality,split\n{path.name},1,1,{modality},test\n")
        report = check_dataset("generic", tmp_path, manifest=f"{name}.csv", progress=False)
        mismatched = [why for p, why in report.mismatched if p == path and why.endswith(f"(listed as {modality})")]
        assert bool(mismatched) == bool(reason) and (not reason or mismatched[0].startswith(reason)), name
        code, _, err = invoke("extract", base / "runs" / "lab", "--images", tmp_path / f"{name}.csv",
                              "--out", tmp_path / f"{name}.npz", "--quiet")
        assert (code == 0) == (reason is None) and (not reason or reason in err), (name, err)
        verdicts[name] = reason is not None
    assert verdicts == {"grey-as-rgb": True, "colour-as-ir": True, "near-grey-as-ir": False, "grey-as-ir": False,
                        "colour-as-rgb": False}


def test_two_spellings_of_a_modality_in_a_manifest_are_refused(tmp_path):
    from conftest import write_tiny_dataset

    root = write_tiny_dataset(tmp_path / "tiny")
    text = (root / "manifest.csv").read_text().splitlines()
    text = [re.sub(r",ir,", ",thermal,", line, count=1) if i == len(text) - 1 else line for i, line in enumerate(text)]
    (root / "manifest.csv").write_text("\n".join(text).replace(",ir,", ",nir,") + "\n")
    report = check_dataset("generic", root, decode_images=False, progress=False)
    assert not report.ok and report.problems == [
        f"{root / 'manifest.csv'}: modality column: 'nir' and 'thermal' all mean ir; if they are one modality spell "
        "it one way, if not keep only one of them (crossreid knows rgb, depth and ir)"]


def test_train_help_lists_the_shipped_configs_by_dataset():
    code, out, _ = invoke("train", "--help")
    listing = out[out.index("Shipped configs"):]
    assert code == 0 and "your own data (generic)" in listing and "own_data_vi" in listing
    assert "agw_sysu" in listing and "demo_one_stream" in listing
