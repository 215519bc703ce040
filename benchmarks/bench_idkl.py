"""Training-step throughput of IDKL against AGW at the same size, same tensors.

    python benchmarks/bench_idkl.py [--machine "2-core CPU, no GPU"] [--pairs 6] [--no-write]

For each network size both methods are built for RGB + IR and given the same random
modality-major batches (P identities × K images per modality); one bare training step
(``training_step``, ``zero_grad``, ``backward``, Adam ``step``) of each alternates, the
order swapping every pair, so a load spike from another process hits both. Reported:
median images/s of each and the median over pairs of IDKL's step time over AGW's. The
table is printed and written to docs/benchmarks.md between the ``idkl`` markers.
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np
import torch
from common import DOC, arguments  # benchmarks/common.py

from crossreid.config import load_config
from crossreid.engine.trainer import learning_rates, make_optimizer
from crossreid.io import write_marked_section
from crossreid.methods import Batch, build_method
from crossreid.modality import Modality

METHODS = {"agw": ["method.name=agw", "model.pooling=gem", "loss.label_smoothing=0"],
           "idkl": ["method.name=idkl", "model.pooling=gem", "loss.label_smoothing=0", "loss.triplet_margin=1.3"]}
# (arch, height, width, P, K): K images per identity and modality, two modalities.
SIZES = [("resnet18", 128, 64, 4, 4), ("resnet50", 384, 144, 2, 2)]
CLASSES = 100


def make_batches(h: int, w: int, p: int, k: int, n: int = 2) -> list[Batch]:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(p).repeat_interleave(k).repeat(2)
    return [Batch(torch.randn(2 * p * k, 3, h, w, generator=g), labels, [Modality.RGB, Modality.IR], p * k)
            for _ in range(n)]


def step_seconds(method, optimizer, batch: Batch) -> float:
    start = time.perf_counter()
    loss = method.training_step(batch, method.stages()[0]).losses["loss"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def bench_size(size, pairs: int) -> dict:
    arch, h, w, p, k = size
    batches = make_batches(h, w, p, k)
    runs = {}
    for name, overrides in METHODS.items():
        cfg = load_config(None, [f"model.arch={arch}", f"train.ids_per_batch={p}", f"train.images_per_id={k}",
                                 *overrides])
        method = build_method(cfg, CLASSES, [Modality.RGB, Modality.IR]).train()
        stage = method.stages()[0]
        optimizer = make_optimizer(learning_rates(method.param_groups(stage), stage, cfg.optim), cfg)
        step_seconds(method, optimizer, batches[0])  # warm-up
        runs[name] = (method, optimizer, [])
    for r in range(pairs):
        order = list(runs) if r % 2 == 0 else list(runs)[::-1]
        for name in order:
            method, optimizer, times = runs[name]
            times.append(step_seconds(method, optimizer, batches[r % len(batches)]))
    images = 2 * p * k
    agw, idkl = np.array(runs["agw"][2]), np.array(runs["idkl"][2])
    params = {name: sum(q.numel() for q in m.parameters()) / 1e6 for name, (m, _, _) in runs.items()}
    return {"net": f"{arch} {h}×{w}", "batch": images, "pairs": pairs, "agw": images / np.median(agw),
            "idkl": images / np.median(idkl), "ratio": float(np.median(idkl / agw)), "params": params}


def table(rows: list[dict], machine: str, load: str) -> str:
    lines = [f"Machine: {machine}; Python {platform.python_version()}, torch {torch.__version__} "
             f"({torch.get_num_threads()} threads), float32, no autocast; random images, RGB + IR, batch = "
             "P × K × 2, bare training steps (forward, all losses, backward, Adam step) alternating AGW / "
             f"IDKL; img/s are medians over the steps. {load}", "",
             "| network | batch | step pairs | AGW img/s | IDKL img/s | IDKL step time / AGW (median) | "
             "parameters AGW / IDKL |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['net']} | {r['batch']} | {r['pairs']} | {r['agw']:.3g} | {r['idkl']:.3g} | "
                     f"{r['ratio']:.2f}× | {r['params']['agw']:.1f} M / {r['params']['idkl']:.1f} M |")
    lines += ["", "AGW runs with its default options here (non-local blocks of C/2 channels in layer2-3, "
              "weighted regularised triplet); IDKL with all its losses on (purifier, modality classifiers, "
              "TGSA, CSA). IDKL's extra cost is the second layer3-4 branch, the purifier's two 1x1-conv "
              "masks at full map resolution and its extra GeM/classifier passes. AGW's non-local blocks "
              "grow with the map (all-pairs affinity), a likely reason the ratio is smaller at 384×144 "
              "(not measured separately)."]
    return "\n".join(lines)


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--pairs", type=int, default=6)
    args = parser.parse_args()
    before = os.getloadavg()[0]
    rows = []
    for size in SIZES:
        rows.append(bench_size(size, args.pairs))
        r = rows[-1]
        print(f"{r['net']:<18} AGW {r['agw']:6.1f} img/s  IDKL {r['idkl']:6.1f} img/s  ratio {r['ratio']:.2f}",
              flush=True)
    load = (f"1-minute load average {before:.1f} before and {os.getloadavg()[0]:.1f} after the run "
            "(other jobs shared the cores).")
    text = table(rows, args.machine, load)
    print(text)
    if not args.no_write:
        write_marked_section(DOC, "idkl", "IDKL against AGW (training step)", text)


if __name__ == "__main__":
    main()
