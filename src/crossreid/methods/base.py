"""What every method shares: the batch layout, stages, the registry, the network factory."""

from __future__ import annotations

import abc
import difflib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from crossreid.errors import UserError
from crossreid.modality import Modality

if TYPE_CHECKING:
    from crossreid.config import RunConfig


@dataclass
class Batch:
    """A training batch laid out modality-major (see CrossModalIdentitySampler).

    ``images`` holds ``len(modalities)`` blocks of ``rows`` images each; row ``i`` of
    every block shows the same identity (and, for paired methods, the same frame).
    """

    images: torch.Tensor
    labels: torch.Tensor
    modalities: list[Modality]
    rows: int

    def block(self, modality: Modality) -> slice:
        k = self.modalities.index(modality)
        return slice(k * self.rows, (k + 1) * self.rows)


@dataclass
class Stage:
    """One phase of training (e.g. teacher, then student) with its own epochs and frozen parts."""

    name: str
    epochs: int
    frozen: list[str] = field(default_factory=list)  # parameter-name prefixes that get no update


class Method(nn.Module, abc.ABC):
    """Base class: holds the networks, computes losses, says which net embeds which modality."""

    name: ClassVar[str]
    paired: ClassVar[bool] = False  # needs co-registered pairs in each batch row

    def __init__(self, cfg: "RunConfig", num_classes: int, modalities: list[Modality]) -> None:
        super().__init__()
        self.cfg, self.num_classes, self.modalities = cfg, num_classes, modalities

    def stages(self) -> list[Stage]:
        return [Stage("main", self.cfg.train.epochs)]

    @abc.abstractmethod
    def training_step(self, batch: Batch, stage: Stage) -> dict[str, torch.Tensor]:
        """Losses of one batch; the key ``loss`` is the one optimised."""

    @abc.abstractmethod
    def embed(self, images: torch.Tensor, modality: Modality) -> torch.Tensor:
        """Eval-mode retrieval features of images of one modality."""

    def param_groups(self, stage: Stage) -> list[dict]:
        """Parameter groups with their learning rates: heads at lr, backbones at lr × scale."""
        optim = self.cfg.optim
        frozen = tuple(stage.frozen)
        backbone, head = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad or (frozen and name.startswith(frozen)):
                continue
            (backbone if ".backbone." in f".{name}" else head).append(p)
        groups = [{"params": backbone, "lr": optim.lr * optim.backbone_lr_scale, "name": "backbone"},
                  {"params": head, "lr": optim.lr, "name": "head"}]
        return [g for g in groups if g["params"]]


def build_net(cfg: "RunConfig", num_classes: int) -> nn.Module:
    """The configured re-ID network (backbone + pooling + head)."""
    from crossreid.models import build_model

    m = cfg.model
    return build_model(arch=m.arch, num_classes=num_classes, last_stride=m.last_stride, pooling=m.pooling,
                       head=m.head, embedding_dim=m.embedding_dim, dropout=m.dropout, pretrained=m.pretrained)


_METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    if cls.name in _METHODS:
        raise ValueError(f"method {cls.name!r} registered twice")
    _METHODS[cls.name] = cls
    return cls


def _ensure_builtin() -> None:
    import crossreid.methods.one_stream  # noqa: F401


def method_names() -> list[str]:
    _ensure_builtin()
    return sorted(_METHODS)


def build_method(cfg: "RunConfig", num_classes: int, modalities: list[Modality]) -> Method:
    _ensure_builtin()
    name = cfg.method.name
    if name not in _METHODS:
        close = difflib.get_close_matches(name, list(_METHODS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(_METHODS))}"
        raise UserError(f"unknown method {name!r}{hint}")
    return _METHODS[name](cfg, num_classes, modalities)



def reid_losses(out, labels: torch.Tensor, loss_cfg) -> dict[str, torch.Tensor]:
    """Identity cross-entropy on the logits plus batch-hard triplet on the features."""
    from crossreid.losses import BatchHardTriplet, IdentityLoss

    losses: dict[str, torch.Tensor] = {}
    total = out.features.new_zeros((), dtype=torch.float32)
    if loss_cfg.id_weight > 0:
        losses["id"] = IdentityLoss(loss_cfg.label_smoothing)(out.logits.float(), labels)
        total = total + loss_cfg.id_weight * losses["id"]
    if loss_cfg.triplet_weight > 0:
        losses["triplet"] = BatchHardTriplet(loss_cfg.triplet_margin)(out.features.float(), labels)
        total = total + loss_cfg.triplet_weight * losses["triplet"]
    losses["loss"] = total
    return losses
