"""The input path: decode once, resize, cache in memory, augment whole batches in torch.

Images are decoded with Pillow a single time (in parallel threads on first use),
resized to the model size and kept as float16 tensors (1 channel for depth and IR,
3 for RGB). Batches are assembled from the cache and augmented on the batch tensor,
so training is bound by the model, not by JPEG/PNG decoding.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from crossreid.data.images import decode, depth_to_unit
from crossreid.data.samples import Sample
from crossreid.modality import Modality

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_resized(sample: Sample, height: int, width: int) -> torch.Tensor:
    """One sample as a float16 C×H×W tensor in [0, 1] at the model size."""
    array = decode(sample.path, sample.modality)
    if sample.modality is Modality.DEPTH:
        # Nearest keeps holes (0 = no reading) from bleeding into valid depth.
        resized = np.asarray(Image.fromarray(array.astype(np.float32), mode="F").resize((width, height), Image.NEAREST))
        chw = depth_to_unit(resized)[None]
    else:
        img = Image.fromarray(array).resize((width, height), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.float32) / 255.0
        chw = arr.transpose(2, 0, 1) if arr.ndim == 3 else arr[None]
    return torch.from_numpy(np.ascontiguousarray(chw)).to(torch.float16)


class ImageStore:
    """Decoded, resized images of a list of samples, cached on first access."""

    def __init__(self, samples: Sequence[Sample], height: int, width: int, cache: bool = True,
                 threads: int = 2) -> None:
        self.samples, self.height, self.width = list(samples), height, width
        self.cache = cache
        self.threads = threads
        self._cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def preload(self, progress: bool = True, desc: str = "decoding images") -> None:
        todo = [i for i in range(len(self.samples)) if i not in self._cache]
        if not todo or not self.cache:
            return
        with ThreadPoolExecutor(self.threads) as pool:
            results = pool.map(lambda i: (i, load_resized(self.samples[i], self.height, self.width)), todo)
            for i, tensor in tqdm(results, total=len(todo), desc=desc, disable=not progress, leave=False):
                self._cache[i] = tensor

    def get(self, index: int) -> torch.Tensor:
        tensor = self._cache.get(index)
        if tensor is None:
            tensor = load_resized(self.samples[index], self.height, self.width)
            if self.cache:
                self._cache[index] = tensor
        return tensor

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        """A float32 B×3×H×W batch in [0, 1] (single-channel images replicated)."""
        return torch.stack([self.get(i).float().expand(3, -1, -1) for i in indices])


def normalize(batch: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, dtype=batch.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=batch.dtype).view(1, 3, 1, 1)
    return (batch - mean) / std


def augment(batch: torch.Tensor, generator: torch.Generator, flip: bool = True, pad: int = 0,
            erasing: float = 0.0, groups: int = 1) -> torch.Tensor:
    """Random flip, zero-pad + crop and random erasing (filled with the mean) on a B×C×H×W batch in [0, 1].

    With ``groups`` > 1 the batch is ``groups`` aligned blocks (e.g. RGB rows then their
    paired depth rows) and each row's geometric parameters are shared across blocks, so
    paired images stay spatially aligned. Erasing is drawn per image.
    """
    b, _, h, w = batch.shape
    if b % groups:
        raise ValueError(f"batch of {b} does not split into {groups} aligned blocks")
    rows = b // groups
    out = batch.clone()
    fill = torch.tensor(IMAGENET_MEAN, dtype=batch.dtype).view(3, 1, 1)[: batch.shape[1]]
    if flip:
        do_flip = (torch.rand(rows, generator=generator) < 0.5).repeat(groups)
        out[do_flip] = out[do_flip].flip(-1)
    if pad:
        padded = torch.nn.functional.pad(out, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (rows,), generator=generator).repeat(groups)
        dx = torch.randint(0, 2 * pad + 1, (rows,), generator=generator).repeat(groups)
        out = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])
    if erasing > 0:
        for i in range(b):
            if torch.rand(1, generator=generator).item() >= erasing:
                continue
            for _ in range(10):  # area 2-33 %, aspect 0.3-3.3, as in Zhong et al.
                area = h * w * (0.02 + 0.31 * torch.rand(1, generator=generator).item())
                aspect = float(np.exp(np.log(0.3) + (np.log(3.3) - np.log(0.3)) * torch.rand(1, generator=generator).item()))
                eh, ew = int(round((area * aspect) ** 0.5)), int(round((area / aspect) ** 0.5))
                if 0 < eh < h and 0 < ew < w:
                    y = int(torch.randint(0, h - eh + 1, (1,), generator=generator))
                    x = int(torch.randint(0, w - ew + 1, (1,), generator=generator))
                    out[i, :, y:y + eh, x:x + ew] = fill  # the mean: 0 after normalisation
                    break
    return out
