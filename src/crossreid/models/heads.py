"""Embedding heads over a pooled feature ``(B, in_dim)``; both return a ``HeadOutput``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from crossreid.models.layers import BNNeck


@dataclass
class HeadOutput:
    """What a head (and ``ReIDNet``) returns.

    features: the metric-learning feature, input of triplet-type losses
        (BNNeckHead: pre-BN feature; EmbeddingHead: the post-ReLU embedding).
    embedding: the retrieval / distillation vector, never dropped out
        (BNNeckHead: BN feature; EmbeddingHead: post-ReLU D-vector).
    logits: identity logits, only in training mode and with ``num_classes > 0``, else None.
    """

    features: torch.Tensor
    embedding: torch.Tensor
    logits: torch.Tensor | None = None


def _classifier(dim: int, num_classes: int, bias: bool) -> nn.Linear | None:
    if num_classes <= 0:
        return None
    fc = nn.Linear(dim, num_classes, bias=bias)
    nn.init.normal_(fc.weight, 0.0, 0.001)
    if bias:
        nn.init.zeros_(fc.bias)
    return fc


def _projection(in_dim: int, out_dim: int) -> nn.Linear:
    fc = nn.Linear(in_dim, out_dim)
    nn.init.kaiming_normal_(fc.weight, mode="fan_out")
    nn.init.zeros_(fc.bias)
    return fc


class BNNeckHead(nn.Module):
    """[optional Linear(in_dim -> embedding_dim)] -> BNNeck -> bias-free classifier N(0, 0.001).

    Training: features = pre-BN vector, logits from the BN vector. Eval: embedding = BN vector.
    """

    def __init__(self, in_dim: int, num_classes: int, embedding_dim: int | None = None) -> None:
        super().__init__()
        self.projection = _projection(in_dim, embedding_dim) if embedding_dim else None
        self.out_dim = embedding_dim or in_dim
        self.neck = BNNeck(self.out_dim)
        self.classifier = _classifier(self.out_dim, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> HeadOutput:
        features = x if self.projection is None else self.projection(x)
        embedding = self.neck(features)
        logits = self.classifier(embedding) if self.training and self.classifier is not None else None
        return HeadOutput(features, embedding, logits)


class EmbeddingHead(nn.Module):
    """Hafner et al.'s softmax head: FC -> BN -> ReLU -> Dropout -> classifier.

    FC(in_dim -> D) Kaiming fan_out, bias 0; BatchNorm1d(D) weight 1, bias 0; classifier
    FC(D -> C) N(0, 0.001), bias 0. The embedding is the post-ReLU D-vector (non-negative);
    dropout only feeds the classifier. Hafner's step II applies ``self.dropout`` to the
    student's embedding before the MSE; a method reproducing that calls it explicitly.
    """

    def __init__(self, in_dim: int, num_classes: int, embedding_dim: int = 128, dropout: float = 0.5) -> None:
        super().__init__()
        self.fc = _projection(in_dim, embedding_dim)
        self.bn = nn.BatchNorm1d(embedding_dim)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.classifier = _classifier(embedding_dim, num_classes, bias=True)
        self.out_dim = embedding_dim

    def forward(self, x: torch.Tensor) -> HeadOutput:
        embedding = self.relu(self.bn(self.fc(x)))
        logits = None
        if self.training and self.classifier is not None:
            logits = self.classifier(self.dropout(embedding))
        return HeadOutput(embedding, embedding, logits)
