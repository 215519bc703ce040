"""RegDB protocol (datasets.md §2.5) and the 10-trial mean of per-trial runs.

One protocol run scores one trial: the Catalog is loaded for that trial (loader option
``trial``), all 2,060 test images of one modality against all 2,060 of the other, no
exclusion, image-level CMC. Each trial has its own model, so the reported mean ± std over
10 trials combines 10 runs: :func:`crossreid.engine.runs.find_trial_runs` locates them,
:func:`combine_trials` merges their results.
"""

from __future__ import annotations

from collections.abc import Sequence

from crossreid.data.samples import Catalog
from crossreid.errors import UserError
from crossreid.evaluation.metrics import NO_EXCLUSION
from crossreid.evaluation.protocols import Protocol, Trial, legacy_direction, register_protocol
from crossreid.evaluation.results import ProtocolResult
from crossreid.modality import Modality

DIRECTIONS = ((Modality.RGB, Modality.IR), (Modality.IR, Modality.RGB))
NAMES = {Modality.RGB: "visible", Modality.IR: "thermal"}


@register_protocol("regdb")
class RegDBProtocol(Protocol):
    """``query``/``gallery`` rgb->ir (visible->thermal, default) or ir->rgb (also spelt
    ``direction="thermal->visible"``); one trial."""

    directions = DIRECTIONS
    exclusion = NO_EXCLUSION
    sampling = "none: the whole test set of the catalog's trial (loader option trial=1..10)"
    fix = "load it with the regdb dataset (query and gallery pools hold both modalities)"

    def __init__(self, query: str | None = None, gallery: str | None = None, direction: str | None = None,
                 distance: str = "euclidean", precision: str = "float64"):
        self.set_common(*legacy_direction(direction, query, gallery, self.name), distance, precision, "image")
        self.direction = f"{NAMES[self.query_modality]}->{NAMES[self.gallery_modality]}"

    def trials(self, catalog: Catalog) -> list[Trial]:
        query, gallery = self.pools(catalog)
        return [Trial(query, gallery, self.exclusion, self.cmc)]


def combine_trials(results: Sequence[ProtocolResult]) -> ProtocolResult:
    """One result whose trials are those of ``results`` (in order): mean ± std over trials.

    The results must come from the same protocol description, distance, dataset and re-ranking.
    """
    if not results:
        raise ValueError("combine_trials needs at least one result")
    first = results[0]
    for r in results[1:]:
        if (r.protocol, r.distance, r.dataset, r.rerank) != (first.protocol, first.distance, first.dataset,
                                                             first.rerank):
            raise UserError(f"cannot combine results of {r.protocol.get('name')} {r.protocol.get('direction')} "
                            f"({r.distance}) with {first.protocol.get('name')} {first.protocol.get('direction')} "
                            f"({first.distance}); score every trial with the same protocol and options")
    trials = [m for r in results for m in r.trials]
    return ProtocolResult({**first.protocol, "trials": len(trials)}, first.distance, trials, dataset=first.dataset,
                          options=dict(first.options), rerank=first.rerank)
