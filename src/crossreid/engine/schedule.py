"""The learning-rate schedule: one function from (epoch, schedule config, stage length) to a factor."""

from __future__ import annotations

import math


def lr_factor(epoch: int, schedule, stage_epochs: int | None = None) -> float:
    """Multiplier of the base learning rate at ``epoch`` (0-based) of a stage of ``stage_epochs``.

    Warm-up is linear from ``warmup_factor`` (epoch 0) to 1 (last warm-up epoch; factor 1/W
    gives AGW's (e+1)/W); then ``step`` multiplies by ``gamma`` at each milestone passed,
    ``cosine`` decays to 0 over the rest of the stage, ``constant`` stays at 1.
    """
    if epoch < schedule.warmup_epochs:
        w = schedule.warmup_factor
        return w + (1.0 - w) * epoch / max(1, schedule.warmup_epochs - 1)
    if schedule.name == "step":
        return schedule.gamma ** sum(epoch >= m for m in schedule.milestones)
    if schedule.name == "cosine":
        if stage_epochs is None:
            raise ValueError("a cosine schedule needs the stage's number of epochs")
        span = max(1, stage_epochs - schedule.warmup_epochs)
        return 0.5 * (1 + math.cos(math.pi * (epoch - schedule.warmup_epochs) / span))
    return 1.0
