"""Training throughput of the engine against a bare PyTorch loop, same model, same tensors, same run.

    python benchmarks/bench_train.py [--rounds R] [--machine "2-core CPU, no GPU"] [--no-write]

For each method and network size the engine's ``train_epoch`` (sampler, cached images,
batch augmentation, autocast context, GradScaler, loss bookkeeping) runs a few steps;
a bare loop (``training_step``, ``zero_grad``, ``backward``, ``step``) runs the same
model and optimiser over the batch tensors the engine's input path produced. Each round
runs both, the order alternating between rounds; the fastest round of each counts (the
cores are shared).
The input-path share is the time of ``make_batch`` alone over the engine's step time.
The table is printed and written to docs/benchmarks.md between the ``train`` markers.
"""

from __future__ import annotations

import argparse
import csv
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from crossreid.config import load_config
from crossreid.data.pipeline import ImageStore
from crossreid.data.registry import load_dataset
from crossreid.engine.trainer import Position, Trainer
from crossreid.io import write_text

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
START, END = "<!-- train:start -->", "<!-- train:end -->"
METHODS = {"one_stream": [], "zero_padding": [], "two_stream": [], "agw": ["model.pooling=gem"],
           "cross_modal_distillation": ["model.head=embedding", "method.options.source=depth",
                                        "method.options.target=rgb"]}
# (arch, height, width, P, K, steps per round): K images per identity and modality, two modalities.
SIZES = [("resnet18", 128, 64, 8, 4, 3), ("resnet50", 288, 144, 4, 2, 2)]


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
        loss = method.training_step(batch, stage)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / len(batches)


def bench_one(name: str, size, root: Path, work: Path, rounds: int) -> dict:
    arch, h, w, p, k, steps = size
    cfg = load_config(None, ["data.dataset=generic", f"data.root={root}", f"data.height={h}", f"data.width={w}",
                             "data.modalities=[rgb,depth]", f"model.arch={arch}", f"method.name={name}",
                             f"train.ids_per_batch={p}", f"train.images_per_id={k}", "train.progress=false",
                             f"train.iterations_per_epoch={steps}", *METHODS[name]])
    trainer = Trainer(cfg, work / f"{name}-{arch}", load_dataset("generic", root), overwrite=True, progress=False)
    si = len(trainer.method.stages()) - 1  # distillation: the student stage
    stage = trainer.method.stages()[si]
    sampler = trainer.samplers[si]
    model, optimizer, _, scaler = trainer.begin_stage(si, stage, Position(stage=si))
    ctx = (si, stage, 0, None)
    sampler.iterations = 1
    trainer.train_epoch(model, sampler, optimizer, scaler, ctx, Position())  # warm-up
    sampler.iterations = steps
    start = time.perf_counter()
    batches = [trainer.make_batch(b, stage, sampler.shard()) for b in sampler.global_batches()]
    input_s = (time.perf_counter() - start) / steps
    bare_steps(trainer.method, optimizer, stage, batches[:1])  # warm-up
    engine, bare = [], []
    for r in range(rounds):
        if r % 2:
            bare.append(bare_steps(trainer.method, optimizer, stage, batches))
        sampler.set_epoch(r + 1)
        start = time.perf_counter()
        trainer.train_epoch(model, sampler, optimizer, scaler, (si, stage, r + 1, None), Position())
        engine.append((time.perf_counter() - start) / steps)
        if not r % 2:
            bare.append(bare_steps(trainer.method, optimizer, stage, batches))
    images = len(batches[0].indices)
    return {"method": name + (" (student)" if si else ""), "net": f"{arch} {h}×{w}", "batch": images,
            "engine": images / min(engine), "bare": images / min(bare),
            "overhead": min(engine) / min(bare) - 1, "input": input_s / min(engine), "steps": steps,
            "spread": max(bare) / min(bare) - 1}


def bench_cache(root: Path, work: Path, height: int, width: int) -> dict:
    """Seconds to make the training images ready: decode to memory, build the disk cache, reopen it."""
    catalog = load_dataset("generic", root)
    out = {"images": len(catalog.train)}
    for key, kwargs in (("memory", {}), ("disk_build", {"disk_dir": work / "cache"}),
                        ("disk_reopen", {"disk_dir": work / "cache"})):
        store = ImageStore(catalog.train, height, width, root=root, **kwargs)
        start = time.perf_counter()
        store.preload(progress=False)
        store.batch(range(len(store)))
        out[key] = time.perf_counter() - start
    return out


def table(rows: list[dict], caches: list[tuple[str, dict]], machine: str, rounds: int) -> str:
    lines = [f"Machine: {machine}; Python {platform.python_version()}, torch {torch.__version__} "
             f"({torch.get_num_threads()} threads), float32, no autocast. {rounds} rounds, each running "
             "the engine and the bare loop (order alternating), fastest round of each; random images, "
             "two modalities (RGB + depth), batch = P × K × 2.", "",
             "| method | network | batch | steps/round | engine img/s | bare loop img/s | engine overhead "
             "| bare loop spread | input path share |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['net']} | {r['batch']} | {r['steps']} | {r['engine']:.1f} | "
                     f"{r['bare']:.1f} | "
                     f"{100 * r['overhead']:+.1f} % | {100 * r['spread']:.1f} % | {100 * r['input']:.1f} % |")
    lines += ["", "\"engine overhead\" is engine step time over bare step time minus 1; the engine's time "
              "includes its input path (cached images → augmentation → normalisation), the bare loop "
              "gets those tensors ready-made. \"bare loop spread\" (slowest round over fastest, minus 1) "
              "shows the timing noise of the shared machine. \"input path share\" is the input path's "
              "time over the engine's step time.", "",
              "| images ready (training pool) | images | decode to memory | build disk cache | reopen disk cache |",
              "|---|---|---|---|---|"]
    for size, c in caches:
        lines.append(f"| {size} | {c['images']} | {c['memory']:.2f} s | {c['disk_build']:.2f} s | "
                     f"{c['disk_reopen']:.3f} s |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--machine", default="2-core CPU, no GPU")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    rows, caches = [], []
    try:
        for size in SIZES:
            root = write_dataset(work / f"data-{size[1]}x{size[2]}", size[1], size[2])
            caches.append((f"{size[1]}×{size[2]}", bench_cache(root, work, size[1], size[2])))
            for name in METHODS:
                rows.append(bench_one(name, size, root, work, args.rounds))
                r = rows[-1]
                print(f"{r['method']:<36} {r['net']:<18} engine {r['engine']:7.1f} img/s  bare {r['bare']:7.1f}"
                      f"  overhead {100 * r['overhead']:+5.1f} %  input {100 * r['input']:4.1f} %", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = table(rows, caches, args.machine, args.rounds)
    print(text)
    if not args.no_write:
        doc = DOC.read_text(encoding="utf-8")
        section = f"{START}\n## Training\n\n{text}\n{END}"
        if START in doc and END in doc:
            doc = doc[:doc.index(START)] + section + doc[doc.index(END) + len(END):]
        else:
            doc = doc.rstrip("\n") + "\n\n" + section + "\n"
        write_text(DOC, doc)


if __name__ == "__main__":
    main()
