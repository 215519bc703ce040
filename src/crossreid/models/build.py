"""``ReIDNet`` = ResNet trunk + global pooling + embedding head, built from plain kwargs.

Modality routing is not done here: a method composes one or more nets per modality
(e.g. a modality-specific stem from ``backbone.make_stem()`` with shared layers).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from crossreid.errors import UserError
from crossreid.models.heads import BNNeckHead, EmbeddingHead, HeadOutput
from crossreid.models.hub import SCRATCH, resolve_pretrained
from crossreid.models.layers import build_pooling
from crossreid.models.resnet import ResNet, build_resnet
from crossreid.models.weights import LoadReport, load_weights

HEADS = ("bnneck", "embedding")


class ReIDNet(nn.Module):
    """``forward(x) -> HeadOutput``; parameter names ``backbone.*``, ``pool.*``, ``head.*``."""

    def __init__(self, backbone: ResNet, pool: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.pool = pool
        self.head = head
        self.weights_report: LoadReport | None = None

    @property
    def embedding_dim(self) -> int:
        return self.head.out_dim

    def forward_head(self, feature_map: torch.Tensor) -> HeadOutput:
        """Pool a layer4 feature map and run the head (after a custom partial trunk pass)."""
        return self.head(self.pool(feature_map))

    def forward(self, x: torch.Tensor) -> HeadOutput:
        return self.forward_head(self.backbone(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Retrieval embedding in eval mode, without gradients; the previous mode is restored."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                return self(x).embedding
        finally:
            self.train(was_training)


def build_model(
    arch: str = "resnet50",
    num_classes: int = 0,
    last_stride: int = 1,
    pooling: str = "gem",
    head: str = "bnneck",
    embedding_dim: int | None = None,
    dropout: float = 0.5,
    pretrained: str | os.PathLike | None = None,
    pretrained_strict: bool = True,
    gem_p: float = 3.0,
    gem_learnable: bool = False,
    zero_init_residual: bool = False,
    nonlocal_after: Mapping[str, Sequence[int]] | None = None,
    nonlocal_inter: int | None = None,
    base_width: int = 64,
) -> ReIDNet:
    """Build a ``ReIDNet`` from plain values (as a config section would give them).

    ``head="bnneck"`` (AGW/BoT; ``embedding_dim`` adds a projection) or ``"embedding"``
    (Hafner's FC-BN-ReLU-Dropout head; ``embedding_dim`` defaults to 128).
    ``num_classes=0`` builds no classifier (inference only). ``pretrained`` initialises the
    backbone: ``imagenet`` / ``imagenet-v1`` / ``imagenet-v2`` (torchvision's published file,
    fetched into torch hub's cache, ``models/hub.py``), ``none`` / None (from scratch) or a
    local weights file; it loads strictly unless ``pretrained_strict=False``, and its key
    report is kept in ``weights_report``. ``base_width`` is the trunk's base width (64:
    standard; others train from scratch only).
    """
    if pretrained is not None and str(pretrained) != SCRATCH and base_width != 64:
        raise UserError(f"model.pretrained={pretrained}: ImageNet ResNet weights fit model.base_width=64 only, "
                        f"not {base_width}; set model.base_width=64 or model.pretrained=none")
    backbone = build_resnet(arch, last_stride=last_stride, zero_init_residual=zero_init_residual,
                            nonlocal_after=nonlocal_after, nonlocal_inter=nonlocal_inter, base_width=base_width)
    pool = build_pooling(pooling, p=gem_p, learnable=gem_learnable)
    dim = backbone.out_channels
    if head == "bnneck":
        head_module: nn.Module = BNNeckHead(dim, num_classes, embedding_dim)
    elif head == "embedding":
        head_module = EmbeddingHead(dim, num_classes, embedding_dim or 128, dropout)
    else:
        raise UserError(f"unknown head {head!r}; use one of: {', '.join(HEADS)}")
    model = ReIDNet(backbone, pool, head_module)
    source = resolve_pretrained(None if pretrained is None else str(pretrained), arch)
    if source is not None:
        model.weights_report = load_weights(backbone, source, strict=pretrained_strict)
    return model


def freeze_from(module: nn.Module, first: str) -> list[str]:
    """Freeze every parameter from ``first`` on, in registration order; return their names.

    ``first`` is a parameter name or a module prefix, e.g. ``"backbone.layer3.0.conv3"``
    (Hafner's step II freezes from there to the embedding). Only ``requires_grad`` changes:
    BatchNorm running statistics still update in train mode, as in the released code.
    """
    names = [name for name, _ in module.named_parameters()]
    start = next((i for i, n in enumerate(names) if n == first or n.startswith(first + ".")), None)
    if start is None:
        raise ValueError(f"no parameter named {first!r} (or under it) in {type(module).__name__}")
    frozen = names[start:]
    params = dict(module.named_parameters())
    for name in frozen:
        params[name].requires_grad_(False)
    return frozen
