"""``crossreid demo``: synthetic data → train → evaluate four directions → table, JSON, HTML."""

from __future__ import annotations

import time
from pathlib import Path

import click

from crossreid.config import load_config, resolve_config
from crossreid.data.open import open_catalog
from crossreid.device import check_amp, resolve_device
from crossreid.engine.process import setup_process
from crossreid.engine.runs import kept_epoch
from crossreid.errors import UserError
from crossreid.evaluation.document import Evaluation
from crossreid.evaluation.examples import ranked_examples
from crossreid.experiment import TestStores, train_and_evaluate
from crossreid.io import write_json
from crossreid.version import __version__

# label -> shipped config: every config shares the demo's data section, so one dataset serves all.
DEMO_RUNS = {"one_stream": "demo_one_stream", "cross_modal_distillation": "demo_distillation"}
DEFAULT_METHODS = ("one_stream",)  # the quick demo; distillation adds about three minutes on 2 cores


def run_demo(out: Path, overwrite: bool = False, overrides: list[str] | None = None,
             progress: bool = True, methods: tuple[str, ...] | list[str] = DEFAULT_METHODS,
             device=None, amp: str = "auto") -> dict:
    """Train and score the demo's ``methods`` on ``device`` (default: CUDA when available), the test
    pools embedded under ``amp`` (:mod:`crossreid.device`)."""
    out = Path(out)
    device, amp = resolve_device(device), check_amp(amp)
    unknown = [m for m in methods if m not in DEMO_RUNS]
    if unknown or not methods:
        raise UserError(f"--methods {','.join(methods)!r}: choose one or more of {', '.join(DEMO_RUNS)}")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out}: demo output exists; pass --overwrite to replace it or --out for a new folder")
    start = time.perf_counter()
    configs = {label: load_config(resolve_config(DEMO_RUNS[label]), overrides) for label in methods}
    base = next(iter(configs.values()))
    setup_process(base.train, device)
    catalog = open_catalog(base.data, progress=progress)
    click.echo(f"dataset: {catalog.name} at {catalog.root} (synthetic data)")
    stores = TestStores.of(catalog, base.data)
    results: dict = {}
    evaluations = []
    for label, cfg in configs.items():
        click.echo(f"training {label} ({cfg.method.name}, {cfg.model.arch}, {cfg.data.height}x{cfg.data.width})")
        # Cross-modal directions as configured, plus each modality against itself for reference.
        within = [f"{m}->{m}" for m in cfg.data.modalities]
        run = train_and_evaluate(cfg, out / label, catalog, stores, overwrite=overwrite, progress=progress,
                                 directions=[*cfg.eval.directions, *within], device=device, amp=amp)
        results[label] = run.results
        image = {"height": cfg.data.height, "width": cfg.data.width, "depth_encoding": cfg.data.depth_encoding}
        evaluations.append(Evaluation(str((out / label).absolute()), cfg.method.name, catalog.name, str(catalog.root),
                                      [kept_epoch(out / label)], image, run.results,
                                      {d: ranked_examples(catalog, r, run.features) for d, r in run.results.items()}))
    elapsed = time.perf_counter() - start
    payload = {
        "crossreid": __version__,
        "data": "synthetic (crossreid synth); not comparable with real-dataset numbers",
        "dataset_root": str(catalog.root),
        "wall_time_s": round(elapsed, 1),
        "methods": {m: {d: r.to_json() for d, r in res.items()} for m, res in results.items()},
    }
    write_json(out / "results.json", payload)
    from crossreid.report.html import write_report

    write_report(out / "report.html", evaluations, title="crossreid demo (synthetic data)",
                 notes=[f"Wall time {elapsed:.0f} s for generation (or cache reuse), training and evaluation."])
    click.echo(format_results(results))
    click.echo(f"wrote {out / 'results.json'} and {out / 'report.html'} in {elapsed:.0f} s")
    return payload


def format_results(results: dict) -> str:
    """A method × direction table of R1 / R5 / mAP / mINP (percent), the chance R1 of its gallery
    and the distance it ranked by (methods may differ: the one-stream run ranks by cosine)."""
    lines = [f"{'method':<26}{'direction':<14}{'R1':>8}{'R5':>8}{'mAP':>8}{'mINP':>8}{'chance R1':>11}"
             f"  {'distance':<10} (synthetic data)"]
    for method, by_dir in results.items():
        for direction, result in by_dir.items():
            mean = result.mean()
            lines.append(f"{method:<26}{direction:<14}" + "".join(
                f"{100 * mean[k]:>8.1f}" for k in ("rank1", "rank5", "map", "minp"))
                + f"{100 * result.chance_rank1():>11.1f}  {result.distance}")
    return "\n".join(lines)
