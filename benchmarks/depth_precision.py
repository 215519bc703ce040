"""What storing each depth encoding in 8 or 16 bits costs: the choice behind ``DEPTH_STORAGE``.

    python benchmarks/depth_precision.py [--root DATASET] [--images 600] [--size 64x32]

For the depth images of a dataset (default: the demo's synthetic set, generated if needed),
resized to the training size as the cache does (nearest), each encoding
(``crossreid.data.images.encode_depth``) is compared in float32 with its value stored as
uint8, uint16 and float16 (the cache before issue 23): the largest error over valid pixels, in
the encoding's [0, 1] units and, for ``global`` and ``relative``, in millimetres; and how many
distinct levels a person's valid pixels take (median over images), so a coarse step shows as
relief flattened into a few levels. Printed as a markdown table (docs/training.md quotes it).
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

from crossreid.config import load_config, resolve_config
from crossreid.data.images import (
    DEPTH_ENCODINGS,
    DEPTH_FAR_MM,
    DEPTH_NEAR_MM,
    RELIEF_MM,
    decode,
    encode_depth,
)
from crossreid.data.open import open_catalog
from crossreid.data.registry import load_dataset
from crossreid.modality import Modality

MM_PER_UNIT = {"global": DEPTH_FAR_MM - DEPTH_NEAR_MM, "relative": 2 * RELIEF_MM}


def stored(unit: np.ndarray, kind: str) -> np.ndarray:
    if kind == "float16":
        return unit.astype(np.float16).astype(np.float32)
    scale = 255 if kind == "uint8" else 65535
    return np.rint(np.clip(unit, 0, 1) * scale) / scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="a generic-layout dataset (default: the demo's synthetic set)")
    parser.add_argument("--images", type=int, default=600, help="depth images used (evenly spread)")
    parser.add_argument("--size", default="64x32", help="training size HxW (default: the demo's)")
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    catalog = load_dataset("generic", args.root) if args.root else \
        open_catalog(load_config(resolve_config("demo")).data, progress=False)
    depth = [s for s in catalog.train + catalog.query + catalog.gallery if s.modality is Modality.DEPTH]
    depth = [depth[i] for i in np.linspace(0, len(depth) - 1, min(args.images, len(depth))).astype(int)]
    resized = [np.asarray(Image.fromarray(decode(s.path, Modality.DEPTH).astype(np.float32), mode="F")
                          .resize((w, h), Image.NEAREST)) for s in depth]
    kinds = ("uint8", "uint16", "float16")
    print(f"{len(depth)} depth images at {h}×{w}\n")
    print("| encoding | " + " | ".join(f"max error {k}" for k in kinds) + " | levels per person, float32 / uint8 |")
    print("|---|" + "---|" * (len(kinds) + 1))
    for encoding in DEPTH_ENCODINGS:
        worst, levels = dict.fromkeys(kinds, 0.0), {"float32": [], "uint8": []}
        for d in resized:
            unit = encode_depth(d, encoding)
            valid = np.broadcast_to(unit.max(0) > 0, unit.shape)
            for k in kinds:
                worst[k] = max(worst[k], float(np.abs(stored(unit, k) - unit)[valid].max(initial=0)))
            levels["float32"].append(len(np.unique(unit[valid])))
            levels["uint8"].append(len(np.unique(stored(unit, "uint8")[valid])))
        mm = MM_PER_UNIT.get(encoding)
        cells = [f"{worst[k]:.2g}" + (f" ({worst[k] * mm:.2g} mm)" if mm else "") for k in kinds]
        print(f"| {encoding} | " + " | ".join(cells) +
              f" | {np.median(levels['float32']):.0f} / {np.median(levels['uint8']):.0f} |")


if __name__ == "__main__":
    main()
