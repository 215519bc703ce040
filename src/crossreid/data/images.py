"""Decoding images from disk into arrays, with one-line errors for bad files.

RGB decodes to uint8 H×W×3. Infrared decodes to uint8 H×W (3-channel IR files, as in
SYSU-MM01, are converted to luminance deliberately). Depth decodes to float32 H×W in
millimetres (0 = no reading) from 16-bit PNG or PGM (big-endian, as in BIWI).

``encode_depth`` turns millimetres into network input, in one of ``DEPTH_ENCODINGS``
(see docs/synthetic.md, "Depth encodings"): every store of every split calls it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from crossreid.errors import UserError
from crossreid.modality import Modality

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".tif", ".tiff"}  # image files in folders

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


# An image filed as infrared whose channels differ by more than this (0-255) anywhere is a colour image.
COLOUR_SPREAD = 24


def modality_contradiction(img: Image.Image, modality: Modality) -> str | None:
    """Why the channels of ``img`` contradict ``modality``, or None when they fit: a single-channel
    image as rgb, a colour image as ir (some pixel's channels differ by more than COLOUR_SPREAD;
    near-grey 3-channel files, as SYSU-MM01's, pass) or a colour image as depth. The one rule for
    both ``load_run(...).embed``, which refuses such an image, and ``crossreid check``, which warns."""
    if modality is Modality.RGB and img.mode not in ("RGB", "RGBA", "P", "CMYK", "YCbCr"):
        return f"single-channel image (mode {img.mode}) given as rgb; is it ir or depth?"
    if modality is Modality.IR and img.mode in ("RGB", "RGBA"):
        arr = np.asarray(img.convert("RGB"), dtype=np.int16)
        if np.abs(arr - arr.mean(axis=2, keepdims=True)).max() > COLOUR_SPREAD:
            return "colour image given as ir; infrared images are grey: is it rgb?"
    if modality is Modality.DEPTH and img.mode in ("RGB", "RGBA", "P"):
        return (f"colour image (mode {img.mode}) given as depth; depth must be 16-bit millimetres or 8-bit "
                "grey: is it rgb?")
    return None


def open_image(path: str | Path) -> Image.Image:
    """The opened, fully read image at ``path``; a missing or corrupt file is one UserError."""
    return _open(Path(path))


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


# Depth encodings for the network (data.depth_encoding).
DEPTH_ENCODINGS = ("global", "relative", "normals")  # the default is the config's (config.DataConfig)
RELIEF_MM = 600.0          # relative: ± this many mm around the person's depth map to [0, 1]
CROP_HEIGHT_MM = 2000.0    # normals: a person crop spans about this much vertically (pixel size)


def depth_channels(encoding: str) -> int:
    """Channels ``encode_depth`` gives: 3 for surface normals, else 1."""
    return 3 if encoding == "normals" else 1


def person_depth_mm(depth_mm: np.ndarray) -> float:
    """The person's depth in a re-ID crop (0 if no reading): the median of the upper central
    strip's (head and torso) readings within 300 mm of their 30th percentile, so neither a wall
    behind a thin (side-view) person nor a low occluder in front of the legs takes over."""
    h, w = depth_mm.shape
    centre = depth_mm[h // 8:h // 2, w // 3:w - w // 3]
    valid = centre[centre > 0]
    if not valid.size:
        return 0.0
    near = np.percentile(valid, 30)
    return float(np.median(valid[np.abs(valid - near) <= 300.0]))


def _relief_mask(d: np.ndarray) -> tuple[np.ndarray, float]:
    """Valid readings within RELIEF_MM of the person's depth (background and holes are off)."""
    ref = person_depth_mm(d)
    return (d > 0) & (np.abs(d - ref) <= RELIEF_MM), ref


def encode_depth(depth_mm: np.ndarray, encoding: str) -> np.ndarray:
    """Depth in millimetres (H×W, 0 = no reading) as float32 C×H×W network input in [0, 1].

    ``global``: the sensor range 0.5-8 m, near bright (a body's relief is a few percent of it).
    ``relative``: metric relief around the person's depth (``person_depth_mm``), ±RELIEF_MM mapped to 1..0
    (near bright); holes and readings outside the window are 0.
    ``normals``: surface normals from depth gradients, pixel size from a crop height of
    CROP_HEIGHT_MM; each component (x right, y down, z toward the camera) mapped to [0, 1]
    by (n + 1) / 2, gradients taken between valid neighbours only; holes and readings outside
    the relief window are 0 in every channel.
    """
    d = np.asarray(depth_mm, dtype=np.float32)
    if encoding == "global":
        return depth_to_unit(d)[None]
    if encoding not in DEPTH_ENCODINGS:
        raise UserError(f"data.depth_encoding: unknown encoding {encoding!r}; valid: {', '.join(DEPTH_ENCODINGS)}")
    mask, ref = _relief_mask(d)
    if encoding == "relative":
        return np.where(mask, 0.5 - (d - ref) / (2 * RELIEF_MM), 0.0).astype(np.float32)[None]
    pixel_mm = CROP_HEIGHT_MM / d.shape[0]
    gy, gx = (_masked_gradient(d, mask, axis) / pixel_mm for axis in (0, 1))
    n = np.stack([-gx, -gy, np.ones_like(d)])
    n /= np.linalg.norm(n, axis=0, keepdims=True)
    return np.where(mask[None], (n + 1) / 2, 0.0).astype(np.float32)


def _masked_gradient(d: np.ndarray, mask: np.ndarray, axis: int) -> np.ndarray:
    """Depth change per pixel along ``axis`` from valid neighbours only (central, else one-sided, else 0)."""
    dm = np.moveaxis(np.where(mask, d, 0.0), axis, 0)
    m = np.moveaxis(mask, axis, 0)
    prev, nxt = np.zeros_like(dm), np.zeros_like(dm)
    prev_ok, next_ok = np.zeros_like(m), np.zeros_like(m)
    prev[1:], prev_ok[1:] = dm[:-1], m[:-1]
    nxt[:-1], next_ok[:-1] = dm[1:], m[1:]
    g = np.where(prev_ok & next_ok, (nxt - prev) / 2,
                 np.where(next_ok, nxt - dm, np.where(prev_ok, dm - prev, 0.0)))
    return np.moveaxis(g, 0, axis)
