"""One-stream baseline (Wu et al. 2017): one fully shared network for every modality.

Single-channel modalities are replicated to three channels; every image of the batch
goes through the same network, trained with identity cross-entropy (optional label
smoothing) plus batch-hard triplet over the whole cross-modal batch.
"""

from __future__ import annotations

import torch

from crossreid.methods.base import Batch, Method, MethodSetup, Stage, build_net, register_method
from crossreid.methods.step import StepOutput, reid_terms
from crossreid.modality import Modality


@register_method("one_stream")
class OneStream(Method):
    gathers_global_batch = True

    def __init__(self, setup: MethodSetup) -> None:
        super().__init__(setup)
        self.net = build_net(setup.model, setup.num_classes)

    def training_step(self, batch: Batch, stage: Stage) -> StepOutput:
        return reid_terms(batch.gather(self.net(batch.images)), batch.whole.labels, self.setup.loss).output()

    def embed(self, images: torch.Tensor, modality: Modality) -> torch.Tensor:
        self.check_modality(modality)
        return self.net(images).embedding
