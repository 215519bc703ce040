"""``crossreid calibrate``: method-agnostic calibration of the synthetic data against targets.

Trains the single-modality models (one model trained and tested on one modality, as in
step I of Hafner et al.) and the one-stream baseline (all three modalities, one network)
at the demo resolution with a fixed budget in steps, scores them, and compares R1 with
the targets of the difficulty preset (docs/synthetic.md, "Calibration"). No seed method
is ever run here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crossreid.config import load_config, resolve_config
from crossreid.errors import UserError
from crossreid.experiment import Runner
from crossreid.io import write_json, write_text

# The fixed budgets (load-independent: steps, not seconds). Single-modality models: the demo
# config (ResNet-18 from scratch, 64x32, Adam 1e-3, P=8 identities x K=4 images) for 400 steps.
BUDGET = ["train.epochs=16", "train.iterations_per_epoch=25", "schedule.milestones=[13]",
          "schedule.warmup_epochs=1", "train.validate_every=16"]
# The one-stream model is the demo's own one-stream run as shipped, so the calibration
# measures the recipe a user runs first (docs/synthetic.md, "Budget").
ONE_STREAM_CONFIG = "demo_one_stream"
TOLERANCE = 3.0  # R1 points a measured value may fall outside its target range and still pass


@dataclass(frozen=True)
class Model:
    name: str
    modalities: tuple[str, ...]
    directions: tuple[str, ...]
    config: str = "demo"                   # shipped config the model starts from
    budget: tuple[str, ...] = tuple(BUDGET)  # overrides on top of it


MODELS = (
    Model("rgb", ("rgb",), ("rgb->rgb",)),
    Model("depth", ("depth",), ("depth->depth",)),
    Model("ir", ("ir",), ("ir->ir",)),
    Model("one_stream", ("rgb", "depth", "ir"), ("rgb->depth", "depth->rgb", "rgb->ir", "ir->rgb"),
          config=ONE_STREAM_CONFIG, budget=()),
)
# Table rows: (label, model, directions averaged). Cross-modal rows average both directions.
ROWS = (
    ("RGB→RGB (single-modality)", "rgb", ("rgb->rgb",)),
    ("depth→depth (single-modality)", "depth", ("depth->depth",)),
    ("IR→IR (single-modality)", "ir", ("ir->ir",)),
    ("RGB↔depth (one-stream)", "one_stream", ("rgb->depth", "depth->rgb")),
    ("RGB↔IR (one-stream)", "one_stream", ("rgb->ir", "ir->rgb")),
)
# R1 target ranges (percent) per difficulty and row label; see docs/synthetic.md for where they come from.
TARGETS = {
    "easy": ((92, 100), (55, 85), (75, 97), (25, 50), (25, 55)),
    "default": ((85, 97), (40, 65), (60, 90), (10, 30), (10, 35)),
    "hard": ((65, 90), (20, 45), (35, 70), (5, 15), (5, 15)),
}


def model_config(model: Model, difficulty: str, overrides: list[str]):
    settings = [*model.budget, f"data.synth.difficulty={difficulty}", f"data.modalities=[{','.join(model.modalities)}]",
                f"eval.directions=[{','.join(model.directions)}]", *overrides]
    return load_config(resolve_config(model.config), settings)


def run_calibration(difficulty: str, out: Path, only: list[str] | None = None, overrides: list[str] | None = None,
                    overwrite: bool = False, progress: bool = True, device=None, amp: str = "auto") -> dict:
    """Train and score each model (or reuse its finished run in ``out``, see :class:`crossreid.experiment.Runner`)
    on ``device`` under ``amp``; write and return the table."""
    if difficulty not in TARGETS:
        raise UserError(f"--difficulty {difficulty!r}: unknown; valid: {', '.join(TARGETS)}")
    names = [m.name for m in MODELS]
    unknown = [n for n in (only or []) if n not in names]
    if unknown:
        raise UserError(f"--only {unknown[0]!r}: unknown model; valid: {', '.join(names)}")
    models = [m for m in MODELS if not only or m.name in only]
    configs = {m.name: model_config(m, difficulty, overrides or []) for m in models}  # bad overrides fail here
    out = Path(out)
    runner = Runner(overwrite, progress, device, amp)
    measured, seconds, chance = {}, {}, {}
    for model in models:
        record = runner.run(configs[model.name], out / model.name, model.directions,
                            f"[calibrate {difficulty}] training {model.name} on {', '.join(model.modalities)}",
                            {"model": model.name})
        measured.update({d: 100 * record["mean"][d]["rank1"] for d in model.directions})
        chance.update({d: round(100 * record["chance_r1"][d], 2) for d in model.directions})
        seconds[model.name] = record["wall_time_s"]
    table = calibration_table(difficulty, measured)
    any_cfg = next(iter(configs.values()))
    payload = {"difficulty": difficulty, "budget": budget_text(models), "overrides": overrides or [],
               "depth_encoding": any_cfg.data.depth_encoding, "tolerance": TOLERANCE, "rows": table,
               "wall_time_s": seconds, "chance_r1": chance}
    write_json(out / "calibration.json", payload)
    text = format_table(difficulty, table)
    write_text(out / "calibration.md", text + "\n")
    return payload


def budget_text(models) -> str:
    """Each distinct recipe with the models it trains, e.g. ``rgb, depth: demo + train.epochs=16 ...``."""
    recipes: dict[str, list[str]] = {}
    for m in models:
        recipes.setdefault(" + ".join([m.config, *([" ".join(m.budget)] if m.budget else [])]), []).append(m.name)
    return "; ".join(f"{', '.join(names)}: {recipe}" for recipe, names in recipes.items())


def calibration_table(difficulty: str, measured: dict) -> list[dict]:
    """One row per ROWS entry whose directions were all measured: R1, target, pass/fail."""
    rows = []
    for (label, model, directions), (lo, hi) in zip(ROWS, TARGETS[difficulty]):
        if not all(d in measured for d in directions):
            continue
        r1 = float(np.mean([measured[d] for d in directions]))
        rows.append({"row": label, "model": model, "directions": list(directions), "rank1": round(r1, 1),
                     "target": [lo, hi], "pass": lo - TOLERANCE <= r1 <= hi + TOLERANCE, "in_range": lo <= r1 <= hi,
                     "per_direction": {d: round(measured[d], 1) for d in directions}})
    return rows


def format_table(difficulty: str, rows: list[dict]) -> str:
    lines = [f"calibration, difficulty {difficulty} (synthetic data; R1 %, tolerance ±{TOLERANCE:g} points)",
             "| row | R1 measured | target | pass | per direction |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        per = ", ".join(f"{d} {v:.1f}" for d, v in r["per_direction"].items())
        lines.append(f"| {r['row']} | {r['rank1']:.1f} | {r['target'][0]}–{r['target'][1]} | "
                     f"{('pass' if r['in_range'] else 'pass (tolerance)') if r['pass'] else 'FAIL'} | {per} |")
    return "\n".join(lines)
