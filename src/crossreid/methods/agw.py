"""AGW cross-modality baseline (Ye et al., TPAMI 2021; methods.md §2.2, §8.5).

A modality-specific stem (conv1/bn1/relu/maxpool, ``backbone.stems.<modality>``, copies
of the trunk's possibly pretrained stem) per modality, then shared layer1-4
(``backbone.shared``) with non-local blocks, pooling (``model.pooling``: ``gem`` gives
AGW's fixed p = 3), a BNNeck head and a bias-free classifier. The routed stem outputs
are concatenated before layer1, so the shared BatchNorms see the whole batch, as in the
released code.

Non-local blocks go after the last 2 blocks of layer2 and the last 3 of layer3 (fewer
when the layer is shorter): ResNet-50/34 layer2 [2, 3], layer3 [3, 4, 5]; ResNet-18
layer2 [0, 1], layer3 [0, 1]. Their width is C/2 (``nonlocal_inter="paper"``) or 1
(``"released"``, what the released cross-modal code computes).

Loss: identity CE on the BNNeck logits (``loss.id_weight``, ``loss.label_smoothing``;
AGW: 1 and 0) plus the weighted regularised triplet on the pre-BN features
(``loss.triplet_weight``; ``triplet="batch_hard"`` swaps in the margin triplet of AGW's
"base" variant; ``wrt_softmax="released"`` its weights as AGW's code computes them). Test
feature: the BN feature (``test_feature="bn"``, the reported one) or the pre-BN pooled one
(``"pool"``), L2-normalised unless ``normalize=false``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import nn

from crossreid.errors import UserError
from crossreid.losses import WeightedRegularizedTriplet
from crossreid.methods.base import Batch, MethodSetup, Stage, build_net, register_method
from crossreid.methods.step import LossTerms, StepOutput, reid_terms
from crossreid.methods.streams import RoutedMethod
from crossreid.modality import Modality
from crossreid.models import ResNet

NONLOCAL_LAST = {"layer2": 2, "layer3": 3}  # how many of each layer's last blocks get a non-local block


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    non_local: bool = True
    nonlocal_inter: Literal["paper", "released"] = "paper"   # C/2, or 1 channel
    triplet: Literal["wrt", "batch_hard"] = "wrt"
    wrt_softmax: Literal["exact", "released"] = "exact"     # released: AGW's Σexp(−d) + 1e-6 denominator
    test_feature: Literal["bn", "pool"] = "bn"
    normalize: bool = True                                   # L2-normalise test features


def nonlocal_positions(trunk: ResNet) -> dict[str, list[int]]:
    """Block indices followed by a non-local block (the last 2 of layer2, last 3 of layer3)."""
    out = {}
    for stage, last in NONLOCAL_LAST.items():
        n = len(getattr(trunk, stage))
        out[stage] = list(range(max(0, n - last), n))
    return out


@register_method("agw")
class AGW(RoutedMethod):
    Options = Options

    def __init__(self, setup: MethodSetup) -> None:
        super().__init__(setup)
        if setup.model.head != "bnneck":
            raise UserError(f"model.head={setup.model.head!r}: agw needs the BNNeck head; set model.head=bnneck")
        net = build_net(setup.model, setup.num_classes)
        trunk = net.backbone
        if self.options.non_local:
            trunk.add_nonlocal(nonlocal_positions(trunk), 1 if self.options.nonlocal_inter == "released" else None)
        stems = nn.ModuleDict({m.value: trunk.make_stem() for m in self.modalities})
        trunk.keep_stages("layer1")  # the trunk's own stem lives on in the per-modality copies
        self.backbone = nn.ModuleDict({"stems": stems, "shared": trunk})
        self.pool, self.head = net.pool, net.head
        self.wrt = WeightedRegularizedTriplet(self.options.wrt_softmax)

    def route(self, images: torch.Tensor, modality: Modality) -> torch.Tensor:
        return self.backbone["stems"][modality.value](images)

    def shared(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone["shared"].forward_stages(x, start="layer1")

    def training_step(self, batch: Batch, stage: Stage) -> StepOutput:
        return self.baseline_terms(batch.gather(self.forward_batch(batch)), batch.whole.labels).output()

    def baseline_terms(self, out, labels: torch.Tensor) -> LossTerms:
        """AGW's terms of head outputs ``out``: CE + WRT (or batch-hard triplet). Methods that
        extend AGW add their terms to these."""
        metric_loss = None if self.options.triplet == "batch_hard" else ("wrt", self.wrt)
        return reid_terms(out, labels, self.setup.loss, metric_loss)

    def embed(self, images: torch.Tensor, modality: Modality) -> torch.Tensor:
        out = self.forward_images(images, modality)
        feature = out.embedding if self.options.test_feature == "bn" else out.features
        return F.normalize(feature, dim=1) if self.options.normalize else feature
