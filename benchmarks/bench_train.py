"""Training throughput of the engine against a bare PyTorch loop, same model, same tensors, same run.

    python benchmarks/bench_train.py [--machine "2-core CPU, no GPU"] [--no-write]

For each method and network size the engine's ``train_epoch`` (sampler, cached images,
batch augmentation, autocast context, GradScaler, loss bookkeeping, per-epoch set-up)
and a bare loop (``training_step``, ``zero_grad``, ``backward``, ``step``) over batch
tensors the engine's input path produced take turns, one step each, same model and
optimiser, the order alternating. Each pair's time ratio is kept and the median ratio
is the engine's overhead: a load spike from another process hits both halves of a pair,
so the ratio stays meaningful on a shared machine. Engine epochs of one step count the
per-epoch set-up in every step, so the overhead is, if anything, overstated. The
input-path share is the time of ``make_batch`` alone over the engine's step time.
The table is printed and written to docs/benchmarks.md between the ``train`` markers.
"""

from __future__ import annotations

import csv
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import DOC, arguments  # benchmarks/common.py
from PIL import Image

from crossreid.config import load_config
from crossreid.data.pipeline import ImageStore
from crossreid.data.registry import load_dataset
from crossreid.engine.trainer import EpochPoint, Position, Trainer
from crossreid.io import write_marked_section

METHODS = {"one_stream": [], "zero_padding": [], "two_stream": [], "agw": ["model.pooling=gem"],
           "cross_modal_distillation": ["model.head=embedding", "method.options.source=depth",
                                        "method.options.target=rgb"]}
# (arch, height, width, P, K, step pairs): K images per identity and modality, two modalities.
SIZES = [("resnet18", 128, 64, 8, 4, 12), ("resnet50", 288, 144, 4, 2, 16)]


def write_dataset(root: Path, height: int, width: int, ids: int = 10, frames: int = 8) -> Path:
    """Random co-registered RGB + depth images in the generic manifest layout, all for training."""
    rng = np.random.default_rng(0)
    rows = []
    for pid in range(1, ids + 1):
        for t in range(frames):
            for mod in ("rgb", "depth"):
                rel = Path(mod) / f"{pid:03d}_{t}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                if mod == "rgb":
                    img = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), "RGB")
                else:
                    img = Image.fromarray(rng.integers(600, 6000, (height, width)).astype(np.uint16))
                img.save(root / rel)
                rows.append({"path": rel.as_posix(), "person": pid, "camera": 1 + t % 2, "modality": mod,
                             "split": "train", "frame": f"{pid}_{t}", "sequence": f"{pid}"})
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def bare_steps(method, optimizer, stage, batches) -> float:
    """Seconds per step of the plain loop over prepared batches."""
    method.train()
    start = time.perf_counter()
    for batch in batches:
        loss = method.training_step(batch, stage).losses["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / len(batches)


def bench_one(name: str, size, root: Path, work: Path) -> dict:
    arch, h, w, p, k, pairs = size
    cfg = load_config(None, ["data.dataset=generic", f"data.root={root}", f"data.height={h}", f"data.width={w}",
                             "data.modalities=[rgb,depth]", f"model.arch={arch}", f"method.name={name}",
                             f"train.ids_per_batch={p}", f"train.images_per_id={k}", "train.progress=false",
                             "train.iterations_per_epoch=1", "train.select=last", *METHODS[name]])
    trainer = Trainer(cfg, work / f"{name}-{arch}", load_dataset("generic", root), overwrite=True, progress=False)
    si = len(trainer.method.stages()) - 1  # distillation: the student stage
    stage = trainer.method.stages()[si]
    sampler = trainer.samplers[si]
    model, optimizer, _, scaler = trainer.begin_stage(si, stage, Position(stage=si))

    def engine_step(epoch: int) -> float:
        sampler.set_epoch(epoch)
        start = time.perf_counter()
        trainer.train_epoch(model, sampler, optimizer, scaler, EpochPoint(si, stage, epoch), Position())
        return time.perf_counter() - start

    sampler.iterations = 3
    start = time.perf_counter()
    batches = [trainer.make_batch(b, stage, sampler.shard(), key=(cfg.train.seed, si, 0, step))
               for step, b in enumerate(sampler.global_batches())]
    input_s = (time.perf_counter() - start) / len(batches)
    sampler.iterations = 1
    engine_step(0), bare_steps(trainer.method, optimizer, stage, batches[:1])  # warm-up
    engine, bare = [], []
    for r in range(pairs):
        first_bare = r % 2 == 1
        if first_bare:
            bare.append(bare_steps(trainer.method, optimizer, stage, [batches[r % len(batches)]]))
        engine.append(engine_step(r + 1))
        if not first_bare:
            bare.append(bare_steps(trainer.method, optimizer, stage, [batches[r % len(batches)]]))
    ratios = np.array(engine) / np.array(bare)
    q1, q3 = np.percentile(ratios, [25, 75])
    images = len(batches[0].indices)
    return {"method": name + (" (student)" if si else ""), "net": f"{arch} {h}×{w}", "batch": images,
            "engine": images / np.median(engine), "bare": images / np.median(bare), "pairs": pairs,
            "overhead": float(np.median(ratios)) - 1, "iqr": (q1 - 1, q3 - 1),
            "input": input_s / np.median(engine)}


def bench_cache(root: Path, work: Path, height: int, width: int) -> dict:
    """Seconds to make the training images ready: decode to memory, build the disk cache, reopen it."""
    catalog = load_dataset("generic", root)
    out = {"images": len(catalog.train)}
    for key, kwargs in (("memory", {}), ("disk_build", {"disk_dir": work / "cache"}),
                        ("disk_reopen", {"disk_dir": work / "cache"})):
        store = ImageStore(catalog.train, height, width, depth_encoding="normals", root=root, **kwargs)
        start = time.perf_counter()
        store.preload(progress=False)
        store.batch(range(len(store)))
        out[key] = time.perf_counter() - start
    return out


def table(rows: list[dict], caches: list[tuple[str, dict]], machine: str) -> str:
    lines = [f"Machine: {machine}; Python {platform.python_version()}, torch {torch.__version__} "
             f"({torch.get_num_threads()} threads), float32, no autocast; random images, two modalities "
             "(RGB + depth), batch = P × K × 2. Engine and bare loop alternate one step at a time; "
             "img/s are medians over the steps.", "",
             "| method | network | batch | step pairs | engine img/s | bare loop img/s | engine overhead "
             "(median) | overhead, quartiles | input path share |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['net']} | {r['batch']} | {r['pairs']} | {r['engine']:.1f} | "
                     f"{r['bare']:.1f} | {100 * r['overhead']:+.1f} % | {100 * r['iqr'][0]:+.1f} … "
                     f"{100 * r['iqr'][1]:+.1f} % | {100 * r['input']:.1f} % |")
    lines += ["", "\"engine overhead\" is the median over step pairs of engine step time over bare step "
              "time, minus 1; the engine's step includes its input path (cached images → augmentation → "
              "normalisation) and, here, its per-epoch set-up; the bare loop gets the tensors ready-made. "
              "The quartiles of the pair ratios show the timing noise of the shared machine. \"input path "
              "share\" is the input path's time over the engine's step time.", "",
              "| images ready (training pool) | images | decode to memory | build disk cache | reopen disk cache |",
              "|---|---|---|---|---|"]
    for size, c in caches:
        lines.append(f"| {size} | {c['images']} | {c['memory']:.2f} s | {c['disk_build']:.2f} s | "
                     f"{c['disk_reopen']:.3f} s |")
    return "\n".join(lines)


def main() -> None:
    parser = arguments(__doc__)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    rows, caches = [], []
    try:
        for size in SIZES:
            root = write_dataset(work / f"data-{size[1]}x{size[2]}", size[1], size[2])
            caches.append((f"{size[1]}×{size[2]}", bench_cache(root, work, size[1], size[2])))
            for name in METHODS:
                rows.append(bench_one(name, size, root, work))
                r = rows[-1]
                print(f"{r['method']:<36} {r['net']:<18} engine {r['engine']:7.1f} img/s  bare {r['bare']:7.1f}"
                      f"  overhead {100 * r['overhead']:+5.1f} %  input {100 * r['input']:4.1f} %", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = table(rows, caches, args.machine)
    print(text)
    if not args.no_write:
        write_marked_section(DOC, "train", "Training", text)


if __name__ == "__main__":
    main()
