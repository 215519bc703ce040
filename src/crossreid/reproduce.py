"""``crossreid reproduce SET``: an experiment set over seeds; markdown tables of the results.

A set is a YAML file (the shipped ones in ``crossreid/experiments/``: ``hafner``, the
experiments of Hafner et al., Tables 3 and 5, on synthetic RGB-D data; ``baselines``, the
four baselines, RGB↔depth and RGB↔IR; ``vi``, the visible-infrared methods against AGW on
synthetic RGB↔IR with their ablations; or a user's own file of the same form). Each experiment
is a config plus overrides, run for several seeds (or reused, see
:class:`crossreid.experiment.Runner`); the result is a markdown table per table of the set
(R1 / R5 / R10 / mAP, mean ± std over seeds). On synthetic data the numbers test which claims
hold in a controlled setting, not the papers' figures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from crossreid.config import load_config, resolve_config
from crossreid.errors import UserError, explain_validation
from crossreid.experiment import Runner
from crossreid.io import write_text
from crossreid.modality import parse_direction

SHIPPED = Path(__file__).parent / "experiments"
METRICS = (("rank1", "R1"), ("rank5", "R5"), ("rank10", "R10"), ("map", "mAP"))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Experiment(_Strict):
    label: str                                   # the table row
    config: str                                  # a shipped config name, or a file relative to the set's file
    overrides: list[str] = Field(default_factory=list)


class Table(_Strict):
    caption: str = ""
    experiments: dict[str, Experiment]


class ExperimentSet(_Strict):
    title: str                                   # the heading of the tables
    data: str                                    # which modalities, for the note under the heading
    papers: str | None = None                 # whose published figures these are not comparable with
    directions: list[str]
    tables: list[Table] = Field(min_length=1)
    _path: Path = PrivateAttr(default=Path())    # the file it was read from

    @field_validator("directions")
    @classmethod
    def _check_directions(cls, value: list[str]) -> list[str]:
        for d in value:
            parse_direction(d, "directions")
        return value

    @property
    def path(self) -> Path:
        return self._path

    @property
    def name(self) -> str:
        return self._path.stem

    @property
    def experiments(self) -> dict[str, tuple[Experiment, Table]]:
        """Every experiment by name, with its table, in file order."""
        return {name: (e, t) for t in self.tables for name, e in t.experiments.items()}

    def config(self, experiment: Experiment, overrides: list[str]):
        local = self.path.parent / experiment.config
        return load_config(local if local.is_file() else resolve_config(experiment.config), overrides)


def shipped_sets() -> list[str]:
    return sorted(p.stem for p in SHIPPED.glob("*.yaml"))


def load_set(name_or_path: str | Path) -> ExperimentSet:
    """A shipped set by name (``hafner``, ``baselines``, ``vi``) or an experiment-set YAML file."""
    path = Path(name_or_path)
    if not path.is_file():
        path = SHIPPED / f"{name_or_path}.yaml"
        if not path.is_file():
            raise UserError(f"{name_or_path}: no such experiment set; give a shipped one ({', '.join(shipped_sets())}) "
                            "or an experiment-set YAML file (see docs/results.md)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: invalid YAML ({str(exc).splitlines()[0]}); fix the syntax") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: an experiment set is a mapping (title, data, directions, tables); "
                        f"see {SHIPPED / 'baselines.yaml'}")
    try:
        exp_set = ExperimentSet(**raw)
    except ValidationError as exc:
        raise explain_validation(exc, ExperimentSet, str(path)) from None
    exp_set._path = path
    names = [n for t in exp_set.tables for n in t.experiments]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(f"{path}: experiment {twice[0]!r} appears in two tables; give each experiment one name")
    for experiment, _ in exp_set.experiments.values():
        exp_set.config(experiment, experiment.overrides)  # a bad config or override fails here, before any run
    return exp_set


def run_set(exp_set: ExperimentSet, out: Path, seeds: list[int], only: list[str] | None = None,
            overrides: list[str] | None = None, overwrite: bool = False, progress: bool = True,
            device=None, amp: str = "auto") -> dict:
    """Run (or reuse, per experiment and seed) every experiment on ``device`` under ``amp``
    (:class:`~crossreid.experiment.Runner`); return {name: {seed: {direction: means}}}."""
    experiments = exp_set.experiments
    names = only or list(experiments)
    unknown = [n for n in names if n not in experiments]
    if unknown:
        raise UserError(f"unknown experiment {unknown[0]!r}; choose from: {', '.join(experiments)}")
    runner = Runner(overwrite, progress, device, amp)
    summary: dict = {}
    first_of: dict = {}  # (config, overrides) -> the first experiment with them: identical rows run once
    for name in names:
        experiment = experiments[name][0]
        same = first_of.setdefault((experiment.config, tuple(experiment.overrides)), name)
        if same != name:
            summary[name] = summary[same]
            continue
        for seed in seeds:
            settings = [*experiment.overrides, f"train.seed={seed}", *(overrides or [])]
            cfg = exp_set.config(experiment, settings)
            record = runner.run(cfg, Path(out) / name / f"seed{seed}", exp_set.directions,
                                f"[{name} seed {seed}] training {cfg.method.name}",
                                {"experiment": name, "seed": seed, "overrides": settings})
            summary.setdefault(name, {})[seed] = record["mean"]
    return summary


def _cell(values: list[float]) -> str:
    arr = 100 * np.asarray(values)
    return f"{arr.mean():.1f}±{arr.std():.1f}" if len(arr) > 1 else f"{arr.mean():.1f}"


def results_table(exp_set: ExperimentSet, summary: dict, table: Table) -> str:
    """A markdown table of one table of a set (mean ± std over seeds, percent)."""
    directions = exp_set.directions
    head = " | ".join(f"Q {d.split('->')[0]} → G {d.split('->')[1]}: " + " / ".join(lbl for _, lbl in METRICS)
                      for d in directions)
    lines = [f"| approach | seeds | {head} |", "| --- | --- |" + " --- |" * len(directions)]
    for name, experiment in table.experiments.items():
        if name not in summary:
            continue
        runs = list(summary[name].values())
        cells = []
        for d in directions:
            if all(d in r for r in runs):
                cells.append(" / ".join(_cell([r[d][key] for r in runs]) for key, _ in METRICS))
            else:
                cells.append("n/a")
        lines.append(f"| {experiment.label} | {len(runs)} | {' | '.join(cells)} |")
    return "\n".join(lines)


def set_note(exp_set: ExperimentSet, seeds: list[int], overrides: list[str]) -> str:
    """The line under the heading: the data, seeds and overrides, and what the figures are not."""
    preset = next((o.split("=", 1)[1] for o in overrides if o.startswith("data.synth.difficulty=")), "default")
    first = next(iter(exp_set.experiments.values()))[0]
    data = exp_set.config(first, overrides).data
    where = (f"Synthetic data (the demo's synthetic set, {exp_set.data}, difficulty {preset})"
             if data.dataset == "synthetic" else f"Dataset {data.dataset} ({exp_set.data})")
    papers = f"the papers' {exp_set.papers}" if exp_set.papers else "published"
    return (f"{where}, {len(seeds)} seed(s){', overrides ' + ' '.join(overrides) if overrides else ''}; "
            f"mean ± std over seeds, percent. Not comparable with {papers} figures.")


def write_tables(exp_set: ExperimentSet, summary: dict, path: Path, note: str) -> str:
    """The set's markdown tables (those with at least one row that ran) under a heading and ``note``."""
    parts = [f"## {exp_set.title}", "", note, ""]
    for table in exp_set.tables:
        text = results_table(exp_set, summary, table)
        if text.count("\n") < 2:  # header only: none of its rows ran
            continue
        parts += [table.caption, "", text, ""] if table.caption else [text, ""]
    text = "\n".join(parts)
    write_text(path, text)
    return text
