"""The synthetic tri-modal person dataset written by ``crossreid synth``.

Layout (see docs/synthetic.md): ``meta.json`` (generator parameters, cameras),
``manifest.csv`` (the generic manifest format) and ``images/``. It is read back
through the same manifest loader as bring-your-own data.
"""

from __future__ import annotations

from pathlib import Path

from crossreid.data.datasets.manifest import read_manifest
from crossreid.data.registry import register_dataset
from crossreid.data.samples import Catalog
from crossreid.errors import UserError
from crossreid.io import read_json

FORMAT = "crossreid-synthetic"


def read_meta(root: Path) -> dict:
    meta_path = root / "meta.json"
    if not meta_path.is_file():
        raise UserError(f"{meta_path}: not found; {root} is not a synthetic dataset "
                        "(create one with `crossreid synth --out DIR`)")
    meta = read_json(meta_path)
    if meta.get("format") != FORMAT:
        raise UserError(f"{meta_path}: format is {meta.get('format')!r}, expected {FORMAT!r}; "
                        "regenerate with `crossreid synth`")
    return meta


@register_dataset("synthetic", folder="synthetic",
                  description="procedural RGB/depth/infrared persons (`crossreid synth`), the default",
                  protocol="synthetic")
def load_synthetic(root: Path, check_files: bool = True) -> Catalog:
    read_meta(root)
    return read_manifest(root / "manifest.csv", root, check_files=check_files)
