"""The results file of ``crossreid evaluate`` (``RUN/evaluation.json``): every scored setting, a
few ranked lists of each, and what produced them (run, method, kept weights, input size).
``crossreid report`` renders one or several of these files."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossreid.errors import UserError
from crossreid.evaluation.results import ProtocolResult
from crossreid.io import read_json, write_json
from crossreid.version import __version__

FORMAT = "crossreid-evaluation"
FILE = "evaluation.json"


@dataclass
class Evaluation:
    """One ``evaluate`` call: ``results`` by setting label (a direction, or e.g. ``all-search
    single-shot``), ``examples`` by the same labels (:func:`~crossreid.evaluation.examples.ranked_examples`)."""

    run: str                       # the run folder, or a RegDB trial pattern (runs/agw_regdb/trial{t})
    method: str
    dataset: str
    root: str
    kept: list[str]                # the weights each run holds, in words (one line per trial run)
    image: dict[str, Any]          # height, width, depth_encoding: how the ranked lists' images are drawn
    results: dict[str, ProtocolResult]
    examples: dict[str, list] = field(default_factory=dict)
    label: str = ""                # how a report names the run (default: see ``name``); not saved

    @property
    def name(self) -> str:
        """``label``, else the run folder's name (a trial pattern's: the folder above the trials)."""
        path = Path(self.run)
        return self.label or (path.parent.name if "{t}" in path.name else path.name)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "crossreid_version": __version__, "run": self.run, "method": self.method,
                "dataset": self.dataset, "root": self.root, "kept": self.kept, "image": self.image,
                "results": {k: r.to_json() for k, r in self.results.items()}, "examples": self.examples}

    def save(self, path: str | os.PathLike) -> None:
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Evaluation:
        doc = read_json(path)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise UserError(f"{path}: not a results file of `crossreid evaluate` (format {FORMAT}); "
                            "evaluate the run again to write one")
        try:
            return cls(doc["run"], doc["method"], doc["dataset"], doc["root"], list(doc["kept"]), dict(doc["image"]),
                       {k: ProtocolResult.from_json(r) for k, r in doc["results"].items()},
                       dict(doc.get("examples", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{path}: incomplete results file ({exc!r} missing or malformed); evaluate the run "
                            "again to rewrite it") from None


def default_path(run: str | os.PathLike) -> Path | None:
    """Where ``evaluate RUN`` keeps its results: ``RUN/evaluation.json``; for a trial pattern whose
    last part holds ``{t}`` (``runs/agw_regdb/trial{t}``) the folder above the trials; else None."""
    path = Path(run)
    if "{t}" not in str(run):
        return path / FILE
    if "{t}" in str(path.parent):
        return None
    return path.parent / FILE


def find(run: str | os.PathLike) -> Path:
    """The results file behind ``report RUN``: RUN itself when it is a ``.json`` file, else its
    :func:`default_path`; a UserError naming the fix when there is none."""
    path = Path(run)
    if path.suffix == ".json":
        if not path.is_file():
            raise UserError(f"{path}: results file not found; write it with `crossreid evaluate RUN --json {path}`")
        return path
    found = default_path(run)
    if found is None:
        raise UserError(f"{run}: a trial pattern with {{t}} above its last folder keeps no results file; evaluate "
                        "it with --json FILE and pass FILE")
    if not found.is_file():
        raise UserError(f"{run}: not evaluated yet (no {found}); run `crossreid evaluate {run}` first")
    return found


def side_by_side(runs: list[str] | tuple[str, ...]) -> list[Evaluation]:
    """The evaluations behind ``report RUN [RUN ...]`` (:func:`find`): all of one dataset, else a
    UserError. Runs that share a name are labelled by what was given: a results file by its
    stem, a folder with its parent (``agw/seed0``, ``idkl/seed0``)."""
    evaluations = [Evaluation.load(find(run)) for run in runs]
    if len({e.dataset for e in evaluations}) > 1:
        which = ", ".join(f"{run}: {e.dataset}" for run, e in zip(runs, evaluations))
        raise UserError(f"report: the runs were evaluated on different datasets ({which}); their figures do not "
                        "belong side by side: make one report per dataset")
    names = [e.name for e in evaluations]
    for run, e in zip(runs, evaluations):
        if names.count(e.name) > 1:
            given = Path(run)
            e.label = given.stem if given.suffix == ".json" else f"{given.parent.name}/{given.name}"
    return evaluations
