"""Deep zero-padding baseline (Wu et al. 2017, as Hafner et al. implemented it for RGB-D).

One fully shared network whose 3-channel input reserves a channel per modality: RGB in
channel 0, IR in channel 1, depth in channel 2 (Hafner: RGB -> R, depth -> B; IR takes
the free G channel). Batches arrive ImageNet-normalised with single-channel modalities
replicated, so each image is converted as follows (see ``zero_pad``):

1. undo the normalisation: ``pixel_c = x_c * std_c + mean_c`` (values in [0, 1]);
2. grey = ``0.299 R + 0.587 G + 0.114 B`` (ITU-R 601 luma, Pillow's ``convert("L")``;
   for a replicated depth/IR image this is the image itself);
3. channel ``k`` of the modality gets ``(grey - mean_k) / std_k``;
4. the other channels are 0 in the network input (``padding="input"``, default: the
   unused stem filters contribute nothing), or black pixels normalised, i.e. the
   constant ``-mean_c / std_c`` (``padding="pixel"``, exactly Hafner's released code).

Loss: identity cross-entropy plus optional batch-hard triplet (``loss`` section).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict

from crossreid.data.pipeline import IMAGENET_MEAN, IMAGENET_STD
from crossreid.methods.base import MethodSetup, build_net, register_method
from crossreid.methods.streams import RoutedMethod
from crossreid.modality import Modality

CHANNEL = {Modality.RGB: 0, Modality.IR: 1, Modality.DEPTH: 2}
LUMA = (0.299, 0.587, 0.114)


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    padding: Literal["input", "pixel"] = "input"   # what the other channels hold (module docstring)


def zero_pad(images: torch.Tensor, modality: Modality, padding: str = "input") -> torch.Tensor:
    """ImageNet-normalised ``(B, 3, H, W)`` images -> the zero-padded input of ``modality``."""
    shape = (1, 3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device).view(shape)
    std = torch.tensor(IMAGENET_STD, dtype=images.dtype, device=images.device).view(shape)
    luma = torch.tensor(LUMA, dtype=images.dtype, device=images.device).view(shape)
    grey = ((images * std + mean) * luma).sum(1)
    if padding == "input":
        out = torch.zeros_like(images)
    else:
        out = (-mean / std).expand_as(images).clone()
    k = CHANNEL[modality]
    out[:, k] = (grey - mean[0, k]) / std[0, k]
    return out


@register_method("zero_padding")
class ZeroPadding(RoutedMethod):
    Options = Options

    def __init__(self, setup: MethodSetup) -> None:
        super().__init__(setup)
        net = build_net(setup.model, setup.num_classes)
        self.backbone, self.pool, self.head = net.backbone, net.pool, net.head

    def route(self, images: torch.Tensor, modality: Modality) -> torch.Tensor:
        return zero_pad(images, modality, self.options.padding)

    def shared(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)
