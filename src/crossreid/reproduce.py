"""``crossreid reproduce hafner|baselines``: experiment sets on the synthetic data, over seeds.

``hafner``: the experiments of Hafner et al. (Tables 3 and 5) on synthetic RGB-D data.
``baselines``: the four baselines, RGB↔depth and RGB↔IR. ``vi``: the visible-infrared
methods against AGW on synthetic RGB↔IR, each with its ablations. Every experiment is a shipped
config plus overrides, run for several seeds; the result is a markdown table (R1 / R5 /
R10 / mAP, mean ± std over seeds). The numbers are on synthetic data: they test which
claims hold in a controlled setting, not the papers' figures.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np

from crossreid.config import load_config, resolve_config
from crossreid.data.open import open_catalog
from crossreid.engine.process import setup_process
from crossreid.errors import UserError
from crossreid.experiment import TestStores, train_and_evaluate
from crossreid.io import read_json, write_json, write_text

# name -> (shipped config, overrides, table, row label)
HAFNER = {
    "zero_padding": ("hafner_synthetic", ["method.name=zero_padding"], 3, "Zero-padding (Wu 2017)"),
    "two_stream": ("hafner_synthetic", ["method.name=two_stream"], 3, "Two-stream (Wu 2017)"),
    "one_stream": ("hafner_synthetic", ["method.name=one_stream"], 3, "One-stream (Wu 2017)"),
    "distill_128": ("hafner_distill_synthetic", [], 3, "Distillation, 128-d"),
    "distill_512": ("hafner_distill_synthetic", ["model.embedding_dim=512"], 3, "Distillation, 512-d"),
    "distill_att_512": ("hafner_distill_synthetic", ["model.embedding_dim=512", "method.options.attention=true"], 3,
                        "Distillation + attention, 512-d"),
    "distill_rgb_to_depth_128": ("hafner_distill_synthetic", ["method.options.source=rgb", "method.options.target=depth"],
                                 3, "Distillation RGB→depth (teacher on RGB), 128-d"),
    "ablation_nocopy_nofreeze": ("hafner_distill_synthetic", ["method.options.copy_weights=false",
                                                              "method.options.freeze=false"], 5,
                                 "no weight copy, no freezing"),
    "ablation_copy_nofreeze": ("hafner_distill_synthetic", ["method.options.freeze=false"], 5,
                               "weight copy, no freezing"),
    "ablation_copy_freeze": ("hafner_distill_synthetic", [], 5, "weight copy + freezing (proposed)"),
}
# name -> (shipped config, overrides, table, row label)
BASELINES = {
    name: (f"{name}_synthetic", [], 1, label)
    for name, label in (("one_stream", "One-stream"), ("zero_padding", "Zero-padding"),
                        ("two_stream", "Two-stream"), ("agw", "AGW"))
}
# name -> (shipped config, overrides, table, row label); table 1: methods, 2: ablations.
# Each visible-infrared method adds its rows here.
VISIBLE_INFRARED = {
    "agw": ("agw_synthetic", ["data.modalities=[rgb,ir]"], 1, "AGW (baseline)"),
    "smmd": ("smmd_synthetic", [], 1, "SMMD (reconstruction)"),
    "smmd_no_self_mimic": ("smmd_synthetic", ["method.options.self_mimic_weight=0"], 2,
                           "SMMD (reconstruction), self-mimic removed"),
    "smmd_no_mutual": ("smmd_synthetic", ["method.options.mutual_weight=0"], 2,
                       "SMMD (reconstruction), mutual distillation removed"),
    "wan": ("wan_synthetic", [], 1, "Wan et al. 2024 (reconstruction)"),
    "wan_no_fusion": ("wan_synthetic", ["method.options.fusion_teacher=false"], 2,
                      "Wan et al. (reconstruction) without the fusion teacher"),
    "wan_no_memory": ("wan_synthetic", ["method.options.memory_teacher=false"], 2,
                      "Wan et al. (reconstruction) without the memory teacher"),
    "wan_no_dynamic": ("wan_synthetic", ["method.options.dynamic_weight=none"], 2,
                       "Wan et al. (reconstruction) without dynamic weighting (weight 1)"),
    "idkl": ("idkl_synthetic", ["data.modalities=[rgb,ir]"], 1, "IDKL"),
    "idkl_no_purifier": ("idkl_synthetic", ["data.modalities=[rgb,ir]", "method.options.purifier=false"], 2,
                         "IDKL without the IN-guided purifier"),
    "idkl_no_tgsa": ("idkl_synthetic", ["data.modalities=[rgb,ir]", "method.options.tgsa=false"], 2,
                     "IDKL without TGSA"),
    "idkl_no_csa": ("idkl_synthetic", ["data.modalities=[rgb,ir]", "method.options.csa_sample=false",
                                       "method.options.csa_set=false"], 2, "IDKL without CSA (sample and set level)"),
}
SETS = {"hafner": (HAFNER, ("rgb->depth", "depth->rgb")),
        "baselines": (BASELINES, ("rgb->depth", "depth->rgb", "rgb->ir", "ir->rgb")),
        "vi": (VISIBLE_INFRARED, ("rgb->ir", "ir->rgb"))}
METRICS = (("rank1", "R1"), ("rank5", "R5"), ("rank10", "R10"), ("map", "mAP"))


def run_set(which: str, out: Path, seeds: list[int], only: list[str] | None = None,
            overrides: list[str] | None = None, overwrite: bool = False, progress: bool = True) -> dict:
    """Run (or reuse, per experiment and seed) every experiment; return {name: {seed: {direction: means}}}."""
    experiments, directions = SETS[which]
    names = only or list(experiments)
    unknown = [n for n in names if n not in experiments]
    if unknown:
        raise UserError(f"unknown experiment {unknown[0]!r}; choose from: {', '.join(experiments)}")
    out = Path(out)
    summary: dict = {}
    catalog = stores = None
    first_of: dict = {}  # (config, overrides) -> the first experiment with them: identical rows run once
    for name in names:
        config, extra, _, _ = experiments[name]
        same = first_of.setdefault((config, tuple(extra)), name)
        if same != name:
            summary[name] = summary[same]
            continue
        for seed in seeds:
            run_dir = out / name / f"seed{seed}"
            done = run_dir / "test_results.json"
            settings = [*extra, f"train.seed={seed}", *(overrides or [])]
            if done.is_file() and not overwrite:
                previous = read_json(done)
                if previous.get("overrides") != settings:
                    raise UserError(f"{done}: made with overrides {previous.get('overrides')}, now {settings}; "
                                    "use another --out or pass --overwrite")
                summary.setdefault(name, {})[seed] = previous["mean"]
                continue
            cfg = load_config(resolve_config(config), settings)
            if catalog is None:
                setup_process(cfg.train)
                catalog = open_catalog(cfg.data, progress=progress)
                stores = TestStores.of(catalog, cfg.data)
            click.echo(f"[{name} seed {seed}] training {cfg.method.name}")
            start = time.perf_counter()
            run = train_and_evaluate(cfg, run_dir, catalog, stores, overwrite=True, progress=progress)
            means = {d: run.results[d].mean() for d in directions if d in run.results}
            write_json(done, {"experiment": name, "seed": seed, "overrides": settings, "mean": means,
                              "protocol": {d: r.protocol for d, r in run.results.items()},
                              "wall_time_s": round(time.perf_counter() - start, 1)})
            summary.setdefault(name, {})[seed] = means
    return summary


def _cell(values: list[float]) -> str:
    arr = 100 * np.asarray(values)
    return f"{arr.mean():.1f}±{arr.std():.1f}" if len(arr) > 1 else f"{arr.mean():.1f}"


def results_table(which: str, summary: dict, table: int) -> str:
    """A markdown table of one table number of a set (mean ± std over seeds, percent)."""
    experiments, directions = SETS[which]
    head = " | ".join(f"Q {d.split('->')[0]} → G {d.split('->')[1]}: " + " / ".join(lbl for _, lbl in METRICS)
                      for d in directions)
    lines = [f"| approach | seeds | {head} |", "| --- | --- |" + " --- |" * len(directions)]
    for name, (_, _, tab, label) in experiments.items():
        if tab != table or name not in summary:
            continue
        runs = list(summary[name].values())
        cells = []
        for d in directions:
            if all(d in r for r in runs):
                cells.append(" / ".join(_cell([r[d][key] for r in runs]) for key, _ in METRICS))
            else:
                cells.append("n/a")
        lines.append(f"| {label} | {len(runs)} | {' | '.join(cells)} |")
    return "\n".join(lines)


# which -> (heading, [(caption, table number)])
TABLES = {
    "hafner": ("## Cross-modal distillation (Hafner et al.) on synthetic RGB-D data",
               [("Shaped like the paper's Table 3 (cross-modal results against the baselines):", 3),
                ("Shaped like the paper's Table 5 (weight copy / freezing ablation, 128-d):", 5)]),
    "vi": ("## Visible-infrared methods on synthetic RGB / IR data",
           [("Methods against AGW:", 1), ("Ablations (each component removed):", 2)]),
    "baselines": ("## Baselines on synthetic RGB / depth / IR data", [("", 1)]),
}


def write_tables(which: str, summary: dict, path: Path, note: str) -> str:
    """The set's markdown tables (those with at least one row that ran) under a heading and ``note``."""
    heading, tables = TABLES[which]
    parts = [heading, "", note, ""]
    for caption, number in tables:
        table = results_table(which, summary, number)
        if table.count("\n") < 2:  # header only: none of its rows ran
            continue
        parts += [caption, "", table, ""] if caption else [table, ""]
    text = "\n".join(parts)
    write_text(path, text)
    return text
