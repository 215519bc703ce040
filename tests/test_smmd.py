"""SMMD (a reconstruction): prototype memory through the method, hand-computed self-mimic and
mutual terms, ordering, no gradient into prototypes, parameter parity with AGW, exact resume,
DDP-identical memory, bad input, and a tiny fit."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from crossreid.config import load_config, resolve_config
from crossreid.data.pipeline import normalize
from crossreid.data.registry import load_dataset
from crossreid.engine.checkpoint import load_checkpoint
from crossreid.engine.trainer import Trainer
from crossreid.errors import UserError
from crossreid.methods import Batch, build_method
from crossreid.methods.smmd import mimic_kl
from crossreid.modality import Modality

RGB, IR = Modality.RGB, Modality.IR


def make(*options: str, classes: int = 3, extra=()):
    cfg = load_config(None, ["model.arch=resnet18", "model.pooling=gem", "method.name=smmd", "train.epochs=4",
                             *[f"method.options.{o}" for o in ("mutual_start_epoch=1", *options)], *extra])
    return build_method(cfg, classes, [RGB, IR])


def make_batch(rows: int = 4, seed: int = 0, labels=None) -> Batch:
    g = torch.Generator().manual_seed(seed)
    images = normalize(torch.rand(2 * rows, 3, 32, 16, generator=g))
    labels = torch.arange(rows) // 2 if labels is None else torch.tensor(labels)
    return Batch(images, labels.repeat(2), [RGB, IR], rows)


def step(method, batch):
    stage = method.stages()[0]
    method.train()
    output = method.training_step(batch, stage)
    method.after_step(batch, stage, output)
    return output.losses


def kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q))


# ------------------------------------------------------------------ prototype memory
def test_momentum_update_through_the_method():
    m = make("momentum=0.25")
    assert not m.prototypes.filled.any()
    b0, b1 = make_batch(seed=0), make_batch(seed=1)
    feats = []
    for b in (b0, b1):
        m.train()
        with torch.no_grad():
            feats.append(m.forward_batch(b).features)  # train-mode BN: the step's own features
        step(m, b)
    slots = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    for pid in (0, 1):
        for slot in (0, 1):
            rows = (b0.labels == pid) & (slots == slot)
            first = feats[0][rows].mean(0)                       # "first" init: the first batch mean
            want = 0.25 * first + 0.75 * feats[1][rows].mean(0)  # then momentum 0.25
            assert torch.allclose(m.prototypes.features[pid, slot], want, atol=1e-5)
    assert m.prototypes.filled[:2].all() and not m.prototypes.filled[2].any()


def test_zero_init_warms_up():
    m = make("prototype_init=zero", "momentum=0.5")
    b = make_batch()
    m.train()
    with torch.no_grad():
        f = m.forward_batch(b).features
    step(m, b)
    assert torch.allclose(m.prototypes.features[1, 1], 0.5 * f[6:8].mean(0), atol=1e-5)


# ------------------------------------------------------------------ the terms by hand
def test_mimic_kl_by_hand():
    # teacher [2 ln 3, 0] / T=2 -> p = [3/4, 1/4]; student [0, 0] -> q = [1/2, 1/2]
    got = mimic_kl(torch.zeros(1, 2), torch.tensor([[2 * math.log(3), 0.0]]), 2.0)
    want = 4 * (0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5))
    assert got.item() == pytest.approx(want, rel=1e-6)
    assert got.item() == pytest.approx(0.523248, abs=1e-6)


def _hand_method(*options):
    """Two identities; classifier reads dims 0 and 1; BN at identity; known prototypes."""
    m = make("temperature=1.0", "mutual_start_epoch=0", *options, classes=2)
    with torch.no_grad():
        m.head.classifier.weight.zero_()
        m.head.classifier.weight[0, 0] = m.head.classifier.weight[1, 1] = 1.0
        m.head.neck.running_mean.zero_()
        m.head.neck.running_var.fill_(1.0 - m.head.neck.eps)
        m.head.neck.weight.fill_(1.0)
        protos = {(0, 0): [math.log(3), 0.0], (1, 0): [0.0, math.log(3)],   # rgb: p = [.75,.25], [.25,.75]
                  (0, 1): [0.0, 0.0], (1, 1): [0.0, math.log(4)]}           # ir:  p = [.5,.5],  [.2,.8]
        for (pid, slot), v in protos.items():
            m.prototypes.features[pid, slot, :2] = torch.tensor(v)
        m.prototypes.filled[:] = True
    return m


def test_self_mimic_mutual_and_prototype_ce_by_hand():
    m = _hand_method()
    # rows: rgb id0, rgb id1, ir id0, ir id1
    logits = torch.tensor([[0.0, 0.0], [math.log(2), 0.0], [math.log(3), 0.0], [0.0, 0.0]])
    q = [[0.5, 0.5], [2 / 3, 1 / 3], [0.75, 0.25], [0.5, 0.5]]
    labels, slots = torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 1, 1])
    m.epoch = 0
    terms = m.distillation_losses(logits, torch.zeros(4, m.prototypes.dim), labels, slots)
    p_rgb, p_ir = [[0.75, 0.25], [0.25, 0.75]], [[0.5, 0.5], [0.2, 0.8]]
    self_mimic = (kl(p_rgb[0], q[0]) + kl(p_rgb[1], q[1])) / 2 + (kl(p_ir[0], q[2]) + kl(p_ir[1], q[3])) / 2
    mutual = (kl(p_ir[0], q[0]) + kl(p_ir[1], q[1])) / 2 + (kl(p_rgb[0], q[2]) + kl(p_rgb[1], q[3])) / 2
    ce = -(math.log(0.75) + math.log(0.75) + math.log(0.5) + math.log(0.8)) / 4
    assert terms["self_mimic"].item() == pytest.approx(self_mimic, rel=1e-5)
    assert terms["mutual"].item() == pytest.approx(mutual, rel=1e-5)
    assert terms["prototype_ce"].item() == pytest.approx(ce, rel=1e-5)
    assert self_mimic == pytest.approx(0.415194, abs=1e-6) and mutual == pytest.approx(0.295196, abs=1e-6)


def test_feature_level_mimicry_by_hand():
    m = _hand_method("mimic=feature")
    features = torch.zeros(4, m.prototypes.dim)
    features[:, 0] = torch.tensor([1.0, 0.0, 0.0, 2.0])
    labels, slots = torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 1, 1])
    terms = m.distillation_losses(torch.zeros(4, 2), features, labels, slots)
    d, l3, l4 = m.prototypes.dim, math.log(3), math.log(4)
    # mean over dims of the squared difference to own / other prototype, per modality then summed
    own = [((1 - l3) ** 2) / d, l3 ** 2 / d, 0.0, (4 + l4 ** 2) / d]
    other = [1 / d, l4 ** 2 / d, l3 ** 2 / d, (4 + l3 ** 2) / d]
    assert terms["self_mimic"].item() == pytest.approx((own[0] + own[1]) / 2 + (own[2] + own[3]) / 2, rel=1e-5)
    assert terms["mutual"].item() == pytest.approx((other[0] + other[1]) / 2 + (other[2] + other[3]) / 2, rel=1e-5)


def test_unfilled_prototypes_are_skipped():
    m = _hand_method()
    m.prototypes.filled[1, 1] = False      # id 1 has no IR prototype yet
    logits = torch.zeros(4, 2)
    labels, slots = torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 1, 1])
    terms = m.distillation_losses(logits, torch.zeros(4, m.prototypes.dim), labels, slots)
    half = [0.5, 0.5]
    want_sm = (kl([0.75, 0.25], half) + kl([0.25, 0.75], half)) / 2 + kl(half, half)
    want_md = kl(half, half) + (kl([0.75, 0.25], half) + kl([0.25, 0.75], half)) / 2
    assert terms["self_mimic"].item() == pytest.approx(want_sm, rel=1e-5)
    assert terms["mutual"].item() == pytest.approx(want_md, rel=1e-5)


def test_mutual_term_is_zero_before_its_start_epoch():
    m = make("mutual_start_epoch=2")
    stage = m.stages()[0]
    step(m, make_batch(seed=0))                      # fills the prototypes
    for epoch, active in ((0, False), (1, False), (2, True), (3, True)):
        m.on_epoch_start(stage, epoch)
        losses = m.training_step(make_batch(seed=1), stage).losses
        assert (losses["mutual"].item() > 0) == active, epoch
        parts = losses["id"] + losses["wrt"] + losses["prototype_ce"] + losses["self_mimic"] + losses["mutual"]
        assert losses["loss"].item() == pytest.approx(parts.item(), rel=1e-5)


def test_no_gradient_reaches_the_prototypes_but_the_classifier_learns_from_them():
    m = make("mutual_start_epoch=0")
    step(m, make_batch(seed=0))
    m.prototypes.features.requires_grad_(True)      # a leak would leave a gradient here
    m.zero_grad()
    losses = m.training_step(make_batch(seed=1), m.stages()[0]).losses
    losses["loss"].backward()
    assert m.prototypes.features.grad is None
    assert losses["self_mimic"].item() > 0 and losses["mutual"].item() > 0
    # The prototype CE alone trains the shared classifier ("distinguishable" prototypes).
    m.zero_grad()
    m.training_step(make_batch(seed=1), m.stages()[0]).losses["prototype_ce"].backward()
    assert m.head.classifier.weight.grad.abs().sum() > 0 and m.prototypes.features.grad is None
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in m.backbone.parameters())


@pytest.mark.parametrize("non_local", [False, True])
def test_parameter_count_equals_the_baseline(non_local):
    extra = [f"method.options.non_local={str(non_local).lower()}"]
    smmd = make(extra=extra, classes=5)
    cfg = load_config(None, ["model.arch=resnet18", "model.pooling=gem", "method.name=agw", *extra])
    agw = build_method(cfg, 5, [RGB, IR])
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert count(smmd) == count(agw)
    assert [n for n, _ in smmd.named_parameters()] == [n for n, _ in agw.named_parameters()]
    assert smmd.prototypes.features.shape == (5, 2, 512)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("options, message", [
    (["mutual_start_epoch=4"], "mutual_start_epoch=4 is beyond the last epoch"),
    (["temprature=2"], "did you mean 'temperature'"),
    (["mimic=logits"], "method.options.mimic"),
    (["momentum=1.0"], "method.options.momentum"),
])
def test_bad_options_are_user_errors(options, message):
    with pytest.raises(UserError, match=message):
        make(*options)
    make("mutual_start_epoch=9", "mutual_weight=0")  # no mutual term: no start epoch to check


def test_needs_two_modalities():
    cfg = load_config(None, ["model.arch=resnet18", "method.name=smmd", "train.epochs=20"])
    with pytest.raises(UserError, match="exactly two"):
        build_method(cfg, 3, [RGB, IR, Modality.DEPTH])


TINY = ["data.dataset=generic", "model.arch=resnet18", "model.pooling=gem", "method.name=smmd",
        "data.modalities=[rgb,ir]", "data.height=32", "data.width=16", "train.ids_per_batch=2",
        "train.images_per_id=2", "train.iterations_per_epoch=2", "train.progress=false", "train.threads=1",
        "eval.directions=[rgb->ir,ir->rgb]", "train.epochs=2", "method.options.mutual_start_epoch=1"]


def test_cli_mutual_start_beyond_last_epoch_is_one_line(tmp_path, tiny_root):
    proc = subprocess.run([sys.executable, "-m", "crossreid", "train", "smmd_synthetic", "--out", str(tmp_path / "x"),
                           f"data.root={tiny_root}", *TINY, "method.options.mutual_start_epoch=2"],
                          capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ")
    assert "mutual_start_epoch=2 is beyond the last epoch" in lines[0]
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------ training, resume, DDP
def test_tiny_fit_logs_every_term_and_fills_the_memory(tmp_path, tiny_root):
    catalog = load_dataset("generic", tiny_root)
    Trainer(load_config(None, [*TINY, "method.options.prototype_init=zero", "train.ids_per_batch=3"]), tmp_path / "run", catalog,
            progress=False).fit()
    records = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [r["mutual"] == 0 for r in records] == [True, False]
    for r in records:
        assert r["loss"] == pytest.approx(r["id"] + r["wrt"] + r["prototype_ce"] + r["self_mimic"] + r["mutual"],
                                          rel=1e-4)
    weights, _, _, _ = load_checkpoint(tmp_path / "run/model.safetensors")
    assert weights["prototypes.filled"].all()  # every batch holds all 3 training ids x 2 modalities


def test_class_mean_init_is_one_eval_pass(tmp_path, tiny_root):
    from crossreid.data.pipeline import ImageStore
    from crossreid.engine.trainer import stage_context

    catalog = load_dataset("generic", tiny_root)
    cfg = load_config(None, TINY)
    m = build_method(cfg, catalog.num_classes, [RGB, IR])
    store = ImageStore([s for s in catalog.train if s.modality in (RGB, IR)], 32, 16,
                       depth_encoding=cfg.data.depth_encoding)
    m.train()
    m.on_stage_start(m.stages()[0], stage_context(m, store, torch.device("cpu"), resumed=False))
    assert m.training and m.prototypes.filled.all()
    m.eval()
    rows = [i for i, s in enumerate(store.samples) if s.pid == catalog.train_pids[1] and s.modality == IR]
    with torch.no_grad():
        want = m.forward_images(normalize(store.batch(rows)), IR).features.mean(0)
    assert torch.allclose(m.prototypes.features[1, 1], want, atol=1e-5)
    before = m.prototypes.features.clone()
    m.on_stage_start(m.stages()[0], stage_context(m, store, torch.device("cpu"), resumed=True))
    assert torch.equal(m.prototypes.features, before)  # a resumed stage keeps its checkpointed memory


class _Stop(Exception):
    pass


def test_resume_restores_the_memory_bit_for_bit(tmp_path, tiny_root, monkeypatch):
    import crossreid.engine.checkpointer as tr

    catalog = load_dataset("generic", tiny_root)
    cfg = load_config(None, TINY)
    Trainer(cfg, tmp_path / "full", catalog, progress=False).fit()

    original = tr.save_checkpoint

    def stop_after_epoch_0(path, model, state, *args):
        original(path, model, state, *args)
        if state["epoch_done"] and state["epoch"] == 0 and path.name == "main-best.safetensors":
            raise _Stop

    monkeypatch.setattr(tr, "save_checkpoint", stop_after_epoch_0)
    with pytest.raises(_Stop):
        Trainer(cfg, tmp_path / "cut", catalog, progress=False).fit()
    monkeypatch.setattr(tr, "save_checkpoint", original)
    saved, _, _, _ = load_checkpoint(tmp_path / "cut/checkpoints/main-last.safetensors")
    resumed = Trainer(cfg, tmp_path / "cut", catalog, resume=True, progress=False)
    assert resumed.position.epoch == 1  # restored when the trainer is built
    assert torch.equal(resumed.method.prototypes.features, saved["prototypes.features"])
    resumed.fit()
    a, _, _, _ = load_checkpoint(tmp_path / "full/checkpoints/main-last.safetensors")
    b, _, _, _ = load_checkpoint(tmp_path / "cut/checkpoints/main-last.safetensors")
    assert not torch.equal(a["prototypes.features"], saved["prototypes.features"])  # epoch 1 moved it
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_from_a_checkpoint_without_memory_is_an_error(tmp_path, tiny_root):
    catalog = load_dataset("generic", tiny_root)
    cfg = load_config(None, [*TINY, "train.epochs=2"])
    run = tmp_path / "run"
    Trainer(cfg, run, catalog, progress=False).fit()
    path = run / "checkpoints/main-last.safetensors"
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    state = json.loads(meta["crossreid_state"])
    state["epoch"], state["epoch_done"] = 0, True
    meta["crossreid_state"] = json.dumps(state)
    tensors = {k: v for k, v in load_file(str(path)).items() if not k.startswith("model/prototypes.")}
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(UserError, match="no SMMD prototype memory"):
        Trainer(cfg, run, catalog, resume=True, progress=False).fit()


DDP_SCRIPT = r"""
import sys
import torch
import torch.distributed as dist
from safetensors.torch import save_file
from crossreid.config import load_config
from crossreid.data.registry import load_dataset
from crossreid.engine.trainer import Trainer

root, out, *overrides = sys.argv[1:]
trainer = Trainer(load_config(None, overrides), out + "/run", load_dataset("generic", root), progress=False)
m, after_step, seen = trainer.method, trainer.method.after_step, []
def spy(batch, stage, output):  # the memory after each step (the end of fit broadcasts rank 0's weights)
    after_step(batch, stage, output)
    seen.append((m.prototypes.features.clone(), m.prototypes.filled.clone(), batch.labels.clone()))
m.after_step = spy
trainer.fit()
save_file({"features": torch.stack([f for f, _, _ in seen]), "filled": torch.stack([f for _, f, _ in seen]),
           "labels": torch.stack([l for _, _, l in seen])}, f"{out}/rank{dist.get_rank()}.st")
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # ~20-30 s on the shared 2-core machine
def test_ddp_ranks_hold_identical_memory(tmp_path, tiny_root):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_port()), str(script), str(tiny_root), str(tmp_path), *TINY,
           "train.epochs=1", "method.options.mutual_start_epoch=0"]  # class-mean pass, then 2 steps
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    a, b = load_file(str(tmp_path / "rank0.st")), load_file(str(tmp_path / "rank1.st"))
    assert len(a["features"]) == 2  # one snapshot per step
    assert not torch.equal(a["features"][0], a["features"][1])  # the steps moved the memory
    assert torch.equal(a["features"], b["features"]) and torch.equal(a["filled"], b["filled"])
    assert a["filled"].all()


def test_shipped_configs_build():
    for name in ("smmd_sysu", "smmd_regdb", "smmd_synthetic"):
        cfg = load_config(resolve_config(name), ["model.arch=resnet18", "model.pretrained=null"])
        assert cfg.method.name == "smmd" and cfg.data.modalities == ["rgb", "ir"]
        build_method(cfg, 4, [RGB, IR])
        assert "RECONSTRUCTION" in resolve_config(name).read_text()


def test_visible_infrared_rows_build_and_say_reconstruction():
    from crossreid.reproduce import load_set

    vi = load_set("vi")
    rows = {k: v for k, v in vi.experiments.items() if k.startswith("smmd")}
    assert {vi.tables.index(table) for _, table in rows.values()} == {0, 1} and len(rows) == 3  # methods, ablations
    for experiment, _ in rows.values():
        assert "(reconstruction)" in experiment.label
        cfg = vi.config(experiment, [*experiment.overrides, "model.pretrained=null"])
        build_method(cfg, 4, [Modality.parse(m) for m in cfg.data.modalities])


def test_bn_level_prototypes_hold_the_bn_feature():
    m = make("prototype_level=bn")
    b = make_batch()
    m.train()
    with torch.no_grad():
        embedding = m.forward_batch(b).embedding  # train-mode BN: the step's own BN features
    step(m, b)
    slots = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    for pid in (0, 1):
        for slot in (0, 1):
            rows = (b.labels == pid) & (slots == slot)
            assert torch.allclose(m.prototypes.features[pid, slot], embedding[rows].mean(0), atol=1e-5)
