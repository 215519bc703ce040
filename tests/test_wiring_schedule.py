"""The learning-rate schedule by its numbers: warm-up, milestones, gamma, cosine end, and the rates
the trainer actually sets (read back from metrics.jsonl), each against a hand computation."""

import json
import math

import pytest

from crossreid.config import ScheduleConfig, load_config
from crossreid.data.registry import load_dataset
from crossreid.engine.schedule import lr_factor
from crossreid.engine.trainer import Trainer


def agw_adjust_learning_rate(epoch: int) -> float:
    """AGW's released ``adjust_learning_rate`` (cross-modal code), as a factor of the base rate."""
    if epoch < 10:
        return (epoch + 1) / 10
    if epoch < 20:
        return 1.0
    if epoch < 50:
        return 0.1
    return 0.01


def test_agw_warmup_and_milestones_equal_the_released_rule():
    agw = ScheduleConfig(name="step", warmup_epochs=10, warmup_factor=0.1, milestones=[20, 50], gamma=0.1)
    for epoch in range(80):
        assert lr_factor(epoch, agw, 80) == pytest.approx(agw_adjust_learning_rate(epoch), rel=1e-12), epoch


def test_warmup_is_linear_from_the_factor_to_one():
    s = ScheduleConfig(name="constant", warmup_epochs=5, warmup_factor=0.2)
    # epoch e of W: 0.2 + 0.8 * e / 4
    assert [lr_factor(e, s) for e in range(7)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0])
    one = ScheduleConfig(name="constant", warmup_epochs=1, warmup_factor=0.25)  # a single warm-up epoch
    assert [lr_factor(e, one) for e in range(3)] == pytest.approx([0.25, 1.0, 1.0])


def test_step_multiplies_by_gamma_at_each_milestone_reached():
    s = ScheduleConfig(name="step", milestones=[3, 5], gamma=0.5)
    assert [lr_factor(e, s) for e in range(7)] == pytest.approx([1, 1, 1, 0.5, 0.5, 0.25, 0.25])
    unsorted = ScheduleConfig(name="step", milestones=[5, 3], gamma=0.5)
    assert [lr_factor(e, unsorted) for e in range(7)] == [lr_factor(e, s) for e in range(7)]
    assert [lr_factor(e, ScheduleConfig(name="step")) for e in range(4)] == [1.0] * 4  # no milestone


def test_cosine_decays_to_zero_over_the_rest_of_the_stage():
    s = ScheduleConfig(name="cosine")
    # 0.5 (1 + cos(pi e / 8)) at e = 0, 2, 4, 6, 8
    expected = [1.0, 0.5 * (1 + math.sqrt(0.5)), 0.5, 0.5 * (1 - math.sqrt(0.5)), 0.0]
    assert [lr_factor(e, s, 8) for e in (0, 2, 4, 6, 8)] == pytest.approx(expected, abs=1e-12)
    warm = ScheduleConfig(name="cosine", warmup_epochs=2, warmup_factor=0.5)
    # after 2 warm-up epochs the cosine spans the remaining 4 of 6: e = 2, 3, 4, 5 -> 1, (1 + cos(pi/4))/2, 0.5, ...
    assert [lr_factor(e, warm, 6) for e in range(6)] == pytest.approx(
        [0.5, 1.0, 1.0, 0.5 * (1 + math.sqrt(0.5)), 0.5, 0.5 * (1 - math.sqrt(0.5))])
    with pytest.raises(ValueError, match="number of epochs"):
        lr_factor(3, s)


def test_constant_ignores_milestones_and_gamma():
    s = ScheduleConfig(name="constant", milestones=[1], gamma=0.1)
    assert [lr_factor(e, s, 4) for e in range(4)] == [1.0] * 4


TINY = ["data.dataset=generic", "model.arch=resnet18", "data.height=32", "data.width=16",
        "train.ids_per_batch=2", "train.images_per_id=1", "train.iterations_per_epoch=1", "train.progress=false",
        "eval.directions=[rgb->depth]", "data.modalities=[rgb,depth]", "train.validate_every=100"]


@pytest.mark.parametrize("schedule, factors", [
    (["schedule.name=cosine", "schedule.warmup_epochs=1", "schedule.warmup_factor=0.1"],
     [0.1, 1.0, 0.5 * (1 + math.cos(math.pi / 3)), 0.5 * (1 + math.cos(2 * math.pi / 3))]),
    (["schedule.name=step", "schedule.warmup_epochs=2", "schedule.warmup_factor=0.5", "schedule.milestones=[3]",
      "schedule.gamma=0.2"], [0.5, 1.0, 1.0, 0.2]),
])
def test_the_trainer_sets_the_scheduled_rate_each_epoch(tiny_root, tmp_path, schedule, factors):
    cfg = load_config(None, [*TINY, "train.epochs=4", "optim.lr=0.002", *schedule])
    Trainer(cfg, tmp_path / "run", load_dataset("generic", tiny_root), progress=False).fit()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in records] == pytest.approx([0.002 * f for f in factors], rel=1e-9)
