"""The one command-line entry: ``crossreid <command>``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from crossreid.device import AMP_MODES, DeviceOutOfMemory
from crossreid.errors import UserError, explain_validation, parse_assignment
from crossreid.modality import accepted_names
from crossreid.version import __version__

# How each command makes the batch that ran out of GPU memory smaller (default: its --batch-size).
_SMALLER_BATCH = {
    **dict.fromkeys(("demo", "reproduce", "calibrate"), "pass --set eval.batch_size=N with N below {batch}"),
    "train": "add the override eval.batch_size=N with N below {batch}",
    "export": "pass a smaller --check-images (now {batch})",
    "search": "embed the query images with --device cpu",
}


class _Group(click.Group):
    """Turns UserError into one line on stderr and exit code 2, without a traceback."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except UserError as exc:
            if isinstance(exc, DeviceOutOfMemory) and not exc.during:  # an inference batch
                exc.fix = _SMALLER_BATCH.get(ctx.invoked_subcommand or "", exc.fix)
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="crossreid")
def cli() -> None:
    """Cross-modal person re-identification: RGB, depth and infrared."""


def _device_option(f):
    return click.option("--device", metavar="cpu|cuda|cuda:N",
                        help="Where the network runs (default: the GPU when torch sees one, else the CPU; "
                             "under torchrun cuda is each process's own GPU).")(f)


def _amp_option(what: str):
    return click.option("--amp", type=click.Choice(AMP_MODES), default="auto", show_default=True,
                        help=f"Autocast of {what}: auto = bfloat16 on a GPU (float16 where it lacks bfloat16), "
                             "none on the CPU; off = float32 (on a GPU with TF32 off too). Features are float32.")


@cli.command("datasets")
def datasets_cmd() -> None:
    """List the registered datasets."""
    from crossreid.data.registry import dataset_names, get_entry

    for name in dataset_names():
        entry = get_entry(name)
        click.echo(f"{name:<12} {entry.description}")


@cli.command("demo")
@click.option("--out", type=click.Path(file_okay=False), default="runs/demo", show_default=True,
              help="Folder for the runs, results.json and report.html.")
@click.option("--overwrite", is_flag=True, help="Replace an existing demo output folder.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Config override, e.g. --set train.epochs=3 (repeatable).")
@click.option("--methods", default="one_stream", show_default=True,
              help="Comma-separated: one_stream, cross_modal_distillation (Hafner et al., ~3 more minutes).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@_device_option
@_amp_option("the test-set embedding (training follows train.amp)")
def demo_cmd(out: str, overwrite: bool, overrides: tuple[str, ...], methods: str, quiet: bool,
             device: str | None = None, amp: str = "auto") -> None:
    """Generate (or reuse) synthetic data, train, evaluate RGB<->depth and RGB<->IR, write a report."""
    from crossreid.demo import run_demo

    run_demo(Path(out), overwrite=overwrite, overrides=list(overrides), progress=not quiet,
             methods=[m.strip() for m in methods.split(",") if m.strip()], device=device, amp=amp)


@cli.command("synth")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Output folder (must not exist).")
@click.option("--identities", type=int, help="Number of persons.")
@click.option("--rgbd-cameras", type=int, help="Cameras producing co-registered RGB + depth.")
@click.option("--ir-cameras", type=int, help="Infrared cameras.")
@click.option("--images-per-camera", type=int, help="Time steps per person and camera.")
@click.option("--modalities", help="Comma-separated subset of rgb,depth,ir.")
@click.option("--height", type=int, help="Image height (default 128).")
@click.option("--width", type=int, help="Image width (default 64).")
@click.option("--seed", type=int, help="Random seed (same seed, same bytes).")
@click.option("--difficulty", help="Preset of nuisance and overlap levels: easy, default or hard.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def synth_cmd(out: str, overwrite: bool, quiet: bool, modalities: str | None, **options) -> None:
    """Write the synthetic RGB/depth/infrared person dataset to a folder."""
    from pydantic import ValidationError

    from crossreid.data.synth import SynthParams, generate

    values = {k: v for k, v in options.items() if v is not None}
    if modalities:
        values["modalities"] = [m.strip() for m in modalities.split(",") if m.strip()]
    try:
        params = SynthParams(**values)
    except ValidationError as exc:
        loc = exc.errors()[0]["loc"]  # empty for an error of the values together
        raise explain_validation(exc, SynthParams, "option --" + str(loc[0]).replace("_", "-") if loc
                                 else "synth options") from None
    path = generate(Path(out), params, overwrite=overwrite, progress=not quiet)
    click.echo(f"wrote synthetic dataset to {path}")


def _load_run_config(config: str, overrides: tuple[str, ...]):
    from crossreid.config import absolute_paths, load_config, resolve_config

    return absolute_paths(load_config(resolve_config(config), list(overrides)))


class _TrainCommand(click.Command):
    """``train --help`` ends with the shipped configs, grouped by the dataset they train on."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from crossreid.config import packaged_configs_by_dataset

        groups = packaged_configs_by_dataset()
        label = {"generic": "your own data (generic)", "synthetic": "synthetic (CPU-sized)"}
        with formatter.section("Shipped configs (CONFIG), by the dataset they train on"):
            formatter.write_dl([(label.get(d, d), ", ".join(names)) for d, names in sorted(
                groups.items(), key=lambda kv: (kv[0] != "generic", kv[0]))])


@cli.command("train", cls=_TrainCommand)
@click.argument("config")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Run folder.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run folder.")
@click.option("--ignore-check", is_flag=True,
              help="Train even though the data fails `crossreid check` (e.g. a person in both the training and "
                   "the test split); the problems are recorded in the run's data_check.json.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@_device_option
def train_cmd(config: str, overrides: tuple[str, ...], out: str, resume: bool, overwrite: bool, ignore_check: bool,
              quiet: bool, device: str | None = None) -> None:
    """Train a method. CONFIG is a YAML file or a shipped config name (listed below); KEY=VALUE
    overrides a setting, e.g. data.root=/data/mine train.epochs=30. Paths are saved absolute."""
    from crossreid.data.datasets.check import require_sound
    from crossreid.data.open import open_catalog
    from crossreid.device import resolve_device
    from crossreid.engine.process import setup_process
    from crossreid.engine.trainer import Trainer
    from crossreid.io import write_json

    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other; choose one")
    cfg = _load_run_config(config, overrides)
    device = resolve_device(device)
    dist = setup_process(cfg.train, device)
    catalog = open_catalog(cfg.data, progress=not quiet and dist.main, dist=dist)
    found = require_sound(cfg.data.dataset, catalog, cfg.data.options, ignore_check, "train", say=dist.main)
    trainer = Trainer(cfg, Path(out), catalog, resume=resume, overwrite=overwrite, progress=not quiet, dist=dist,
                      device=device)
    if dist.main:
        write_json(Path(out) / "data_check.json", {"dataset": cfg.data.dataset, "root": str(catalog.root),
                                                   "ignored_problems": found.problems, "warnings": found.warnings})
    summary = trainer.fit()
    if dist.main:
        from crossreid.engine.selection import describe_fit

        click.echo(f"finished: {describe_fit(summary)}; weights in {Path(out) / 'model.safetensors'}")


@cli.command("evaluate")
@click.argument("run")
@click.option("--dataset", help="Dataset name (default: the run's).")
@click.option("--root", help="Dataset root (default: the run's).")
@click.option("--data-option", "data_options", multiple=True, metavar="KEY=VALUE", help="Dataset loader option.")
@click.option("--protocol", help="Protocol name (default: the dataset's own, see `crossreid protocols`).")
@click.option("--option", "protocol_options", multiple=True, metavar="KEY=VALUE",
              help="Protocol option, e.g. --option mode=indoor --option shots=10 (repeatable).")
@click.option("--direction", "directions", multiple=True,
              help="query:gallery, e.g. rgb:ir or 'rgb->ir' (quoted: > is a redirect in a shell); repeatable; "
                   "default: the run's eval.directions.")
@click.option("--metric", type=click.Choice(["euclidean", "cosine"]),
              help="Distance (default: the run's eval.metric); --option distance= must agree with it.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the results as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--rerank", is_flag=True, help="k-reciprocal re-ranking (Zhong et al. 2017); recorded in the results.")
@click.option("--rerank-option", "rerank_options", multiple=True, metavar="KEY=VALUE", help="k1, k2, lambda.")
@click.option("--ignore-check", is_flag=True, help="Evaluate even though the data fails `crossreid check` "
              "(e.g. a person in both the training and the test split).")
@click.option("--all", "all_settings", is_flag=True,
              help="Every setting of the protocol's full table in one call: SYSU-MM01 all/indoor x single/multi-shot, "
                   "RegDB and LLCM both directions (instead of --direction).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Images per batch (default: the run's eval.batch_size).")
@_device_option
@_amp_option("the network")
def evaluate_cmd(run: str, dataset: str | None, root: str | None, data_options: tuple[str, ...],
                 protocol: str | None, protocol_options: tuple[str, ...], directions: tuple[str, ...],
                 metric: str | None, json_out: str | None, quiet: bool, rerank: bool = False,
                 rerank_options: tuple[str, ...] = (), ignore_check: bool = False, all_settings: bool = False,
                 batch_size: int | None = None, device: str | None = None, amp: str = "auto") -> None:
    """Evaluate a trained run (RUN; for RegDB a pattern such as runs/regdb/trial{t}) on the test pools.
    Prints, per protocol set-up, the queries, valid queries, gallery size and chance R1 beside the metrics,
    and keeps the results (with a few ranked lists) in RUN/evaluation.json, or --json FILE, for
    `crossreid report`. Under `torchrun --nproc_per_node N -m crossreid evaluate ...` each process
    embeds 1/N of the images."""
    from crossreid.evaluation.document import default_path
    from crossreid.evaluation.results import format_evaluation
    from crossreid.experiment import evaluate_run

    if all_settings and directions:
        raise UserError("--all scores every setting of the protocol's table, --direction picks some; give one of them")
    target = Path(json_out) if json_out else default_path(run)
    if target is None:
        raise UserError(f"{run}: a pattern with {{t}} above its last folder has no folder for the results; "
                        "pass --json FILE")
    evaluation = evaluate_run(run, list(directions) or None, protocol, _parse_options(protocol_options, "--option"),
                              dataset, root, _parse_options(data_options, "--data-option"), progress=not quiet,
                              metric=metric, rerank=_rerank_from(rerank, rerank_options), ignore_check=ignore_check,
                              all_settings=all_settings, batch_size=batch_size, device=device, amp=amp)
    if evaluation is None:
        return  # another process of a torchrun job: rank 0 prints and writes
    if not evaluation.results:
        raise UserError(f"{run}: the dataset and the method share none of the requested directions' modalities")
    trials = (f" (trial run 1 of {len(evaluation.kept)}; every run's kept epoch is in {target.name})"
              if len(evaluation.kept) > 1 else "")
    click.echo(f"{evaluation.method} run {evaluation.run}: {evaluation.kept[0]}{trials}")
    click.echo(format_evaluation(evaluation.results))
    replaced = target.is_file()
    evaluation.save(target)
    click.echo(f"wrote {target}" + (" (replacing the earlier results)" if replaced else ""))


@cli.command("report")
@click.argument("runs", nargs=-1, required=True, metavar="RUN [RUN]...")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="HTML file to write.")
@click.option("--title", help="Page title (default: the dataset and the runs).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
def report_cmd(runs: tuple[str, ...], out: str, title: str | None, overwrite: bool) -> None:
    """One self-contained HTML page for evaluated runs, side by side: what each run is (method, kept
    weights, protocol, distance, re-ranking), one results table with chance R1, CMC curves and ranked
    lists. RUN is a run folder or RegDB trial pattern that `crossreid evaluate` has scored (its
    evaluation.json), or a results file written with `evaluate --json`."""
    from crossreid.evaluation.document import side_by_side
    from crossreid.report.html import write_report

    target = Path(out)
    if target.exists() and not overwrite:
        raise UserError(f"{target}: exists; pass --overwrite to replace it or choose another --out")
    evaluations = side_by_side(runs)
    dataset = evaluations[0].dataset
    write_report(target, evaluations,
                 title or f"crossreid report: {', '.join(e.name for e in evaluations)} on {dataset}")
    click.echo(f"wrote {target}: {len(evaluations)} run(s) evaluated on {dataset}")


def _parse_options(items: tuple[str, ...], what: str) -> dict:
    """``key=value`` pairs (values parsed as YAML scalars) into a dict."""
    return dict(parse_assignment(item, what) for item in items)


@cli.command("score")
@click.argument("features", type=click.Path(dir_okay=False))
@click.option("--protocol", required=True, help="Protocol name (see `crossreid protocols`).")
@click.option("--option", "protocol_options", multiple=True, metavar="KEY=VALUE",
              help="Protocol option, e.g. --option query=ir --option gallery=rgb (repeatable).")
@click.option("--dataset", help="Take ids/cameras/modalities from this dataset's catalog (matched by path).")
@click.option("--root", help="The dataset's root folder.")
@click.option("--data-option", "data_options", multiple=True, metavar="KEY=VALUE", help="Dataset loader option.")
@click.option("--metric", type=click.Choice(["euclidean", "cosine"]),
              help="Distance (default: --option distance=..., else the eval.metric of the run that extracted the "
                   "features, else euclidean).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the result as JSON.")
@click.option("--rerank", is_flag=True, help="k-reciprocal re-ranking (Zhong et al. 2017); recorded in the result.")
@click.option("--rerank-option", "rerank_options", multiple=True, metavar="KEY=VALUE", help="k1, k2, lambda.")
def score_cmd(features: str, protocol: str, protocol_options: tuple[str, ...], dataset: str | None,
              root: str | None, data_options: tuple[str, ...], metric: str | None, json_out: str | None,
              rerank: bool = False, rerank_options: tuple[str, ...] = ()) -> None:
    """Score a features file (.npz with paths and features) under a named protocol."""
    from crossreid.evaluation.results import format_evaluation
    from crossreid.evaluation.score import score_features

    result = score_features(features, protocol, _parse_options(protocol_options, "--option"), dataset=dataset,
                            root=root, metric=metric, dataset_options=_parse_options(data_options, "--data-option"),
                            rerank=_rerank_from(rerank, rerank_options))
    click.echo(format_evaluation({result.protocol.get("direction", "-"): result}))
    if json_out:
        result.save(json_out)
        click.echo(f"wrote {json_out}")


@cli.command("protocols")
def protocols_cmd() -> None:
    """List the registered evaluation protocols."""
    from crossreid.evaluation.protocols import protocol_names

    for name in protocol_names():
        click.echo(name)


@cli.command("check", epilog=f"Modality names accepted in manifests and folder names (with aliases): {accepted_names()}.")
@click.argument("dataset")
@click.option("--root", help="Dataset folder (default: $CROSSREID_DATA/<name>).")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="Loader option (repeatable).")
@click.option("--no-decode", is_flag=True, help="Only check that files exist; do not decode them.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def check_cmd(dataset: str, root: str | None, options: tuple[str, ...], no_decode: bool, quiet: bool) -> None:
    """Validate a dataset folder: counts per pool, modality and camera; missing or corrupt files; what
    its protocols read; warnings on identities in one modality only, rgb and ir sharing camera ids and
    images whose channels contradict their modality. Exit 1 on a problem (train and evaluate refuse
    such data unless --ignore-check)."""
    from crossreid.data.datasets.check import check_dataset

    report = check_dataset(dataset, root, decode_images=not no_decode, progress=not quiet,
                           **_parse_options(options, "--option"))
    for line in report.lines():
        click.echo(line)
    if not report.ok:
        raise click.exceptions.Exit(1)


@cli.command("manifest")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--pattern", required=True,
              help="Each image's path under FOLDER, with fields: {modality} and {person} (required), {camera}, "
                   "{split}, {frame}, {sequence}, {n} (an image number); * matches any text. "
                   "E.g. '{modality}/{person}/cam{camera}_{n}.png' (quote it).")
@click.option("--split", "fractions", help="Person fractions, e.g. train=0.5,val=0.1,test=0.4 "
              "(default train=0.5,test=0.5; not with a {split} field).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the person split.")
@click.option("--shared-cameras", is_flag=True, help="A camera name is one co-registered sensor in every modality "
              "(e.g. RGB-D); by default cameras are numbered per modality.")
@click.option("--mixed-sizes", is_flag=True, help="Accept images of one modality with different sizes.")
@click.option("--name", default="manifest.csv", show_default=True, help="Manifest file name, written in FOLDER.")
@click.option("--overwrite", is_flag=True, help="Replace an existing manifest.")
def manifest_cmd(folder: str, pattern: str, fractions: str | None, seed: int, shared_cameras: bool,
                 mixed_sizes: bool, name: str, overwrite: bool) -> None:
    """Write FOLDER/manifest.csv (the `generic` dataset) from a folder layout: person names numbered,
    cameras numbered per modality, persons split into train/val/test with a seed."""
    from crossreid.data.datasets.folder_manifest import build_manifest

    built = build_manifest(folder, pattern, fractions, seed, shared_cameras, mixed_sizes, name, overwrite)
    for line in built.summary():
        click.echo(line)
    option = f" --option manifest={name}" if name != "manifest.csv" else ""
    click.echo(f"next: crossreid check generic --root {folder}{option}")


@cli.command("calibrate")
@click.option("--difficulty", default="default", show_default=True, help="Preset: easy, default or hard.")
@click.option("--out", type=click.Path(file_okay=False), help="Folder (default runs/calibrate-DIFFICULTY).")
@click.option("--only", help="Comma-separated models: rgb, depth, ir, one_stream (default: all).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Config override for every model, e.g. --set data.depth_encoding=normals.")
@click.option("--overwrite", is_flag=True, help="Retrain models that already have results in --out.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@_device_option
@_amp_option("the test-set embedding (training follows train.amp)")
def calibrate_cmd(difficulty: str, out: str | None, only: str | None, overrides: tuple[str, ...],
                  overwrite: bool, quiet: bool, device: str | None = None, amp: str = "auto") -> None:
    """Calibrate the synthetic data: single-modality models and the one-stream baseline at a fixed
    budget, R1 against the preset's targets (docs/synthetic.md); no seed method is run."""
    from crossreid.calibrate import format_table, run_calibration

    names = [n.strip() for n in only.split(",") if n.strip()] if only else None
    payload = run_calibration(difficulty, Path(out or f"runs/calibrate-{difficulty}"), names, list(overrides),
                              overwrite, progress=not quiet, device=device, amp=amp)
    click.echo(format_table(difficulty, payload["rows"]))
    chance = ", ".join(f"{d} {v:.1f}" for d, v in payload["chance_r1"].items())
    click.echo(f"chance R1 (%): {chance}; budget {payload['budget']}; "
               f"wall time per model (s): {payload['wall_time_s']}")


@cli.command("reproduce")
@click.argument("which", metavar="SET")
@click.option("--out", type=click.Path(file_okay=False), help="Folder for every run (default runs/reproduce-SET); "
              "finished runs made with the same config are reused.")
@click.option("--seeds", default="0,1,2", show_default=True, help="Comma-separated training seeds.")
@click.option("--only", help="Comma-separated experiment names (default: all).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Config override for every run.")
@click.option("--table", "table_path", type=click.Path(dir_okay=False), help="Write the markdown tables here.")
@click.option("--overwrite", is_flag=True, help="Re-run experiments that already have results.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@_device_option
@_amp_option("the test-set embedding (training follows train.amp)")
def reproduce_cmd(which: str, out: str | None, seeds: str, only: str | None, overrides: tuple[str, ...],
                  table_path: str | None, overwrite: bool, quiet: bool, device: str | None = None,
                  amp: str = "auto") -> None:
    """Run an experiment set over seeds and print its markdown tables. SET is a shipped set,
    `hafner` (Tables 3 and 5 of Hafner et al.), `baselines` (the four baselines, RGB<->depth and
    RGB<->IR) or `vi` (the visible-infrared methods against AGW, with ablations), all on the
    synthetic data, or an experiment-set YAML file of the same form."""
    from crossreid.reproduce import load_set, run_set, set_note, write_tables

    exp_set = load_set(which)
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds {seeds!r}: expected comma-separated integers, e.g. 0,1,2") from None
    names = [n.strip() for n in only.split(",")] if only else None
    out_dir = Path(out or f"runs/reproduce-{exp_set.name}")
    summary = run_set(exp_set, out_dir, seed_list, names, list(overrides), overwrite, progress=not quiet,
                      device=device, amp=amp)
    click.echo(write_tables(exp_set, summary, Path(table_path or out_dir / "tables.md"),
                            set_note(exp_set, seed_list, list(overrides))))


# ---------------------------------------------------------------- retrieval: extract, index, search, export
def _rerank_from(enabled: bool, options: tuple[str, ...]):
    """A Rerank when --rerank is given (options k1, k2, lambda), else None."""
    if not enabled:
        if options:
            raise UserError("--rerank-option needs --rerank")
        return None
    from crossreid.evaluation.rerank import Rerank

    return Rerank.from_options(_parse_options(options, "--rerank-option"))


@cli.command("extract")
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--images", "source", required=True, help="A folder of images or a CSV manifest (path, modality, ...).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Features file (.npz) to write.")
@click.option("--modality", help="Modality of every image in the folder (default: from rgb/, depth/, ir/ "
              "sub-folders); with a manifest, keep only this modality.")
@click.option("--only", multiple=True, help="Keep only these modalities (repeatable).")
@click.option("--split", "splits", multiple=True, help="Manifest split(s) to keep, e.g. test (repeatable).")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--channels-last", is_flag=True, help="channels_last memory format.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_device_option
@_amp_option("the network")
def extract_cmd(run: str, source: str, out: str, modality: str | None, only: tuple[str, ...], splits: tuple[str, ...],
                batch_size: int, channels_last: bool, quiet: bool, device: str | None = None,
                amp: str = "auto") -> None:
    """Embed images with a trained RUN into a features file (`crossreid score` and `index` read it);
    under torchrun the images are sharded across processes."""
    from crossreid.retrieval.extract_images import extract_images

    arrays = extract_images(run, source, out, modality, splits, only, batch_size, channels_last,
                            progress=not quiet, device=device, amp=amp)
    if arrays is not None:
        feats = arrays["features"]
        click.echo(f"wrote {out}: {feats.shape[0]} images × {feats.shape[1]} dims "
                   f"({', '.join(sorted(set(arrays['modalities'].tolist())))})")


@cli.command("index")
@click.argument("features", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Index file to write (.npz).")
@click.option("--metric", type=click.Choice(["euclidean", "cosine"]),
              help="Distance (default: the eval.metric of the run that extracted the features, else euclidean).")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True,
              help="Storage of the gallery features (float16 halves memory).")
@click.option("--approximate", type=click.Choice(["hnsw", "ivf"]), help="Also build a FAISS index (needs faiss).")
@click.option("--ann-option", "ann_options", multiple=True, metavar="KEY=VALUE",
              help="hnsw: M, ef_construction, ef_search; ivf: nlist, nprobe.")
@click.option("--recall-k", type=int, default=10, show_default=True, help="K of the recall measured at build.")
def index_cmd(features: str, out: str, metric: str | None, dtype: str, approximate: str | None,
              ann_options: tuple[str, ...], recall_k: int) -> None:
    """Build a gallery index from a features file."""
    from crossreid.retrieval.index import build_index

    index = build_index(features, out, metric, dtype, approximate, _parse_options(ann_options, "--ann-option"),
                        recall_k, log=click.echo)
    click.echo(f"wrote {out}: {len(index)} images × {index.dim} dims, {index.metric}"
               f"{' + ' + approximate + ' side file' if approximate else ''}")


@cli.command("search")
@click.argument("index_path", metavar="INDEX", type=click.Path(dir_okay=False))
@click.option("--query", "images", multiple=True, help="Query image file (repeatable); needs --modality and --run.")
@click.option("--modality", help="Modality of the query images.")
@click.option("--run", type=click.Path(file_okay=False), help="The run that embeds the query images.")
@click.option("--query-camera", type=int, help="Camera of the query images (for --exclude same-camera).")
@click.option("--query-frame", help="Frame key of the query images (for --exclude same-frame).")
@click.option("--query-id", type=int, help="Person id of the query images, when known: results are marked "
              "same person or not.")
@click.option("--query-features", type=click.Path(dir_okay=False), help="Query features file instead of images.")
@click.option("--top", "k", type=int, default=10, show_default=True, help="K results per query.")
@click.option("--gallery-modality", "gallery_modalities", multiple=True, help="Search only these modalities.")
@click.option("--camera", "cameras", multiple=True, type=int, help="Search only these gallery cameras.")
@click.option("--exclude", multiple=True, type=click.Choice(["same-camera", "same-frame"]),
              help="Drop gallery images sharing the query's camera / frame (repeatable).")
@click.option("--exact", is_flag=True, help="Exact search even when the index has a FAISS side file.")
@click.option("--rerank", is_flag=True, help="k-reciprocal re-ranking (Zhong et al. 2017) of the filtered gallery.")
@click.option("--rerank-option", "rerank_options", multiple=True, metavar="KEY=VALUE", help="k1, k2, lambda.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the results as JSON.")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), help="Write a ranked-list page.")
@click.option("--quiet", is_flag=True, help="Do not print the table.")
@_device_option
@_amp_option("the query images' embedding")
def search_cmd(index_path: str, images: tuple[str, ...], modality: str | None, run: str | None,
               query_camera: int | None, query_frame: str | None, query_id: int | None, query_features: str | None,
               k: int,
               gallery_modalities: tuple[str, ...], cameras: tuple[int, ...], exclude: tuple[str, ...],
               exact: bool, rerank: bool, rerank_options: tuple[str, ...], json_out: str | None,
               html_out: str | None, quiet: bool, device: str | None = None, amp: str = "auto") -> None:
    """Find the K nearest gallery images of query images (or query features) in an index."""
    from crossreid.modality import Modality
    from crossreid.retrieval.index import load_index
    from crossreid.retrieval.query import queries_from_features, queries_from_images
    from crossreid.retrieval.report import format_table, results_json, write_html
    from crossreid.retrieval.search import SearchOptions, search_index

    if bool(images) == bool(query_features):
        raise UserError("give either --query IMAGE (with --modality and --run) or --query-features Q.npz")
    if images and not (modality and run):
        raise UserError("--query needs --modality (rgb, depth or ir) and --run (the run that built the index)")
    if images:
        from crossreid.device import resolve_device

        device = resolve_device(device)  # before the index is read
    opts = SearchOptions(k, [Modality.parse(m).value for m in gallery_modalities], list(cameras), list(exclude),
                         _rerank_from(rerank, rerank_options), exact)
    index = load_index(index_path, load_faiss=not exact)
    queries = (queries_from_images(index, images, modality, run, query_camera, query_frame, query_id, device, amp)
               if images else queries_from_features(index, query_features))
    dist, rows, engine = search_index(index, queries, opts)
    doc = results_json(index, queries, opts, dist, rows, engine)
    if not quiet:
        click.echo(format_table(doc))
    model = index.model or {}
    if json_out:
        from crossreid.io import write_json

        write_json(json_out, doc)
        click.echo(f"wrote {json_out}")
    if html_out:
        # Indexes written before the model recorded its input: the config defaults.
        write_html(html_out, doc, model.get("height", 128), model.get("width", 64),
                   model.get("depth_encoding", "normals"))
        click.echo(f"wrote {html_out}")


@cli.command("export")
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="model.onnx (with several modalities: model-rgb.onnx, model-depth.onnx, ...).")
@click.option("--modality", "modalities", multiple=True, help="Export only these modalities (default: all the run embeds).")
@click.option("--images", help="Folder or manifest of real images for the parity check (default: the run's dataset).")
@click.option("--opset", type=int, default=17, show_default=True)
@click.option("--check-images", type=int, default=16, show_default=True, help="Images in the parity check.")
@_device_option
def export_cmd(run: str, fmt: str, out: str, modalities: tuple[str, ...], images: str | None, opset: int,
               check_images: int, device: str | None = None) -> None:
    """Export each modality's embedder of RUN to ONNX (dynamic batch) and check it against PyTorch
    (run in float32 on --device)."""
    from crossreid.retrieval.export import export_onnx

    export_onnx(run, out, modalities, images, opset, check_images, log=click.echo, device=device)


@cli.command("import-weights")
@click.argument("method")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder to write (must not exist).")
@click.option("--dataset", required=True, help="What the checkpoint was trained on (AGW: sysu_mm01 or regdb).")
@click.option("--root", help="Dataset folder recorded in the run (default at evaluation: $CROSSREID_DATA/<folder>).")
@click.option("--data-option", "data_options", multiple=True, metavar="KEY=VALUE",
              help="Dataset loader option recorded in the run, e.g. trial=3 for the model of RegDB split 3.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Config override, e.g. eval.batch_size=32.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out folder.")
def import_weights_cmd(method: str, file: str, out: str, dataset: str, root: str | None,
                       data_options: tuple[str, ...], overrides: tuple[str, ...], overwrite: bool) -> None:
    """Turn an authors' released checkpoint of METHOD (e.g. AGW's SYSU-MM01 model) into a run folder
    that evaluate, extract, export and search accept; the file is read without running pickled code."""
    from crossreid.released import import_released

    report = import_released(method, file, out, dataset, root, _parse_options(data_options, "--data-option"),
                             list(overrides), overwrite)
    for line in report.lines(Path(out)):
        click.echo(line)


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="crossreid")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
