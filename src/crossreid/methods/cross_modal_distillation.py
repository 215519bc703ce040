"""Cross-modal distillation with gated attention (Hafner et al., CVIU 2022).

Step I ("teacher"): a single-modality network F is trained on the source modality
(identity loss and/or triplet, as ``loss`` configures). Step II ("student"): G, of the
same architecture, starts as a copy of F; the layers from the cut point (default
``backbone.layer3.0.conv3``, the released code's) up to and including the embedding are
frozen, and the rest learns, on the target modality, to regress F's embedding of the
co-registered source image (MSE). At test time F embeds the source modality and G the
target one, into one Euclidean space.

Cross-modal gated attention (optional, step II only): at a mid-level stage of G the
map is multiplied by ``1 + sigmoid(pool_c(guide))``, the guide being F's map of the
paired source image at the same stage; at test time G gates itself with its own map.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from crossreid.errors import UserError
from crossreid.losses import DistillationMSE
from crossreid.methods.base import (
    Batch,
    Method,
    MethodSetup,
    Stage,
    StageContext,
    build_net,
    parameters_from,
    register_method,
)
from crossreid.methods.step import LossTerms, StepOutput, reid_terms
from crossreid.modality import Modality
from crossreid.models import STAGES, GatedAttention


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = "depth"                  # teacher modality (the paper's best direction: depth -> RGB)
    target: str = "rgb"                    # student modality
    teacher_epochs: int | None = Field(None, ge=1)   # default: train.epochs
    student_epochs: int | None = Field(None, ge=1)   # default: train.epochs
    student_lr: float | None = Field(None, gt=0)     # default: optim.lr
    copy_weights: bool = True              # Table 5 ablation switch
    freeze: bool = True                    # Table 5 ablation switch
    freeze_from: str = "auto"              # first frozen parameter; auto = the released code's rule
    frozen_bn: Literal["update", "freeze"] = "update"  # running stats of frozen BNs (code: update)
    targets: Literal["online", "offline"] = "online"   # teacher embeddings per batch, or cached once
    reduction: Literal["mean", "sum"] = "mean"         # paper Eq. 3: mean over the batch; code: sum
    student_dropout: bool = False          # the released code drops out the student embedding before the MSE
    attention: bool = False
    attention_stage: str = "layer2"        # where G is gated (paper: "mid-level"; our default)
    attention_pool: Literal["mean", "max"] = "mean"  # channel pooling (paper silent; our default)


@register_method("cross_modal_distillation")
class CrossModalDistillation(Method):
    Options = Options
    gathers_global_batch = True

    def __init__(self, setup: MethodSetup) -> None:
        super().__init__(setup)
        o, modalities = self.options, self.modalities
        self.source, self.target = Modality.parse(o.source), Modality.parse(o.target)
        if self.source == self.target:
            raise UserError("method.options: source and target modalities must differ")
        missing = [str(m) for m in (self.source, self.target) if m not in modalities]
        if missing:
            raise UserError(f"cross_modal_distillation needs {', '.join(missing)} images; add them to "
                            "data.modalities or use a dataset that has them")
        if o.attention_stage not in STAGES[:-1]:
            raise UserError(f"method.options.attention_stage: {o.attention_stage!r} must be one of {STAGES[:-1]}")
        self.teacher = build_net(setup.model, setup.num_classes)
        self.student = build_net(setup.model, setup.num_classes)
        self.gate = GatedAttention(o.attention_pool) if o.attention else None
        self.mse = DistillationMSE(o.reduction)
        self._cache: torch.Tensor | None = None
        self._cache_rows: dict[int, int] = {}
        self._stage = "teacher"

    @property
    def embeddable(self) -> list[Modality]:
        return [self.source, self.target]

    def stages(self) -> list[Stage]:
        o, epochs = self.options, self.setup.epochs
        frozen_student = self._frozen_student_names() if o.freeze else []
        return [
            Stage("teacher", o.teacher_epochs or epochs, modalities=[self.source], frozen=["student."],
                  val_directions=[f"{self.source}->{self.source}"]),
            Stage("student", o.student_epochs or epochs, modalities=[self.source, self.target], paired=True,
                  frozen=["teacher."] + frozen_student, lr=o.student_lr,
                  val_directions=[f"{self.target}->{self.source}", f"{self.source}->{self.target}"]),
        ]

    def _cut_point(self) -> str:
        """The released code froze from the first parameter with layer3's output width:
        ``backbone.layer3.0.conv3`` for ResNet-50, ``backbone.layer3.0.conv1`` for ResNet-18/34."""
        if self.options.freeze_from != "auto":
            return self.options.freeze_from
        layer3 = self.student.backbone.layer3
        width = layer3[-1].last_bn().num_features
        return next(f"backbone.layer3.{name}" for name, p in layer3.named_parameters()
                    if p.dim() == 4 and p.shape[0] == width)

    def _frozen_student_names(self) -> list[str]:
        try:
            return parameters_from(self.student, self._cut_point(), prefix="student.")
        except UserError as exc:
            raise UserError(f"method.options.freeze_from: {exc} (e.g. 'backbone.layer3.0.conv3', or 'auto')") \
                from None

    # ---------------------------------------------------------------- stages
    def on_stage_start(self, stage: Stage, context: StageContext) -> None:
        self._stage = stage.name
        if stage.name != "student":
            return
        if not context.resumed and self.options.copy_weights:
            self.student.load_state_dict(self.teacher.state_dict())
        if self.options.targets == "offline":
            if context.cache is None:
                raise UserError("method.options.targets=offline needs the engine's run cache; train with "
                                "crossreid train (or set method.options.targets=online)")
            self._cache_targets(context)

    def train(self, mode: bool = True) -> CrossModalDistillation:
        super().train(mode)
        if mode and self._stage == "student":
            self.teacher.eval()  # frozen teacher: no dropout, fixed BN statistics
            if self.options.freeze and self.options.frozen_bn == "freeze":
                for name, module in self.student.named_modules():
                    if isinstance(module, nn.modules.batchnorm._BatchNorm) and self._is_frozen(f"student.{name}"):
                        module.eval()
        return self

    def _is_frozen(self, module_name: str) -> bool:
        params = dict(self.named_parameters())
        return f"{module_name}.weight" in params and not params[f"{module_name}.weight"].requires_grad

    def _teacher_key(self) -> str:
        digest = hashlib.sha256()
        for name, tensor in sorted(self.teacher.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    @torch.no_grad()
    def _cache_targets(self, context: StageContext) -> None:
        """Teacher embeddings of every source training image (test-time view, the context's
        embedding service), kept in the run's cache under a key of the teacher's weights: a
        changed teacher gets a new entry."""
        rows = [i for i, s in enumerate(context.store.samples) if s.modality is self.source]
        name = f"teacher-targets-{self._teacher_key()}"
        cached = context.cache.get_or_compute(name, lambda: {
            "indices": torch.tensor(rows),
            "targets": context.embed(rows, lambda images, _: self.teacher(images).embedding)})
        if cached["indices"].tolist() != rows:
            raise UserError(f"{context.cache.path(name)}: teacher-target cache does not match the training pool; "
                            "delete it")
        self._cache, self._cache_rows = cached["targets"], {r: k for k, r in enumerate(rows)}

    def unused_parameters(self, stage: Stage) -> bool:
        # The MSE never reaches G's classifier, which is frozen only with the layers above the cut point.
        return super().unused_parameters(stage) or (stage.name == "student" and not self.options.freeze)

    # -------------------------------------------------------------- training
    def training_step(self, batch: Batch, stage: Stage) -> StepOutput:
        if stage.name == "teacher":
            return reid_terms(batch.gather(self.teacher(batch.images)), batch.whole.labels, self.setup.loss).output()
        src, tgt = batch.images[batch.block(self.source)], batch.images[batch.block(self.target)]
        guide = None
        if self.gate is not None:
            with torch.no_grad():
                guide = self.teacher.backbone.forward_stages(src, "stem", self.options.attention_stage)
        embedding = self.student_forward(tgt, guide).embedding
        if self.options.student_dropout:
            embedding = self.student.head.dropout(embedding)
        whole = batch.whole
        with torch.no_grad():
            if self.options.targets == "offline":
                src_rows = whole.indices[whole.block(self.source)]
                target = self._cache[[self._cache_rows[i] for i in src_rows]].to(embedding.device)
            else:
                target = batch.gather(self.teacher(src).embedding)
        terms = LossTerms()
        terms.add("mse", self.mse(batch.gather(embedding).float(), target.float()))
        return terms.output()

    def student_forward(self, images: torch.Tensor, guide: torch.Tensor | None = None):
        """G's forward; with attention, gated by ``guide`` (training) or by itself (test)."""
        if self.gate is None:
            return self.student(images)
        stage = self.options.attention_stage
        x = self.student.backbone.forward_stages(images, "stem", stage)
        x = self.gate(x, guide)
        nxt = STAGES[STAGES.index(stage) + 1]
        return self.student.forward_head(self.student.backbone.forward_stages(x, nxt, "layer4"))

    def embed(self, images: torch.Tensor, modality: Modality) -> torch.Tensor:
        if self.check_modality(modality) == self.source:
            return self.teacher(images).embedding
        return self.student_forward(images).embedding
