"""Decoded images: decode once, resize, keep a compact cache in memory or in one shared file.

Images are decoded with Pillow a single time (in parallel threads on first use), resized
to the model size and stored as unsigned integers: RGB and infrared as the resized 8-bit
pixels themselves, depth as its network encoding quantised to the precision that encoding
needs (``DEPTH_STORAGE``; docs/training.md, "The decoded-image cache"). Each modality is
one array of rows (N × C × H × W). With a disk cache the arrays live in one memory-mapped
file (``cache_file``), keyed by the dataset root, the image size, the depth encoding and
every file's path, size and mtime: later runs and the other processes of a torchrun job
on the same machine map it instead of decoding (the page cache holds one copy).

``ImageStore.get`` and ``batch`` give float32 images in [0, 1] (evaluation and extraction);
training batches leave the cache through ``data.augment``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from crossreid.data import cache_file
from crossreid.data.images import decode, depth_channels, encode_depth
from crossreid.data.samples import Sample
from crossreid.io import atomic_path
from crossreid.modality import Modality
from crossreid.progress import progress_bar

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, as PIL's and torchvision's grayscale

# How each depth encoding is stored: 16 bits keep what every encoding resolves, 8 bits lose
# relief for `global` and were not shown harmless for the others; depth sets are small, so the
# memory is negligible (docs/training.md, "The decoded-image cache").
DEPTH_STORAGE = {"global": np.uint16, "relative": np.uint16, "normals": np.uint16}


def storage_dtype(modality: Modality, depth_encoding: str) -> np.dtype:
    """The cache's integer type for a modality: uint8 for RGB and IR, ``DEPTH_STORAGE`` for depth."""
    return np.dtype(DEPTH_STORAGE[depth_encoding] if modality is Modality.DEPTH else np.uint8)


def full_scale(dtype: np.dtype | torch.dtype) -> int:
    """The stored value that means 1.0 (255 for uint8, 65535 for uint16)."""
    return 255 if dtype in (np.uint8, torch.uint8) else 65535


def channels(modality: Modality, depth_encoding: str) -> int:
    """Channels of a modality's images: 3 for RGB, 1 for IR, 1 or 3 for depth (by encoding)."""
    if modality is Modality.DEPTH:
        return depth_channels(depth_encoding)
    return 3 if modality is Modality.RGB else 1


def resize_stored(array: np.ndarray, modality: Modality, height: int, width: int, depth_encoding: str) -> np.ndarray:
    """A decoded array (see :func:`crossreid.data.images.decode`) at the model size, C×H×W, in the
    cache's integer type (depth encoded after resizing, then quantised)."""
    if modality is Modality.DEPTH:
        # Nearest keeps holes (0 = no reading) from bleeding into valid depth.
        resized = np.asarray(Image.fromarray(array.astype(np.float32), mode="F").resize((width, height), Image.NEAREST))
        dtype = storage_dtype(modality, depth_encoding)
        unit = np.clip(encode_depth(resized, depth_encoding), 0.0, 1.0)
        return np.rint(unit * full_scale(dtype)).astype(dtype)
    pixels = np.asarray(Image.fromarray(array).resize((width, height), Image.BILINEAR))
    return np.ascontiguousarray(pixels.transpose(2, 0, 1) if pixels.ndim == 3 else pixels[None])


def to_unit(stored: np.ndarray) -> torch.Tensor:
    """Stored image(s) as float32 in [0, 1]."""
    return torch.from_numpy(stored.astype(np.float32)).div_(full_scale(stored.dtype))


def resize_decoded(array: np.ndarray, modality: Modality, height: int, width: int,
                   depth_encoding: str) -> torch.Tensor:
    """A decoded array as float32 C×H×W in [0, 1] at the model size: exactly what the cache gives."""
    return to_unit(resize_stored(array, modality, height, width, depth_encoding))


def load_resized(sample: Sample, height: int, width: int, depth_encoding: str) -> torch.Tensor:
    """One sample as :func:`resize_decoded` gives it."""
    return resize_decoded(decode(sample.path, sample.modality), sample.modality, height, width, depth_encoding)


class ImageStore:
    """Decoded, resized images of a list of samples, cached on first access.

    ``cache=False``: decode on every access (nothing kept). ``disk_dir``: keep them in one
    file there (built by ``preload``, memory-mapped by every later store over the same files
    and size) instead of in memory. ``depth_encoding``: how depth becomes network input
    (``crossreid.data.images.encode_depth``); build stores from a run config with
    ``ImageStore.for_data`` so every split uses the same one.
    """

    def __init__(self, samples: Sequence[Sample], height: int, width: int, *, depth_encoding: str,
                 cache: bool = True, threads: int = 2, disk_dir: str | Path | None = None,
                 root: str | Path | None = None) -> None:
        self.samples, self.height, self.width = list(samples), height, width
        self.depth_encoding = depth_encoding
        self.cache = cache
        self.threads = threads
        self.disk_dir, self.root = (Path(disk_dir) if disk_dir else None), root
        self.modalities = [m for m in Modality if any(s.modality is m for s in self.samples)]
        counts = {m: 0 for m in self.modalities}
        self.rows = np.empty(len(self.samples), dtype=np.int64)  # row of each sample in its modality's array
        for i, s in enumerate(self.samples):
            self.rows[i], counts[s.modality] = counts[s.modality], counts[s.modality] + 1
        self.shapes = {m: (counts[m], channels(m, depth_encoding), height, width) for m in self.modalities}
        self.arrays: dict[Modality, np.ndarray] | None = None
        self._ready = np.zeros(len(self.samples), dtype=bool)

    @classmethod
    def for_data(cls, samples: Sequence[Sample], data, **options) -> ImageStore:
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
        digest = hashlib.sha256(key.encode()).hexdigest()[:20]
        return self.disk_dir / f"images-{self.height}x{self.width}-{digest}.safetensors"

    def _decoded(self, todo: list[int], progress: bool, desc: str):
        def load(i: int) -> tuple[int, np.ndarray]:
            s = self.samples[i]
            return i, resize_stored(decode(s.path, s.modality), s.modality, self.height, self.width,
                                    self.depth_encoding)

        with ThreadPoolExecutor(self.threads) as pool:
            yield from progress_bar(pool.map(load, todo), total=len(todo), desc=desc, enabled=progress, keep=False)

    def _fill(self, arrays: dict[Modality, np.ndarray], todo: list[int], progress: bool, desc: str) -> None:
        for i, stored in self._decoded(todo, progress, desc):
            arrays[self.samples[i].modality][self.rows[i]] = stored
            self._ready[i] = True

    def _open_disk(self, progress: bool, desc: str) -> None:
        path = self.disk_path()
        if not path.is_file():
            with atomic_path(path) as tmp:
                arrays = cache_file.create(tmp, {m.value: (storage_dtype(m, self.depth_encoding), self.shapes[m])
                                                 for m in self.modalities})
                self._fill({Modality(k): v for k, v in arrays.items()}, list(range(len(self))), progress, desc)
                for a in arrays.values():
                    a.flush()
                del arrays
        arrays = cache_file.open_arrays(path)
        self.arrays = {m: arrays[m.value] for m in self.modalities}
        self._ready[:] = True

    def preload(self, progress: bool = True, desc: str = "decoding images") -> None:
        if self.disk_dir is not None:
            if self.arrays is None:
                self._open_disk(progress, desc)
            return
        if not self.cache:
            return
        self._allocate()
        todo = np.flatnonzero(~self._ready).tolist()
        if todo:
            self._fill(self.arrays, todo, progress, desc)

    def _allocate(self) -> None:
        if self.arrays is None:
            self.arrays = {m: np.empty(self.shapes[m], storage_dtype(m, self.depth_encoding)) for m in self.modalities}

    def stored(self, index: int) -> np.ndarray:
        """Sample ``index`` as stored (C×H×W, uint8 or uint16), decoded first if needed."""
        s = self.samples[index]
        if self.disk_dir is not None:
            self.preload(progress=False)
        elif not self.cache:
            return resize_stored(decode(s.path, s.modality), s.modality, self.height, self.width, self.depth_encoding)
        self._allocate()
        if not self._ready[index]:
            self._fill(self.arrays, [index], False, "")
        return self.arrays[s.modality][self.rows[index]]

    def get(self, index: int) -> torch.Tensor:
        """Sample ``index`` as float32 C×H×W in [0, 1]."""
        return to_unit(self.stored(index))

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        """A float32 B×3×H×W batch in [0, 1] (single-channel images replicated)."""
        return torch.stack([self.get(i).expand(3, -1, -1) for i in indices])


def normalize(batch: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
    return (batch - mean) / std
