"""A trained run as an embedder: ``crossreid.load_run(RUN, device=...).embed(images, modality)``.

Images go through the run's own input path (decode, modality encoding, resize,
ImageNet normalisation: :mod:`crossreid.data.images` and :mod:`crossreid.data.pipeline`),
so features equal those evaluation computes for the same files. The network runs on the
run's device under its ``amp`` (:mod:`crossreid.device`); features come back as float32.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from crossreid import distributed as D
from crossreid.data.images import decode_image, modality_contradiction, open_image
from crossreid.data.pipeline import ImageStore, normalize, resize_decoded
from crossreid.data.samples import Sample
from crossreid.device import check_amp, inference, resolve_device
from crossreid.errors import UserError
from crossreid.io import file_sha256
from crossreid.modality import Modality

ASPECT_TOLERANCE = 2.0  # an image whose h/w differs more than this factor from the model's is refused


class Embedder:
    """The selected model of a run folder, in eval mode, with its preprocessing, on ``device``
    (``cpu``, ``cuda``, ``cuda:N``; default: CUDA when available) under ``amp``
    (:data:`crossreid.device.AMP_MODES`; ``auto``: bfloat16 autocast on a GPU, float32 on the CPU)."""

    def __init__(self, run_dir: str | Path, device: str | torch.device | None = None, amp: str = "auto"):
        from crossreid.engine.runs import load_run as open_run

        self.device = resolve_device(device)
        self.amp = check_amp(amp)
        self.run_dir = Path(run_dir)
        self.cfg, self.method = open_run(self.run_dir)
        self.method.to(self.device)
        self.height, self.width = self.cfg.data.height, self.cfg.data.width
        self.depth_encoding = self.cfg.data.depth_encoding  # the run's own depth input
        self._weights_id: str | None = None

    @property
    def modalities(self) -> list[Modality]:
        return list(self.method.embeddable)

    @property
    def weights_id(self) -> str:
        if self._weights_id is None:
            self._weights_id = file_sha256(self.run_dir / "model.safetensors")  # the model identity an index records
        return self._weights_id

    def identity(self, dim: int) -> dict:
        """What features files and indexes record about the model that made them."""
        return {"run": str(self.run_dir.resolve()), "method": self.cfg.method.name, "arch": self.cfg.model.arch,
                "weights_sha256": self.weights_id, "dim": int(dim), "height": self.height, "width": self.width,
                "depth_encoding": self.depth_encoding, "modalities": [m.value for m in self.modalities],
                "metric": self.cfg.eval.metric}

    # ------------------------------------------------------------------ preprocessing
    def _decoded(self, image, modality: Modality, where: str) -> np.ndarray:
        if isinstance(image, (str, Path)):
            path = Path(image)
            img = open_image(path)
            self._check_pil(img, modality, str(path))
            return decode_image(img, modality, path)  # what decode(path, modality) gives
        if isinstance(image, Image.Image):
            self._check_pil(image, modality, where)
            return decode_image(image, modality, where)
        if isinstance(image, np.ndarray):
            return self._check_array(image, modality, where)
        raise UserError(f"{where}: expected a file path, a PIL image or a numpy array, got {type(image).__name__}")

    def _check_pil(self, img: Image.Image, modality: Modality, where: str) -> None:
        """Refuse images that are plainly of another modality (the rule ``crossreid check`` warns with)
        or not a person crop."""
        reason = modality_contradiction(img, modality)
        if reason:
            raise UserError(f"{where}: {reason} Pass the image with its real modality.")
        self._check_shape(img.height, img.width, where)

    def _check_array(self, arr: np.ndarray, modality: Modality, where: str) -> np.ndarray:
        want = "H×W×3 uint8" if modality is Modality.RGB else ("H×W millimetres" if modality is Modality.DEPTH
                                                               else "H×W uint8")
        ok = arr.ndim == 3 and arr.shape[2] == 3 if modality is Modality.RGB else arr.ndim == 2
        if not ok:
            raise UserError(f"{where}: {modality} array must be {want}, got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise UserError(f"{where}: array has NaN or infinite values; pass a decoded image")
        self._check_shape(arr.shape[0], arr.shape[1], where)
        if modality is Modality.DEPTH:
            return arr.astype(np.float32)
        return np.clip(arr, 0, 255).astype(np.uint8)

    def _check_shape(self, h: int, w: int, where: str) -> None:
        ratio = (h / max(w, 1)) / (self.height / self.width)
        if min(h, w) < 4 or not 1 / ASPECT_TOLERANCE <= ratio <= ASPECT_TOLERANCE:
            raise UserError(f"{where}: image is {h}×{w} (h×w) but the model takes person crops of "
                            f"{self.height}×{self.width}; crop the person first")

    def preprocess(self, images: Sequence, modality: Modality | str) -> torch.Tensor:
        """The normalised B×3×H×W float32 batch the network takes (the ONNX models' input too)."""
        m = self.method.check_modality(modality)
        planes = [resize_decoded(self._decoded(img, m, f"image {i}" if not isinstance(img, (str, Path)) else str(img)),
                                 m, self.height, self.width, self.depth_encoding) for i, img in enumerate(images)]
        if not planes:
            return torch.empty((0, 3, self.height, self.width))
        return normalize(torch.stack([p.float().expand(3, -1, -1) for p in planes]))

    # ------------------------------------------------------------------ embedding
    def embed(self, images, modality: Modality | str, batch_size: int = 64) -> np.ndarray:
        """float32 features, one row per image: ``images`` is one path / PIL image / array or a list of them
        (arrays: RGB H×W×3 uint8, IR H×W uint8, depth H×W millimetres)."""
        if isinstance(images, (str, Path, Image.Image, np.ndarray)):
            images = [images]  # one image; several go in a list
        images = list(images)
        out = []
        with inference(self.device, self.amp, batch_size):
            for s in range(0, len(images), batch_size):
                batch = self.preprocess(images[s:s + batch_size], modality).to(self.device)
                out.append(self.method.embed(batch, Modality.parse(modality)).float().cpu().numpy())
        return np.concatenate(out) if out else np.empty((0, 0), dtype=np.float32)

    def embed_samples(self, samples: Sequence[Sample], batch_size: int = 64, progress: bool = False,
                      channels_last: bool = False, dist: D.Dist = D.Dist()) -> np.ndarray:
        """Features of image files (``Sample``s), through the evaluation extractor (under torchrun,
        ``dist``: each rank embeds its share and every rank gets all the rows)."""
        from crossreid.retrieval.extract import extract_features

        for m in {s.modality for s in samples}:
            self.method.check_modality(m)
        store = ImageStore.for_data(samples, self.cfg.data, cache=False)
        if channels_last:
            self.method.to(memory_format=torch.channels_last)
        return extract_features(self.method, store, range(len(samples)), batch_size, self.device,
                                progress=progress, channels_last=channels_last, amp=self.amp, dist=dist)


def load_run(run: str | Path, device: str | torch.device | None = None, amp: str = "auto") -> Embedder:
    """Open a trained run folder (the ``--out`` of ``crossreid train``) for embedding on ``device``
    (default: CUDA when available, else the CPU) under ``amp`` (see :class:`Embedder`)."""
    return Embedder(run, device, amp)


def as_samples(paths: Iterable[str | Path], modality: Modality | str) -> list[Sample]:
    """Unlabelled samples (id and camera -1) for the extractor."""
    m = Modality.parse(modality)
    return [Sample(Path(p), -1, -1, m) for p in paths]
