"""Shared skeleton of the routed baselines (zero-padding, two-stream, AGW).

Each is ``route`` (the modality-specific part: an input conversion, a whole trunk, or a
stem) followed by ``shared`` (the rest of the trunk, up to the layer4 map), one global
pooling ``pool`` and one embedding head ``head``. A batch is routed block by block
(``batch.block(modality)``) and the routed blocks are concatenated in batch order
before the shared part, so the shared layers' BatchNorms see the whole cross-modal
batch and the outputs stay aligned with ``batch.labels``.
"""

from __future__ import annotations

import abc

import torch

from crossreid.methods.base import Batch, Method, Stage
from crossreid.methods.step import StepOutput, reid_terms
from crossreid.modality import Modality
from crossreid.models import HeadOutput


class RoutedMethod(Method):
    """A method with ``route(images, modality)``, ``shared(x)``, ``pool`` and ``head``.

    Subclasses set ``self.pool`` and ``self.head``; parameters of the routed and shared
    trunk parts live under ``self.backbone`` so ``param_groups`` gives them the backbone lr.
    """

    gathers_global_batch = True

    @abc.abstractmethod
    def route(self, images: torch.Tensor, modality: Modality) -> torch.Tensor:
        """The modality-specific part, applied to images of one modality."""

    @abc.abstractmethod
    def shared(self, x: torch.Tensor) -> torch.Tensor:
        """The shared part, from routed tensors to the layer4 feature map."""

    def forward_batch(self, batch: Batch) -> HeadOutput:
        """Head outputs of a whole modality-major batch, rows in batch order."""
        routed = [self.route(batch.images[batch.block(m)], self.check_modality(m)) for m in batch.modalities]
        return self.head(self.pool(self.shared(torch.cat(routed))))

    def forward_images(self, images: torch.Tensor, modality: Modality | str) -> HeadOutput:
        """Head outputs of images of one modality."""
        return self.head(self.pool(self.shared(self.route(images, self.check_modality(modality)))))

    def training_step(self, batch: Batch, stage: Stage) -> StepOutput:
        return reid_terms(batch.gather(self.forward_batch(batch)), batch.whole.labels, self.setup.loss).output()

    def embed(self, images: torch.Tensor, modality: Modality) -> torch.Tensor:
        return self.forward_images(images, modality).embedding
