"""IDKL (Ren & Zhang, CVPR 2024), as the released code computes it (methods.md §5, §8.3).

Dual one-stream network: one trunk (``backbone.shared``: stem, layer1-2 shared by both
branches, then the modality-shared layer3-4) and a second layer3-4 copy
(``backbone.specific``, a copy of the trunk cut with ``keep_stages("layer3", "layer4")``),
both initialised from the same ``model.pretrained`` file, last stride 1, both fed with
both modalities. The specific branch's map goes through the
IN-guided purifier (``models/purifier.py``); both maps are GeM-pooled (p = 3) and get
their own BNNeck (bias frozen at 0, weight 1 as released) and bias-free classifier.

Losses (``alignment_losses.py``; the TGSA and CSA weights follow the released code's rule
keyed to the batch size, :func:`released_weights`, unless given as options):
CE on both branches and batch-hard triplet (``loss.triplet_margin``, 1.3) on both pre-BN
features; modality discriminator on the specific BN feature (true labels) and confuser
on the shared BN feature (fixed pseudo labels, no gradient reversal); purifier losses
(entropy margin through an extra classifier never trained with CE, modality-centroid
hinge); TGSA on distance graphs of pre-BN features and CSA on logits, sample and set level.
Test feature: the shared branch's BN feature only, L2-normalised if ``normalize``.

The batch is modality-major (``CrossModalIdentitySampler``): visible row r and infrared
row r show the same identity, each identity in a run of K rows; anything else is an error.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from crossreid.alignment_losses import (
    check_aligned,
    confuser_labels,
    entropy_margin_loss,
    graph_kl,
    modality_and_branch_terms,
    modality_centroid_hinge,
    set_level_logits,
    symmetric_kl,
)
from crossreid.errors import UserError
from crossreid.losses import BatchHardTriplet
from crossreid.methods.base import Batch, Method, MethodSetup, Stage, build_net, register_method
from crossreid.methods.step import LossTerms, StepOutput
from crossreid.modality import Modality
from crossreid.models import BNNeck, GeM
from crossreid.models.purifier import InstanceNormPurifier, ModalityClassifier

# The released code's loss weights, chosen by comparing the batch size with a hard-coded 120
# (``feat.size(0) == 120`` in models/baseline.py): its SYSU-MM01 / LLCM batch, then any other.
RELEASED_BATCH = 120
RELEASED_WEIGHTS = {
    True: {"tgsa_intra_weight": 1.0, "tgsa_inter_weight": 0.6, "tgsa_mixed_terms": True, "csa_inter_weight": 0.8},
    False: {"tgsa_intra_weight": 0.1, "tgsa_inter_weight": 0.1, "tgsa_mixed_terms": False, "csa_inter_weight": 0.3},
}


def released_weights(batch_size: int) -> dict:
    """The TGSA / CSA weights the released code uses at ``batch_size`` images a step: at 120, TGSA
    intra (three terms) + 0.6 inter and CSA inter 0.8; otherwise 0.1 × (TGSA's first intra term +
    inter), the two mixed terms off, and CSA inter 0.3."""
    return dict(RELEASED_WEIGHTS[batch_size == RELEASED_BATCH])


class Options(BaseModel):
    """Defaults: the released settings; the four weights left unset (None) follow the released
    batch-size rule (:func:`released_weights`)."""

    model_config = ConfigDict(extra="forbid")

    purifier: bool = True                                    # False: no purifier module and no L_IP
    purifier_weight: float = Field(0.1, ge=0)                # on L_ent + L_cen
    purifier_margin: float = 0.0                             # margin of both purifier hinges
    modality_losses: bool = True                             # discriminator (specific) + confuser (shared)
    tgsa: bool = True                                        # released: on for SYSU/LLCM, off for RegDB
    tgsa_intra_weight: float | None = Field(None, ge=0)   # visible vs IR graphs of the shared space
    tgsa_inter_weight: float | None = Field(None, ge=0)   # specific -> shared graphs per modality
    tgsa_mixed_terms: bool | None = None                  # the two terms with the mixed half-V/half-IR set
    csa_sample: bool = True                                  # CSA on the logits ("bg_kl")
    csa_set: bool = True                                     # CSA on the set-level logits ("sm_kl")
    csa_intra_weight: float = Field(1.0, ge=0)
    csa_inter_weight: float | None = Field(None, ge=0)    # released: 0.8 at batch 120, 0.3 otherwise
    normalize: bool = True                                   # L2-normalise test features (released: SYSU only)


def _neck(dim: int) -> BNNeck:
    neck = BNNeck(dim)
    nn.init.ones_(neck.weight)  # the released IDKL neck keeps BatchNorm's default weight 1
    return neck


@register_method("idkl")
class IDKL(Method):
    Options = Options
    gathers_global_batch = True

    def __init__(self, setup: MethodSetup) -> None:
        super().__init__(setup)
        modalities, num_classes = self.modalities, self.num_classes
        if Modality.RGB not in modalities or len(modalities) != 2:
            names = ", ".join(m.value for m in modalities)
            raise UserError(f"data.modalities=[{names}]: idkl trains on visible and one other (infrared) "
                            "modality; set data.modalities=[rgb, ir]")
        m = setup.model
        if (m.pooling, m.head, m.embedding_dim) != ("gem", "bnneck", None):
            raise UserError(f"model.pooling={m.pooling}, model.head={m.head}, model.embedding_dim={m.embedding_dim}: "
                            "idkl has GeM (p = 3) and BNNecks on the 2048/512-d maps; set model.pooling=gem, "
                            "model.head=bnneck, model.embedding_dim=null")
        self.visible = Modality.RGB
        self.infrared = next(m for m in modalities if m is not Modality.RGB)
        o = self.options
        if o.tgsa and setup.ids_per_batch % 2:
            raise UserError(f"method.options.tgsa=true splits the batch's identities in half, but "
                            f"train.ids_per_batch={setup.ids_per_batch} is odd; use an even number "
                            "(released: 12) or set method.options.tgsa=false")
        batch = setup.ids_per_batch * setup.images_per_id * len(modalities)
        # The weights in force: each option given, else the released rule at this run's batch size.
        self.weights = {k: v if getattr(o, k) is None else getattr(o, k) for k, v in released_weights(batch).items()}
        trunk = build_net(m, num_classes).backbone     # loads model.pretrained once
        specific = copy.deepcopy(trunk).keep_stages("layer3", "layer4")
        self.backbone = nn.ModuleDict({"shared": trunk, "specific": specific})
        dim = trunk.out_channels
        self.pool = GeM(p=3.0, eps=1e-6)
        self.purifier = InstanceNormPurifier(dim) if o.purifier else None
        self.neck_shared, self.neck_specific = _neck(dim), _neck(dim)
        self.classifier_shared = nn.Linear(dim, num_classes, bias=False)
        self.classifier_specific = nn.Linear(dim, num_classes, bias=False)
        self.classifier_purifier = nn.Linear(dim, num_classes, bias=False) if o.purifier else None
        self.discriminator = ModalityClassifier(dim) if o.modality_losses else None
        self.confuser = ModalityClassifier(dim) if o.modality_losses else None
        self.triplet = BatchHardTriplet(setup.loss.triplet_margin)

    # ------------------------------------------------------------------ network
    def front(self, images: torch.Tensor) -> torch.Tensor:
        """Shared stem + layer1-2 (X2)."""
        return self.backbone["shared"].forward_stages(images, "stem", "layer2")

    def shared_branch(self, x2: torch.Tensor) -> torch.Tensor:
        return self.backbone["shared"].forward_stages(x2, "layer3", "layer4")

    def specific_branch(self, x2: torch.Tensor) -> torch.Tensor:
        return self.backbone["specific"](x2)

    def embed(self, images: torch.Tensor, modality: Modality) -> torch.Tensor:
        self.check_modality(modality)
        feature = self.neck_shared(self.pool(self.shared_branch(self.front(images))))
        return F.normalize(feature, dim=1) if self.options.normalize else feature

    def retrieval_settings(self) -> dict:
        return {"feature": "BN of the shared branch's GeM feature", "l2_normalised": self.options.normalize}

    def forward_train(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every training tensor: maps, pooled and BN features, logits (and purifier maps)."""
        x2 = self.front(images)
        x_sh, x_sp = self.shared_branch(x2), self.specific_branch(x2)
        out = {"x2": x2, "x_shared": x_sh, "x_specific": x_sp}
        if self.purifier is not None:
            p = self.purifier(x_sp)
            out.update(purified=p.out, x_masked=p.x_masked, z=p.z, z_masked=p.z_masked)
            x_sp = p.out
        out["f_shared"], out["f_specific"] = self.pool(x_sh), self.pool(x_sp)
        out["bn_shared"], out["bn_specific"] = self.neck_shared(out["f_shared"]), self.neck_specific(out["f_specific"])
        out["z_shared"] = self.classifier_shared(out["bn_shared"])
        out["z_specific"] = self.classifier_specific(out["bn_specific"])
        return out

    def unused_parameters(self, stage: Stage) -> bool:
        return super().unused_parameters(stage) or (self.purifier is not None and self.options.purifier_weight == 0)

    # ------------------------------------------------------------------ losses
    def layout(self, batch: Batch) -> tuple[slice, slice, torch.Tensor, torch.Tensor, int]:
        """(visible rows, infrared rows, infrared flag and row-in-block per batch row, K); checks the layout."""
        if sorted(batch.modalities) != sorted([self.visible, self.infrared]):
            got = ", ".join(m.value for m in batch.modalities)
            raise UserError(f"idkl: a batch needs {self.visible} and {self.infrared} images of every identity, "
                            f"got modalities [{got}]")
        vis, ir = batch.block(self.visible), batch.block(self.infrared)
        k = check_aligned(batch.labels[vis], batch.labels[ir], "idkl batch")
        infrared = torch.zeros(len(batch.labels), dtype=torch.bool, device=batch.labels.device)
        infrared[ir] = True
        row = torch.arange(len(batch.labels), device=batch.labels.device) % batch.rows
        return vis, ir, infrared, row, k

    def row_outputs(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the losses read of each image (pooled features, logits): rows, so the global batch
        can be gathered under ``train.batch_scope=global``."""
        out = self.forward_train(images)
        rows = {k: out[k] for k in ("f_shared", "f_specific", "z_shared", "z_specific")}
        if self.discriminator is not None:
            rows["discriminator"] = self.discriminator(out["bn_specific"])
            rows["confuser"] = self.confuser(out["bn_shared"])
        if self.purifier is not None:
            rows["purifier_logits"] = self.classifier_purifier(self.pool(out["x_specific"]))
            rows["purifier_masked"] = self.classifier_purifier(self.pool(out["x_masked"]))
            rows["z_pooled"], rows["z_masked_pooled"] = self.pool(out["z"]), self.pool(out["z_masked"])
        return rows

    def training_step(self, batch: Batch, stage: Stage) -> StepOutput:
        o, loss_cfg, whole = self.options, self.setup.loss, batch.whole
        vis, ir, infrared, row, k = self.layout(whole)
        if o.tgsa and (whole.rows // k < 2 or (whole.rows // k) % 2):
            raise UserError(f"idkl: TGSA splits each modality's {whole.rows // k} identities in half; "
                            "use an even train.ids_per_batch, or method.options.tgsa=false")
        out, y = {k: v.float() for k, v in batch.gather(self.row_outputs(batch.images)).items()}, whole.labels
        terms = LossTerms()
        f_sh, f_sp, z_sh, z_sp = out["f_shared"], out["f_specific"], out["z_shared"], out["z_specific"]
        terms.add("id", F.cross_entropy(z_sh, y, label_smoothing=loss_cfg.label_smoothing)
                  + F.cross_entropy(z_sp, y, label_smoothing=loss_cfg.label_smoothing), loss_cfg.id_weight)
        terms.add("triplet", self.triplet(f_sh, y) + self.triplet(f_sp, y), loss_cfg.triplet_weight)
        if o.modality_losses:  # weight 1, as released
            terms.add("discriminator", F.cross_entropy(out["discriminator"], infrared.long()))
            terms.add("confuser", F.cross_entropy(out["confuser"], confuser_labels(infrared, row)))
        if self.purifier is not None:
            terms.add("purifier_entropy", entropy_margin_loss(out["purifier_logits"], out["purifier_masked"],
                                                              o.purifier_margin), o.purifier_weight)
            terms.add("purifier_centroid", modality_centroid_hinge(
                out["z_pooled"], out["z_masked_pooled"], y, infrared, o.purifier_margin), o.purifier_weight)
        w = self.weights
        if o.tgsa:  # distance graphs of the pre-BN features
            intra, inter = modality_and_branch_terms(graph_kl, f_sh[vis], f_sh[ir], f_sp[vis], f_sp[ir])
            if w["tgsa_mixed_terms"]:  # the first half of the identities' visible rows, then their IR rows
                mixed = torch.cat([f_sh[vis][: whole.rows // 2], f_sh[ir][: whole.rows // 2]])
                intra = intra + graph_kl(f_sh[vis], mixed) + graph_kl(mixed, f_sh[ir])
            terms.add("tgsa_intra", intra, w["tgsa_intra_weight"])
            terms.add("tgsa_inter", inter, w["tgsa_inter_weight"])
        logit_blocks = (z_sh[vis], z_sh[ir], z_sp[vis], z_sp[ir])
        csa = {"csa": logit_blocks if o.csa_sample else None,
               "csa_set": [set_level_logits(z, k) for z in logit_blocks] if o.csa_set else None}
        for name, blocks in csa.items():
            if blocks is not None:
                intra, inter = modality_and_branch_terms(symmetric_kl, *blocks)
                terms.add(f"{name}_intra", intra, o.csa_intra_weight)
                terms.add(f"{name}_inter", inter, w["csa_inter_weight"])
        return terms.output()
