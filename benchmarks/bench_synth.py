"""Synthetic generator speed on one core: rendering alone, and rendering + PNG writing.

Run: ``python benchmarks/bench_synth.py`` — prints a markdown table (header and rows)
for docs/benchmarks.md; the figures quoted in docs/synthetic.md come from it.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from crossreid.data.synth import Renderer, SynthParams, generate


def render_rate(params: SynthParams, persons: int) -> tuple[float, float]:
    """Images per wall second and per CPU second of this (single-threaded) process."""
    renderer = Renderer(params)
    start, cpu, n = time.perf_counter(), time.process_time(), 0
    for pid in range(1, persons + 1):
        for cam in range(1, len(renderer.cameras) + 1):
            for t in range(params.images_per_camera):
                n += len(renderer.shot(pid, cam, t).images)
    return n / (time.perf_counter() - start), n / (time.process_time() - cpu)


def write_rate(params: SynthParams) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        start, cpu = time.perf_counter(), time.process_time()
        out = generate(Path(tmp) / "synth", params, progress=False)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        n = sum(1 for _ in (out / "images").rglob("*.png"))
    return n / elapsed, n / cpu, n


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    params = SynthParams()
    rows = []
    for h, w in ((128, 64), (256, 128)):
        p = params.model_copy(update={"height": h, "width": w})
        render = np.median([render_rate(p, 10) for _ in range(3)], axis=0)
        write, write_cpu, n = write_rate(p)
        rows.append(f"| {h}×{w} | {n:,} | {render[0]:,.0f} ({render[1]:,.0f}) | {write:,.0f} ({write_cpu:,.0f}) |")
    load = os.getloadavg()[0]
    text = "\n".join([
        "## Synthetic generator", "",
        f"Machine: 2-core CPU, no GPU, one process on one core; Python {platform.python_version()}, "
        f"NumPy {np.__version__}; 1-min load average {load:.1f} at the end (the cores are shared). "
        "Default parameters (`crossreid synth` defaults) apart from the size; images of all three modalities "
        "counted; per wall second, and in brackets per CPU second of the process (load-independent). "
        "Target: ≥ 300 images/s.", "",
        "| image size | images written | render only (images/s, median of 3) | render + PNG write (images/s) |",
        "|---|---|---|---|", *rows])
    print(text)


if __name__ == "__main__":
    sys.exit(main())
