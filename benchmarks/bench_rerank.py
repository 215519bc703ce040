"""k-reciprocal re-ranking: sparse/chunked implementation vs the dense reference algorithm.

    python benchmarks/bench_rerank.py [--sizes 4000x16000,20000x20000] [--dense 1000x4000]

Each measurement runs in its own subprocess so that its peak resident memory (ru_maxrss,
minus the interpreter with torch and the features loaded) is its own. Features: clustered
512-d vectors (10 images per identity), seeded. Where both run, their outputs are compared.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

DIM = 512


def features(q: int, g: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = q + g
    centres = rng.standard_normal((max(1, n // 10), DIM), dtype=np.float32)
    x = centres[rng.integers(0, len(centres), n)] + rng.standard_normal((n, DIM), dtype=np.float32)
    return x[:q], x[q:]


def child(kind: str, q: int, g: int, out: str | None) -> None:
    from crossreid.evaluation.rerank import k_reciprocal_dense, k_reciprocal_rerank

    qf, gf = features(q, g)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn = k_reciprocal_rerank if kind == "sparse" else k_reciprocal_dense
    start = time.perf_counter()
    dist = fn(qf, gf)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if out:
        np.save(out, dist[:200])
    print(json.dumps({"kind": kind, "q": q, "g": g, "seconds": elapsed, "peak_gb": peak / 1e6,
                      "extra_gb": (peak - base) / 1e6}))


def measure(kind: str, q: int, g: int, out: str | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, f"{q}x{g}"] + (["--out", out] if out else [])
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="4000x16000,20000x20000")
    ap.add_argument("--dense", default="1000x4000")
    ap.add_argument("--child", nargs=2)
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.child:
        q, g = map(int, args.child[1].split("x"))
        return child(args.child[0], q, g, args.out)
    from bench_search import gemm_rate

    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()}, matrix product {gemm_rate():.0f} GFLOP/s now")
    rows = ["| implementation | Q × G (Q+G) | time | peak RSS (above the loaded features) |", "|---|---|---|---|"]
    dq, dg = map(int, args.dense.split("x"))
    dense = measure("dense", dq, dg, "/tmp/rerank_dense.npy")
    sparse = measure("sparse", dq, dg, "/tmp/rerank_sparse.npy")
    diff = float(np.abs(np.load("/tmp/rerank_dense.npy") - np.load("/tmp/rerank_sparse.npy")).max())
    for r in (dense, sparse):
        rows.append(f"| {r['kind']} | {r['q']:,} × {r['g']:,} ({r['q'] + r['g']:,}) | {r['seconds']:.1f} s | "
                    f"{r['peak_gb']:.2f} GB ({r['extra_gb']:.2f} GB) |")
    print(f"max |dense - sparse| on the first 200 queries: {diff:.2e}", flush=True)
    for size in args.sizes.split(","):
        q, g = map(int, size.split("x"))
        r = measure("sparse", q, g)
        rows.append(f"| sparse | {q:,} × {g:,} ({q + g:,}) | {r['seconds']:.1f} s | {r['peak_gb']:.2f} GB "
                    f"({r['extra_gb']:.2f} GB) |")
        print(rows[-1], flush=True)
    print(f"load average after: {os.getloadavg()}, matrix product {gemm_rate():.0f} GFLOP/s now")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
