"""IDKL's IN-guided information purifier and its MLP modality classifier (methods.md §5.2-5.3).

``InstanceNormPurifier`` takes a feature map X ``(B, C, h, w)`` and returns, besides the
purified map ``M_IN·M_F·(X + IN(X))``, the intermediate maps its two losses need. The
masks are per position (no spatial pooling): each is a 1x1 conv C -> C/16 -> ReLU -> 1x1
conv C/16 -> C -> sigmoid, ``M_IN`` computed from ``Z = IN(X)`` and ``M_F`` from ``X``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class PurifierOutput:
    """``out`` = ``M_IN * M_F * (X + Z)``; ``x``/``x_masked`` = X / ``M_F * X``;
    ``z``/``z_masked`` = ``Z = IN(X)`` / ``M_IN * Z``; all ``(B, C, h, w)``."""

    out: torch.Tensor
    x: torch.Tensor
    x_masked: torch.Tensor
    z: torch.Tensor
    z_masked: torch.Tensor


def channel_mask(channels: int, reduction: int = 16) -> nn.Sequential:
    """Per-position channel attention: 1x1 conv C -> C/r, ReLU, 1x1 conv C/r -> C, sigmoid (no biases)."""
    hidden = max(1, channels // reduction)
    return nn.Sequential(nn.Conv2d(channels, hidden, kernel_size=1, bias=False), nn.ReLU(inplace=True),
                         nn.Conv2d(hidden, channels, kernel_size=1, bias=False), nn.Sigmoid())


class InstanceNormPurifier(nn.Module):
    """IN-guided information purifier: ``Z = IN(X)`` (affine, running statistics),
    ``M_IN = mask_in(Z)``, ``M_F = mask_x(X)``, output ``M_IN·(M_F·X) + M_F·(M_IN·Z)``."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=True, track_running_stats=True)
        self.mask_in = channel_mask(channels, reduction)
        self.mask_x = channel_mask(channels, reduction)

    def forward(self, x: torch.Tensor) -> PurifierOutput:
        z = self.norm(x)
        m_in, m_x = self.mask_in(z), self.mask_x(x)
        z_masked, x_masked = m_in * z, m_x * x
        return PurifierOutput(m_in * x_masked + m_x * z_masked, x, x_masked, z, z_masked)


class ModalityClassifier(nn.Sequential):
    """IDKL's modality discriminator / confuser: Linear(dim -> 100) BN ReLU Dropout(0.5),
    Linear(100 -> 100) BN ReLU Dropout(0.5), Linear(100 -> classes); PyTorch default init."""

    def __init__(self, dim: int, hidden: int = 100, classes: int = 2, dropout: float = 0.5) -> None:
        super().__init__(
            nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, classes))
