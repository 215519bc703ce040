"""Open finished run folders: a run's resolved config and selected model; the runs of RegDB's trials."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

from crossreid.config import RunConfig, load_config
from crossreid.engine.checkpoint import load_checkpoint, read_state
from crossreid.engine.init import without_init
from crossreid.engine.selection import describe_choice
from crossreid.errors import UserError
from crossreid.methods import Method, build_method
from crossreid.modality import Modality

REGDB_TRIALS = tuple(range(1, 11))


def load_run(run_dir: str | Path) -> tuple[RunConfig, Method]:
    """The run's config and its method with the selected weights (``model.safetensors``), in eval mode.

    The method is built without its initialisation (``model.pretrained`` is never read): the
    run folder alone is enough, from any working directory.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir}: not a run folder (no config.yaml); pass the --out folder of `crossreid train`")
    cfg = load_config(run_dir / "config.yaml")
    weights, state, _, _ = load_checkpoint(run_dir / "model.safetensors")
    if "num_classes" not in state:
        raise UserError(f"{run_dir / 'model.safetensors'}: lacks the training metadata; retrain with this version")
    method = build_method(without_init(cfg), state["num_classes"], [Modality.parse(m) for m in state["modalities"]])
    result = method.load_state_dict(weights, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise UserError(f"{run_dir / 'model.safetensors'}: weights do not fit the run's config "
                        f"(missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})")
    return cfg, method.eval()


def kept_epoch(run_dir: str | Path) -> str:
    """Which weights the run holds, in words: the epoch ``train.select`` kept and its value, or, for
    an imported checkpoint, the authors' epoch and how their code chose it."""
    run_dir = Path(run_dir)
    state = read_state(run_dir / "model.safetensors")
    if state.get("imported"):
        from crossreid.io import read_json

        info = read_json(run_dir / "import.json") if (run_dir / "import.json").is_file() else {}
        recorded = info.get("recorded", {})
        epoch = f" (their epoch {recorded['epoch']})" if "epoch" in recorded else ""
        return (f"the authors' released {info.get('method', '')} checkpoint{epoch}, imported; their code keeps "
                "the epoch with the best test-set R1 (selection on the test set)")
    if "select" not in state:
        return f"epoch {state.get('epoch', 0) + 1} (a run made before train.select was recorded)"
    return describe_choice(state["select"], state["epoch"], state.get("stage_epochs", state["epoch"] + 1),
                           state.get("score"))


def find_trial_runs(pattern: str, trials: Sequence[int] = REGDB_TRIALS) -> list[Path]:
    """Run folders ``pattern.format(t=t)`` for each trial, e.g. ``runs/agw_regdb/trial{t}``.

    Each must be a run folder (``config.yaml``) trained on RegDB trial t, as its config's
    ``data.options.trial`` records (default 1); anything else is a UserError.
    """
    if "{t}" not in pattern:
        raise UserError(f"run pattern {pattern!r} has no {{t}}; write it like runs/agw_regdb/trial{{t}}")
    out = []
    for t in trials:
        run = Path(pattern.format(t=t))
        config = run / "config.yaml"
        if not config.is_file():
            raise UserError(f"{run}: run folder for RegDB trial {t} not found (no config.yaml); "
                            f"train it with data.options.trial={t} or fix the pattern")
        data = (yaml.safe_load(config.read_text()) or {}).get("data") or {}
        dataset, trained = data.get("dataset"), (data.get("options") or {}).get("trial", 1)
        if dataset != "regdb" or trained != t:
            raise UserError(f"{config}: trained on {dataset} trial {trained}, not regdb trial {t}; "
                            "point the pattern at the run of each trial")
        out.append(run)
    return out
