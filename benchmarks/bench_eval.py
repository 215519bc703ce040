"""Chunked evaluator vs the per-query reference loop, same inputs, same run.

    python benchmarks/bench_eval.py [--ref-queries N] [--machine "2-core CPU, no GPU"] [--no-write]

Random features (seeded) with ids and cameras shaped like the real test sets. Values of
both implementations are asserted equal. The table is printed and written to
docs/benchmarks.md between the ``eval`` markers.
"""

from __future__ import annotations

import os
import platform
import time
import tracemalloc

import numpy as np
import torch
from common import DOC, arguments  # benchmarks/common.py

from crossreid.evaluation.distance import pairwise_distance
from crossreid.evaluation.metrics import NO_EXCLUSION, SAME_ID_AND_CAMERA, SYSU_LOCATION, compute_metrics
from crossreid.evaluation.reference import reference_metrics
from crossreid.io import write_marked_section


def market(rng):
    """3,368 queries × 15,913 gallery: 751 ids over 6 cameras, about 2,800 distractors (id 0)."""
    qid = np.repeat(np.arange(1, 752), 5)[:3368]
    gid = np.concatenate([rng.integers(1, 752, 15913 - 2798), np.zeros(2798, np.int64)])
    return dict(name="Market-1501 size", qid=qid, gid=gid, qcam=rng.integers(1, 7, 3368),
                gcam=rng.integers(1, 7, 15913), rule=SAME_ID_AND_CAMERA, cmc="image")


def regdb(rng):
    """2,060 × 2,060: 206 ids × 10 images per modality, no camera filtering."""
    ids = np.repeat(np.arange(206), 10)
    return dict(name="RegDB size", qid=ids, gid=ids.copy(), qcam=np.ones(2060, np.int64),
                gcam=np.full(2060, 2), rule=NO_EXCLUSION, cmc="image")


def sysu(rng):
    """3,803 IR queries (cams 3, 6) × 301 RGB gallery, location rule, identity-level CMC."""
    qid, gid = rng.integers(0, 96, 3803), np.repeat(np.arange(96), 4)[:301]
    return dict(name="SYSU-MM01 all-search size", qid=qid, gid=gid, qcam=rng.choice([3, 6], 3803),
                gcam=np.tile([1, 2, 4, 5], 76)[:301], rule=SYSU_LOCATION, cmc="identity")


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def peak_memory(fn) -> int:
    """NumPy's peak allocation during ``fn`` (a separate, untimed call: tracing slows allocation)."""
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def warm_labels(labels, case, n):
    return dict(labels, query_ids=case["qid"][:n], query_cams=case["qcam"][:n])


def run_case(case, rng, dim, ref_queries):
    nq, ng = len(case["qid"]), len(case["gid"])
    qf = rng.normal(size=(nq, dim)).astype(np.float32)
    gf = rng.normal(size=(ng, dim)).astype(np.float32)
    labels = dict(query_ids=case["qid"], gallery_ids=case["gid"], query_cams=case["qcam"], gallery_cams=case["gcam"])
    rule = dict(exclusion=case["rule"], cmc=case["cmc"])
    dist, t_dist = timed(lambda: pairwise_distance(qf, gf))
    warm = warm_labels(labels, case, 64)  # untimed warm-up, both sides
    compute_metrics(**warm, distances=dist[:64], **rule)
    compute_metrics(**warm, query_features=qf[:64], gallery_features=gf, **rule)
    compute_metrics(**warm, query_features=qf[:64], gallery_features=gf, precision="float32", **rule)
    reference_metrics(dist[:64], **warm, **rule)
    fast, t_fast = timed(lambda: compute_metrics(**labels, distances=dist, **rule))
    e2e, t_e2e = timed(lambda: compute_metrics(**labels, query_features=qf, gallery_features=gf,
                                               precision="float32", **rule))
    exact, t_exact = timed(lambda: compute_metrics(**labels, query_features=qf, gallery_features=gf, **rule))
    sub = np.arange(nq) if ref_queries is None else np.arange(min(nq, ref_queries))
    sub_labels = dict(labels, query_ids=case["qid"][sub], query_cams=case["qcam"][sub])
    ref_dist = dist if len(sub) == nq else dist[:len(sub)]
    ref, t_ref = timed(lambda: reference_metrics(ref_dist, **sub_labels, **rule))
    mem_fast = peak_memory(lambda: compute_metrics(**labels, distances=dist, **rule))
    mem_ref = peak_memory(lambda: reference_metrics(dist[:256], **warm_labels(labels, case, 256), **rule))
    check = fast if len(sub) == nq else compute_metrics(**sub_labels, distances=ref_dist, **rule)
    assert np.array_equal(check.cmc, ref.cmc) and check.map == ref.map and check.minp == ref.minp, case["name"]
    assert e2e.map == fast.map or abs(e2e.map - fast.map) < 1e-6  # chunked distances may differ in the last ulp
    assert abs(exact.map - fast.map) < 1e-4  # float64 distances: near-ties may order differently
    t_ref_full = t_ref * nq / len(sub)
    return {
        "name": case["name"], "size": f"{nq:,} × {ng:,} × {dim}", "rule": ", ".join(case["rule"].describe()) or "none",
        "cmc": case["cmc"], "t_dist": t_dist, "t_fast": t_fast, "t_e2e": t_e2e, "t_exact": t_exact, "t_ref": t_ref_full,
        "extrapolated": len(sub) < nq, "ref_queries": len(sub), "mem_fast": mem_fast, "mem_ref": mem_ref,
        "dist_mb": dist.nbytes / 2**20,
    }


def table(rows, machine):
    lines = [
        f"Machine: {machine}; Python {platform.python_version()}, NumPy {np.__version__}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads); 1-min load average "
        f"{os.getloadavg()[0]:.1f} at the end (the cores are shared). Random float32 features, seeded.",
        "",
        "| Size (Q × G × dim) | rule / CMC | distances | metrics, chunked | metrics, per-query loop | speed-up "
        "| features → metrics, float32 | loop incl. distances | speed-up | features → metrics, float64 (default) "
        "| extra memory chunked / loop |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        star = "*" if r["extrapolated"] else ""
        lines.append(
            f"| {r['name']} {r['size']} | {r['rule']} / {r['cmc']} | {r['t_dist']:.2f} s | {r['t_fast']:.3f} s "
            f"| {r['t_ref']:.2f} s{star} | **{r['t_ref'] / r['t_fast']:.0f}×** | {r['t_e2e']:.2f} s "
            f"| {r['t_dist'] + r['t_ref']:.2f} s{star} | {(r['t_dist'] + r['t_ref']) / r['t_e2e']:.1f}× "
            f"| {r['t_exact']:.2f} s | {r['mem_fast'] / 2**20:.0f} MB / {r['mem_ref'] / 2**20:.0f} MB |")
    if any(r["extrapolated"] for r in rows):
        n = min(r["ref_queries"] for r in rows if r["extrapolated"])
        lines.append(f"\n\\* loop timed on the first {n} queries and extrapolated linearly.")
    lines += [
        "",
        "\"metrics\" columns start from the same precomputed float32 distance matrix; \"features → metrics\" "
        "computes distances chunk by chunk inside the evaluator, in float32 (`precision=\"float32\"`) or in float64 "
        "(the default of protocol scoring); the loop column adds the time of the full float32 distance matrix. "
        "Extra memory is NumPy's peak allocation during the metric call, measured in a separate untimed call "
        "(tracemalloc; the loop's on its first 256 queries; the input matrix itself, e.g. {:.0f} MB for Market "
        "size, is not counted). One untimed warm-up call of each path on 64 queries precedes the timings (the "
        "first torch matmul of a process pays a one-off set-up). Values of both implementations are asserted "
        "equal in the run.".format(max(r["dist_mb"] for r in rows)),
    ]
    return "\n".join(lines)


def write_doc(text: str) -> None:
    write_marked_section(DOC, "eval", "Evaluation", text)


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--ref-queries", type=int, default=None, help="time the loop on this many queries only")
    ap.add_argument("--dim", type=int, default=512)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = [run_case(make(rng), rng, args.dim, args.ref_queries) for make in (market, regdb, sysu)]
    text = table(rows, args.machine)
    print(text)
    if not args.no_write:
        write_doc(text)
        print(f"\nwritten to {DOC}")


if __name__ == "__main__":
    main()
