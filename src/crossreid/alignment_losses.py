"""Alignment losses of IDKL (methods.md §5.3, §5.5): symmetric KL, distance graphs, set-level
logits, the purifier's entropy-margin and modality-centroid hinges, the confuser's labels.

Rows of two aligned blocks (e.g. the visible and infrared rows of a modality-major batch)
are compared by index, so callers must pass row-aligned blocks (``check_aligned``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from crossreid.errors import UserError


def symmetric_kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(b) || softmax(a)) + KL(softmax(a) || softmax(b))``, row-wise softmax,
    summed over columns and divided by the number of rows ("batchmean"); no stop-gradient."""
    if a.shape != b.shape:
        raise ValueError(f"symmetric KL needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    la, lb = F.log_softmax(a.float(), dim=1), F.log_softmax(b.float(), dim=1)
    return (F.kl_div(la, lb, reduction="batchmean", log_target=True)
            + F.kl_div(lb, la, reduction="batchmean", log_target=True))


def distance_graph(features: torch.Tensor) -> torch.Tensor:
    """``(n, D) -> (n, n-1)``: Euclidean distances between rows (sqrt of the squared distance
    clamped at 1e-6, as the released code) with each row's distance to itself removed."""
    n = features.shape[0]
    if n < 2:
        raise ValueError(f"a distance graph needs at least 2 rows, got {n}")
    f = features.float()
    sq = f.pow(2).sum(1, keepdim=True) + f.pow(2).sum(1).unsqueeze(0) - 2.0 * f @ f.t()
    dist = sq.clamp(min=1e-6).sqrt()
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=f.device)
    return dist[off_diagonal].view(n, n - 1)


def graph_kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Symmetric KL between the distance graphs of two row-aligned feature sets (softmax over
    +distance, as released)."""
    return symmetric_kl(distance_graph(a), distance_graph(b))


def modality_and_branch_terms(divergence, shared_v: torch.Tensor, shared_i: torch.Tensor,
                              specific_v: torch.Tensor, specific_i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """IDKL's two alignments of row-aligned visible (v) / infrared (i) blocks: ``intra`` =
    d(shared_v, shared_i) across modalities, ``inter`` = d(shared_v, specific_v) +
    d(shared_i, specific_i) across branches, for a divergence d (``graph_kl``, ``symmetric_kl``)."""
    return (divergence(shared_v, shared_i),
            divergence(shared_v, specific_v) + divergence(shared_i, specific_i))


def set_level_logits(logits: torch.Tensor, images_per_id: int) -> torch.Tensor:
    """``(P*K, C) -> (K, P*C)``: the P consecutive K-row chunks (one per identity) side by side,
    so row j holds the j-th image of every identity."""
    rows, classes = logits.shape
    if images_per_id < 1 or rows % images_per_id:
        raise ValueError(f"{rows} rows do not split into chunks of {images_per_id}")
    p = rows // images_per_id
    return logits.reshape(p, images_per_id, classes).transpose(0, 1).reshape(images_per_id, p * classes)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy of the softmax of each row, ``(n, C) -> (n,)``."""
    logp = F.log_softmax(logits.float(), dim=1)
    return -(logp.exp() * logp).sum(1)


def entropy_margin_loss(logits: torch.Tensor, masked_logits: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """``mean(exp(relu(H(masked) - H(unmasked) + margin)) - 1)``: the masked feature must not be
    less confident about the identity than the unmasked one."""
    return (torch.exp(F.relu(entropy(masked_logits) - entropy(logits) + margin)) - 1.0).mean()


def modality_centroid_distances(features: torch.Tensor, labels: torch.Tensor,
                                infrared: torch.Tensor) -> torch.Tensor:
    """Per identity (sorted), the Euclidean distance between its visible and infrared mean features."""
    ids = torch.unique(labels)
    one_hot = (labels.unsqueeze(0) == ids.unsqueeze(1)).float()        # (I, n)
    centroids = []
    for mask in (~infrared, infrared):
        w = one_hot * mask.float().unsqueeze(0)
        count = w.sum(1, keepdim=True)
        if (count == 0).any():
            raise UserError("every identity in an IDKL batch needs visible and infrared images; "
                            "use the cross-modal identity sampler (train.images_per_id per modality)")
        centroids.append(w @ features.float() / count)
    return (centroids[0] - centroids[1]).pow(2).sum(1).sqrt()


def modality_centroid_hinge(features: torch.Tensor, masked_features: torch.Tensor, labels: torch.Tensor,
                            infrared: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """``mean_y relu(d_masked(y) - d(y) + margin)``: masking must bring an identity's
    visible and infrared centroids closer together."""
    d = modality_centroid_distances(features, labels, infrared)
    d_masked = modality_centroid_distances(masked_features, labels, infrared)
    return F.relu(d_masked - d + margin).mean()


def confuser_labels(infrared: torch.Tensor, row_in_block: torch.Tensor) -> torch.Tensor:
    """IDKL's fixed pseudo modality labels for the confuser, in a modality-major batch.

    The released code orders a batch (IR, visible) pair by pair and labels pair j
    (IR: 1, visible: 0) for even j and (IR: 0, visible: 1) for odd j (first half of the
    modality labels, each repeated twice, rolled by -1). Pair j is row j of both modality
    blocks here, so the label is the true one on even rows and flipped on odd rows.
    """
    return infrared.long() ^ (row_in_block.long() % 2)


def check_aligned(labels_a: torch.Tensor, labels_b: torch.Tensor, what: str = "batch") -> int:
    """Images per identity K of two modality blocks that hold the same identities row by row,
    each identity in one run of K consecutive rows; a UserError otherwise."""
    if labels_a.shape != labels_b.shape or not torch.equal(labels_a, labels_b):
        raise UserError(f"{what}: the visible and infrared rows do not show the same identities row by row; "
                        "IDKL needs the cross-modal identity sampler's aligned layout")
    k = int((labels_a == labels_a[0]).sum())
    runs = labels_a.view(-1, k) if labels_a.numel() % k == 0 else None
    if runs is None or not (runs == runs[:, :1]).all() or len(torch.unique(runs[:, 0])) != len(runs):
        raise UserError(f"{what}: identities are not in runs of {k} consecutive rows; "
                        "IDKL needs P identities x K images per modality, identity-grouped")
    return k
