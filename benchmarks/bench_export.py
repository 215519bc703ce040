"""Inference speed: extraction from image files, PyTorch eager and ONNX Runtime, images/s.

    python benchmarks/bench_export.py [--batch 32] [--reps 3]

The demo's one-stream model (ResNet-18) at 128×64 and at the demo's 64×32, and ResNet-50
at 256×128 (Hafner et al.'s size) and 288×144 (AGW's), random weights (speed does not
depend on them). "extraction" decodes PNG files, resizes, normalises and embeds
(``Embedder.embed_samples``, what ``crossreid extract`` runs); "eager" and "onnxruntime"
take the ready normalised batch. ONNX is skipped without onnxruntime.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from crossreid.config import load_config, resolve_config
from crossreid.data.pipeline import ImageStore
from crossreid.data.samples import Sample
from crossreid.methods import build_method
from crossreid.modality import Modality
from crossreid.retrieval.export import ModalityEmbedder
from crossreid.retrieval.extract import extract_features

CASES = (("resnet18", 64, 32), ("resnet18", 128, 64), ("resnet50", 256, 128), ("resnet50", 288, 144))


def best_rate(fn, images: int, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        s = time.perf_counter()
        fn()
        times.append(time.perf_counter() - s)
    return images / min(times)


def case(arch: str, h: int, w: int, batch: int, reps: int, folder: Path) -> str:
    cfg = load_config(resolve_config("demo"), [f"model.arch={arch}", f"data.height={h}", f"data.width={w}"])
    method = build_method(cfg, 100, [Modality.RGB]).eval()
    rng = np.random.default_rng(0)
    files = []
    for i in range(batch):
        path = folder / f"{arch}_{h}_{i}.png"
        Image.fromarray(rng.integers(0, 255, (2 * h, 2 * w, 3), dtype=np.uint8)).save(path)
        files.append(Sample(path, -1, -1, Modality.RGB))
    store = ImageStore(files, h, w, depth_encoding=cfg.data.depth_encoding, cache=False)
    extraction = best_rate(lambda: extract_features(method, store, range(batch), batch), batch, reps)
    x = torch.randn(batch, 3, h, w)
    module = ModalityEmbedder(method, Modality.RGB).eval()
    with torch.no_grad():
        eager = best_rate(lambda: module(x), batch, reps)
    ort_rate = "skipped (no onnxruntime)"
    try:
        import onnxruntime as ort

        path = folder / f"{arch}_{h}.onnx"
        torch.onnx.export(module, (x[:2],), str(path), input_names=["images"], output_names=["features"],
                          dynamic_axes={"images": {0: "batch"}}, opset_version=17, dynamo=False)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feed = {"images": x.numpy()}
        ort_rate = f"{best_rate(lambda: session.run(None, feed), batch, reps):.0f}"
    except ImportError:
        pass
    return f"| {arch} | {h}×{w} | {extraction:.0f} | {eager:.0f} | {ort_rate} |"


def main() -> None:
    from bench_search import gemm_rate

    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()}, matrix product {gemm_rate():.0f} GFLOP/s now, "
          f"batch {args.batch}, best of {args.reps}")
    rows = ["| backbone | input | extraction from files (img/s) | PyTorch eager (img/s) | ONNX Runtime (img/s) |",
            "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for arch, h, w in CASES:
            rows.append(case(arch, h, w, args.batch, args.reps, Path(tmp)))
            print(rows[-1], flush=True)
    print(f"load average after: {os.getloadavg()}, matrix product {gemm_rate():.0f} GFLOP/s now")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
