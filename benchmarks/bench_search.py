"""Gallery search speed: exact one query at a time, exact batched, FAISS HNSW / IVF-Flat.

    python benchmarks/bench_search.py [--single 100000] [--batched 1000000] [--hnsw 200000] [--ivf 1000000]

Synthetic clustered 512-d features (identities as Gaussian clusters, as re-ID features
are), seeded. Prints a markdown table; every row states its gallery size. The memory-
bandwidth floor is the time to read the gallery once (a plain sum over it).
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
import torch

from crossreid.retrieval.search import ExactSearcher

DIM = 512


def clustered(n: int, seed: int, per_id: int = 10, dtype=np.float32) -> np.ndarray:
    """n vectors around n/per_id centres, written in blocks (bounded temporary memory)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // per_id), DIM), dtype=np.float32)
    out = np.empty((n, DIM), dtype=dtype)
    for s in range(0, n, 100_000):
        e = min(n, s + 100_000)
        out[s:e] = centres[rng.integers(0, len(centres), e - s)] + 0.5 * rng.standard_normal((e - s, DIM),
                                                                                            dtype=np.float32)
    return out


def queries_near(gallery: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(gallery), n, replace=False)
    return (np.asarray(gallery[rows], dtype=np.float32) + 0.5 * rng.standard_normal((n, DIM), dtype=np.float32))


def floor_ms(gallery: np.ndarray) -> tuple[float, float]:
    """(ms to read the gallery once, GB/s): best of 5 plain sums."""
    t = []
    for _ in range(5):
        s = time.perf_counter()
        torch.from_numpy(gallery).sum()
        t.append(time.perf_counter() - s)
    return 1e3 * min(t), gallery.nbytes / min(t) / 1e9


def gemm_rate() -> float:
    """GFLOP/s of a 4096 × 512 × 4096 float32 matrix product now (what the shared cores give)."""
    a, b = torch.randn(4096, DIM), torch.randn(DIM, 4096)
    a @ b
    s = time.perf_counter()
    for _ in range(3):
        a @ b
    return 3 * 2 * 4096 * DIM * 4096 / (time.perf_counter() - s) / 1e9


def single(n: int, rows: list) -> None:
    g = clustered(n, 0)
    q = queries_near(g, 50, 1)
    searcher = ExactSearcher(g, "euclidean")
    searcher.search(q[:1], 10)  # warm-up
    times = []
    for i in range(len(q)):
        s = time.perf_counter()
        searcher.search(q[i:i + 1], 10)
        times.append(time.perf_counter() - s)
    fl, bw = floor_ms(g)
    rows.append(f"| exact, one query at a time | {n:,} × {DIM} float32 | {1e3 * np.median(times):.1f} ms/query "
                f"(median of {len(q)}; p90 {1e3 * np.percentile(times, 90):.1f}) | floor {fl:.1f} ms "
                f"(reading {g.nbytes / 1e6:.0f} MB at {bw:.1f} GB/s) |")


def batched(n: int, rows: list, dtype: str) -> None:
    g = clustered(n, 0, dtype=np.float16 if dtype == "float16" else np.float32)
    q = queries_near(g, 1024, 1)
    searcher = ExactSearcher(g, "euclidean")
    s = time.perf_counter()
    searcher.search(q, 10)
    el = time.perf_counter() - s
    fl, bw = floor_ms(g)
    rows.append(f"| exact, batch of {len(q)} queries | {n:,} × {DIM} {dtype} | {1e3 * el / len(q):.2f} ms/query "
                f"amortised ({el:.1f} s for the batch) | floor {fl:.0f} ms per pass over the gallery "
                f"({bw:.1f} GB/s); compute-bound: {2 * n * DIM * len(q) / el / 1e9:.0f} GFLOP/s |")


def approximate(kind: str, n: int, rows: list, options: dict) -> None:
    import faiss

    from crossreid.retrieval.ann import build_faiss, faiss_search

    g = clustered(n, 0)
    q = queries_near(g, 200, 1)
    _, exact = ExactSearcher(g, "euclidean").search(q, 10)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    index, params = build_faiss(g, "euclidean", kind, **options)
    size = len(faiss.serialize_index(index)) if n <= 300_000 else None
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1e6
    settings = [("ef_search", [32, 64, 128, 256])] if kind == "hnsw" else [("nprobe", [8, 16, 32, 64])]
    name, values = settings[0]
    for v in values:
        if kind == "hnsw":
            index.hnsw.efSearch = v
        else:
            index.nprobe = v
        faiss_search(index, q[:10], 10, "euclidean")
        s = time.perf_counter()
        for i in range(len(q)):
            _, got = faiss_search(index, q[i:i + 1], 10, "euclidean")
        el = (time.perf_counter() - s) / len(q)
        _, got = faiss_search(index, q, 10, "euclidean")
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.tolist(), exact.tolist())])
        mem = f"index {size / 1e9:.2f} GB" if size else f"peak RSS grew {grown:.1f} GB"
        fixed = ", ".join(f"{k}={val}" for k, val in params.items() if k not in ("build_s", name))
        rows.append(f"| FAISS {kind} ({fixed}, {name}={v}) | {n:,} × {DIM} float32 | "
                    f"{1e3 * el:.2f} ms/query, recall@10 {recall:.3f} | build {params['build_s']:.0f} s, {mem} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--single", type=int, default=100_000)
    ap.add_argument("--batched", type=int, default=1_000_000)
    ap.add_argument("--batched-dtype", default="float32")
    ap.add_argument("--hnsw", type=int, default=200_000)
    ap.add_argument("--ivf", type=int, default=0)
    ap.add_argument("--only", default="single,batched,hnsw,ivf")
    args = ap.parse_args()
    only = set(args.only.split(","))
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()}, matrix product {gemm_rate():.0f} GFLOP/s now")
    rows = ["| search | gallery | time | notes |", "|---|---|---|---|"]
    if "single" in only and args.single:
        single(args.single, rows)
        print(rows[-1], flush=True)
    if "batched" in only and args.batched:
        batched(args.batched, rows, args.batched_dtype)
        print(rows[-1], flush=True)
    if "hnsw" in only and args.hnsw:
        approximate("hnsw", args.hnsw, rows, {})
    if "ivf" in only and args.ivf:
        approximate("ivf", args.ivf, rows, {"nlist": 1024})
    print(f"load average after: {os.getloadavg()}, matrix product {gemm_rate():.0f} GFLOP/s now")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
