import math

import pytest
import torch

from crossreid.errors import UserError
from crossreid.losses import (
    BatchHardTriplet,
    DistillationMSE,
    IdentityLoss,
    WeightedRegularizedTriplet,
    pairwise_euclidean,
)

# four points on a line, two identities: distances are plain differences
POINTS = [0.0, 1.0, 3.0, 7.0]
LABELS = [0, 0, 1, 1]


def line_features(requires_grad: bool = True) -> torch.Tensor:
    x = torch.tensor([[p, 0.0] for p in POINTS])
    return x.requires_grad_(requires_grad)


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def groups(i: int, labels=LABELS):
    pos = [j for j in range(len(labels)) if labels[j] == labels[i]]
    neg = [j for j in range(len(labels)) if labels[j] != labels[i]]
    return pos, neg


def test_pairwise_euclidean_values():
    d = pairwise_euclidean(line_features(False))
    expected = torch.tensor([[abs(a - b) for b in POINTS] for a in POINTS])
    assert torch.allclose(d, expected, atol=1e-5)


def test_identity_loss_plain_and_smoothed():
    logits = torch.log(torch.tensor([[0.25, 0.75]])).requires_grad_(True)
    labels = torch.tensor([1])
    assert IdentityLoss()(logits, labels).item() == pytest.approx(-math.log(0.75), rel=1e-5)
    smoothed = IdentityLoss(0.2)(logits, labels)
    assert smoothed.item() == pytest.approx(-(0.1 * math.log(0.25) + 0.9 * math.log(0.75)), rel=1e-5)
    smoothed.backward()
    assert logits.grad.abs().sum() > 0


def test_identity_loss_rejects_bad_smoothing():
    with pytest.raises(UserError):
        IdentityLoss(1.0)


@pytest.mark.parametrize("margin", [0.3, None])
def test_batch_hard_triplet_matches_hand_computation(margin):
    # hardest positive / negative per anchor on the line 0, 1 | 3, 7
    d_ap = [1.0, 1.0, 4.0, 4.0]
    d_an = [3.0, 2.0, 2.0, 6.0]
    if margin is None:
        expected = sum(softplus(p - n) for p, n in zip(d_ap, d_an)) / 4
    else:
        expected = sum(max(0.0, p - n + margin) for p, n in zip(d_ap, d_an)) / 4
    x = line_features()
    loss = BatchHardTriplet(margin)(x, torch.tensor(LABELS))
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    loss.backward()
    assert x.grad.abs().sum() > 0


def test_batch_hard_triplet_uneven_layout_and_singleton():
    x = torch.tensor([[0.0], [1.0], [2.0], [10.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 0, 1])  # K = 3 and K = 1
    loss = BatchHardTriplet(margin=1.0)(x, labels)
    # anchors 0..2: hardest positive 2, 1, 2; hardest negative 10, 9, 8; singleton 3: d_ap 0, d_an 8
    assert loss.item() == pytest.approx(0.0, abs=1e-5)
    loss = BatchHardTriplet(margin=9.5)(x, labels)
    expected = ((2 - 10 + 9.5) + (1 - 9 + 9.5) + (2 - 8 + 9.5) + (0 - 8 + 9.5)) / 4
    assert loss.item() == pytest.approx(expected, abs=1e-4)


def test_triplets_without_negatives_are_zero_with_grad():
    x = torch.randn(4, 3, requires_grad=True)
    labels = torch.zeros(4, dtype=torch.long)
    for loss_fn in (BatchHardTriplet(), WeightedRegularizedTriplet()):
        loss = loss_fn(x, labels)
        assert loss.item() == 0.0
        loss.backward()


def wrt_by_hand(points, labels, released: bool = False) -> float:
    """``released``: AGW's code, weights exp(x - m) / (Σ exp(x - m) + 1e-6) with m the largest
    positive distance for the positives and 0 for the negatives (x = -d)."""
    total = 0.0
    for i, a in enumerate(points):
        pos, neg = groups(i, labels)
        dp = [abs(a - points[j]) for j in pos]
        dn = [abs(a - points[j]) for j in neg]
        shift, eps = (max(dp), 1e-6) if released else (0.0, 0.0)
        zp = sum(math.exp(d - shift) for d in dp) + eps
        zn = sum(math.exp(-d) for d in dn) + eps
        furthest = sum(math.exp(d - shift) / zp * d for d in dp)
        closest = sum(math.exp(-d) / zn * d for d in dn)
        total += softplus(furthest - closest)
    return total / len(points)


def test_weighted_regularized_triplet_matches_hand_computation():
    x = line_features()
    loss = WeightedRegularizedTriplet()(x, torch.tensor(LABELS))
    assert loss.item() == pytest.approx(wrt_by_hand(POINTS, LABELS), abs=1e-5)
    loss.backward()
    assert x.grad.abs().sum() > 0


def test_released_wrt_damps_far_negatives_and_equals_the_softmax_near():
    near = WeightedRegularizedTriplet("released")(line_features(), torch.tensor(LABELS))
    assert near.item() == pytest.approx(wrt_by_hand(POINTS, LABELS, released=True), abs=1e-5)
    assert near.item() == pytest.approx(wrt_by_hand(POINTS, LABELS), abs=1e-3)  # Σexp(-d) ≫ 1e-6: close
    points, labels = [0.0, 0.5, 20.0, 20.5], [0, 0, 1, 1]   # negatives 19.5-20.5 away: Σexp(-d) ≈ 1e-8
    x = torch.tensor(points).unsqueeze(1).requires_grad_()
    released = WeightedRegularizedTriplet("released")(x, torch.tensor(labels))
    assert released.item() == pytest.approx(wrt_by_hand(points, labels, released=True), rel=1e-4)
    exact = WeightedRegularizedTriplet()(x, torch.tensor(labels)).item()
    assert exact == pytest.approx(wrt_by_hand(points, labels), abs=1e-6) and exact < 1e-6
    assert released.item() > 0.3  # the damped negative weights leave a loss the softmax would not
    released.backward()
    assert x.grad.abs().sum() > 0
    with pytest.raises(UserError, match="exact"):
        WeightedRegularizedTriplet("shifted")


def test_distillation_mse_mean_is_per_sample_and_sum_is_total():
    student = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    teacher = torch.zeros(2, 2, requires_grad=True)
    assert DistillationMSE("sum")(student, teacher).item() == pytest.approx(30.0)
    loss = DistillationMSE("mean")(student, teacher)
    assert loss.item() == pytest.approx(15.0)
    loss.backward()
    assert torch.allclose(student.grad, student.detach())  # d/ds of ||s||^2 / 2
    assert teacher.grad is None


def test_distillation_mse_rejects_bad_input():
    with pytest.raises(UserError):
        DistillationMSE("elementwise")
    with pytest.raises(ValueError):
        DistillationMSE()(torch.zeros(2, 3), torch.zeros(2, 4))
