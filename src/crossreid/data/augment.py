"""Training batches out of the image cache: flip, zero-pad + crop, random grayscale, random
erasing and normalisation, applied to whole batches.

**Randomness.** One :class:`Draw` per global batch holds every row's parameters, drawn
from a NumPy generator keyed by (``train.seed``, stage, epoch, step): a batch's
augmentation depends on nothing else, not on the number of processes, on batches prepared
ahead or on earlier batches, so a resumed run replays it exactly. The arrays are drawn in
a fixed order whatever is switched on, so turning one augmentation off leaves the others'
draws unchanged. Each process takes its rows of the draw (``Draw.rows``).

**Where each part runs.** Flip, pad and crop happen while a row is copied out of the cache
(:func:`crop_rows`, on the CPU, in the stored 8- or 16-bit form): that copy is needed
anyway, and a copy of the crop window is the cheapest way to shift an image (a batched
gather costs 5-20 times as much on a CPU). Grayscale, normalisation and erasing then run
on the whole batch on the training device (:func:`finish`).

**Semantics** (the paper recipes'): with ``groups`` > 1 (paired stages) the batch is
``groups`` aligned blocks and each row's flip and crop are shared across the blocks, so
co-registered images stay aligned; erasing and grayscale are drawn per image. Pad: zeros
(black; no reading for depth) around the image, then a random crop back to the image size.
Grayscale: an RGB row becomes its BT.601 luminance in all three channels. Erasing
(Zhong et al.): with probability ``erasing`` a rectangle of 2-33 % of the area with aspect
ratio 0.3-3.3 (up to 10 tries to fit) is set to the ImageNet mean, 0 after normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from crossreid.data.pipeline import IMAGENET_MEAN, IMAGENET_STD, LUMA_WEIGHTS, ImageStore, full_scale

ERASE_TRIES = 10
ERASE_AREA = (0.02, 0.33)
ERASE_ASPECT = (0.3, 3.3)


@dataclass(frozen=True)
class Recipe:
    """What to apply: ``flip`` (p = 0.5), ``pad`` pixels, erasing and grayscale probabilities."""

    flip: bool = True
    pad: int = 0
    erasing: float = 0.0
    grayscale: float = 0.0

    @classmethod
    def of(cls, train) -> Recipe:
        """From a ``TrainConfig``."""
        return cls(train.flip, train.pad, train.random_erasing, train.random_grayscale)


@dataclass
class Draw:
    """One batch's augmentation, one entry per row: ``flip``; ``shift`` (dy, dx) in [-pad, pad], how
    far the (flipped) image moves down and right before it is cut back to its frame, the
    zero-pad + random crop; ``erase`` (y0, y1, x0, x1), an empty box when the row is not
    erased; ``grey``."""

    flip: np.ndarray
    shift: np.ndarray
    erase: np.ndarray
    grey: np.ndarray

    def rows(self, positions: Sequence[int]) -> Draw:
        p = np.asarray(positions, dtype=np.int64)
        return Draw(self.flip[p], self.shift[p], self.erase[p], self.grey[p])


def draw(key: Sequence[int], recipe: Recipe, colour: np.ndarray, height: int, width: int, groups: int = 1) -> Draw:
    """The draw for a batch of ``len(colour)`` rows (``colour``: which rows are RGB), keyed by ``key``."""
    b = len(colour)
    if b % groups:
        raise ValueError(f"batch of {b} does not split into {groups} aligned blocks")
    rng = np.random.default_rng(list(key))
    n = b // groups                                             # geometric draws: one per aligned row
    flip = np.tile(rng.random(n) < 0.5, groups) & recipe.flip
    shift = np.tile(rng.integers(0, 2 * recipe.pad + 1, (n, 2)) - recipe.pad, (groups, 1))
    erased = rng.random(b) < recipe.erasing
    u_area, u_aspect, u_y, u_x = rng.random((4, b, ERASE_TRIES))
    grey = (rng.random(b) < recipe.grayscale) & np.asarray(colour, dtype=bool)
    area = height * width * (ERASE_AREA[0] + (ERASE_AREA[1] - ERASE_AREA[0]) * u_area)
    lo, hi = np.log(ERASE_ASPECT)
    aspect = np.exp(lo + (hi - lo) * u_aspect)
    eh, ew = np.rint(np.sqrt(area * aspect)).astype(np.int64), np.rint(np.sqrt(area / aspect)).astype(np.int64)
    fits = (eh > 0) & (eh < height) & (ew > 0) & (ew < width)
    first = fits.argmax(1)                                      # the first try that fits
    rows = np.arange(b)
    eh, ew, u_y, u_x = eh[rows, first], ew[rows, first], u_y[rows, first], u_x[rows, first]
    y0 = np.floor(u_y * (height - eh + 1)).astype(np.int64)
    x0 = np.floor(u_x * (width - ew + 1)).astype(np.int64)
    box = np.stack([y0, y0 + eh, x0, x0 + ew], 1)
    box[~(erased & fits.any(1))] = 0
    return Draw(flip, shift, box, grey)


@dataclass
class Part:
    """Rows ``start:stop`` of a batch, all of one modality, as stored (n × C × H × W, uint8/uint16)."""

    start: int
    stop: int
    pixels: torch.Tensor


def crop_rows(store: ImageStore, indices: Sequence[int], d: Draw, pin: bool = False) -> list[Part]:
    """Store rows ``indices``, each flipped and shifted as ``d`` says (zeros where the shifted image
    leaves the frame), as parts of consecutive rows of one modality; in pinned memory if ``pin``."""
    store.preload(progress=False)
    h, w = store.height, store.width
    modality = [store.samples[i].modality for i in indices]
    parts, start = [], 0
    while start < len(indices):
        stop = start + 1
        while stop < len(indices) and modality[stop] is modality[start]:
            stop += 1
        source = store.arrays[modality[start]]
        dtype = torch.uint8 if source.dtype == np.uint8 else torch.uint16
        blank = torch.zeros if d.shift[start:stop].any() else torch.empty  # borders stay 0 (black)
        pixels = blank((stop - start, *source.shape[1:]), dtype=dtype, pin_memory=pin)
        out = pixels.numpy()
        for k, p in enumerate(range(start, stop)):
            dy, dx = d.shift[p]
            if d.flip[p]:  # flip, then shift: shift the unflipped image the other way, then mirror it
                dx = -dx
            ys, ye, xs, xe = max(0, dy), min(h, h + dy), max(0, dx), min(w, w + dx)  # target window
            window = source[store.rows[indices[p]], :, ys - dy:ye - dy, xs - dx:xe - dx]
            if d.flip[p]:
                out[k, :, ys:ye, w - xe:w - xs] = window[..., ::-1]
            else:
                out[k, :, ys:ye, xs:xe] = window
        parts.append(Part(start, stop, pixels))
        start = stop
    return parts


_CONSTANTS: dict = {}


def _constants(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(1 / std, -mean / std, luma weights) as (1, 3, 1, 1) float32 tensors on ``device``."""
    if device not in _CONSTANTS:
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        _CONSTANTS[device] = tuple(t.view(1, 3, 1, 1).to(device) for t in (1 / std, -mean / std,
                                                                           torch.tensor(LUMA_WEIGHTS)))
    return _CONSTANTS[device]


def finish(parts: list[Part], d: Draw, out: torch.Tensor) -> torch.Tensor:
    """The parts as one normalised float32 batch in ``out`` (B × 3 × H × W, on the training device):
    single-channel images replicated to 3, the ``d.grey`` rows turned to luminance, then
    normalised, then the ``d.erase`` boxes set to 0 (the mean)."""
    device = out.device
    scale, shift, luma = _constants(device)
    for part in parts:
        rows = out[part.start:part.stop]
        pixels = part.pixels.to(device, non_blocking=True)
        rows.copy_(pixels.expand(-1, 3, -1, -1) if pixels.shape[1] == 1 else pixels)
        grey = np.flatnonzero(d.grey[part.start:part.stop])
        if len(grey):
            g = torch.from_numpy(grey).to(device, non_blocking=True)
            rows[g] = (rows[g] * luma).sum(1, keepdim=True).expand(-1, 3, -1, -1)
        rows.mul_(scale / full_scale(pixels.dtype)).add_(shift)
    erase(out, d.erase)
    return out


def erase(out: torch.Tensor, boxes: np.ndarray, batched: bool | None = None) -> None:
    """Set each row's box (y0, y1, x0, x1) of ``out`` to 0, in place. ``batched`` (default: on a
    GPU) uses one masked fill over the batch; otherwise each erased row's box is filled on its own,
    which on a CPU costs 1.5 ms for an IDKL batch against 20-30 ms for the batched mask."""
    erased = np.flatnonzero(boxes[:, 1] > boxes[:, 0])
    if not len(erased):
        return
    if not (out.is_cuda if batched is None else batched):
        for p in erased.tolist():
            y0, y1, x0, x1 = boxes[p].tolist()
            out[p, :, y0:y1, x0:x1] = 0.0
        return
    box = torch.from_numpy(boxes).to(out.device, non_blocking=True)
    ys = torch.arange(out.shape[2], device=out.device)
    xs = torch.arange(out.shape[3], device=out.device)
    inside_y = (ys >= box[:, :1]) & (ys < box[:, 1:2])
    inside_x = (xs >= box[:, 2:3]) & (xs < box[:, 3:4])
    out.masked_fill_(inside_y[:, None, :, None] & inside_x[:, None, None, :], 0.0)
