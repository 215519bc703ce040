"""Re-ID losses: identity cross-entropy, batch-hard triplet, weighted regularised triplet, MSE distillation.

Features are ``(N, D)`` float tensors, labels ``(N,)`` integer identities; any P x K layout
(including uneven K) works. Distances are Euclidean, ``sqrt(clamp(d^2, 1e-12))``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from crossreid.errors import UserError


def pairwise_euclidean(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """``(N, D), (M, D) -> (N, M)`` Euclidean distances; ``y`` defaults to ``x``."""
    y = x if y is None else y
    sq = x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1).unsqueeze(0) - 2.0 * x @ y.t()
    return sq.clamp(min=1e-12).sqrt()


def _anchors(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """The rows of the anchors that have a negative: their distances to every item, and the
    same-identity (self included) and other-identity masks; None when no anchor has a negative."""
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    valid = (~same).any(1)
    if not valid.any():
        return None
    return pairwise_euclidean(features)[valid], same[valid], ~same[valid]


class IdentityLoss(nn.Module):
    """Cross-entropy over identity logits; ``label_smoothing`` in [0, 1) (0: plain CE).

    Smoothing follows torch: target = (1 - eps) * one_hot + eps / C.
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise UserError(f"label_smoothing must be in [0, 1), got {label_smoothing}; fix the loss config")
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)


class BatchHardTriplet(nn.Module):
    """Batch-hard triplet loss (Hermans et al. 2017) on Euclidean distances.

    Per anchor: hardest positive ``max d(a, p)`` (self included, so a lone identity gives 0)
    and hardest negative ``min d(a, n)``; loss ``relu(d_ap - d_an + margin)``, or
    ``softplus(d_ap - d_an)`` when ``margin is None`` (soft margin); mean over anchors
    that have at least one negative.
    """

    def __init__(self, margin: float | None = 0.3) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        anchors = _anchors(features, labels)
        if anchors is None:
            return features.sum() * 0.0
        dist, pos, neg = anchors
        d_ap = dist.masked_fill(~pos, float("-inf")).amax(1)
        d_an = dist.masked_fill(~neg, float("inf")).amin(1)
        if self.margin is None:
            return F.softplus(d_ap - d_an).mean()
        return F.relu(d_ap - d_an + self.margin).mean()


def released_softmax(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """AGW's ``softmax_weights`` (loss.py): ``exp(x - m) · mask / (Σ exp(x - m) · mask + 1e-6)``
    with ``m`` the row maximum of ``x · mask``, masked-out entries counting as 0. For the
    negatives (``x = -d ≤ 0``) that maximum is 0, so nothing is shifted: once ``Σ exp(-d)`` nears
    1e-6 (all negatives beyond about 14 + ln |N|) the weights sum to less than 1."""
    m = mask.to(x.dtype)
    shift = (x * m).amax(dim=1, keepdim=True)
    e = torch.exp(x - shift) * m
    return e / (e.sum(dim=1, keepdim=True) + 1e-6)


class WeightedRegularizedTriplet(nn.Module):
    """AGW's weighted regularised triplet (no margin), methods.md §2.2.

    Per anchor i: ``w+_ij = softmax_{j in P_i}(d_ij)``, ``w-_ij = softmax_{j in N_i}(-d_ij)``,
    ``loss_i = softplus(sum_P w+ d - sum_N w- d)``; mean over anchors with a negative.
    As in the released code, P_i includes the anchor itself (distance ~0, tiny weight).
    ``softmax="exact"``: the softmax; ``"released"``: AGW's code (:func:`released_softmax`),
    whose ``+ 1e-6`` damps the negative weights at large distances.
    """

    def __init__(self, softmax: str = "exact") -> None:
        super().__init__()
        if softmax not in ("exact", "released"):
            raise UserError(f"weighted regularised triplet softmax {softmax!r}: use 'exact' or 'released'")
        self.softmax = softmax

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        anchors = _anchors(features, labels)
        if anchors is None:
            return features.sum() * 0.0
        dist, pos, neg = anchors
        if self.softmax == "released":
            w_pos, w_neg = released_softmax(dist * pos, pos), released_softmax(-dist * neg, neg)
        else:
            w_pos = torch.softmax(dist.masked_fill(~pos, float("-inf")), dim=1)
            w_neg = torch.softmax((-dist).masked_fill(~neg, float("-inf")), dim=1)
        furthest_positive = (w_pos * dist).sum(1)
        closest_negative = (w_neg * dist).sum(1)
        return F.softplus(furthest_positive - closest_negative).mean()


class DistillationMSE(nn.Module):
    """Squared L2 between student and (detached) teacher embeddings, ``(N, D)`` each.

    ``reduction="mean"``: ``(1/N) sum_i ||s_i - t_i||^2`` (Hafner's paper, Eq. 3; note: per
    sample, not per element). ``"sum"``: sum over batch and dimensions (Hafner's code).
    """

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in ("mean", "sum"):
            raise UserError(f"distillation reduction {reduction!r} is not supported; use 'mean' or 'sum'")
        self.reduction = reduction

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if student.shape != teacher.shape:
            raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} shapes differ")
        total = (student - teacher.detach()).pow(2).sum()
        return total / student.shape[0] if self.reduction == "mean" else total
