"""Two-stream baseline (Wu et al. 2017, the clean definition of methods.md §2.1).

One ResNet trunk per modality, no sharing in any conv layer (``backbone.<modality>.*``,
each built and, with ``model.pretrained``, loaded on its own), then one shared pooling,
embedding head and classifier. Each modality block of the batch runs through its own
trunk (so trunk BatchNorms see one modality only); the layer4 maps are concatenated in
batch order for the shared head and the losses (identity CE + optional triplet over the
whole cross-modal batch). Hafner's released variant alternated single-modality batches;
here every batch holds all modalities.
"""

from __future__ import annotations

import torch
from torch import nn

from crossreid.methods.base import MethodSetup, build_net, register_method
from crossreid.methods.streams import RoutedMethod
from crossreid.modality import Modality


@register_method("two_stream")
class TwoStream(RoutedMethod):
    def __init__(self, setup: MethodSetup) -> None:
        super().__init__(setup)
        nets = [build_net(setup.model, setup.num_classes) for _ in self.modalities]
        self.backbone = nn.ModuleDict({m.value: net.backbone for m, net in zip(self.modalities, nets)})
        self.pool, self.head = nets[0].pool, nets[0].head

    def route(self, images: torch.Tensor, modality: Modality) -> torch.Tensor:
        return self.backbone[modality.value](images)

    def shared(self, x: torch.Tensor) -> torch.Tensor:
        return x
