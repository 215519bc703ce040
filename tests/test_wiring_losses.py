"""The ``loss`` section by its numbers: label smoothing, the id and triplet weights and the margin
reach each baseline's optimised terms, and AGW's ``wrt_softmax`` its loss. References are written out
here (loops over the batch), and every term is recomputed from the head outputs of the same forward pass."""

import math

import pytest
import torch

from crossreid.config import LossConfig, load_config
from crossreid.data.pipeline import normalize
from crossreid.methods import Batch, build_method
from crossreid.methods.step import reid_terms
from crossreid.modality import Modality
from crossreid.models import HeadOutput

RGB, DEPTH = Modality.RGB, Modality.DEPTH


def smoothed_ce(logits: torch.Tensor, labels: torch.Tensor, eps: float) -> float:
    """Mean over rows of -(1 - eps) log p_y - eps / C * sum_c log p_c."""
    total = 0.0
    for row, y in zip(logits.double().tolist(), labels.tolist()):
        top = max(row)
        log_z = top + math.log(sum(math.exp(v - top) for v in row))
        logp = [v - log_z for v in row]
        total += -(1 - eps) * logp[y] - eps / len(row) * sum(logp)
    return total / len(labels)


def distances(x: torch.Tensor) -> list[list[float]]:
    rows = x.double().tolist()
    return [[math.sqrt(max(sum((a - b) ** 2 for a, b in zip(r, s)), 1e-12)) for s in rows] for r in rows]


def batch_hard(x: torch.Tensor, labels: torch.Tensor, margin: float | None) -> float:
    d, y = distances(x), labels.tolist()
    losses = []
    for i in range(len(y)):
        neg = [d[i][j] for j in range(len(y)) if y[j] != y[i]]
        if not neg:
            continue
        gap = max(d[i][j] for j in range(len(y)) if y[j] == y[i]) - min(neg)
        losses.append(math.log1p(math.exp(gap)) if margin is None else max(0.0, gap + margin))
    return sum(losses) / len(losses)


def wrt(x: torch.Tensor, labels: torch.Tensor) -> float:
    d, y = distances(x), labels.tolist()
    total = 0.0
    for i in range(len(y)):
        pos = [d[i][j] for j in range(len(y)) if y[j] == y[i]]
        neg = [d[i][j] for j in range(len(y)) if y[j] != y[i]]
        zp, zn = sum(math.exp(v) for v in pos), sum(math.exp(-v) for v in neg)
        gap = sum(math.exp(v) / zp * v for v in pos) - sum(math.exp(-v) / zn * v for v in neg)
        total += math.log1p(math.exp(gap))
    return total / len(y)


def head_output(seed=0, n=8, dim=5, classes=4):
    g = torch.Generator().manual_seed(seed)
    return HeadOutput(torch.randn(n, dim, generator=g), torch.randn(n, dim, generator=g),
                      3 * torch.randn(n, classes, generator=g))


LABELS = torch.tensor([0, 0, 1, 1, 2, 2, 3, 1])


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.4])
def test_label_smoothing_reaches_the_identity_term(eps):
    out = head_output()
    terms = reid_terms(out, LABELS, LossConfig(label_smoothing=eps, triplet_weight=0)).output().losses
    assert terms["id"].item() == pytest.approx(smoothed_ce(out.logits, LABELS, eps), rel=1e-5)
    assert set(terms) == {"id", "loss"}


@pytest.mark.parametrize("margin", [0.3, 1.5, None])
def test_triplet_margin_reaches_the_metric_term_on_the_pre_bn_features(margin):
    out = head_output()
    terms = reid_terms(out, LABELS, LossConfig(id_weight=0, triplet_margin=margin)).output().losses
    assert terms["triplet"].item() == pytest.approx(batch_hard(out.features, LABELS, margin), rel=1e-5)
    assert terms["triplet"].item() != pytest.approx(batch_hard(out.embedding, LABELS, margin), rel=1e-3)
    assert set(terms) == {"triplet", "loss"}  # a term of weight 0 is not computed, so not logged


def test_weights_scale_the_terms_in_the_total():
    out = head_output(seed=3)
    cfg = LossConfig(id_weight=0.7, triplet_weight=1.9, label_smoothing=0.2, triplet_margin=0.5)
    terms = reid_terms(out, LABELS, cfg).output().losses
    ce, tri = smoothed_ce(out.logits, LABELS, 0.2), batch_hard(out.features, LABELS, 0.5)
    assert terms["id"].item() == pytest.approx(ce, rel=1e-5)       # terms are logged unweighted ...
    assert terms["triplet"].item() == pytest.approx(tri, rel=1e-5)
    assert terms["loss"].item() == pytest.approx(0.7 * ce + 1.9 * tri, rel=1e-5)  # ... and weighted in the total


LOSS = ["loss.label_smoothing=0.3", "loss.id_weight=0.6", "loss.triplet_weight=1.7", "loss.triplet_margin=0.8"]


def make_batch(rows=6, seed=0) -> Batch:
    x = normalize(torch.rand(2 * rows, 3, 32, 16, generator=torch.Generator().manual_seed(seed)))
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    return Batch(x, labels.repeat(2), [RGB, DEPTH], rows)


@pytest.mark.parametrize("name, extra, metric", [
    ("one_stream", [], "triplet"),
    ("two_stream", [], "triplet"),
    ("zero_padding", [], "triplet"),
    ("agw", ["model.pooling=gem"], "wrt"),
    ("agw", ["model.pooling=gem", "method.options.triplet=batch_hard"], "triplet"),
])
def test_each_baseline_optimises_the_configured_terms(name, extra, metric):
    cfg = load_config(None, ["model.arch=resnet18", "model.base_width=16", f"method.name={name}", *LOSS, *extra])
    torch.manual_seed(0)
    method = build_method(cfg, 3, [RGB, DEPTH]).train()
    batch = make_batch()
    with torch.no_grad():
        out = method.net(batch.images) if name == "one_stream" else method.forward_batch(batch)
        terms = method.training_step(batch, method.stages()[0]).losses
    assert set(terms) == {"id", metric, "loss"}
    ce = smoothed_ce(out.logits, batch.labels, 0.3)
    ref = wrt(out.features, batch.labels) if metric == "wrt" else batch_hard(out.features, batch.labels, 0.8)
    assert terms["id"].item() == pytest.approx(ce, rel=1e-4)
    assert terms[metric].item() == pytest.approx(ref, rel=1e-4)
    assert terms["loss"].item() == pytest.approx(0.6 * ce + 1.7 * ref, rel=1e-4)


def test_released_softmax_by_hand():
    """AGW's softmax_weights: exp(x - m)·mask / (Σ exp(x - m)·mask + 1e-6), m = row max of x·mask."""
    from crossreid.losses import released_softmax

    x = [[0.0, 1.0, 2.0], [10.0, 20.0, 30.0], [-20.0, -21.0, -22.0], [-20.0, -21.0, 5.0]]
    mask = [[1, 1, 0], [1, 1, 1], [1, 1, 1], [1, 1, 0]]     # rows: shift 1, 30, -20 and 0 (a masked entry)
    expected = []
    for row, keep in zip(x, mask):
        m = max(v * k for v, k in zip(row, keep))
        e = [math.exp(v - m) * k for v, k in zip(row, keep)]
        expected.append([v / (sum(e) + 1e-6) for v in e])
    got = released_softmax(torch.tensor(x, dtype=torch.float64), torch.tensor(mask, dtype=torch.bool))
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=1e-9, atol=1e-15)
    assert sum(expected[3]) < 0.01                           # all far: the 1e-6 damps the weights


@pytest.mark.parametrize("softmax", ["exact", "released"])
def test_agws_wrt_softmax_option_reaches_its_loss(softmax):
    cfg = load_config(None, ["model.arch=resnet18", "model.base_width=16", "method.name=agw",
                             f"method.options.wrt_softmax={softmax}"])
    method = build_method(cfg, 3, [RGB, DEPTH])
    # negatives 19.5-20.5 apart: Σexp(-d) ≈ 1e-8, so the released weights sum to ~1 %
    x, labels = torch.tensor([[0.0], [0.5], [20.0], [20.5]]), torch.tensor([0, 0, 1, 1])
    loss = method.wrt(x, labels).item()
    assert loss == pytest.approx(wrt(x, labels), abs=1e-6) if softmax == "exact" else loss > 0.3


def test_pairwise_euclidean_between_two_sets_and_the_default_margin():
    from crossreid.losses import BatchHardTriplet, pairwise_euclidean

    x, y = torch.tensor([[0.0, 0.0], [3.0, 4.0]]), torch.tensor([[0.0, 1.0], [6.0, 8.0], [3.0, 0.0]])
    torch.testing.assert_close(pairwise_euclidean(x, y), torch.tensor([[1.0, 10.0, 3.0], [math.sqrt(18), 5.0, 4.0]]))
    # the class default is the config's default margin, 0.3: on a line, d_ap = 1 for every anchor and
    # d_an = 2.2, 1.2, 1.2, 2.2: relu(1 - d_an + 0.3) = 0, 0.1, 0.1, 0
    points, labels = torch.tensor([[0.0], [1.0], [2.2], [3.2]]), torch.tensor([0, 0, 1, 1])
    assert BatchHardTriplet()(points, labels).item() == pytest.approx(0.05, abs=1e-6)
    assert LossConfig().triplet_margin == 0.3
