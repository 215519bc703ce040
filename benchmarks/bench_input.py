"""The training input path alone, the path before issue 23 against today's, same run; and the data wait of demo steps.

    python benchmarks/bench_input.py [--machine "2-core CPU, no GPU"] [--batches 20] [--no-write]
    python benchmarks/bench_input.py --quick   # does it run? 3 batches, 4 demo steps, nothing written

At the AGW setting (8 ids × 4 images × 2 modalities = 64 images of 288×144, pad 10, flip) and
the IDKL setting (12 × 5 × 2 = 120 of 384×144, pad 10, flip, random erasing 0.5), on one
CPU thread, both paths turn the same cached RGB + IR images (random pixels) into a normalised
float32 batch with its labels, taking turns batch by batch; images/s are medians over the
batches. "Old" is a faithful copy of the path before issue 23, kept in this file: a float16
cache in a dict, the batch stacked image by image, augmented with per-image loops and
normalised on the CPU. "New" is the trainer's ``BatchMaker`` (``engine/loader.py``), run in the
caller's thread. Then a few steps of the demo's training (its config, data and model; the
trainer's prefetching as in a run) report the share of the loop's time spent waiting for
batches. The table is printed and written to docs/benchmarks.md between the ``input`` markers.
"""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import DOC, arguments  # benchmarks/common.py

from crossreid.config import load_config, resolve_config
from crossreid.data.augment import Recipe
from crossreid.data.open import open_catalog
from crossreid.data.pipeline import IMAGENET_MEAN, IMAGENET_STD, ImageStore
from crossreid.data.samples import Sample
from crossreid.engine.loader import BatchMaker
from crossreid.engine.trainer import Trainer
from crossreid.io import write_marked_section
from crossreid.methods import Batch
from crossreid.modality import Modality

RGB, IR = Modality.RGB, Modality.IR
# name: (P, K, height, width, pad, random erasing)
SETTINGS = {"AGW": (8, 4, 288, 144, 10, 0.0), "IDKL": (12, 5, 384, 144, 10, 0.5)}
POOL = 120  # images per modality in the cache


# ------------------------------------------------------------------ the old path (before issue 23)
def old_normalize(batch: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, dtype=batch.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=batch.dtype).view(1, 3, 1, 1)
    return (batch - mean) / std


def old_augment(batch: torch.Tensor, generator: torch.Generator, flip: bool = True, pad: int = 0,
                erasing: float = 0.0, groups: int = 1) -> torch.Tensor:
    """The old ``augment`` (grayscale, off at both settings, left out)."""
    b, _, h, w = batch.shape
    rows = b // groups
    out = batch.clone()
    fill = torch.tensor(IMAGENET_MEAN, dtype=batch.dtype).view(3, 1, 1)[: batch.shape[1]]
    if flip:
        do_flip = (torch.rand(rows, generator=generator) < 0.5).repeat(groups)
        out[do_flip] = out[do_flip].flip(-1)
    if pad:
        padded = torch.nn.functional.pad(out, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (rows,), generator=generator).repeat(groups)
        dx = torch.randint(0, 2 * pad + 1, (rows,), generator=generator).repeat(groups)
        out = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])
    if erasing > 0:
        for i in range(b):
            if torch.rand(1, generator=generator).item() >= erasing:
                continue
            for _ in range(10):
                area = h * w * (0.02 + 0.31 * torch.rand(1, generator=generator).item())
                aspect = float(np.exp(np.log(0.3) + (np.log(3.3) - np.log(0.3)) * torch.rand(1, generator=generator).item()))
                eh, ew = int(round((area * aspect) ** 0.5)), int(round((area / aspect) ** 0.5))
                if 0 < eh < h and 0 < ew < w:
                    y = int(torch.randint(0, h - eh + 1, (1,), generator=generator))
                    x = int(torch.randint(0, w - ew + 1, (1,), generator=generator))
                    out[i, :, y:y + eh, x:x + ew] = fill
                    break
    return out


class OldPath:
    """The old trainer's ``make_batch`` over the old float16 in-memory cache."""

    def __init__(self, store: ImageStore, labels: dict[int, int], pad: int, erasing: float) -> None:
        self.cache = {i: torch.from_numpy(store.stored(i)).to(torch.float16) / 255 for i in range(len(store))}
        self.samples, self.labels, self.pad, self.erasing = store.samples, labels, pad, erasing
        self.generator = torch.Generator().manual_seed(0)

    def __call__(self, indices: list[int], modalities: list[Modality]) -> Batch:
        stacked = torch.stack([self.cache[i].float().expand(3, -1, -1) for i in indices])
        images = old_augment(stacked, self.generator, flip=True, pad=self.pad, erasing=self.erasing)
        images = old_normalize(images).to("cpu", non_blocking=True)
        labels = torch.tensor([self.labels[self.samples[i].pid] for i in indices], device="cpu")
        return Batch(images, labels, modalities, rows=len(indices) // len(modalities), indices=list(indices))


# ------------------------------------------------------------------ measurements
def cached_images(ids: int, height: int, width: int) -> ImageStore:
    """POOL random RGB and IR images of ``ids`` persons, decoded into a store's cache."""
    samples = [Sample(Path(f"{m}{i}"), i % ids, 1, m) for m in (RGB, IR) for i in range(POOL)]
    store = ImageStore(samples, height, width, depth_encoding="normals")
    rng = np.random.default_rng(0)
    store.arrays = {m: rng.integers(0, 256, store.shapes[m], dtype=np.uint8) for m in store.modalities}
    store._ready[:] = True
    return store


def bench_setting(name: str, batches: int) -> dict:
    p, k, h, w, pad, erasing = SETTINGS[name]
    ids = 3 * p
    store = cached_images(ids, h, w)
    labels = {pid: pid for pid in range(ids)}
    old = OldPath(store, labels, pad, erasing)
    new = BatchMaker(store, Recipe(True, pad, erasing), labels, torch.device("cpu"))
    rng = np.random.default_rng(1)
    times: dict[str, list[float]] = {"old": [], "new": []}
    for b in range(batches + 1):
        pids = rng.choice(ids, p, replace=False)
        indices = [m * POOL + int(i) for m in range(2) for pid in pids
                   for i in rng.choice(np.flatnonzero(np.arange(POOL) % ids == pid), k)]
        for path in (("old", "new") if b % 2 else ("new", "old")):
            start = time.perf_counter()
            if path == "old":
                old(indices, [RGB, IR])
            else:
                new((0, 0, 0, b), indices, list(range(len(indices))), [RGB, IR])
            if b:  # the first batch warms both up
                times[path].append(time.perf_counter() - start)
    n = 2 * p * k
    return {"name": name, "batch": f"{n} × {h}×{w}", "pad": pad, "erasing": erasing,
            "old": n / np.median(times["old"]), "new": n / np.median(times["new"]),
            "old_ms": 1000 * np.median(times["old"]), "new_ms": 1000 * np.median(times["new"])}


def demo_wait(steps: int, work: Path) -> dict:
    """Data wait of ``steps`` training steps of the demo (its config and data; one epoch)."""
    cfg = load_config(resolve_config("demo_one_stream"), ["train.epochs=1", f"train.iterations_per_epoch={steps}",
                                                          "train.progress=false"])
    catalog = open_catalog(cfg.data, progress=False)
    trainer = Trainer(cfg, work / "demo", catalog, progress=False)
    trainer.fit()
    r = json.loads(trainer.folder.log_path.read_text().splitlines()[0])
    return {"steps": steps, "wait": r["data_wait"], "images_per_s": r["images_per_s"],
            "batch": cfg.train.ids_per_batch * cfg.train.images_per_id * len(cfg.data.modalities),
            "size": f"{cfg.data.height}×{cfg.data.width}", "threads": torch.get_num_threads()}


def table(rows: list[dict], demo: dict, machine: str, threads: int) -> str:
    lines = [f"Machine: {machine}; Python {platform.python_version()}, torch {torch.__version__}, "
             f"one thread for the input path alone ({threads} for the demo steps). Random 8-bit RGB + IR "
             f"images, {POOL} per modality, already cached; old and new take turns batch by batch; medians.", "",
             "| setting | batch | augmentation | old path img/s (ms per batch) | new path img/s (ms per batch) | "
             "speed-up |", "|---|---|---|---|---|---|"]
    for r in rows:
        aug = f"flip, pad {r['pad']}" + (f", erasing {r['erasing']:g}" if r["erasing"] else "")
        lines.append(f"| {r['name']} | {r['batch']} | {aug} | {r['old']:,.0f} ({r['old_ms']:.1f}) | "
                     f"{r['new']:,.0f} ({r['new_ms']:.1f}) | **{r['new'] / r['old']:.1f}×** |")
    lines += ["", f"Data wait of the demo's training ({demo['steps']} steps of {demo['batch']} images at "
              f"{demo['size']}, one-stream ResNet-18, on the CPU, batches prepared one step ahead): "
              f"**{100 * demo['wait']:.1f} %** of the loop's time, at {demo['images_per_s']:.0f} img/s.",
              "", "Target (issue 23): the new path ≥ 5× the old on one CPU thread at both settings."]
    return "\n".join(lines)


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--batches", type=int, default=20, help="timed batches per path and setting")
    parser.add_argument("--demo-steps", type=int, default=30, help="demo training steps for the data wait")
    parser.add_argument("--quick", action="store_true", help="a check that it runs: 3 batches, 4 demo steps, no write")
    args = parser.parse_args()
    if args.quick:
        args.batches, args.demo_steps, args.no_write = 3, 4, True
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    for name in SETTINGS:
        rows.append(bench_setting(name, args.batches))
        r = rows[-1]
        print(f"{name}: old {r['old']:.0f} img/s ({r['old_ms']:.1f} ms), new {r['new']:.0f} img/s "
              f"({r['new_ms']:.1f} ms), {r['new'] / r['old']:.1f}x", flush=True)
    torch.set_num_threads(threads)
    work = Path(tempfile.mkdtemp(prefix="bench_input_"))
    try:
        demo = demo_wait(args.demo_steps, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = table(rows, demo, args.machine, threads)
    print(text)
    if not args.no_write:
        write_marked_section(DOC, "input", "Training input path", text)


if __name__ == "__main__":
    main()
