"""A picture of the synthetic data: rows of persons, each an RGB / depth / IR triplet per camera."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from crossreid.data.images import encode_depth
from crossreid.data.synth.params import SynthParams
from crossreid.data.synth.render import Renderer
from crossreid.io import atomic_path


def _as_rgb(array: np.ndarray, modality: str) -> np.ndarray:
    if modality == "rgb":
        return array
    # Depth shown person-relative (near bright), so its relief is visible.
    grey = (encode_depth(array, "relative")[0] * 255).astype(np.uint8) if modality == "depth" else array
    return np.repeat(grey[..., None], 3, axis=2)


def preview_grid(params: SynthParams, persons: int = 4, t: int = 0) -> np.ndarray:
    """Rows = persons 1..n; per camera its modalities side by side, then the next camera."""
    renderer = Renderer(params)
    rows = []
    for pid in range(1, min(persons, params.identities) + 1):
        tiles = []
        for cam in range(1, len(renderer.cameras) + 1):
            for modality, array in renderer.shot(pid, cam, t).images.items():
                tiles.append(_as_rgb(array, modality))
            tiles.append(np.full((params.height, 4, 3), 255, np.uint8))
        rows.append(np.concatenate(tiles[:-1], axis=1))
    return np.concatenate(rows, axis=0)


def save_preview(path: str | os.PathLike, params: SynthParams, persons: int = 4) -> None:
    """Write the grid as a 256-colour PNG (half the size of full colour; sensor noise compresses badly)."""
    image = Image.fromarray(preview_grid(params, persons)).quantize(256, method=Image.Quantize.MEDIANCUT)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", optimize=True)
