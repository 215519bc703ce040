"""What every method shares: its setup, the batch layout, stages, the stage context, the registry,
the network factory. A method's loss terms and step output live in ``step.py``."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from crossreid.distributed import Dist, all_gather_grad
from crossreid.errors import UserError, explain_validation
from crossreid.methods.step import StepOutput
from crossreid.modality import Modality
from crossreid.registry import Registry

if TYPE_CHECKING:
    from crossreid.config import LossConfig, ModelConfig, RunConfig
    from crossreid.data.pipeline import ImageStore
    from crossreid.tensor_cache import TensorCache


def parse_options(model: type[BaseModel], values: dict, method: str) -> BaseModel:
    """Validate ``method.options`` with one clear line for an unknown key or a wrong value."""
    try:
        return model(**values)
    except ValidationError as exc:
        raise explain_validation(exc, model, f"method {method!r}", prefix="method.options") from None


@dataclass
class Batch:
    """A training batch laid out modality-major (see CrossModalIdentitySampler).

    ``images`` holds ``len(modalities)`` blocks of ``rows`` images each; row ``i`` of
    every block shows the same identity (and, for paired methods, the same frame).

    Under torchrun each process holds its share of the global batch (P / N identities, all
    their images, still modality-major). With ``train.batch_scope=global`` the trainer also
    sets ``whole``, the global batch's layout (its ``labels``, ``indices`` and ``rows``; no
    images), and :meth:`gather` brings a tensor of this process's rows to the whole global
    batch, so batch-level losses (triplet, WRT, alignment terms) see every identity, as in
    one process. Alone, or with ``batch_scope=per_rank``, ``whole`` is the batch itself and
    ``gather`` returns its input.
    """

    images: torch.Tensor
    labels: torch.Tensor
    modalities: list[Modality]
    rows: int
    indices: list[int] = field(default_factory=list)  # positions in the training pool
    global_layout: Batch | None = field(default=None, repr=False)  # set by the trainer: batch_scope=global

    def block(self, modality: Modality) -> slice:
        k = self.modalities.index(modality)
        return slice(k * self.rows, (k + 1) * self.rows)

    @property
    def whole(self) -> Batch:
        """The global batch's layout (this batch when it is the whole batch)."""
        return self.global_layout or self

    def gather(self, value):
        """``value`` for the whole global batch, in its row order: a tensor with a row per row of this
        batch (or of some of its blocks, e.g. one modality's), or a dataclass, dict, list or tuple of
        them (None stays None). Gradients flow back to each process's own rows
        (``crossreid.distributed.all_gather_grad``)."""
        if self.global_layout is None or value is None:
            return value
        if isinstance(value, torch.Tensor):
            world, blocks = len(self.global_layout.labels) // len(self.labels), len(value) // self.rows
            rows = all_gather_grad(value)  # process-major: [process][block][row]
            parts = rows.view(world, blocks, self.rows, *value.shape[1:]).transpose(0, 1)
            return parts.reshape(len(rows), *value.shape[1:])
        if dataclasses.is_dataclass(value):
            return dataclasses.replace(value, **{f.name: self.gather(getattr(value, f.name))
                                                 for f in dataclasses.fields(value) if f.init})
        if isinstance(value, dict):
            return {k: self.gather(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.gather(v) for v in value)
        raise TypeError(f"Batch.gather: cannot gather a {type(value).__name__}")


@dataclass
class Stage:
    """One phase of training (e.g. teacher, then student).

    ``modalities`` (default: all the run trains on) fills the batches, ``paired`` asks
    for co-registered rows, ``frozen`` lists parameter-name prefixes that get no update,
    ``lr`` replaces the configured base learning rate, and ``val_directions`` (default:
    ``eval.directions``) scores model selection after each epoch.
    """

    name: str
    epochs: int
    modalities: list[Modality] | None = None
    paired: bool = False
    frozen: list[str] = field(default_factory=list)
    lr: float | None = None
    val_directions: list[str] | None = None


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class MethodSetup:
    """What a method is built from: its own config sections and the few facts of the run it
    checks, never the whole run config (optimiser, schedule, data and engine switches belong
    to the engine). :func:`build_method` makes it from a config with :meth:`of`."""

    model: ModelConfig          # ``model.*``: the network ``build_net`` makes
    loss: LossConfig            # ``loss.*``: weights, smoothing and margin of the re-ID terms
    options: dict                 # ``method.options``, typed by the method's ``Options``
    num_classes: int              # training identities
    modalities: list[Modality]    # what the run trains on
    epochs: int                   # ``train.epochs``: a stage's length unless the method sets its own
    ids_per_batch: int            # ``train.ids_per_batch`` (P), for methods that split a batch's identities
    images_per_id: int = 1        # ``train.images_per_id`` (K per modality): a batch is P × K × modalities images

    @classmethod
    def of(cls, cfg: RunConfig, num_classes: int, modalities: list[Modality]) -> MethodSetup:
        return cls(cfg.model, cfg.loss, dict(cfg.method.options), num_classes, list(modalities),
                   cfg.train.epochs, cfg.train.ids_per_batch, cfg.train.images_per_id)


class Embed(Protocol):
    """The embedding service's signature (see :class:`StageContext`)."""

    def __call__(self, rows: Sequence[int], fn: Callable[[torch.Tensor, Modality], torch.Tensor] | None = None
                 ) -> torch.Tensor: ...


@dataclass(frozen=True)
class StageContext:
    """What the trainer hands a method when a stage starts: the training pool and the services
    a method may call. A method needs nothing else of the engine: it never runs its own
    extraction loop, writes files or asks the environment for its process group.

    ``embed(rows, fn=None)``: float32 CPU features of training-pool rows ``rows``, through
    ``fn(images, modality)`` (default ``method.embed``), in eval mode, batched
    (``eval.batch_size``), on the device (``retrieval/extract.py``'s ``embed_rows``).
    ``cache.get_or_compute(name, compute)``: tensors stored once per run (``cache/``).
    """

    store: ImageStore          # the training pool's decoded images (``store.samples``)
    device: torch.device
    resumed: bool                # True when the stage continues from a checkpoint mid-way
    embed: Embed                 # the embedding service
    cache: TensorCache | None = None  # the run's tensor cache
    dist: Dist = Dist()          # this process's rank and world (``crossreid.distributed``)


class Method(nn.Module, abc.ABC):
    """Base class: holds the networks, computes losses, says which net embeds which modality.

    ``Options`` (a pydantic model) types the config's ``method.options``; ``name`` is the one
    it is registered under (set by ``@register_method``).
    """

    name: ClassVar[str]
    Options: ClassVar[type[BaseModel]] = NoOptions
    # True when ``training_step`` computes its losses on ``batch.gather(...)`` outputs and
    # ``batch.whole``, so that ``train.batch_scope=global`` can give them the global batch.
    gathers_global_batch: ClassVar[bool] = False

    def __init__(self, setup: MethodSetup) -> None:
        super().__init__()
        self.setup, self.num_classes, self.modalities = setup, setup.num_classes, list(setup.modalities)
        self.options = parse_options(self.Options, setup.options, self.name)
        self.epoch = 0

    @property
    def embeddable(self) -> list[Modality]:
        """Modalities this method can embed at test time."""
        return list(self.modalities)

    def check_modality(self, modality: Modality | str) -> Modality:
        """``modality`` parsed; a UserError if this method cannot embed it."""
        m = Modality.parse(modality)
        if m not in self.embeddable:
            known = ", ".join(str(k) for k in self.embeddable)
            raise UserError(f"method {self.name!r} was built for modalities [{known}], not {m}; "
                            f"add {m} to data.modalities and retrain")
        return m

    def stages(self) -> list[Stage]:
        return [Stage("main", self.setup.epochs)]

    def unused_parameters(self, stage: Stage) -> bool:
        """Whether a trainable parameter of ``stage`` may get no gradient in a step, so that DDP must
        look for such parameters every step (``find_unused_parameters``, a cost). Default: when the
        identity loss is off (``loss.id_weight=0``), which leaves a classifier unused."""
        return self.setup.loss.id_weight == 0

    def on_stage_start(self, stage: Stage, context: StageContext) -> None:
        """Called before a stage's first epoch (e.g. copy teacher weights, cache targets)."""

    @abc.abstractmethod
    def training_step(self, batch: Batch, stage: Stage) -> StepOutput:
        """The loss terms of one batch, declared through ``LossTerms`` (``methods/step.py``):
        ``return terms.output(**state)``; ``state`` holds what ``after_step`` needs."""

    def on_epoch_start(self, stage: Stage, epoch: int) -> None:
        """Called before each epoch (0-based within the stage), resumed ones included; the
        default records it as ``self.epoch`` for epoch-dependent losses (ramps, start epochs)."""
        self.epoch = epoch

    def after_step(self, batch: Batch, stage: Stage, output: StepOutput) -> None:
        """Called after each optimiser step, outside autograd, on every rank with that rank's
        rows of the batch and the step's ``output`` (what ``training_step`` returned: its
        ``state`` holds the step's detached tensors), e.g. to fold features into a memory bank,
        EMA or prototypes. State kept in registered buffers is checkpointed and restored with
        the weights."""

    @abc.abstractmethod
    def embed(self, images: torch.Tensor, modality: Modality) -> torch.Tensor:
        """Eval-mode retrieval features of images of one modality."""

    def retrieval_settings(self) -> dict:
        """How ``embed`` makes its test feature where that matters for comparisons (e.g.
        ``{"l2_normalised": True}``); recorded with every test result. Default: nothing."""
        return {}

    def backbone_modules(self) -> list[nn.Module]:
        """The trunks, trained at ``lr × optim.backbone_lr_scale``. Default: every submodule held
        under the attribute name ``backbone`` (``self.backbone``, ``self.teacher.backbone``, ...);
        override to declare others."""
        return [m for name, m in self.named_modules() if name.rpartition(".")[2] == "backbone"]

    def param_groups(self, stage: Stage) -> list[dict]:
        """The stage's trainable parameters in two named groups, ``backbone`` (what
        ``backbone_modules`` holds) and ``head`` (the rest); the engine sets their learning
        rates (the stage's, the trunk's × ``optim.backbone_lr_scale``)."""
        frozen = tuple(stage.frozen)
        trunk = {id(p) for m in self.backbone_modules() for p in m.parameters()}
        backbone, head = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad or (frozen and name.startswith(frozen)):
                continue
            (backbone if id(p) in trunk else head).append(p)
        groups = [{"params": backbone, "name": "backbone"}, {"params": head, "name": "head"}]
        return [g for g in groups if g["params"]]


def parameters_from(module: nn.Module, first: str, prefix: str = "") -> list[str]:
    """Names (with ``prefix``) of ``module``'s parameters from ``first`` on, in registration order:
    the one way to freeze "from a parameter name" (``Stage(frozen=...)`` takes these as prefixes).
    ``first`` may name a parameter or a module (its first parameter)."""
    names = [n for n, _ in module.named_parameters()]
    start = next((i for i, n in enumerate(names) if n == first or n.startswith(first + ".")), None)
    if start is None:
        raise UserError(f"no parameter {first!r} in {type(module).__name__} (e.g. {names[len(names) // 2]!r})")
    return [prefix + n for n in names[start:]]


def build_net(m: ModelConfig, num_classes: int, **overrides) -> nn.Module:
    """The re-ID network ``model.*`` describes (backbone + pooling + head); ``overrides`` go to ``build_model``."""
    from crossreid.models import build_model

    kwargs = dict(arch=m.arch, num_classes=num_classes, last_stride=m.last_stride, pooling=m.pooling,
                  head=m.head, embedding_dim=m.embedding_dim, dropout=m.dropout, pretrained=m.pretrained,
                  pretrained_strict=m.pretrained_strict, base_width=m.base_width)
    return build_model(**{**kwargs, **overrides})


METHODS: Registry[type[Method]] = Registry("method")


def register_method(name: str):
    """``@register_method("name")``: registers a Method subclass under ``name``, which it stamps as
    the class's ``name``. Built-in method modules are imported by ``crossreid.methods``' ``__init__``."""
    return METHODS.decorator(name)


def method_names() -> list[str]:
    return METHODS.names()


def build_method(cfg: RunConfig, num_classes: int, modalities: list[Modality]) -> Method:
    """The configured method (``method.name``), built from its :class:`MethodSetup`: the one way to build one."""
    return METHODS.get(cfg.method.name)(MethodSetup.of(cfg, num_classes, modalities))
