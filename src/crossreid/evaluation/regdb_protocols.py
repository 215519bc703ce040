"""RegDB protocol (datasets.md §2.5) and the 10-trial mean of per-trial runs.

One protocol run scores one trial: the Catalog is loaded for that trial (loader option
``trial``), all 2,060 test images of one modality against all 2,060 of the other, no
exclusion, image-level CMC. Each trial has its own model, so the reported mean ± std over
10 trials combines 10 runs: :func:`find_trial_runs` locates them, :func:`combine_trials`
merges their results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import yaml

from crossreid.data.samples import Catalog
from crossreid.errors import UserError
from crossreid.evaluation.metrics import NO_EXCLUSION
from crossreid.evaluation.protocols import Trial, register_protocol
from crossreid.evaluation.results import ProtocolResult
from crossreid.evaluation.sampling import DatasetProtocol, parse_direction, require_nonempty, select
from crossreid.modality import Modality

DIRECTIONS = ((Modality.RGB, Modality.IR), (Modality.IR, Modality.RGB))
NAMES = {Modality.RGB: "visible", Modality.IR: "thermal"}
TRIALS = tuple(range(1, 11))


@register_protocol("regdb")
class RegDBProtocol(DatasetProtocol):
    """``direction`` ``visible->thermal`` (default) or ``thermal->visible``; one trial."""

    name = "regdb"
    exclusion = NO_EXCLUSION
    sampling = "none: the whole test set of the catalog's trial (loader option trial=1..10)"

    def __init__(self, direction: str = "visible->thermal", distance: str = "euclidean"):
        self.query_modality, self.gallery_modality = parse_direction(direction, DIRECTIONS, self.name)
        self.direction = f"{NAMES[self.query_modality]}->{NAMES[self.gallery_modality]}"
        self.set_common(distance, "image")

    def trials(self, catalog: Catalog) -> list[Trial]:
        fix = "load it with the regdb dataset (query and gallery pools hold both modalities)"
        query = require_nonempty(select(catalog.query, self.query_modality), catalog,
                                 f"{NAMES[self.query_modality]} query images", fix)
        gallery = require_nonempty(select(catalog.gallery, self.gallery_modality), catalog,
                                   f"{NAMES[self.gallery_modality]} gallery images", fix)
        return [Trial(query, gallery, self.exclusion, self.cmc)]


def find_trial_runs(pattern: str, trials: Sequence[int] = TRIALS) -> list[Path]:
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


def combine_trials(results: Sequence[ProtocolResult]) -> ProtocolResult:
    """One result whose trials are those of ``results`` (in order): mean ± std over trials.

    The results must come from the same protocol description, distance and dataset.
    """
    if not results:
        raise ValueError("combine_trials needs at least one result")
    first = results[0]
    for r in results[1:]:
        if (r.protocol, r.distance, r.dataset) != (first.protocol, first.distance, first.dataset):
            raise UserError(f"cannot combine results of {r.protocol.get('name')} {r.protocol.get('direction')} "
                            f"({r.distance}) with {first.protocol.get('name')} {first.protocol.get('direction')} "
                            f"({first.distance}); score every trial with the same protocol and options")
    trials = [m for r in results for m in r.trials]
    return ProtocolResult({**first.protocol, "trials": len(trials)}, first.distance, trials, dataset=first.dataset)
