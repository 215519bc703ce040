"""Which epoch a run keeps (``train.select``): the rule, its check against the data, its words.

``last``: the last epoch (what the released codes of IDKL on SYSU-MM01 / LLCM report);
``val``: the epoch with the highest validation mAP, scored on identities held out of
training (never the test set); ``loss``: the epoch with the lowest mean training loss.
A score is "higher is better": the validation mAP, or the negated training loss.
"""

from __future__ import annotations

from crossreid.errors import UserError

RULES = {"last": "the last epoch", "val": "the highest validation mAP", "loss": "the lowest training loss"}
HOLD_OUT = ("hold some out (data.options: hold_out_val=true for sysu_mm01, biwi, robotpku; val_ids=N for regdb, "
            "llcm; a 'val' split in a generic manifest; data.synth.val_identities for synthetic data)")


def require_validation_ids(rule: str, val_images: int, dataset: str) -> None:
    """``val`` needs validation identities: a UserError naming both fixes when the catalog has none."""
    if rule == "val" and val_images == 0:
        raise UserError(f"train.select=val keeps the epoch with the best validation mAP, but dataset {dataset!r} "
                        f"holds no validation identities; {HOLD_OUT}, or set train.select=last (or loss)")


def epoch_score(rule: str, loss: float, val_map: float | None) -> float | None:
    """The epoch's score under ``rule`` (None: the epoch is no candidate, ``val`` without validation)."""
    if rule == "val":
        return val_map
    return -float(loss)


def keeps(rule: str, score: float | None, best: float | None) -> bool:
    """Whether the epoch scored ``score`` replaces the kept one (scored ``best``)."""
    if score is None:
        return False
    return rule == "last" or best is None or score > best


def describe_choice(rule: str, epoch: int, epochs: int, score: float | None) -> str:
    """``kept epoch 12 of 24 (train.select=val: the highest validation mAP; its validation mAP 31.2 %)``;
    ``epoch`` is 0-based."""
    if score is None:
        value = "score not recorded"
    elif rule == "val":
        value = f"its validation mAP {100 * score:.1f} %"
    else:
        value = f"its training loss {-score:.4g}"
    return f"kept epoch {epoch + 1} of {epochs} (train.select={rule}: {RULES[rule]}; {value})"


def describe_fit(summary: dict) -> str:
    """What ``Trainer.fit()`` kept, in words: one clause per stage (named when there are several)."""
    parts = [describe_choice(s["select"], s["epoch"], s["epochs"], s.get("score")) for s in summary.values()]
    if len(parts) == 1:
        return parts[0]
    return "; ".join(f"{stage}: {part}" for stage, part in zip(summary, parts))
