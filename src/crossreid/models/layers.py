"""Building blocks shared by the methods: pooling, BNNeck, non-local block, gated attention.

Shapes: feature maps are ``(B, C, H, W)``, pooled features ``(B, C)``. Nothing here uses
``.view`` so channels-last inputs work unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from crossreid.errors import UserError


class AvgPool(nn.Module):
    """Global average pooling ``(B, C, H, W) -> (B, C)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1))


class GeM(nn.Module):
    """Generalised-mean pooling: ``(mean_hw clamp(x, eps)^p)^(1/p)``, ``(B, C, H, W) -> (B, C)``.

    ``p = 1`` is average pooling, ``p -> inf`` approaches max pooling. AGW uses a fixed
    ``p = 3``; ``learnable=True`` makes ``p`` a parameter (one scalar shared by all channels).
    The clamp keeps fractional powers defined; it only changes values below ``eps``.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learnable: bool = False) -> None:
        super().__init__()
        if p <= 0:
            raise UserError(f"GeM p must be positive, got {p}; set pooling p to e.g. 3.0")
        self.eps = eps
        self.learnable = learnable
        if learnable:
            self.p = nn.Parameter(torch.tensor(float(p)))
        else:
            self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x^p overflows float16 for moderate activations: pool in float32, return the input dtype
        pooled = x.float().clamp(min=self.eps).pow(self.p).mean(dim=(-2, -1)).pow(1.0 / self.p)
        return pooled.to(x.dtype)

    def extra_repr(self) -> str:
        p = float(self.p)
        return f"p={p:g}, eps={self.eps:g}, learnable={self.learnable}"


def build_pooling(name: str, p: float = 3.0, learnable: bool = False) -> nn.Module:
    """``"avg"`` or ``"gem"`` (with ``p`` and ``learnable``)."""
    if name == "avg":
        return AvgPool()
    if name == "gem":
        return GeM(p=p, learnable=learnable)
    raise UserError(f"unknown pooling {name!r}; use 'avg' or 'gem'")


class BNNeck(nn.BatchNorm1d):
    """BatchNorm1d with its bias frozen at zero and weight ~ N(1, 0.01) (AGW / BoT neck)."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        nn.init.normal_(self.weight, 1.0, 0.01)
        nn.init.zeros_(self.bias)
        self.bias.requires_grad_(False)


class NonLocalBlock(nn.Module):
    """Dot-product non-local block (Wang et al.) as used by AGW.

    ``z = x + BN(W(y))`` with ``y = (theta(x)^T phi(x) / N) g(x)``, ``N = H*W``, no softmax.
    ``W``'s BatchNorm has weight and bias 0, so the block is the identity at initialisation.
    ``inter_channels`` defaults to ``C // 2`` (the paper's intent); AGW's released cross-modal
    code effectively uses 1.
    """

    def __init__(self, in_channels: int, inter_channels: int | None = None) -> None:
        super().__init__()
        inter = in_channels // 2 if inter_channels is None else int(inter_channels)
        if not 1 <= inter <= in_channels:
            raise UserError(f"non-local inter_channels must be in 1..{in_channels}, got {inter}")
        self.inter_channels = inter
        self.g = nn.Conv2d(in_channels, inter, kernel_size=1)
        self.theta = nn.Conv2d(in_channels, inter, kernel_size=1)
        self.phi = nn.Conv2d(in_channels, inter, kernel_size=1)
        self.W = nn.Sequential(nn.Conv2d(inter, in_channels, kernel_size=1), nn.BatchNorm2d(in_channels))
        nn.init.zeros_(self.W[1].weight)
        nn.init.zeros_(self.W[1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        g = self.g(x).flatten(2).transpose(1, 2)  # B, N, I
        theta = self.theta(x).flatten(2).transpose(1, 2)  # B, N, I
        phi = self.phi(x).flatten(2)  # B, I, N
        affinity = torch.bmm(theta, phi) / (h * w)  # B, N, N
        y = torch.bmm(affinity, g).transpose(1, 2).reshape(b, self.inter_channels, h, w)
        return x + self.W(y)


class GatedAttention(nn.Module):
    """Cross-modal gated attention (Hafner et al. 2022, methods.md §3.5).

    ``forward(x, guide)`` returns ``x * (1 + sigmoid(pool_c(guide)))``: the guide map (the
    paired depth feature in training) is pooled over channels to ``(B, 1, H, W)``. With
    ``guide=None`` the gate comes from ``x`` itself (self-attention, used at test time).
    ``pool`` is ``"mean"`` (recommended default) or ``"max"``.
    """

    def __init__(self, pool: str = "mean") -> None:
        super().__init__()
        if pool not in ("mean", "max"):
            raise UserError(f"unknown attention pool {pool!r}; use 'mean' or 'max'")
        self.pool = pool

    def forward(self, x: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        source = x if guide is None else guide
        if source.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"guide map {tuple(source.shape)} does not match feature map {tuple(x.shape)}")
        if self.pool == "mean":
            pooled = source.mean(dim=1, keepdim=True)
        else:
            pooled = source.amax(dim=1, keepdim=True)
        return x * (1.0 + torch.sigmoid(pooled))
