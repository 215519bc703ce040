"""The one command-line entry: ``crossreid <command>``."""

from __future__ import annotations

import sys

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


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="crossreid")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
