"""The input path: decode once, resize, cache in memory or on disk, augment whole batches in torch.

Images are decoded with Pillow a single time (in parallel threads on first use),
resized to the model size and kept as float16 tensors (1 channel for depth and IR,
3 for RGB). With a disk cache they go to one ``.npy`` file of channel planes, keyed
by the dataset root, the image size and every file's path, size and mtime, which
later runs memory-map instead of decoding. Batches are assembled from the cache and
augmented on the batch tensor, so training is bound by the model, not by decoding.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from crossreid.data.images import decode, depth_channels, encode_depth
from crossreid.data.samples import Sample
from crossreid.io import atomic_path
from crossreid.modality import Modality
from crossreid.progress import progress_bar

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_resized(sample: Sample, height: int, width: int, depth_encoding: str) -> torch.Tensor:
    """One sample as a float16 C×H×W tensor in [0, 1] at the model size (depth encoded after resizing)."""
    return resize_decoded(decode(sample.path, sample.modality), sample.modality, height, width, depth_encoding)


def resize_decoded(array: np.ndarray, modality: Modality, height: int, width: int,
                   depth_encoding: str) -> torch.Tensor:
    """A decoded array (see :func:`crossreid.data.images.decode`) as :func:`load_resized` gives it."""
    if modality is Modality.DEPTH:
        # Nearest keeps holes (0 = no reading) from bleeding into valid depth.
        resized = np.asarray(Image.fromarray(array.astype(np.float32), mode="F").resize((width, height), Image.NEAREST))
        chw = encode_depth(resized, depth_encoding)
    else:
        img = Image.fromarray(array).resize((width, height), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.float32) / 255.0
        chw = arr.transpose(2, 0, 1) if arr.ndim == 3 else arr[None]
    return torch.from_numpy(np.ascontiguousarray(chw)).to(torch.float16)


def channels(modality: Modality, depth_encoding: str) -> int:
    """Channels ``load_resized`` gives a modality: 3 for RGB, 1 for IR, 1 or 3 for depth (by encoding)."""
    if modality is Modality.DEPTH:
        return depth_channels(depth_encoding)
    return 3 if modality is Modality.RGB else 1


class ImageStore:
    """Decoded, resized images of a list of samples, cached on first access.

    ``disk_dir``: keep them in a float16 ``.npy`` there instead (built by ``preload``,
    memory-mapped by every later store over the same files and size).
    ``depth_encoding``: how depth becomes network input (``crossreid.data.images.encode_depth``);
    build stores from a run config with ``ImageStore.for_data`` so every split uses the same one.
    """

    def __init__(self, samples: Sequence[Sample], height: int, width: int, *, depth_encoding: str,
                 cache: bool = True, threads: int = 2, disk_dir: str | Path | None = None,
                 root: str | Path | None = None) -> None:
        self.samples, self.height, self.width = list(samples), height, width
        self.depth_encoding = depth_encoding
        self.cache = cache
        self.threads = threads
        self.disk_dir, self.root = (Path(disk_dir) if disk_dir else None), root
        self._cache: dict[int, torch.Tensor] = {}
        self._planes: np.ndarray | None = None
        self._offsets = np.cumsum([0] + [channels(s.modality, depth_encoding) for s in self.samples])

    @classmethod
    def for_data(cls, samples: Sequence[Sample], data, **options) -> "ImageStore":
        """A store at the size and depth encoding of ``data`` (a ``DataConfig``)."""
        return cls(samples, data.height, data.width, depth_encoding=data.depth_encoding, **options)

    def __len__(self) -> int:
        return len(self.samples)

    def disk_path(self) -> Path:
        """The cache file for these samples at this size (whether or not it exists)."""
        files = []
        for s in self.samples:
            st = Path(s.path).stat() if Path(s.path).exists() else None
            files.append([str(s.path), s.modality.value, st.st_size if st else -1, st.st_mtime_ns if st else -1])
        key = json.dumps([str(self.root or ""), self.height, self.width, self.depth_encoding, files])
        return self.disk_dir / f"images-{self.height}x{self.width}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.npy"

    def _decoded(self, todo: list[int], progress: bool, desc: str):
        with ThreadPoolExecutor(self.threads) as pool:
            results = pool.map(lambda i: (i, load_resized(self.samples[i], self.height, self.width,
                                                          self.depth_encoding)), todo)
            yield from progress_bar(results, total=len(todo), desc=desc, enabled=progress, keep=False)

    def _open_disk(self, progress: bool, desc: str) -> None:
        path = self.disk_path()
        if not path.is_file():
            with atomic_path(path) as tmp:
                planes = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16,
                                                   shape=(int(self._offsets[-1]), self.height, self.width))
                for i, tensor in self._decoded(list(range(len(self.samples))), progress, desc):
                    planes[self._offsets[i]:self._offsets[i + 1]] = tensor.numpy()
                planes.flush()
                del planes
        self._planes = np.load(path, mmap_mode="r")

    def preload(self, progress: bool = True, desc: str = "decoding images") -> None:
        if self.disk_dir is not None:
            if self._planes is None:
                self._open_disk(progress, desc)
            return
        todo = [i for i in range(len(self.samples)) if i not in self._cache]
        if not todo or not self.cache:
            return
        for i, tensor in self._decoded(todo, progress, desc):
            self._cache[i] = tensor

    def get(self, index: int) -> torch.Tensor:
        if self.disk_dir is not None:
            self.preload(progress=False)
            return torch.from_numpy(np.array(self._planes[self._offsets[index]:self._offsets[index + 1]]))
        tensor = self._cache.get(index)
        if tensor is None:
            tensor = load_resized(self.samples[index], self.height, self.width, self.depth_encoding)
            if self.cache:
                self._cache[index] = tensor
        return tensor

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        """A float32 B×3×H×W batch in [0, 1] (single-channel images replicated)."""
        return torch.stack([self.get(i).float().expand(3, -1, -1) for i in indices])


LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, as PIL's and torchvision's grayscale


def normalize(batch: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, dtype=batch.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=batch.dtype).view(1, 3, 1, 1)
    return (batch - mean) / std


def augment(batch: torch.Tensor, generator: torch.Generator, flip: bool = True, pad: int = 0,
            erasing: float = 0.0, groups: int = 1, grayscale: float = 0.0,
            colour_rows: torch.Tensor | None = None) -> torch.Tensor:
    """Random flip, zero-pad + crop, random erasing (filled with the mean) and random grayscale on a
    B×C×H×W batch in [0, 1].

    With ``groups`` > 1 the batch is ``groups`` aligned blocks (e.g. RGB rows then their
    paired depth rows) and each row's geometric parameters are shared across blocks, so
    paired images stay spatially aligned. Erasing is drawn per image. Grayscale replaces a
    colour image (a row where the boolean ``colour_rows`` is true) by its luminance with
    probability ``grayscale``, so colour cannot be the only cue a model learns.
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
    if grayscale > 0 and colour_rows is not None and bool(colour_rows.any()):
        rows_idx = colour_rows.nonzero().flatten()
        chosen = rows_idx[torch.rand(len(rows_idx), generator=generator) < grayscale]
        weights = torch.tensor(LUMA_WEIGHTS, dtype=out.dtype).view(1, 3, 1, 1)
        out[chosen] = (out[chosen] * weights).sum(1, keepdim=True).expand(-1, 3, -1, -1)
    return out
