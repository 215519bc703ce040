"""Multi-modality feature fusion and self-distillation (Wan, Li & Zhang, J. CAD&CG 2024):
a documented RECONSTRUCTION for visible-infrared re-ID (methods.md §6, §8.4).

Only the abstract is available. What it states, and this method honours:

- a dual-classifier attention fusion: two modality classifiers decide, per channel, which
  features are a modality's own and which are common; own channels get the larger fusion
  weight, common ones smaller, giving a multi-modality fusion feature per identity;
- a memory of each person's multi-view features;
- parameter-free, dynamically weighted self-distillation: the fusion feature and the
  multi-view feature guide the single-modality features; the weights are computed;
- single-modality inference: neither fusion nor memory is used at test time (``embed`` is
  AGW's).

Everything else is our choice, each an option (defaults from methods.md §6.2), on the AGW
network (this class extends ``agw``: per-modality stems, shared layer1-4 with non-local
blocks, GeM, BNNeck). docs/methods.md lists the options.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from crossreid.errors import UserError
from crossreid.methods.agw import AGW
from crossreid.methods.agw import Options as AGWOptions
from crossreid.methods.base import Batch, MethodSetup, Stage, StageContext, register_method
from crossreid.methods.memory import IdentityMemory
from crossreid.methods.step import LossTerms, StepOutput
from crossreid.models import HeadOutput


class Options(AGWOptions):
    fusion_teacher: bool = True                      # the fusion feature guides (and is CE-trained)
    memory_teacher: bool = True                      # the multi-view memory guides
    fusion_temperature: float = Field(1.0, gt=0)     # sharpness of the channel weights
    fusion_id_weight: float = Field(1.0, ge=0)       # CE of the fusion feature (shared classifier)
    modality_id_weight: float = Field(1.0, ge=0)     # CE of the two modality classifiers
    memory_views: Literal["camera", "modality"] = "camera"  # one slot per (modality, camera) or per modality
    memory_slots: int = Field(8, ge=1)               # slots per identity (>= views in the training pool)
    memory_momentum: float = Field(0.9, ge=0, lt=1)
    memory_init: Literal["first", "zero"] = "first"
    memory_teacher_views: Literal["all", "others"] = "all"  # average all filled views, or all but the row's own
    distill_temperature: float = Field(4.0, gt=0)
    distill_weight: float = Field(1.0, ge=0)
    dynamic_weight: Literal["gap", "relative", "ramp", "none"] = "gap"
    ramp_epochs: int = Field(10, ge=1)


# options that only mean something when another option has a given value
_DEPENDS = {"fusion_temperature": ("fusion_teacher", True), "fusion_id_weight": ("fusion_teacher", True),
            "memory_views": ("memory_teacher", True), "memory_slots": ("memory_teacher", True),
            "memory_momentum": ("memory_teacher", True), "memory_init": ("memory_teacher", True),
            "memory_teacher_views": ("memory_teacher", True), "ramp_epochs": ("dynamic_weight", "ramp")}


def check_options(o: Options) -> None:
    """A UserError for options that contradict each other."""
    if not (o.fusion_teacher or o.memory_teacher):
        raise UserError("method.options: fusion_teacher and memory_teacher are both false, so nothing is "
                        "distilled; keep one (or use method agw)")
    for key, (switch, needed) in _DEPENDS.items():
        if key in o.model_fields_set and getattr(o, switch) != needed:
            raise UserError(f"method.options.{key} is set but has no effect with {switch}="
                            f"{str(getattr(o, switch)).lower()}; remove one of the two")


def fusion_weights(weight_a: torch.Tensor, weight_b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Modality a's share of the fusion, ``(ids, channels)``, from the two classifiers' weights.

    A channel's importance to identity y under one classifier is ``|W[y, c]|`` over the row's
    mean ``|W[y, :]|`` (scale-free); the share is ``sigmoid((a_a - a_b) / temperature)``: a
    channel that one classifier relies on more (self-owned) comes mostly from that modality,
    one both rely on alike (common) gets 1/2 from each. Detached: the weights are computed.
    """
    def importance(w: torch.Tensor) -> torch.Tensor:
        a = w.detach().float().abs()
        return a / a.mean(1, keepdim=True).clamp_min(1e-12)

    return torch.sigmoid((importance(weight_a) - importance(weight_b)) / temperature)


def fuse(features: torch.Tensor, labels: torch.Tensor, in_a: torch.Tensor,
         share_a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, fusion features): for each identity with rows of both modalities,
    ``share_a[y] * mean_a + (1 - share_a[y]) * mean_b`` of its rows' features."""
    ids = labels.unique()
    member = labels.unsqueeze(0) == ids.unsqueeze(1)
    rows_a, rows_b = (member & in_a).to(features.dtype), (member & ~in_a).to(features.dtype)
    both = (rows_a.sum(1) > 0) & (rows_b.sum(1) > 0)
    ids, rows_a, rows_b = ids[both], rows_a[both], rows_b[both]
    mean_a = rows_a @ features / rows_a.sum(1, keepdim=True)
    mean_b = rows_b @ features / rows_b.sum(1, keepdim=True)
    share = share_a[ids].to(features.dtype)
    return ids, share * mean_a + (1 - share) * mean_b


def dynamic_weights(rule: str, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                    labels: torch.Tensor, epoch: int = 0, ramp_epochs: int = 1) -> torch.Tensor:
    """Per-row distillation weights, computed (no parameters, no gradient).

    ``gap``: ``max(0, p_teacher[y] - p_student[y])`` with softmax confidences at temperature 1,
    so a row whose student is already at least as confident on its identity gets 0;
    ``relative``: that gap over ``p_teacher[y]`` (in [0, 1], same zeros, independent of how
    small both confidences are); ``ramp``: ``min(1, (epoch + 1) / ramp_epochs)`` for every row; ``none``: 1.
    """
    n = len(labels)
    if rule in ("gap", "relative"):
        rows = torch.arange(n, device=labels.device)
        p_s = student_logits.detach().float().softmax(1)[rows, labels]
        p_t = teacher_logits.detach().float().softmax(1)[rows, labels]
        gap = (p_t - p_s).clamp_min(0)
        return gap if rule == "gap" else gap / p_t.clamp_min(1e-12)
    if rule == "ramp":
        return student_logits.new_full((n,), min(1.0, (epoch + 1) / ramp_epochs), dtype=torch.float32)
    return student_logits.new_ones(n, dtype=torch.float32)


@register_method("wan")
class WanFusion(AGW):
    """AGW + dual-classifier fusion teacher + multi-view memory teacher (a reconstruction)."""

    Options = Options

    def __init__(self, setup: MethodSetup) -> None:
        if len(setup.modalities) != 2:
            known = ", ".join(str(m) for m in setup.modalities)
            raise UserError(f"method 'wan' fuses exactly two modalities (visible and infrared), the run has "
                            f"[{known}]; set data.modalities=[rgb,ir]")
        super().__init__(setup)
        o, num_classes = self.options, self.num_classes
        check_options(o)
        dim = self.head.out_dim
        classifiers = {}
        for m in self.modalities:
            fc = nn.Linear(dim, num_classes, bias=False)
            nn.init.normal_(fc.weight, 0.0, 0.001)
            classifiers[m.value] = fc
        self.modality_classifiers = nn.ModuleDict(classifiers)
        self.memory = IdentityMemory(num_classes, o.memory_slots, dim, o.memory_momentum, o.memory_init) \
            if o.memory_teacher else None
        self._view_of: torch.Tensor | None = None      # training-pool index -> memory slot

    # -------------------------------------------------------------- views
    def on_stage_start(self, stage: Stage, context: StageContext) -> None:
        if self.memory is None:
            return
        by_modality = self.options.memory_views == "modality"
        keys = [(s.modality.value, None if by_modality else s.cam) if s.modality in self.modalities else None
                for s in context.store.samples]
        views = sorted({k for k in keys if k is not None}, key=str)
        if len(views) > self.memory.num_slots:
            raise UserError(f"method.options.memory_slots={self.memory.num_slots} but the training pool has "
                            f"{len(views)} views ({self.options.memory_views}); set memory_slots >= {len(views)}")
        slot = {k: i for i, k in enumerate(views)}
        self._view_of = torch.tensor([slot[k] if k is not None else -1 for k in keys], device=context.device)

    def unused_parameters(self, stage: Stage) -> bool:
        return super().unused_parameters(stage) or self.options.modality_id_weight == 0   # modality classifiers

    def views(self, batch: Batch) -> torch.Tensor:
        """Memory slot of each row of the batch."""
        if self._view_of is None or len(batch.indices) != len(batch.labels):
            raise RuntimeError("wan: batches need training-pool indices and on_stage_start must run first")
        return self._view_of[torch.as_tensor(batch.indices, device=self._view_of.device)].to(batch.labels.device)

    # -------------------------------------------------------------- teachers
    def neck_logits(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Shared classifier logits of ``x`` through the BNNeck, normalised with the (detached)
        statistics of the ``reference`` batch: no running-statistics update."""
        neck, ref = self.head.neck, reference.detach()
        z = (x - ref.mean(0)) * torch.rsqrt(ref.var(0, unbiased=False) + neck.eps) * neck.weight + neck.bias
        return self.head.classifier(z).float()

    def fusion(self, features: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, fusion features) of the batch's identities seen in both modalities."""
        a, b = self.modalities
        share_a = fusion_weights(self.modality_classifiers[a.value].weight,
                                 self.modality_classifiers[b.value].weight, self.options.fusion_temperature)
        in_a = torch.zeros(len(batch.labels), dtype=torch.bool, device=features.device)
        if a in batch.modalities:
            in_a[batch.block(a)] = True
        return fuse(features, batch.labels, in_a, share_a)

    def multiview_teacher(self, labels: torch.Tensor, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(multi-view feature per row, whether the row has one): the mean of the identity's filled
        slots (all of them, or all but the row's own view)."""
        stored = self.memory.get(labels)
        filled = self.memory.filled[labels.long()]
        if self.options.memory_teacher_views == "others":
            filled = filled & (torch.arange(self.memory.num_slots, device=views.device) != views.unsqueeze(1))
        count = filled.sum(1)
        mean = (stored * filled.unsqueeze(2)).sum(1) / count.clamp_min(1).unsqueeze(1)
        return mean, count > 0

    # -------------------------------------------------------------- training
    def training_step(self, batch: Batch, stage: Stage) -> StepOutput:
        mine = self.forward_batch(batch)
        o, out, whole = self.options, batch.gather(mine), batch.whole
        labels = whole.labels
        terms = self.baseline_terms(out, labels)
        if o.modality_id_weight > 0:
            terms.add("modality_id", self.modality_id_loss(out, whole), o.modality_id_weight)
        features = out.features.float()
        teachers: list[tuple[str, torch.Tensor, torch.Tensor]] = []   # (name, rows, teacher logits)
        if o.fusion_teacher:
            ids, fused = self.fusion(features, whole)
            if o.fusion_id_weight > 0:
                terms.add("fusion_id", F.cross_entropy(self.neck_logits(fused, features), ids) if len(ids)
                          else features.new_zeros(()), o.fusion_id_weight)
            with torch.no_grad():
                match = labels.unsqueeze(1) == ids.unsqueeze(0)          # row -> its identity's fusion feature
                rows = match.any(1).nonzero().squeeze(1)
                logits = self.neck_logits(fused.detach(), features)
                teachers.append(("fusion", rows, logits[match[rows].float().argmax(1)]))
        if self.memory is not None:
            with torch.no_grad():
                mv, has = self.multiview_teacher(labels, self.views(whole))
                teachers.append(("memory", has.nonzero().squeeze(1), self.neck_logits(mv[has], features)))
        terms.add("distill", self.distillation(out.logits.float(), labels, teachers, terms), o.distill_weight)
        return terms.output(features=mine.features.float())   # this process's rows: the memory gathers them

    def modality_id_loss(self, out: HeadOutput, batch: Batch) -> torch.Tensor:
        """Sum over modalities of the modality classifier's CE on that modality's BN features."""
        return sum(F.cross_entropy(self.modality_classifiers[m.value](out.embedding[batch.block(m)]).float(),
                                   batch.labels[batch.block(m)]) for m in batch.modalities)

    def distillation(self, student_logits: torch.Tensor, labels: torch.Tensor,
                     teachers: list[tuple[str, torch.Tensor, torch.Tensor]], terms: LossTerms) -> torch.Tensor:
        """``sum_teachers mean_rows w · T² KL(p_teacher || p_student)`` (rows without a teacher add 0);
        each teacher's part and mean weight are logged in ``terms``."""
        o, T = self.options, self.options.distill_temperature
        log_student = F.log_softmax(student_logits / T, dim=1)
        total = student_logits.new_zeros(())
        for name, rows, teacher_logits in teachers:
            log_teacher = F.log_softmax(teacher_logits / T, dim=1)
            kl = (log_teacher.exp() * (log_teacher - log_student[rows])).sum(1) * T * T
            w = dynamic_weights(o.dynamic_weight, student_logits[rows], teacher_logits, labels[rows],
                                self.epoch, o.ramp_epochs)
            part = terms.log(f"distill_{name}", (w * kl).sum() / len(labels))
            terms.log(f"weight_{name}", w.sum().detach() / len(labels))   # mean over all rows (0 without a teacher)
            total = total + part
        return total

    def after_step(self, batch: Batch, stage: Stage, output: StepOutput) -> None:
        if self.memory is not None:
            self.memory.update(output.state["features"], batch.labels, self.views(batch))   # gathers every rank's rows
