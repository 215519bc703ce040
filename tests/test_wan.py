"""Wan et al. (reconstruction): fusion weights, memory, dynamic weights, teachers, inference, resume, DDP, fit."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from crossreid.config import load_config, resolve_config
from crossreid.data.pipeline import normalize
from crossreid.data.registry import load_dataset
from crossreid.data.samples import Sample
from crossreid.engine.checkpoint import load_checkpoint
from crossreid.engine.trainer import Trainer, stage_context
from crossreid.errors import UserError
from crossreid.methods import Batch, build_method
from crossreid.methods.step import LossTerms
from crossreid.methods.wan_fusion import dynamic_weights, fuse, fusion_weights
from crossreid.modality import Modality
from crossreid.reproduce import load_set

RGB, IR, DEPTH = Modality.RGB, Modality.IR, Modality.DEPTH
ROWS = 4  # per modality: identities 0, 0, 1, 1


def make(*overrides: str, modalities=(RGB, IR), classes: int = 3):
    cfg = load_config(None, ["model.arch=resnet18", "method.name=wan", "model.pooling=gem", *overrides])
    return build_method(cfg, classes, list(modalities))


def pool() -> list[Sample]:
    """A training pool: RGB rows 0-7 (cams 1 and 2 alternating), IR rows 8-15 (cam 3); ids by pairs of rows."""
    rgb = [Sample(Path(f"r{i}"), pid=i // 2, cam=1 + i % 2, modality=RGB) for i in range(8)]
    ir = [Sample(Path(f"i{i}"), pid=i // 2, cam=3, modality=IR) for i in range(8)]
    depth = [Sample(Path("d"), pid=0, cam=1, modality=DEPTH)]  # another modality's sample: no view
    return rgb + ir + depth


def start(method):
    stage = method.stages()[0]
    method.on_stage_start(stage, stage_context(method, SimpleNamespace(samples=pool()), torch.device("cpu")))
    return stage


def batch(seed: int = 0) -> Batch:
    images = normalize(torch.rand(2 * ROWS, 3, 32, 16, generator=torch.Generator().manual_seed(seed)))
    labels = torch.tensor([0, 0, 1, 1] * 2)
    # rgb rows: pool 0 (id 0, cam 1), 1 (id 0, cam 2), 2 (id 1, cam 1), 3 (id 1, cam 2); ir rows: pool 8, 9, 10, 11
    return Batch(images, labels, [RGB, IR], ROWS, indices=[0, 1, 2, 3, 8, 9, 10, 11])


# ------------------------------------------------------------------ fusion
def test_fusion_weights_favour_the_channel_one_classifier_relies_on():
    w_rgb = torch.tensor([[10.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    w_ir = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, -1.0, 6.0]])   # sign does not matter, magnitude does
    share = fusion_weights(w_rgb, w_ir, temperature=0.5)
    assert share[0, 0] > 0.95                          # self-owned by RGB for id 0: mostly RGB
    assert share[1, 3] < 0.05                          # self-owned by IR for id 1: mostly IR
    assert (share[1, :3] > 0.5).all()                  # IR spends its weight on channel 3, so the rest leans RGB
    both = fusion_weights(torch.ones(2, 4), torch.ones(2, 4), 0.5)
    assert torch.equal(both, torch.full((2, 4), 0.5))  # common channels: half from each
    assert fusion_weights(w_rgb, w_ir, 5.0)[0, 0] < share[0, 0]  # a higher temperature flattens
    # the fusion feature of id 0 takes channel 0 from its RGB rows
    feats = torch.tensor([[4.0, 0, 0, 0], [2.0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0.0]])
    ids, fused = fuse(feats, torch.tensor([0, 0, 0, 1]), torch.tensor([True, True, False, True]), share)
    assert ids.tolist() == [0]                         # id 1 has no IR row: left out
    assert fused[0, 0] == pytest.approx(share[0, 0] * 3.0)  # RGB mean 3, IR mean 0


def test_method_fusion_uses_its_modality_classifiers():
    method = make()
    with torch.no_grad():
        method.modality_classifiers["rgb"].weight.fill_(1.0)
        method.modality_classifiers["ir"].weight.fill_(1.0)
        method.modality_classifiers["rgb"].weight[1, 5] = 50.0      # id 1, channel 5: RGB's own
    b = batch()
    features = torch.zeros(2 * ROWS, 512)
    features[:ROWS, 5], features[ROWS:, 5] = 1.0, -1.0
    ids, fused = method.fusion(features, b)
    assert ids.tolist() == [0, 1]
    assert fused[1, 5] > 0.9 and fused[0, 5] == pytest.approx(0.0, abs=1e-6)  # id 0: common, averaged


# ------------------------------------------------------------------ memory
def test_memory_update_by_hand_through_the_method():
    method = make("method.options.memory_momentum=0.75", "method.options.fusion_teacher=false")
    stage = start(method)
    method.train()
    b1, b2 = batch(0), batch(1)
    feats1 = method.forward_batch(b1).features.detach()
    method.after_step(b1, stage, method.training_step(b1, stage))
    # views: ('ir', 3) -> 0, ('rgb', 1) -> 1, ('rgb', 2) -> 2
    mem = method.memory
    torch.testing.assert_close(mem.features[0, 1], feats1[0])
    torch.testing.assert_close(mem.features[1, 2], feats1[3])
    torch.testing.assert_close(mem.features[0, 0], feats1[4:6].mean(0))     # two IR rows of id 0, one view
    assert mem.filled[:2, :3].all() and not mem.filled[2].any() and not mem.filled[:, 3:].any()
    feats2 = method.forward_batch(b2).features.detach()
    method.after_step(b2, stage, method.training_step(b2, stage))
    torch.testing.assert_close(mem.features[0, 0], 0.75 * feats1[4:6].mean(0) + 0.25 * feats2[4:6].mean(0))
    torch.testing.assert_close(mem.features[1, 1], 0.75 * feats1[2] + 0.25 * feats2[2])


def test_multiview_teacher_all_or_other_views():
    method = make("method.options.memory_teacher_views=others")
    start(method)
    method.memory.update(torch.tensor([[1.0] * 512, [3.0] * 512]), torch.tensor([0, 0]), torch.tensor([0, 1]))
    mean, has = method.multiview_teacher(torch.tensor([0, 0, 1]), torch.tensor([0, 2, 0]))
    assert has.tolist() == [True, True, False]
    assert mean[0, 0] == 3.0 and mean[1, 0] == 2.0     # own view left out / both other views
    everything = make()
    everything.memory.load_state_dict(method.memory.state_dict())
    assert everything.multiview_teacher(torch.tensor([0]), torch.tensor([0]))[0][0, 0] == 2.0


def test_memory_slots_must_hold_every_view():
    with pytest.raises(UserError, match="memory_slots=2 .* 3 views"):
        start(make("method.options.memory_slots=2"))
    start(make("method.options.memory_slots=2", "method.options.memory_views=modality"))


# ------------------------------------------------------------------ dynamic weights and teachers
def test_gap_weight_is_zero_where_the_student_is_more_confident():
    labels = torch.tensor([0, 1, 2])
    student = torch.tensor([[5.0, 0, 0], [0, 1.0, 0], [0, 0, 2.0]])
    teacher = torch.tensor([[1.0, 0, 0], [0, 4.0, 0], [0, 0, 2.0]])
    w = dynamic_weights("gap", student, teacher, labels)
    assert w[0] == 0 and w[2] == 0                      # student more / equally confident
    expected = teacher.softmax(1)[1, 1] - student.softmax(1)[1, 1]
    assert w[1] == pytest.approx(float(expected)) and w[1] > 0
    relative = dynamic_weights("relative", student, teacher, labels)
    assert relative[0] == 0 and relative[2] == 0
    assert relative[1] == pytest.approx(float(expected / teacher.softmax(1)[1, 1]))
    assert dynamic_weights("ramp", student, teacher, labels, epoch=1, ramp_epochs=4).tolist() == [0.5] * 3
    assert dynamic_weights("ramp", student, teacher, labels, epoch=9, ramp_epochs=4).tolist() == [1.0] * 3
    assert dynamic_weights("none", student, teacher, labels).tolist() == [1.0] * 3


def test_no_gradient_into_teachers():
    # only the distillation term: any gradient reaching the modality classifiers or the memory
    # would have to flow through a teacher (the fusion weights come from those classifiers)
    method = make("loss.id_weight=0", "loss.triplet_weight=0", "method.options.modality_id_weight=0",
                  "method.options.fusion_id_weight=0", "method.options.dynamic_weight=none")
    stage = start(method)
    method.train()
    method.after_step(batch(0), stage, method.training_step(batch(0), stage))  # the memory teacher: from the next step
    losses = method.training_step(batch(1), stage).losses
    assert losses["distill_fusion"] > 0 and losses["distill_memory"] > 0
    fused = []
    original = method.neck_logits
    method.neck_logits = lambda x, ref: (fused.append(x), original(x, ref))[1]
    method.training_step(batch(1), stage)
    assert fused and all(not x.requires_grad for x in fused)   # teacher inputs carry no graph
    losses["loss"].backward()
    for fc in method.modality_classifiers.values():
        assert fc.weight.grad is None
    assert method.memory.features.grad is None and not method.memory.features.requires_grad
    assert method.head.classifier.weight.grad.abs().sum() > 0  # the students do learn


def test_distillation_matches_kl_by_hand():
    method = make("method.options.memory_teacher=false", "method.options.dynamic_weight=none",
                  "method.options.distill_temperature=2.0")
    student = torch.randn(4, 3)
    teacher = torch.randn(2, 3)
    log = LossTerms()
    got = method.distillation(student, torch.tensor([0, 1, 2, 0]), [("fusion", torch.tensor([1, 3]), teacher)], log)
    p_t = (teacher / 2).softmax(1)
    kl = (p_t * (p_t.log() - (student[[1, 3]] / 2).log_softmax(1))).sum(1) * 4
    assert float(got) == pytest.approx(float(kl.sum() / 4), rel=1e-5)
    assert float(log.values["weight_fusion"]) == pytest.approx(0.5)   # 2 of 4 rows have a teacher
    # the ramp rule: weight min(1, (epoch + 1) / ramp_epochs) = 2 / 4 at epoch 1, from the method's options
    ramp = make("method.options.memory_teacher=false", "method.options.dynamic_weight=ramp",
                "method.options.ramp_epochs=4", "method.options.distill_temperature=2.0")
    ramp.epoch, log = 1, LossTerms()
    got = ramp.distillation(student, torch.tensor([0, 1, 2, 0]), [("fusion", torch.tensor([1, 3]), teacher)], log)
    assert float(got) == pytest.approx(0.5 * float(kl.sum() / 4), rel=1e-5)
    assert float(log.values["weight_fusion"]) == pytest.approx(0.25)


# ------------------------------------------------------------------ inference
class Explodes(torch.nn.Module):
    def __getattr__(self, name):
        if name.startswith("_"):
            return super().__getattr__(name)
        raise AssertionError(f"inference touched {name}")

    def forward(self, *args):
        raise AssertionError("inference called a teacher part")


def explode(*args, **kwargs):
    raise AssertionError("inference called a training-only function")


def test_inference_never_touches_fusion_or_memory(monkeypatch):
    method = make().eval()
    images = batch().images[:3]
    before = {m: method.embed(images, m) for m in (RGB, IR)}
    method.memory = Explodes()
    method.modality_classifiers = torch.nn.ModuleDict({"rgb": Explodes(), "ir": Explodes()})
    import crossreid.methods.wan_fusion as wan

    for name in ("fuse", "fusion_weights", "dynamic_weights"):
        monkeypatch.setattr(wan, name, explode)
    for name in ("fusion", "multiview_teacher", "neck_logits", "distillation", "after_step"):
        monkeypatch.setattr(method, name, explode)
    with torch.no_grad():
        for m in (RGB, IR):
            torch.testing.assert_close(method.embed(images, m), before[m])
    with pytest.raises(AssertionError):   # the replacements do fail when used
        method.fusion(None, None)


# ------------------------------------------------------------------ bad input
def test_bad_options_and_modalities():
    with pytest.raises(UserError, match="unknown key 'method.options.fusion_temprature'.*fusion_temperature"):
        make("method.options.fusion_temprature=2")
    with pytest.raises(UserError, match="both false"):
        make("method.options.fusion_teacher=false", "method.options.memory_teacher=false")
    with pytest.raises(UserError, match="memory_slots is set but has no effect with memory_teacher=false"):
        make("method.options.memory_teacher=false", "method.options.memory_slots=4")
    with pytest.raises(UserError, match="ramp_epochs .* dynamic_weight=gap"):
        make("method.options.ramp_epochs=4")
    with pytest.raises(UserError, match="distill_temperature"):
        make("method.options.distill_temperature=0")
    with pytest.raises(UserError, match=r"exactly two modalities.*\[rgb, depth, ir\]"):
        make(modalities=(RGB, DEPTH, IR))
    with pytest.raises(UserError, match=r"exactly two modalities.*\[rgb\]"):
        make(modalities=(RGB,))
    with pytest.raises(UserError, match="ir"):
        make().embed(batch().images[:2], DEPTH)


@pytest.mark.parametrize("name", ["wan_synthetic", "wan_sysu", "wan_regdb"])
def test_shipped_configs_build(name):
    cfg = load_config(resolve_config(name), ["model.arch=resnet18", "model.pretrained=null"])
    assert cfg.method.name == "wan" and "reconstruction" in resolve_config(name).read_text().lower()
    build_method(cfg, 4, [Modality.parse(m) for m in cfg.data.modalities])


def test_experiment_rows_build():
    vi = load_set("vi")
    rows = {k: v for k, v in vi.experiments.items() if k.startswith("wan")}
    assert {vi.tables.index(table) for _, table in rows.values()} == {0, 1} and len(rows) == 4  # methods, ablations
    assert "(reconstruction)" in rows["wan"][0].label
    for experiment, _ in rows.values():
        cfg = vi.config(experiment, experiment.overrides)
        build_method(cfg, 4, [Modality.parse(m) for m in cfg.data.modalities])


# ------------------------------------------------------------------ through the trainer
TINY = ["method.name=wan", "model.arch=resnet18", "model.pooling=gem", "data.dataset=generic",
        "data.modalities=[rgb,ir]", "data.height=32", "data.width=16", "train.ids_per_batch=2",
        "train.images_per_id=2", "train.iterations_per_epoch=3", "train.epochs=2", "train.progress=false",
        "train.threads=1", "train.checkpoint_every_steps=1", "eval.directions=[rgb->ir]"]


class Interrupted(Exception):
    pass


def test_fit_then_resume_restores_the_memory(tiny_root, tmp_path, monkeypatch):
    catalog = load_dataset("generic", tiny_root)
    full = tmp_path / "full"
    Trainer(load_config(None, TINY), full, catalog, progress=False).fit()
    records = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1] and "val/mAP" in records[-1]
    last = records[-1]
    parts = last["id"] + last["wrt"] + last["modality_id"] + last["fusion_id"] + last["distill"]
    assert last["loss"] == pytest.approx(parts, rel=1e-4)
    weights, _, _, _ = load_checkpoint(full / "model.safetensors")
    assert weights["memory.filled"].any() and weights["memory.features"].abs().sum() > 0

    import crossreid.engine.checkpointer as tr

    original = tr.save_checkpoint

    def stop_mid_epoch(path, model, state, *args):
        original(path, model, state, *args)
        if not state["epoch_done"] and (state["epoch"], state["step"]) == (1, 1):
            raise Interrupted

    monkeypatch.setattr(tr, "save_checkpoint", stop_mid_epoch)
    run = tmp_path / "cut"
    with pytest.raises(Interrupted):
        Trainer(load_config(None, TINY), run, catalog, progress=False).fit()
    monkeypatch.setattr(tr, "save_checkpoint", original)
    saved, _, _, _ = load_checkpoint(run / "checkpoints/main-last.safetensors")
    resumed = Trainer(load_config(None, TINY), run, catalog, resume=True, progress=False)
    assert torch.equal(resumed.method.memory.features, saved["memory.features"])
    assert resumed.method.memory.filled.any()
    Trainer(load_config(None, TINY), run, catalog, resume=True, progress=False).fit()
    a, _, _, _ = load_checkpoint(full / "checkpoints/main-last.safetensors")
    b, _, _, _ = load_checkpoint(run / "checkpoints/main-last.safetensors")
    for key in ("memory.features", "memory.filled", "modality_classifiers.ir.weight", "head.classifier.weight"):
        assert torch.equal(a[key], b[key]), key


def test_resume_with_a_checkpoint_of_another_method(tiny_root, tmp_path):
    catalog = load_dataset("generic", tiny_root)
    agw = [o.replace("method.name=wan", "method.name=agw") for o in TINY] + ["train.epochs=1"]
    Trainer(load_config(None, agw), tmp_path / "run", catalog, progress=False).fit()
    with pytest.raises(UserError, match="written by method 'agw', config says 'wan'"):
        Trainer(load_config(None, TINY + ["train.epochs=1"]), tmp_path / "run", catalog, resume=True,
                progress=False).fit()


RANK_MEMORY = """
import sys, torch
from safetensors.torch import save_file
import torch.distributed as dist
from crossreid.config import load_config
from crossreid.data.registry import load_dataset
from crossreid.engine.trainer import Trainer
root, run, *overrides = sys.argv[1:]
trainer = Trainer(load_config(None, overrides), run, load_dataset("generic", root), progress=False)
trainer.fit()
mem = trainer.method.memory
save_file({"features": mem.features.contiguous(), "filled": mem.filled.contiguous()},
          f"{run}/memory-rank{dist.get_rank()}.safetensors")
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_memory_identical_across_two_ddp_ranks(tiny_root, tmp_path):
    script, run = tmp_path / "rank_memory.py", tmp_path / "ddp"
    script.write_text(RANK_MEMORY)
    overrides = [o for o in TINY if not o.startswith("train.epochs")] + ["train.epochs=1"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_port()), str(script), str(tiny_root), str(run), *overrides]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    r0, r1 = (load_file(str(run / f"memory-rank{r}.safetensors")) for r in (0, 1))
    assert torch.equal(r0["features"], r1["features"]) and torch.equal(r0["filled"], r1["filled"])
    # each rank trains on one of the two identities of a batch: the gathered update filled both ranks' rows
    assert int(r0["filled"].any(1).sum()) >= 2 and r0["features"].abs().sum() > 0
