"""One-stream baseline (Wu et al. 2017): one fully shared network for every modality.

Single-channel modalities are replicated to three channels; every image of the batch
goes through the same network, trained with identity cross-entropy (optional label
smoothing) plus batch-hard triplet over the whole cross-modal batch.
"""

from __future__ import annotations

import torch

from crossreid.methods.base import Batch, Method, Stage, build_net, register_method, reid_losses
from crossreid.modality import Modality


@register_method
class OneStream(Method):
    name = "one_stream"

    def __init__(self, cfg, num_classes: int, modalities: list[Modality]) -> None:
        super().__init__(cfg, num_classes, modalities)
        self.net = build_net(cfg, num_classes)

    def training_step(self, batch: Batch, stage: Stage) -> dict[str, torch.Tensor]:
        return reid_losses(self.net(batch.images), batch.labels, self.cfg.loss)

    def embed(self, images: torch.Tensor, modality: Modality) -> torch.Tensor:
        self.check_modality(modality)
        return self.net(images).embedding
