"""What the benchmark scripts that write a section of docs/benchmarks.md share."""

from __future__ import annotations

import argparse
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def arguments(doc: str) -> argparse.ArgumentParser:
    """A parser described by the script's first docstring line, with ``--machine`` (named in
    the table) and ``--no-write`` (print only); scripts add their own options to it."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--machine", default="2-core CPU, no GPU", help="the machine, as the table names it")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    return parser
