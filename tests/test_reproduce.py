"""Experiment-set tables: mean ± std over seeds, rows per table, missing directions marked."""

import pytest

from crossreid.errors import UserError
from crossreid.reproduce import results_table, run_set


def means(r1, mp):
    return {"rank1": r1, "rank5": r1, "rank10": r1, "map": mp}


def test_table_mean_and_std_over_seeds():
    summary = {"distill_128": {0: {"rgb->depth": means(0.1, 0.2), "depth->rgb": means(0.3, 0.4)},
                               1: {"rgb->depth": means(0.3, 0.4), "depth->rgb": means(0.3, 0.4)}},
               "ablation_copy_freeze": {0: {"rgb->depth": means(0.5, 0.5)}}}
    table3 = results_table("hafner", summary, 3)
    assert "| Distillation, 128-d | 2 | 20.0±10.0 / 20.0±10.0 / 20.0±10.0 / 30.0±10.0 | 30.0±0.0" in table3
    assert "ablation" not in table3 and "Zero-padding" not in table3       # only rows that ran, only table 3
    table5 = results_table("hafner", summary, 5)
    assert "| weight copy + freezing (proposed) | 1 | 50.0 / 50.0 / 50.0 / 50.0 | n/a |" in table5


def test_unknown_experiment(tmp_path):
    with pytest.raises(UserError, match="unknown experiment 'distil'"):
        run_set("hafner", tmp_path, [0], ["distil"])


def test_identical_experiments_run_once(tmp_path, monkeypatch):
    """distill_128 and ablation_copy_freeze are the same config and overrides: trained once, both rows filled."""
    import crossreid.reproduce as rp

    trained = []

    class Result:
        protocol = "synthetic"

        def mean(self):
            return means(0.5, 0.5)

    class Run:
        results = {"rgb->depth": Result(), "depth->rgb": Result()}

    def fake_train(cfg, run_dir, *args, **kwargs):
        trained.append(run_dir.parent.name)
        return Run()

    monkeypatch.setattr(rp, "train_and_evaluate", fake_train)
    monkeypatch.setattr(rp, "open_catalog", lambda *a, **k: object())
    monkeypatch.setattr(rp.TestStores, "of", classmethod(lambda cls, *a: None))
    monkeypatch.setattr(rp, "setup_process", lambda train: None)
    summary = run_set("hafner", tmp_path, [0, 1], ["distill_128", "ablation_copy_freeze", "distill_512"],
                      progress=False)
    assert trained == ["distill_128", "distill_128", "distill_512", "distill_512"]
    assert summary["ablation_copy_freeze"] == summary["distill_128"]


def test_tables_without_rows_are_left_out(tmp_path):
    from crossreid.reproduce import write_tables

    summary = {"distill_128": {0: {"rgb->depth": means(0.1, 0.2), "depth->rgb": means(0.3, 0.4)}}}
    text = write_tables("hafner", summary, tmp_path / "t.md", "note")
    assert "Table 3" in text and "Distillation, 128-d" in text
    assert "Table 5" not in text    # only the 128-d distillation ran: its Table 5 twin is not filled here
    assert (tmp_path / "t.md").read_text() == text
