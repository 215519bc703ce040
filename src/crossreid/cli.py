"""The one command-line entry: ``crossreid <command>``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from crossreid import __version__
from crossreid.errors import UserError


class _Group(click.Group):
    """Turns UserError into one line on stderr and exit code 2, without a traceback."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="crossreid")
def cli() -> None:
    """Cross-modal person re-identification: RGB, depth and infrared."""


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
@click.option("--quiet", is_flag=True, help="No progress bars.")
def demo_cmd(out: str, overwrite: bool, overrides: tuple[str, ...], quiet: bool) -> None:
    """Generate (or reuse) synthetic data, train, evaluate RGB<->depth and RGB<->IR, write a report."""
    from crossreid.demo import run_demo

    run_demo(Path(out), overwrite=overwrite, overrides=list(overrides), progress=not quiet)


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
        err = exc.errors()[0]
        raise UserError(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}") from None
    path = generate(Path(out), params, overwrite=overwrite, progress=not quiet)
    click.echo(f"wrote synthetic dataset to {path}")


def _load_run_config(config: str, overrides: tuple[str, ...]):
    from crossreid.config import load_config, resolve_config

    return load_config(resolve_config(config), list(overrides))


@cli.command("train")
@click.argument("config")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Run folder.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run folder.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train_cmd(config: str, overrides: tuple[str, ...], out: str, resume: bool, overwrite: bool, quiet: bool) -> None:
    """Train a method. CONFIG is a YAML file or a shipped config name (e.g. demo)."""
    from crossreid.data.open import open_catalog
    from crossreid.engine.trainer import Trainer

    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other; choose one")
    from crossreid.engine import distributed as D

    cfg = _load_run_config(config, overrides)
    dist = D.init_from_env()
    if not dist.main:
        D.barrier(dist)  # under torchrun, rank 0 generates (or checks) the data first
    catalog = open_catalog(cfg.data, progress=not quiet and dist.main)
    if dist.main:
        D.barrier(dist)
    summary = Trainer(cfg, Path(out), catalog, resume=resume, overwrite=overwrite, progress=not quiet).fit()
    if dist.main:
        click.echo(f"finished: {summary}; weights in {Path(out) / 'model.safetensors'}")


@cli.command("evaluate")
@click.argument("run")
@click.option("--dataset", help="Dataset name (default: the run's).")
@click.option("--root", type=click.Path(file_okay=False), help="Dataset root (default: the run's).")
@click.option("--data-option", "data_options", multiple=True, metavar="KEY=VALUE", help="Dataset loader option.")
@click.option("--protocol", help="Protocol name (default: the dataset's own, see `crossreid protocols`).")
@click.option("--option", "protocol_options", multiple=True, metavar="KEY=VALUE",
              help="Protocol option, e.g. --option mode=indoor --option shots=10 (repeatable).")
@click.option("--direction", "directions", multiple=True, help="e.g. rgb->depth (repeatable; default: the run's).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the results as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def evaluate_cmd(run: str, dataset: str | None, root: str | None, data_options: tuple[str, ...],
                 protocol: str | None, protocol_options: tuple[str, ...], directions: tuple[str, ...],
                 json_out: str | None, quiet: bool) -> None:
    """Evaluate a trained run (RUN; for RegDB a pattern such as runs/regdb/trial{t}) on the test pools."""
    from crossreid.experiment import evaluate_run
    from crossreid.io import write_json

    results = evaluate_run(run, list(directions) or None, protocol, _parse_options(protocol_options, "--option"),
                           dataset, root, _parse_options(data_options, "--data-option"), progress=not quiet)
    if not results:
        raise UserError(f"{run}: the dataset and the method share none of the requested directions' modalities")
    for direction, result in results.items():
        click.echo(f"{direction:<14} {result.format_table()}")
    if json_out:
        write_json(json_out, {d: r.to_json() for d, r in results.items()})
        click.echo(f"wrote {json_out}")


def _parse_options(items: tuple[str, ...], what: str) -> dict:
    """``key=value`` pairs (values parsed as YAML scalars) into a dict."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"{what} {item!r} is not of the form key=value")
        out[key.strip()] = yaml.safe_load(value)
    return out


@cli.command("score")
@click.argument("features", type=click.Path(dir_okay=False))
@click.option("--protocol", required=True, help="Protocol name (see `crossreid protocols`).")
@click.option("--option", "protocol_options", multiple=True, metavar="KEY=VALUE",
              help="Protocol option, e.g. --option query=ir --option gallery=rgb (repeatable).")
@click.option("--dataset", help="Take ids/cameras/modalities from this dataset's catalog (matched by path).")
@click.option("--root", type=click.Path(file_okay=False), help="The dataset's root folder.")
@click.option("--data-option", "data_options", multiple=True, metavar="KEY=VALUE", help="Dataset loader option.")
@click.option("--metric", type=click.Choice(["euclidean", "cosine"]),
              help="Distance (default: the protocol's, Euclidean unless --option distance=cosine).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the result as JSON.")
def score_cmd(features: str, protocol: str, protocol_options: tuple[str, ...], dataset: str | None,
              root: str | None, data_options: tuple[str, ...], metric: str | None, json_out: str | None) -> None:
    """Score a features file (.npz with paths and features) under a named protocol."""
    from crossreid.evaluation.score import score_features

    result = score_features(features, protocol, _parse_options(protocol_options, "--option"), dataset=dataset,
                            root=root, metric=metric, dataset_options=_parse_options(data_options, "--data-option"))
    click.echo(result.format_table())
    if json_out:
        result.save(json_out)
        click.echo(f"wrote {json_out}")


@cli.command("protocols")
def protocols_cmd() -> None:
    """List the registered evaluation protocols."""
    from crossreid.evaluation.protocols import protocol_names

    for name in protocol_names():
        click.echo(name)


@cli.command("check")
@click.argument("dataset")
@click.option("--root", type=click.Path(file_okay=False), help="Dataset folder (default: $CROSSREID_DATA/<name>).")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="Loader option (repeatable).")
@click.option("--no-decode", is_flag=True, help="Only check that files exist; do not decode them.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def check_cmd(dataset: str, root: str | None, options: tuple[str, ...], no_decode: bool, quiet: bool) -> None:
    """Validate a dataset folder: counts per pool, modality and camera; missing or corrupt files."""
    from crossreid.data.datasets.check import check_dataset

    report = check_dataset(dataset, root, decode_images=not no_decode, progress=not quiet,
                           **_parse_options(options, "--option"))
    for line in report.lines():
        click.echo(line)
    if not report.ok:
        raise click.exceptions.Exit(1)


@cli.command("calibrate")
@click.option("--difficulty", default="default", show_default=True, help="Preset: easy, default or hard.")
@click.option("--out", type=click.Path(file_okay=False), help="Folder (default runs/calibrate-DIFFICULTY).")
@click.option("--only", help="Comma-separated models: rgb, depth, ir, one_stream (default: all).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Config override for every model, e.g. --set data.depth_encoding=normals.")
@click.option("--overwrite", is_flag=True, help="Retrain models that already have results in --out.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def calibrate_cmd(difficulty: str, out: str | None, only: str | None, overrides: tuple[str, ...],
                  overwrite: bool, quiet: bool) -> None:
    """Calibrate the synthetic data: single-modality models and the one-stream baseline at a fixed
    budget, R1 against the preset's targets (docs/synthetic.md); no seed method is run."""
    from crossreid.calibrate import format_table, run_calibration

    names = [n.strip() for n in only.split(",") if n.strip()] if only else None
    payload = run_calibration(difficulty, Path(out or f"runs/calibrate-{difficulty}"), names, list(overrides),
                              overwrite, progress=not quiet)
    click.echo(format_table(difficulty, payload["rows"]))
    click.echo(f"chance R1 {payload['chance_r1']} %; budget {' '.join(payload['budget'])}; "
               f"wall time per model (s): {payload['wall_time_s']}")


@cli.command("reproduce")
@click.argument("which", type=click.Choice(["hafner", "baselines", "vi"]))
@click.option("--out", type=click.Path(file_okay=False), help="Folder for every run (default runs/reproduce-WHICH); "
              "finished runs with the same settings are reused.")
@click.option("--seeds", default="0,1,2", show_default=True, help="Comma-separated training seeds.")
@click.option("--only", help="Comma-separated experiment names (default: all).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Config override for every run.")
@click.option("--table", "table_path", type=click.Path(dir_okay=False), help="Write the markdown tables here.")
@click.option("--overwrite", is_flag=True, help="Re-run experiments that already have results.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def reproduce_cmd(which: str, out: str | None, seeds: str, only: str | None, overrides: tuple[str, ...],
                  table_path: str | None, overwrite: bool, quiet: bool) -> None:
    """Run an experiment set over seeds on the synthetic data: `hafner` (Tables 3 and 5 of Hafner
    et al.), `baselines` (the four baselines, RGB<->depth and RGB<->IR) or `vi` (the
    visible-infrared methods against AGW, with ablations); print markdown tables."""
    from crossreid.reproduce import run_set, write_tables

    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds {seeds!r}: expected comma-separated integers, e.g. 0,1,2") from None
    names = [n.strip() for n in only.split(",")] if only else None
    out_dir = Path(out or f"runs/reproduce-{which}")
    summary = run_set(which, out_dir, seed_list, names, list(overrides), overwrite, progress=not quiet)
    data = {"hafner": "RGB and depth only", "vi": "RGB and IR only"}.get(which, "RGB, depth and IR")
    note = (f"Synthetic data (the demo's synthetic set, {data}), {len(seed_list)} seed(s)"
            f"{', overrides ' + ' '.join(overrides) if overrides else ''}; mean ± std over seeds, percent. "
            "Not comparable with the paper's BIWI / RobotPKU figures.")
    click.echo(write_tables(which, summary, Path(table_path or out_dir / "tables.md"), note))


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="crossreid")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
