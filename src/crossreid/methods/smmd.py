"""Self-mimic mutual distillation (Zhang et al., ICME 2022): a RECONSTRUCTION (methods.md §4, §8.2).

Only the abstract exists. Certain: intra-modality alignment first (each sample mimics its
identity's prototype in its own modality: "self-mimic"), then cross-modality alignment
(each sample mimics the same identity's prototype of the other modality, both directions:
"mutual distillation"); prototypes per identity and modality are globally viewed and
stable (momentum buffers of detached features, ``IdentityMemory``, one slot per modality)
and distinguishable (they are themselves classified through the shared classifier); no
network parameter beyond the baseline's. Everything else is an option (defaults: §4.2).

Network, sampler and AGW losses are the AGW method's (subclass); the baseline defaults to
AGW without non-local blocks (``non_local: false``). Added per batch, with p(z) =
softmax(z / T) and ``W·BN`` the shared BNNeck + classifier:

- prototype CE ("distinguishable"): CE(W·BN(P^m[y]), y) for each row's own prototype;
- self-mimic: sum over modalities m of the mean over rows x of m of
  T² KL(p(W·BN(P^m[y_x])) ‖ p(logits(x)));
- mutual (from ``mutual_start_epoch`` on): the same with the other modality's prototype.

Teacher distributions are detached, so these two terms move only the samples' features;
prototypes never receive a gradient (memory reads are detached). Rows whose prototype has
never been filled are skipped. After every optimiser step the memory folds in the step's
detached features (all ranks' rows, so DDP ranks keep identical prototypes).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from crossreid.errors import UserError
from crossreid.methods.agw import AGW
from crossreid.methods.agw import Options as AGWOptions
from crossreid.methods.base import Batch, MethodSetup, Stage, StageContext, register_method
from crossreid.methods.memory import IdentityMemory
from crossreid.methods.step import StepOutput

MEMORY_KEYS = ("prototypes.features", "prototypes.filled")


class Options(AGWOptions):
    non_local: bool = False                                         # baseline: AGW without non-local (§4.2)
    prototype_level: Literal["pool", "bn"] = "pool"                 # pre-BN pooled feature, or the BN feature
    mimic: Literal["distribution", "feature"] = "distribution"      # KL through W·BN at T, or squared error
    temperature: float = Field(4.0, gt=0)
    prototype_init: Literal["class_means", "zero"] = "class_means"  # one eval pass, or warm-up from zero
    momentum: float = Field(0.9, ge=0, lt=1)
    self_mimic_weight: float = Field(1.0, ge=0)
    mutual_weight: float = Field(1.0, ge=0)
    prototype_weight: float = Field(1.0, ge=0)                      # CE of the prototypes ("distinguishable")
    mutual_start_epoch: int = Field(10, ge=0)                       # intra-modality alignment alone before it


def mimic_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per row T² · KL(softmax(teacher / T) ‖ softmax(student / T)); the teacher is detached."""
    log_p_teacher = F.log_softmax(teacher_logits.detach().float() / temperature, dim=1)
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    return (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(1) * temperature ** 2


def sum_of_modality_means(values: torch.Tensor, slots: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Σ over slots of the mean of ``values`` over that slot's valid rows (slots without one add 0)."""
    total = values.new_zeros(())
    for slot in slots.unique():
        rows = (slots == slot) & valid
        if rows.any():
            total = total + values[rows].mean()
    return total


@register_method("smmd")
class SMMD(AGW):
    Options = Options

    def __init__(self, setup: MethodSetup) -> None:
        super().__init__(setup)
        o, epochs = self.options, setup.epochs
        if len(self.modalities) != 2:
            raise UserError(f"data.modalities={[m.value for m in self.modalities]}: smmd distils between exactly "
                            "two modalities; set data.modalities=[rgb, ir]")
        if o.mutual_weight > 0 and o.mutual_start_epoch >= epochs:
            raise UserError(f"method.options.mutual_start_epoch={o.mutual_start_epoch} is beyond the last epoch "
                            f"(train.epochs={epochs}, epochs 0..{epochs - 1}); set it below "
                            f"{epochs}, or mutual_weight=0 to train without the mutual term")
        init = "first" if o.prototype_init == "class_means" else "zero"
        self.prototypes = IdentityMemory(self.num_classes, len(self.modalities), self.head.out_dim, o.momentum, init)

    # ------------------------------------------------------------ prototypes
    def slots_of(self, batch: Batch) -> torch.Tensor:
        """Memory slot (the modality's index in ``self.modalities``) of each row of a batch."""
        per_block = [torch.full((batch.rows,), self.modalities.index(m), dtype=torch.long)
                     for m in batch.modalities]
        return torch.cat(per_block).to(batch.labels.device)

    def prototype_logits(self, prototypes: torch.Tensor) -> torch.Tensor:
        """``W·BN(P)`` through the shared head, BN with its running statistics (the prototypes are not
        a batch; nothing is updated); BN-level prototypes go straight to the classifier."""
        head = self.head
        if self.options.prototype_level == "pool":
            neck = head.neck
            prototypes = F.batch_norm(prototypes, neck.running_mean, neck.running_var, neck.weight, neck.bias,
                                      training=False, eps=neck.eps)
        return head.classifier(prototypes).float()

    def level(self, out) -> torch.Tensor:
        """The head output the prototypes are made of."""
        return out.features if self.options.prototype_level == "pool" else out.embedding

    @torch.no_grad()
    def init_prototypes(self, context: StageContext) -> None:
        """Class means of one eval-mode pass over the training images through the context's
        embedding service (each rank embeds every world-th image; the memory gathers them).
        Labels: ascending training person ids, as ``Catalog.label_map`` (the store holds
        exactly the training pool)."""
        samples, d, device = context.store.samples, context.dist, context.device
        label = {pid: i for i, pid in enumerate(sorted({s.pid for s in samples}))}
        mine = range(d.rank, len(samples), d.world)
        rows = [i for m in self.modalities for i in mine if samples[i].modality == m]   # modality by modality
        features = context.embed(rows, lambda images, m: self.level(self.forward_images(images, m))) if rows \
            else torch.zeros(0, self.prototypes.dim)
        ids = torch.tensor([label[samples[i].pid] for i in rows], dtype=torch.long, device=device)
        slots = torch.tensor([self.modalities.index(samples[i].modality) for i in rows], dtype=torch.long,
                             device=device)
        self.prototypes.update(features.to(device), ids, slots)

    def on_stage_start(self, stage: Stage, context: StageContext) -> None:
        if self.options.prototype_init == "class_means" and not context.resumed:
            self.init_prototypes(context)

    def after_step(self, batch: Batch, stage: Stage, output: StepOutput) -> None:
        self.prototypes.update(output.state["prototype_features"], batch.labels, self.slots_of(batch))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        missing = [k for k in MEMORY_KEYS if k not in state_dict]
        if missing:
            raise UserError(f"checkpoint has no SMMD prototype memory ({', '.join(missing)}): it was not written "
                            "by smmd; resume an smmd run folder, or start a new run without --resume")
        return super().load_state_dict(state_dict, strict, assign)

    # ------------------------------------------------------------ losses
    def training_step(self, batch: Batch, stage: Stage) -> StepOutput:
        mine = self.forward_batch(batch)
        out, whole = batch.gather(mine), batch.whole
        terms = self.baseline_terms(out, whole.labels)
        distilled = self.distillation_losses(out.logits, self.level(out), whole.labels, self.slots_of(whole))
        o = self.options
        for key, weight in (("prototype_ce", o.prototype_weight), ("self_mimic", o.self_mimic_weight),
                            ("mutual", o.mutual_weight)):
            terms.add(key, distilled[key], weight)
        return terms.output(prototype_features=self.level(mine))  # this process's rows: the memory gathers them

    def distillation_losses(self, logits: torch.Tensor, features: torch.Tensor, labels: torch.Tensor,
                            slots: torch.Tensor) -> dict[str, torch.Tensor]:
        """Prototype CE, self-mimic and mutual terms of a batch (rows: ``logits``, prototype-level
        ``features``, ``labels``, memory ``slots``); ``mutual`` is 0 before ``mutual_start_epoch``."""
        o = self.options
        other = 1 - slots
        own_proto, other_proto = self.prototypes.get(labels, slots), self.prototypes.get(labels, other)
        own_ok, other_ok = self.prototypes.filled[labels, slots], self.prototypes.filled[labels, other]
        own_logits = self.prototype_logits(own_proto)
        zero = logits.new_zeros((), dtype=torch.float32)
        terms = {"prototype_ce": F.cross_entropy(own_logits[own_ok], labels[own_ok]) if own_ok.any() else zero}

        def mimic(proto: torch.Tensor, proto_logits: torch.Tensor | None, valid: torch.Tensor) -> torch.Tensor:
            if o.mimic == "distribution":
                per_row = mimic_kl(logits, proto_logits, o.temperature)
            else:
                per_row = (features.float() - proto).pow(2).mean(1)
            return sum_of_modality_means(per_row, slots, valid)

        terms["self_mimic"] = mimic(own_proto, own_logits, own_ok) if o.self_mimic_weight > 0 else zero
        if o.mutual_weight > 0 and self.epoch >= o.mutual_start_epoch:
            other_logits = self.prototype_logits(other_proto) if o.mimic == "distribution" else None
            terms["mutual"] = mimic(other_proto, other_logits, other_ok)
        else:
            terms["mutual"] = zero
        return terms
