"""The command line: user errors are one line with a non-zero exit; the demo runs end to end."""

import json
import subprocess
import sys

import pytest

from crossreid.cli import cli
from crossreid.demo import DEMO_RUNS


def run(*args, cwd=None):
    proc = subprocess.run([sys.executable, "-m", "crossreid", *args], capture_output=True, text=True, cwd=cwd)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("args, message", [
    (["train", "nope.yaml", "--out", "x"], "nope.yaml: no such config file"),
    (["train", "demo", "--out", "x", "train.epoch=3"], "unknown key 'train.epoch'; did you mean 'train.epochs'?"),
    (["train", "demo", "--out", "x", "train.epochs=abc"], "'train.epochs'"),
    (["evaluate", "missing-run"], "not a run folder"),
    (["score", "missing.npz", "--protocol", "synthetic"], "missing.npz: features file not found"),
    (["score", "missing.npz", "--protocol", "sysu"], "unknown protocol 'sysu'"),
    (["check", "sysu_mm01", "--root", "no/such/dir"], "no/such/dir"),
    (["synth", "--out", "o", "--identities", "1"], "--identities"),
    (["synth", "--out", "o", "--identities", "12"], "synth options: identities=12"),  # no training ids left
    (["demo", "--out", "x", "--methods", "one_stream,agw"], "choose one or more of one_stream, cross_modal_distillation"),
    (["reproduce", "nonsense"], "nonsense: no such experiment set; give a shipped one (baselines, hafner, vi)"),
])
def test_user_errors_are_one_line(tmp_path, args, message):
    code, out, err = run(*args, cwd=tmp_path)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "o").exists()


def test_check_reports_problems_with_exit_1(tmp_path):
    (tmp_path / "SYSU").mkdir()
    code, out, _ = run("check", "sysu_mm01", "--root", str(tmp_path / "SYSU"), "--quiet")
    assert code == 1 and "problem" in out


def test_listing_commands():
    from click.testing import CliRunner

    runner = CliRunner()
    assert "synthetic" in runner.invoke(cli, ["datasets"]).output
    assert "sysu_mm01" in runner.invoke(cli, ["protocols"]).output


TINY = ["--set", "data.synth.identities=12", "--set", "data.synth.val_identities=2",
        "--set", "data.synth.images_per_camera=2", "--set", "train.epochs=1",
        "--set", "train.iterations_per_epoch=2", "--set", "train.ids_per_batch=2",
        "--set", "train.images_per_id=2", "--set", "data.height=32", "--set", "data.width=16"]


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, monkeypatch):
    env_cache = tmp_path / "cache"
    proc = subprocess.run([sys.executable, "-m", "crossreid", "demo", "--out", str(tmp_path / "demo"), "--quiet",
                           "--methods", "one_stream,cross_modal_distillation", *TINY],
                          capture_output=True, text=True,
                          env={**__import__("os").environ, "CROSSREID_CACHE": str(env_cache)})
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if "->" in line and line.split()[0] in DEMO_RUNS]
    assert {(r[0], r[-1]) for r in rows} == {("one_stream", "cosine"), ("cross_modal_distillation", "euclidean")}
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert set(results["methods"]) == {"one_stream", "cross_modal_distillation"}
    assert {"rgb->depth", "depth->rgb", "rgb->ir", "ir->rgb"} <= set(results["methods"]["one_stream"])
    html = (tmp_path / "demo" / "report.html").read_text()
    assert html.count("data:image/png;base64") >= 3 and "Synthetic data" in html
    # Never overwrite a user's run without being asked.
    again = subprocess.run([sys.executable, "-m", "crossreid", "demo", "--out", str(tmp_path / "demo"), *TINY],
                           capture_output=True, text=True)
    assert again.returncode == 2 and "--overwrite" in again.stderr
