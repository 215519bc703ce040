"""Experiment sets: YAML files (shipped or a user's), one run-or-reuse loop, markdown tables over seeds."""

import subprocess
import sys

import pytest

from crossreid.errors import UserError
from crossreid.reproduce import load_set, results_table, run_set, shipped_sets, write_tables


def means(r1, mp):
    return {"rank1": r1, "rank5": r1, "rank10": r1, "map": mp}


def test_table_mean_and_std_over_seeds():
    hafner = load_set("hafner")
    summary = {"distill_128": {0: {"rgb->depth": means(0.1, 0.2), "depth->rgb": means(0.3, 0.4)},
                               1: {"rgb->depth": means(0.3, 0.4), "depth->rgb": means(0.3, 0.4)}},
               "ablation_copy_freeze": {0: {"rgb->depth": means(0.5, 0.5)}}}
    table3 = results_table(hafner, summary, hafner.tables[0])
    assert "| Distillation, 128-d | 2 | 20.0±10.0 / 20.0±10.0 / 20.0±10.0 / 30.0±10.0 | 30.0±0.0" in table3
    assert "ablation" not in table3 and "Zero-padding" not in table3       # only rows that ran, only table 3
    table5 = results_table(hafner, summary, hafner.tables[1])
    assert "| weight copy + freezing (proposed) | 1 | 50.0 / 50.0 / 50.0 / 50.0 | n/a |" in table5


def test_shipped_sets_and_bad_sets(tmp_path):
    assert shipped_sets() == ["baselines", "hafner", "vi"]
    vi = load_set("vi")
    assert vi.directions == ["rgb->ir", "ir->rgb"] and len(vi.experiments) == 12
    assert vi.experiments["idkl_no_tgsa"][0].overrides == ["data.modalities=[rgb,ir]", "method.options.tgsa=false"]
    with pytest.raises(UserError, match="nonsense: no such experiment set; give a shipped one .baselines, hafner, vi"):
        load_set("nonsense")
    bad = tmp_path / "bad.yaml"
    bad.write_text("title: t\ndata: d\ndirections: [rgb->ir]\ntables:\n  - experiments:\n"
                   "      a: {label: A, config: demo, overides: [train.epochs=1]}\n")
    with pytest.raises(UserError, match=r"bad.yaml: unknown key 'tables.experiments.a.overides'"):
        load_set(bad)
    bad.write_text("title: t\ndata: d\ndirections: [rgb->ir]\ntables:\n  - experiments:\n"
                   "      a: {label: A, config: demo, overrides: [train.epoch=1]}\n")
    with pytest.raises(UserError, match="unknown key 'train.epoch'"):   # configs are checked before any run
        load_set(bad)


def test_unknown_experiment(tmp_path):
    with pytest.raises(UserError, match="unknown experiment 'distil'"):
        run_set(load_set("hafner"), tmp_path, [0], ["distil"])


def test_identical_experiments_run_once(tmp_path, monkeypatch):
    """distill_128 and ablation_copy_freeze are the same config and overrides: trained once, both rows filled."""
    import crossreid.experiment as ex

    trained = []

    class Result:
        protocol = {"name": "synthetic"}

        def mean(self):
            return means(0.5, 0.5)

        def chance_rank1(self):
            return 0.01

    class Run:
        results = {"rgb->depth": Result(), "depth->rgb": Result()}

    def fake_train(cfg, run_dir, *args, **kwargs):
        trained.append(run_dir.parent.name)
        return Run()

    monkeypatch.setattr(ex, "train_and_evaluate", fake_train)
    monkeypatch.setattr(ex.Runner, "_data", lambda self, cfg: (None, None))
    summary = run_set(load_set("hafner"), tmp_path, [0, 1], ["distill_128", "ablation_copy_freeze", "distill_512"],
                      progress=False)
    assert trained == ["distill_128", "distill_128", "distill_512", "distill_512"]
    assert summary["ablation_copy_freeze"] == summary["distill_128"]


def test_tables_without_rows_are_left_out(tmp_path):
    summary = {"distill_128": {0: {"rgb->depth": means(0.1, 0.2), "depth->rgb": means(0.3, 0.4)}}}
    text = write_tables(load_set("hafner"), summary, tmp_path / "t.md", "note")
    assert "Table 3" in text and "Distillation, 128-d" in text
    assert "Table 5" not in text    # only the 128-d distillation ran: its Table 5 twin is not filled here
    assert (tmp_path / "t.md").read_text() == text


TINY = ["data.synth.identities=12", "data.synth.val_identities=2", "data.synth.images_per_camera=2",
        "train.epochs=1", "train.iterations_per_epoch=2", "train.ids_per_batch=2", "train.images_per_id=2",
        "data.height=32", "data.width=16"]


def test_a_users_experiment_file_runs_reuses_and_refuses_another_config(tmp_path):
    """`crossreid reproduce my_set.yaml`: a config next to the file, run once, reused the second
    time, and a finished run made with another config is an error naming the key."""
    from crossreid.config import PACKAGED_CONFIGS

    (tmp_path / "tiny.yaml").write_text(f"base: {PACKAGED_CONFIGS / 'demo_one_stream.yaml'}\n")
    (tmp_path / "my_set.yaml").write_text(
        "title: My comparison\ndata: RGB and depth\ndirections: [rgb->depth, depth->rgb]\ntables:\n"
        "  - caption: \"Mine:\"\n    experiments:\n      mine: {label: My recipe, config: tiny.yaml}\n")
    env = {**__import__("os").environ, "CROSSREID_CACHE": str(tmp_path / "cache")}

    def reproduce(*extra):
        return subprocess.run([sys.executable, "-m", "crossreid", "reproduce", str(tmp_path / "my_set.yaml"), "--seeds",
                               "0", "--quiet", *[a for o in TINY for a in ("--set", o)], *extra],
                              capture_output=True, text=True, env=env, cwd=tmp_path)

    first = reproduce()
    assert first.returncode == 0, first.stderr
    assert "[mine seed 0] training one_stream" in first.stdout
    assert "## My comparison" in first.stdout and "| My recipe | 1 |" in first.stdout
    assert "Synthetic data (the demo's synthetic set, RGB and depth, difficulty default), 1 seed(s)" in first.stdout
    assert (tmp_path / "runs/reproduce-my_set/mine/seed0/test_results.json").is_file()
    again = reproduce()
    assert again.returncode == 0 and again.stdout == first.stdout.replace("[mine seed 0] training one_stream\n", "")
    other = reproduce("--set", "optim.lr=0.01")
    assert other.returncode == 2 and other.stderr.startswith("error: ")
    assert "made with another config (optim.lr: 0.001 then, 0.01 now)" in other.stderr
