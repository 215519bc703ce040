"""``train.batch_scope`` and cross-process BatchNorm with 2 gloo processes against one process.

Every method's step on the same global batch (P = 4 identities x K = 2 x 2 modalities): with
``batch_scope=global`` and ``sync_bn`` each process's losses and its DDP-averaged gradients
equal one process's on the whole batch, and so do the BatchNorm running statistics after the
step; with ``per_rank`` the losses differ (each process mines its own half). A second step runs
too, so DDP would fail on a parameter that gets no gradient without the method declaring it.
Dropout is off: its masks are drawn by each process for its own rows and cannot match.
"""

import os
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from crossreid import distributed as D
from crossreid.config import load_config
from crossreid.data.registry import load_dataset
from crossreid.data.samples import Sample
from crossreid.engine.trainer import Trainer, _Step, stage_context
from crossreid.errors import UserError
from crossreid.methods import Batch, build_method
from crossreid.methods.one_stream import OneStream
from crossreid.modality import Modality

RGB, IR, DEPTH = Modality.RGB, Modality.IR, Modality.DEPTH
P, K, CLASSES = 4, 2, 6
BASE = ["model.arch=resnet18", "model.base_width=8", "model.dropout=0", "data.height=32", "data.width=16",
        f"train.ids_per_batch={P}", f"train.images_per_id={K}", "loss.label_smoothing=0.1"]
VI = ["data.modalities=[rgb,ir]"]
GEM = ["model.pooling=gem"]
METHODS = {  # label: overrides
    "one_stream": VI, "zero_padding": VI, "two_stream": VI,
    "one_stream, no identity loss": [*VI, "loss.id_weight=0"],   # its classifier gets no gradient
    "agw": [*VI, *GEM],
    "smmd": [*VI, *GEM, "method.options.prototype_init=zero", "method.options.mutual_start_epoch=0"],
    "wan": [*VI, *GEM],
    # IDKL's purifier instance-normalises layer4 maps: at 32 x 16 they hold 2 values per channel, and
    # that tiny variance would amplify float32 summation noise far above the tolerance.
    "idkl": [*VI, *GEM, "loss.triplet_margin=1.3", "data.height=64", "data.width=32"],
    "cross_modal_distillation": ["data.modalities=[rgb,depth]", "model.head=embedding"],
}
PER_RANK = ("agw", "idkl", "one_stream")


def method_and_stage(label: str):
    name = label.split(",")[0]
    cfg = load_config(None, [*BASE, f"method.name={name}", *METHODS[label]])
    mods = [Modality.parse(m) for m in cfg.data.modalities]
    torch.manual_seed(0)
    method = build_method(cfg, CLASSES, mods)
    for m in method.modules():  # dropout masks are drawn by each process for its rows: they cannot match
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    stage = method.stages()[-1]
    modalities = stage.modalities or mods
    pool = [Sample(Path(f"{m}{r}"), pid=r // K, cam=1 + r % 2 + 2 * b, modality=m)
            for b, m in enumerate(modalities) for r in range(P * K)]
    method.on_stage_start(stage, stage_context(method, SimpleNamespace(samples=pool), torch.device("cpu")))
    method.on_epoch_start(stage, 0)
    with torch.no_grad():  # memories filled (the same on every process), so their terms count
        for memory in (getattr(method, "prototypes", None), getattr(method, "memory", None)):
            if memory is not None:
                memory.features.copy_(torch.randn(memory.features.shape, generator=torch.Generator().manual_seed(1)))
                memory.filled.fill_(True)
    for name_, p in method.named_parameters():
        p.requires_grad_(not (stage.frozen and name_.startswith(tuple(stage.frozen))))
    return method, stage, modalities, (cfg.data.height, cfg.data.width)


def global_batch(modalities, size, step: int) -> Batch:
    g = torch.Generator().manual_seed(10 + step)
    n = P * K * len(modalities)
    labels = torch.arange(P).repeat_interleave(K).repeat(len(modalities))
    return Batch(torch.randn(n, 3, *size, generator=g), labels, list(modalities), P * K, list(range(n)))


def shard(whole: Batch, rank: int, world: int) -> Batch:
    share = P // world * K
    rows = [b * whole.rows + rank * share + j for b in range(len(whole.modalities)) for j in range(share)]
    layout = Batch(whole.images.new_empty(0), whole.labels, whole.modalities, whole.rows, whole.indices)
    return Batch(whole.images[rows], whole.labels[rows], whole.modalities, share, [whole.indices[r] for r in rows],
                 global_layout=layout)


def two_steps(model, method, stage, batches) -> dict:
    """Losses and gradients of the first step, losses of the second, BN statistics after them."""
    out = {}
    for step, batch in enumerate(batches):
        method.zero_grad(set_to_none=True)
        output = model(batch, stage)
        output.losses["loss"].backward()
        out[f"losses{step}"] = {k: float(v.detach()) for k, v in output.losses.items()}
        if step == 0:
            out["grads"] = {n: p.grad.clone() for n, p in method.named_parameters() if p.grad is not None}
    out["buffers"] = {f"{n}.{k}": getattr(m, k).clone() for n, m in method.named_modules()   # BatchNorm statistics
                      if isinstance(m, nn.modules.batchnorm._BatchNorm) for k in ("running_mean", "running_var")}
    return out


def _worker(rank: int, world: int, port: int, out: str, scope: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        results = {}
        for name in (METHODS if scope == "global" else PER_RANK):
            method, stage, modalities, size = method_and_stage(name)
            method = D.sync_batchnorm(method, torch.device("cpu"))
            model = nn.parallel.DistributedDataParallel(_Step(method), find_unused_parameters=method.unused_parameters(stage))
            batches = [shard(global_batch(modalities, size, s), rank, world) for s in range(2)]
            if scope == "per_rank":
                batches = [Batch(b.images, b.labels, b.modalities, b.rows, b.indices) for b in batches]
            results[name] = two_steps(model, method, stage, batches)
        torch.save(results, out.format(rank))
    finally:
        torch.distributed.destroy_process_group()


def run_two(tmp_path, scope: str) -> list[dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / f"{scope}{{}}.pt")
    mp.spawn(_worker, args=(2, port, out, scope), nprocs=2, join=True)
    return [torch.load(out.format(r)) for r in range(2)]


@pytest.fixture(scope="module")
def alone() -> dict:
    out = {}
    for name in METHODS:
        method, stage, modalities, size = method_and_stage(name)
        out[name] = two_steps(_Step(method), method, stage, [global_batch(modalities, size, s) for s in range(2)])
    return out


def test_global_scope_with_sync_bn_equals_one_process(tmp_path, alone):
    ranks = run_two(tmp_path, "global")
    for name, one in alone.items():
        for got in (r[name] for r in ranks):
            for step in ("losses0", "losses1"):
                assert got[step].keys() == one[step].keys()
                for term, value in one[step].items():
                    assert got[step][term] == pytest.approx(value, rel=1e-4, abs=1e-6), (name, step, term)
            assert got["grads"].keys() == one["grads"].keys(), name
            for n, g in one["grads"].items():  # float32 sums in another order: relative to the gradient's norm
                gap = float((got["grads"][n] - g).norm() / g.norm().clamp_min(1e-12))
                assert gap < 1e-4 or g.norm() < 1e-6, (name, n, gap)   # (a bias before a BatchNorm gets ~0)
            for n, b in one["buffers"].items():
                torch.testing.assert_close(got["buffers"][n], b, rtol=1e-4, atol=1e-6,
                                           msg=lambda m, name=name, n=n: f"{name} {n}: {m}")


def test_per_rank_scope_sees_each_process_share_only(tmp_path, alone):
    ranks = run_two(tmp_path, "per_rank")
    for name in PER_RANK:
        metric = "wrt" if name == "agw" else "triplet"
        assert ranks[0][name]["losses0"][metric] != pytest.approx(alone[name]["losses0"][metric], rel=1e-3)
        assert ranks[0][name]["losses0"][metric] != pytest.approx(ranks[1][name]["losses0"][metric], rel=1e-3)


def test_sync_batchnorm_returns_the_converted_module():
    bn = nn.BatchNorm2d(4)
    bn.running_mean.fill_(0.5)
    for device, kind in (("cpu", D.CrossRankBatchNorm), ("cuda", nn.SyncBatchNorm)):
        net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
        converted = D.sync_batchnorm(net, torch.device(device))
        assert isinstance(converted[1], kind) and converted[1].weight is net[1].weight
        top = D.sync_batchnorm(bn, torch.device(device))   # a BatchNorm at the top is replaced
        assert isinstance(top, kind) and top is not bn and torch.equal(top.running_mean, bn.running_mean)
    # Alone it is a plain BatchNorm: the same output and running statistics.
    x = torch.randn(8, 4, 5, 3)
    plain, cross = nn.BatchNorm2d(4), D.sync_batchnorm(nn.BatchNorm2d(4), torch.device("cpu"))
    torch.testing.assert_close(cross(x), plain(x))
    torch.testing.assert_close(cross.running_var, plain.running_var)


def test_global_scope_with_a_method_that_cannot_gather_is_one_error(tiny_root, tmp_path, monkeypatch):
    monkeypatch.setattr(OneStream, "gathers_global_batch", False)
    cfg = load_config(None, ["data.dataset=generic", "data.height=32", "data.width=16", "train.ids_per_batch=2",
                             "train.batch_scope=global", "train.progress=false"])
    with pytest.raises(UserError, match=r"batch_scope=global: method 'one_stream' .*set train.batch_scope=per_rank"):
        Trainer(cfg, tmp_path / "run", load_dataset("generic", tiny_root), progress=False, dist=D.Dist(0, 2, 0))
    assert not (tmp_path / "run").exists()
