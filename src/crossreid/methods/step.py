"""What a training step returns: named, weighted loss terms, and the state ``after_step`` uses.

Every method declares its losses through :class:`LossTerms`, the one place a loss weight
applies: a term is logged under its name (``metrics.jsonl``, the epoch line) and, with a
weight above 0, joins the optimised total ``loss``. Which weight comes from where:
``loss.id_weight`` and ``loss.triplet_weight`` weight the re-ID terms (identity CE and the
metric loss) of every method that has them; a method's own terms take their weights from
its ``method.options`` (``*_weight``) or, where the paper fixes them, a constant.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from crossreid.errors import UserError
from crossreid.losses import BatchHardTriplet, IdentityLoss


class StepOutput(NamedTuple):
    """What ``training_step`` returns (made by :meth:`LossTerms.output`).

    ``losses``: every term and logged value by name, plus ``loss``, the optimised total;
    ``state``: detached tensors of the step that the method's ``after_step`` reads (e.g. the
    features a memory folds in), so a method never keeps a step's tensors on itself.
    """

    losses: dict[str, torch.Tensor]
    state: dict[str, torch.Tensor]


class LossTerms:
    """The named loss terms of one training step; ``output()`` weights and sums them.

    ``add(name, value, weight)``: a term, logged, and optimised as ``weight × value`` when
    ``weight > 0`` (weight 0 logs it only). ``log(name, value)``: a value that is logged only
    (a part of a term, a mean weight). The total is the weighted terms summed in the order
    they were added.
    """

    def __init__(self) -> None:
        self.values: dict[str, torch.Tensor] = {}
        self.weights: dict[str, float] = {}

    def add(self, name: str, value: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
        self.log(name, value)
        self.weights[name] = float(weight)
        return value

    def log(self, name: str, value: torch.Tensor) -> torch.Tensor:
        if name == "loss" or name in self.values:
            raise ValueError(f"loss term {name!r} given twice (or named 'loss', the total's name)")
        self.values[name] = value
        return value

    def total(self) -> torch.Tensor:
        parts = [weight * self.values[name] for name, weight in self.weights.items() if weight > 0]
        if not parts:
            zero = ", ".join(self.weights) or "none"
            raise UserError(f"every loss term of this step has weight 0 ({zero}): nothing to optimise; give one a "
                            "weight above 0 (loss.id_weight, loss.triplet_weight or the method's *_weight options)")
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        return total

    def output(self, **state: torch.Tensor) -> StepOutput:
        """The step's result: every value by name, ``loss``, and ``state`` (detached) for ``after_step``."""
        return StepOutput({**self.values, "loss": self.total()}, {k: v.detach() for k, v in state.items()})


def reid_terms(out, labels: torch.Tensor, loss_cfg, metric_loss: tuple[str, nn.Module] | None = None) -> LossTerms:
    """The re-ID terms of head outputs ``out``: identity cross-entropy on the logits (``id``,
    ``loss.id_weight``, ``loss.label_smoothing``) and batch-hard triplet on the features
    (``triplet``, ``loss.triplet_weight``, ``loss.triplet_margin``), each computed only when its
    weight is above 0. ``metric_loss`` = (name, module) replaces the triplet (AGW: ``("wrt", WRT)``).
    Methods add their own terms to the result."""
    terms = LossTerms()
    if loss_cfg.id_weight > 0:
        terms.add("id", IdentityLoss(loss_cfg.label_smoothing)(out.logits.float(), labels), loss_cfg.id_weight)
    if loss_cfg.triplet_weight > 0:
        name, loss = metric_loss or ("triplet", BatchHardTriplet(loss_cfg.triplet_margin))
        terms.add(name, loss(out.features.float(), labels), loss_cfg.triplet_weight)
    return terms
