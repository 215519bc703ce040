"""The GPU check (issue 23 §4): AGW trained and evaluated on a GPU, checked against the CPU, and a 1-GPU torchrun with NCCL.

    python benchmarks/gpu_check.py [--steps 300] [--machine "1x NVIDIA H100"] [--no-write]
    python benchmarks/gpu_check.py --tiny     # the same checks on the CPU at a tiny size (a test)

1. **Train**: AGW (``agw_sysu.yaml``'s model and losses: ResNet-50 with non-local blocks,
   GeM, BNNeck, CE + weighted regularised triplet; no ImageNet weights, no download) at
   288×144 on synthetic RGB + IR persons rendered at that size, batch 8 ids × 4 × 2
   modalities = 64, bf16 autocast, channels_last, ``--steps`` steps in one epoch. Reports
   images/s and the data-wait share (the trainer's ``metrics.jsonl``) and peak GPU memory.
2. **Evaluate** the run on the GPU (ir→rgb, bf16 autocast): seconds and mAP (synthetic, few
   steps: the number only shows the pass works).
3. **Against the CPU**: one training step's loss terms (train mode, no gradients) and the
   test features of 16 images, float32 with TF32 off, on the GPU and on the CPU from the same
   weights; each loss within 1e-3 relative, the features within 1e-3 of their largest value.
4. **torchrun**: one process on the GPU joins an NCCL group (``torchrun --nproc_per_node 1``);
   BatchNorm converted to torch's SyncBatchNorm, the step wrapped in DistributedDataParallel and
   the losses on the batch gathered through ``all_gather_grad`` (``train.batch_scope=global``);
   three SGD steps whose losses must equal the same steps without the group.

Every check prints its figures; exit status 1 if one fails. On a GPU the table is written to
docs/benchmarks.md between the ``gpu`` markers (``--no-write``: print only). ``--tiny`` runs
it all on the CPU (ResNet-18 at 64×32, 3 steps of 4 ids × 2 × 2, gloo instead of NCCL, fp32) in well under a
minute; the default test suite runs that, so the script keeps working until a GPU runs it.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import DOC, arguments  # benchmarks/common.py

from crossreid import distributed as D
from crossreid.config import dump_config, load_config, resolve_config
from crossreid.data.open import open_catalog
from crossreid.device import inference, resolve_device, training_kernels
from crossreid.engine.trainer import Trainer, _Step
from crossreid.io import write_marked_section
from crossreid.methods import Batch, build_method
from crossreid.modality import Modality

RGB, IR = Modality.RGB, Modality.IR
# (arch, height, width, synthetic persons, rendered height, width, P, K)
FULL = ("resnet50", 288, 144, 100, 288, 144, 8, 4)
TINY = ("resnet18", 64, 32, 24, 64, 32, 4, 2)
TOLERANCE = 1e-3


def run_config(tiny: bool, steps: int, device: torch.device):
    arch, h, w, persons, rh, rw, p, k = TINY if tiny else FULL
    cuda = device.type == "cuda"
    return load_config(resolve_config("agw_sysu"), [
        "data.dataset=synthetic", f"data.synth={{identities: {persons}, val_identities: {persons // 10}, "
        f"height: {rh}, width: {rw}, modalities: [rgb, ir], rgbd_cameras: 2, ir_cameras: 2}}",
        f"data.height={h}", f"data.width={w}", f"model.arch={arch}", "model.pretrained=null",
        f"train.ids_per_batch={p}", f"train.images_per_id={k}",
        "train.epochs=1", f"train.iterations_per_epoch={steps}", "train.validate_every=1", "train.select=last",
        "train.amp=" + ("bf16" if cuda else "'off'"), "train.channels_last=true", "train.progress=false",
        "train.keep_checkpoints=none", "schedule.warmup_epochs=0", "schedule.milestones=[]",
        "eval.batch_size=256"])


def check_train(cfg, work: Path, device: torch.device) -> dict:
    catalog = open_catalog(cfg.data, progress=False)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    Trainer(cfg, work / "run", catalog, progress=False, device=device).fit()
    record = json.loads((work / "run/metrics.jsonl").read_text().splitlines()[0])
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {"images_per_s": record["images_per_s"], "data_wait": record["data_wait"], "peak_gib": peak,
            "seconds": time.perf_counter() - start, "steps": cfg.train.iterations_per_epoch}


def check_evaluate(work: Path, device: torch.device) -> dict:
    from crossreid.experiment import evaluate_run

    start = time.perf_counter()
    results = evaluate_run(work / "run", progress=False, device=device).results
    direction = next(iter(results))
    return {"direction": direction, "mAP": results[direction].mean()["map"], "seconds": time.perf_counter() - start}


def small_batch(size: tuple[int, int], ids: int = 4, k: int = 2) -> Batch:
    g = torch.Generator().manual_seed(0)
    n = 2 * ids * k
    labels = torch.arange(ids).repeat_interleave(k).repeat(2)
    return Batch(torch.randn(n, 3, *size, generator=g), labels, [RGB, IR], ids * k, list(range(n)))


def method_for(cfg, classes: int = 10):
    torch.manual_seed(0)
    method = build_method(cfg, classes, [RGB, IR])
    return method, method.stages()[-1]


def _to(batch: Batch, device: torch.device) -> Batch:
    return Batch(batch.images.to(device), batch.labels.to(device), batch.modalities, batch.rows, batch.indices)


def check_against_cpu(cfg, device: torch.device) -> dict:
    """Loss terms of one step (train mode) and eval features, float32 on ``device`` and on the CPU."""
    method, stage = method_for(cfg)
    batch = small_batch((cfg.data.height, cfg.data.width))
    out = {}
    for where in (torch.device("cpu"), device):
        m = copy.deepcopy(method).to(where).train()
        b = _to(batch, where)
        with inference(where, amp="off"):   # float32, TF32 off on a GPU, no gradients
            losses = {k: float(v) for k, v in m.training_step(b, stage).losses.items()}
            m.eval()
            features = torch.cat([m.embed(b.images[b.block(mod)], mod).float().cpu() for mod in b.modalities])
        out[where.type if where.type == "cpu" else "device"] = (losses, features)
    (cpu_losses, cpu_f), (dev_losses, dev_f) = out["cpu"], out.get("device", out["cpu"])
    loss_gap = max(abs(dev_losses[k] - v) / max(abs(v), 1e-6) for k, v in cpu_losses.items())
    feature_gap = float((dev_f - cpu_f).abs().max() / cpu_f.abs().max())
    return {"losses": cpu_losses, "loss_gap": loss_gap, "feature_gap": feature_gap,
            "ok": loss_gap < TOLERANCE and feature_gap < TOLERANCE}


def torchrun_worker(config: str, out: str) -> None:
    """Inside ``torchrun --nproc_per_node 1``: the process group (NCCL on a GPU), SyncBatchNorm, DDP and the
    gathering all-gather; three SGD steps on the group and the same three without it."""
    cfg = load_config(config)
    device = resolve_device(None)
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = torch.distributed.get_backend()
    method, stage = method_for(cfg)
    batch = _to(small_batch((cfg.data.height, cfg.data.width)), device)
    layout = Batch(batch.images.new_empty(0), batch.labels, batch.modalities, batch.rows, batch.indices)
    gathered = Batch(batch.images, batch.labels, batch.modalities, batch.rows, batch.indices, global_layout=layout)
    plain = copy.deepcopy(method).to(device)
    synced = D.sync_batchnorm(copy.deepcopy(method), device).to(device)
    model = torch.nn.parallel.DistributedDataParallel(_Step(synced), device_ids=[device.index] if device.index is not None
                                                      else None, find_unused_parameters=synced.unused_parameters(stage))
    losses = {"group": [], "alone": []}
    for name, step, net, b in (("group", model, synced, gathered), ("alone", _Step(plain), plain, batch)):
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
        net.train()
        for _ in range(3):
            optimizer.zero_grad(set_to_none=True)
            loss = step(b, stage).losses["loss"]
            loss.backward()
            optimizer.step()
            losses[name].append(float(loss))
    sync = sum(isinstance(m, torch.nn.SyncBatchNorm) for m in synced.modules())
    cross = sum(isinstance(m, D.CrossRankBatchNorm) for m in synced.modules())
    Path(out).write_text(json.dumps({"backend": str(backend), "losses": losses, "sync_bn": sync, "cross_rank_bn": cross}))
    torch.distributed.destroy_process_group()


def check_torchrun(cfg, work: Path, device: torch.device) -> dict:
    config, out = work / "torchrun.yaml", work / "torchrun.json"
    config.write_text(dump_config(cfg))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).parent),
                                                                    os.environ.get("PYTHONPATH")) if p)}
    if device.type == "cuda":
        env["CUDA_VISIBLE_DEVICES"] = env.get("CUDA_VISIBLE_DEVICES", str(device.index or 0))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
           str(Path(__file__).resolve()), "--torchrun-worker", str(config), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    if proc.returncode:
        return {"ok": False, "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    got = json.loads(out.read_text())
    gap = max(abs(a - b) / max(abs(b), 1e-6) for a, b in zip(got["losses"]["group"], got["losses"]["alone"]))
    want = "nccl" if device.type == "cuda" else "gloo"
    bn = got["sync_bn"] if device.type == "cuda" else got["cross_rank_bn"]
    return {**got, "loss_gap": gap, "ok": got["backend"] == want and bn > 0 and gap < TOLERANCE}


def table(machine: str, device: torch.device, tr: dict, ev: dict, cpu: dict, run: dict) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (--tiny)"
    return "\n".join([
        f"Machine: {machine} ({name}); Python {platform.python_version()}, torch {torch.__version__}.", "",
        "| check | result |", "|---|---|",
        f"| train AGW, {tr['steps']} steps | {tr['images_per_s']:,.0f} img/s, data wait {100 * tr['data_wait']:.1f} %, "
        f"peak GPU memory {tr['peak_gib']:.1f} GiB, {tr['seconds']:.0f} s in all |".replace("nan GiB", "n/a"),
        f"| evaluate on the device ({ev['direction']}) | {ev['seconds']:.1f} s, mAP {100 * ev['mAP']:.1f} % (synthetic) |",
        f"| losses and features against the CPU | loss gap {cpu['loss_gap']:.1e}, feature gap {cpu['feature_gap']:.1e} "
        f"({'pass' if cpu['ok'] else 'FAIL'}) |",
        f"| torchrun, 1 process, {run.get('backend', '?')} | loss gap {run.get('loss_gap', float('nan')):.1e} over 3 "
        f"steps ({'pass' if run['ok'] else 'FAIL: ' + ' '.join(run.get('error', []))}) |"])


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--torchrun-worker":
        torchrun_worker(sys.argv[2], sys.argv[3])
        return 0
    parser = arguments(__doc__)
    parser.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    parser.add_argument("--tiny", action="store_true", help="on the CPU at a tiny size (a test; never written)")
    parser.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: the GPU; --tiny: cpu)")
    args = parser.parse_args()
    device = resolve_device("cpu" if args.tiny and args.device is None else args.device)
    if device.type != "cuda" and not args.tiny:
        print("error: no GPU here; gpu_check.py is for a GPU (--tiny runs the checks on the CPU at a tiny size)",
              file=sys.stderr)
        return 2
    training_kernels(fast=True)          # what crossreid train sets: cuDNN autotuning and TF32
    cfg = run_config(args.tiny, 3 if args.tiny else args.steps, device)
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    try:
        tr = check_train(cfg, work, device)
        print(f"train: {tr}", flush=True)
        ev = check_evaluate(work, device)
        print(f"evaluate: {ev}", flush=True)
        cpu = check_against_cpu(cfg, device)
        print(f"against the CPU: {cpu}", flush=True)
        run = check_torchrun(cfg, work, device)
        print(f"torchrun: {run}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = table(args.machine, device, tr, ev, cpu, run)
    print(text)
    if device.type == "cuda" and not args.no_write:
        write_marked_section(DOC, "gpu", "GPU check", text)
    return 0 if cpu["ok"] and run["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
