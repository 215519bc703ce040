"""The optimiser step, fused against plain, and what it does to a whole training step.

    python benchmarks/bench_optim.py [--machine "2-core CPU, no GPU"] [--pairs 12] [--no-write]

``make_optimizer`` builds Adam and SGD fused (one kernel per step over all parameters)
where every parameter is on the CPU or a CUDA device; the plain path updates one tensor
at a time. For each network the two optimisers, built from the same config, take turns,
one step each, the order swapping every pair, so a load spike from another process hits
both. Two timings: ``step()`` alone over the network's parameters with fixed gradients,
and a whole training step of the one-stream demo model (forward, identity loss, backward,
``step()``) on the demo's batch shape. Medians over the pairs. The table is printed and
written to docs/benchmarks.md between the ``optim`` markers.
"""

from __future__ import annotations

import platform
import statistics
import time

import torch
import torch.nn.functional as F
from common import DOC, arguments  # benchmarks/common.py

from crossreid.config import load_config
from crossreid.engine.trainer import make_optimizer
from crossreid.io import write_marked_section
from crossreid.models import build_model

OPTIMS = {"adam": ["optim.name=adam"], "sgd": ["optim.name=sgd", "optim.momentum=0.9", "optim.nesterov=true"]}
# (arch, height, width, batch): the demo's training step (8 identities x 1 image x 3 modalities).
NETS = [("resnet18", 64, 32, 24), ("resnet50", 128, 64, 24)]
CLASSES = 80


def optimizers(model: torch.nn.Module, optim: list[str]) -> dict[str, torch.optim.Optimizer]:
    cfg = load_config(None, [*optim, "optim.lr=0.001", "optim.weight_decay=0.0005"])
    return {name: make_optimizer([{"params": list(model.parameters())}], cfg, fused=fused)
            for name, fused in (("fused", None), ("plain", False))}


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench(arch: str, h: int, w: int, batch: int, optim: list[str], pairs: int) -> dict:
    torch.manual_seed(0)
    model = build_model(arch, num_classes=CLASSES, last_stride=1, pooling="avg", head="bnneck").train()
    opts = optimizers(model, optim)
    x, y = torch.randn(batch, 3, h, w), torch.randint(0, CLASSES, (batch,))

    def train_step(opt):
        def run():
            opt.zero_grad()
            F.cross_entropy(model(x).logits, y).backward()
            opt.step()
        return run

    times = {f"{k}_{kind}": [] for k in opts for kind in ("step", "train")}
    for i in range(pairs + 2):
        order = list(opts) if i % 2 == 0 else list(opts)[::-1]
        for name in order:
            t_train = timed(train_step(opts[name]))  # leaves gradients for the step-only timing
            t_step = timed(opts[name].step)
            if i >= 2:  # two warm-up pairs
                times[f"{name}_train"].append(t_train)
                times[f"{name}_step"].append(t_step)
    med = {k: statistics.median(v) for k, v in times.items()}
    params = sum(p.numel() for p in model.parameters())
    return {"net": f"{arch} {h}×{w}", "params": params, "batch": batch, **med}


def table(rows: list[dict], machine: str, pairs: int) -> str:
    head = (f"Machine: {machine}; Python {platform.python_version()}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), float32; {pairs} step pairs per row (after two warm-up pairs), "
            "medians; random images and labels.\n\n"
            "| optimiser | network | parameters | batch | `step()` plain | `step()` fused | training step plain "
            "| training step fused | training img/s plain → fused |\n|---|---|---|---|---|---|---|---|---|\n")
    lines = [f"| {r['optim']} | {r['net']} | {r['params'] / 1e6:.1f} M | {r['batch']} "
             f"| {1000 * r['plain_step']:.1f} ms | {1000 * r['fused_step']:.1f} ms "
             f"| {1000 * r['plain_train']:.0f} ms | {1000 * r['fused_train']:.0f} ms "
             f"| {r['batch'] / r['plain_train']:.1f} → {r['batch'] / r['fused_train']:.1f} |" for r in rows]
    return head + "\n".join(lines) + "\n"


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--pairs", type=int, default=12)
    args = parser.parse_args()
    rows = []
    for arch, h, w, batch in NETS:
        for name, optim in OPTIMS.items():
            rows.append({"optim": name, **bench(arch, h, w, batch, optim, args.pairs)})
            r = rows[-1]
            print(f"{name:<5} {r['net']:<18} step {1000 * r['plain_step']:6.1f} -> {1000 * r['fused_step']:6.1f} ms"
                  f"  training step {1000 * r['plain_train']:5.0f} -> {1000 * r['fused_train']:5.0f} ms", flush=True)
    text = table(rows, args.machine, args.pairs)
    print(text)
    if not args.no_write:
        write_marked_section(DOC, "optim", "Optimiser step (fused against plain)", text)


if __name__ == "__main__":
    main()
