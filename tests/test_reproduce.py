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
