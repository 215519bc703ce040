"""Decoding images from disk into arrays, with one-line errors for bad files.

RGB decodes to uint8 H×W×3. Infrared decodes to uint8 H×W (3-channel IR files, as in
SYSU-MM01, are converted to luminance deliberately). Depth decodes to float32 H×W in
millimetres (0 = no reading) from 16-bit PNG or PGM (big-endian, as in BIWI).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from crossreid.errors import UserError
from crossreid.modality import Modality

# Depth range mapped to [0, 1] for the network: Kinect-class sensors read 0.5-8 m.
DEPTH_NEAR_MM = 500.0
DEPTH_FAR_MM = 8000.0


def _open(path: Path) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()
        return img
    except FileNotFoundError:
        raise UserError(f"{path}: image not found; check the dataset root and its manifest") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{path}: unreadable or truncated image ({exc}); re-extract or remove this file") from None


_warned_8bit: list[Path] = []


def _warn_8bit_depth(path: Path) -> None:
    """Say once per process that 8-bit depth is rescaled, naming the first such file and the rule."""
    if not _warned_8bit:
        _warned_8bit.append(path)
        print(f"warning: {path}: 8-bit depth image, read as 0-255 -> 0-{DEPTH_FAR_MM / 1000:g} m "
              f"(value / 255 * {DEPTH_FAR_MM:g} mm); store 16-bit millimetres for true depth "
              "(this warning is shown once)", file=sys.stderr)


def decode(path: str | Path, modality: Modality) -> np.ndarray:
    """Decode one file for ``modality`` (see module docstring for the output types)."""
    path = Path(path)
    return decode_image(_open(path), modality, path)


def decode_image(img: Image.Image, modality: Modality, where: str | Path = "image") -> np.ndarray:
    """An opened PIL image as :func:`decode` gives it (``where`` names it in errors)."""
    if modality is Modality.RGB:
        return np.asarray(img.convert("RGB"))
    if modality is Modality.IR:
        return np.asarray(img.convert("L"))
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "I;16N"):
        arr = np.asarray(img).astype(np.float32)
    elif img.mode == "L":
        # 8-bit depth (e.g. depth maps pre-rendered to JPEG): rescale to the millimetre range.
        _warn_8bit_depth(where)
        arr = np.asarray(img).astype(np.float32) / 255.0 * DEPTH_FAR_MM
    else:
        raise UserError(f"{where}: depth image has mode {img.mode}; expected 16-bit millimetres (PNG/PGM) or 8-bit grey")
    return arr


def depth_to_unit(depth_mm: np.ndarray) -> np.ndarray:
    """Map millimetres to [0, 1]: near is bright, far and invalid (0) are 0."""
    d = np.asarray(depth_mm, dtype=np.float32)
    unit = (DEPTH_FAR_MM - np.clip(d, DEPTH_NEAR_MM, DEPTH_FAR_MM)) / (DEPTH_FAR_MM - DEPTH_NEAR_MM)
    unit[d <= 0] = 0.0
    return unit


def to_float_chw(array: np.ndarray, modality: Modality) -> np.ndarray:
    """A decoded array as float32 C×H×W in [0, 1]; single-channel modalities become 3 channels."""
    if modality is Modality.RGB:
        return np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32) / 255.0
    if modality is Modality.DEPTH:
        unit = depth_to_unit(array)
    else:
        unit = array.astype(np.float32) / 255.0
    return np.ascontiguousarray(np.broadcast_to(unit, (3,) + unit.shape), dtype=np.float32)
