"""``crossreid export``: each modality's embedder as an ONNX model, checked against PyTorch.

The ONNX input ``images`` is the normalised B×3×H×W float32 batch that
``Embedder.preprocess`` gives (resize, modality encoding, ImageNet mean/std); the output
``features`` is what ``embed`` returns. The batch axis is dynamic. The graph is traced on
the CPU. After export the model runs in ONNX Runtime on real images and must match PyTorch
on ``device`` in float32 (on a GPU with TF32 off; max abs difference relative to the
feature scale ≤ ``rtol``, every cosine ≥ ``min_cosine``); a failed check is an error and
no file is left. Opset, versions, preprocessing, the check's figures and the device it ran
on go into the model's metadata and a ``.json`` beside it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from crossreid import __version__
from crossreid.data.pipeline import IMAGENET_MEAN, IMAGENET_STD
from crossreid.device import inference
from crossreid.errors import UserError
from crossreid.io import atomic_path, write_json
from crossreid.modality import Modality

DEFAULT_OPSET = 17


class ModalityEmbedder(nn.Module):
    """One modality's path through a method, as a plain ``forward(images)``."""

    def __init__(self, method, modality: Modality):
        super().__init__()
        self.method, self.modality = method, modality

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.method.embed(images, self.modality)


def _onnx_modules():
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise UserError("export needs onnx and onnxruntime: pip install 'crossreid[onnx]'") from None
    return onnx, onnxruntime


def parity_images(embedder, modality: Modality, source: str | None, count: int) -> list[Path]:
    """Up to ``count`` real images of ``modality``: from ``source`` or the run's own test pools."""
    if source:
        from crossreid.retrieval.features_file import read_image_list

        paths = [e.path for e in read_image_list(source, only=[modality.value])]
    else:
        from crossreid.data.open import open_catalog

        catalog = open_catalog(embedder.cfg.data, progress=False)
        seen, paths = set(), []
        for s in [*catalog.query, *catalog.gallery, *catalog.val, *catalog.train]:
            if s.modality is modality and s.path not in seen:
                seen.add(s.path)
                paths.append(s.path)
        if not paths:
            raise UserError(f"the run's dataset has no {modality} images to check the export with; pass --images")
    pick = np.linspace(0, len(paths) - 1, min(count, len(paths))).astype(int)
    return [paths[i] for i in pick]


def output_paths(out: Path, modalities: Sequence[Modality]) -> dict[Modality, Path]:
    if len(modalities) == 1:
        return {modalities[0]: out}
    return {m: out.with_name(f"{out.stem}-{m.value}{out.suffix or '.onnx'}") for m in modalities}


def export_onnx(run: str | Path, out: str | Path, modalities: Sequence[str] = (), images: str | None = None,
                opset: int = DEFAULT_OPSET, count: int = 16, rtol: float = 1e-4, min_cosine: float = 0.99999,
                log=print, device=None) -> dict:
    """Export and check each modality's embedder, the check's PyTorch side on ``device`` (default:
    CUDA when available); returns the records written beside the models."""
    onnx, ort = _onnx_modules()
    from crossreid.retrieval.embedder import load_run

    embedder = load_run(run, device, amp="off")
    cpu_method = embedder.method if embedder.device.type == "cpu" else copy.deepcopy(embedder.method).cpu()
    mods = [embedder.method.check_modality(m) for m in modalities] or embedder.modalities
    records = {}
    for m, path in output_paths(Path(out), mods).items():
        files = parity_images(embedder, m, images, count)
        x = embedder.preprocess(files, m)
        with inference(embedder.device, "off", len(files)):
            expected = ModalityEmbedder(embedder.method, m)(x.to(embedder.device)).float().cpu().numpy()
        module = ModalityEmbedder(cpu_method, m).eval()
        with atomic_path(path) as tmp:
            torch.onnx.export(module, (x[:2],), str(tmp), input_names=["images"], output_names=["features"],
                              dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
                              opset_version=opset, dynamo=False)
            session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
            got = session.run(["features"], {"images": x.numpy()})[0]
            max_abs = float(np.abs(got - expected).max())
            scale = float(np.abs(expected).max()) or 1.0
            cos = (got * expected).sum(1) / np.maximum(np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1),
                                                       1e-12)
            record = {"modality": m.value, "file": path.name, "opset": opset, "input": "images",
                      "input_shape": ["batch", 3, embedder.height, embedder.width], "output": "features",
                      "dim": int(expected.shape[1]),
                      "preprocessing": {"height": embedder.height, "width": embedder.width, "mean": IMAGENET_MEAN,
                                        "std": IMAGENET_STD, "encoding": "crossreid.data.pipeline.load_resized"},
                      "parity": {"images": len(files), "max_abs_diff": max_abs, "relative": max_abs / scale,
                                 "min_cosine": float(cos.min())},
                      "model": embedder.identity(expected.shape[1]), "checked_on": str(embedder.device),
                      "versions": {"crossreid": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                                   "onnxruntime": ort.__version__}}
            log(f"{m}: {path} · parity on {len(files)} images: max abs diff {max_abs:.2e} "
                f"({max_abs / scale:.1e} of the feature scale), min cosine {cos.min():.7f}")
            if max_abs / scale > rtol or cos.min() < min_cosine:
                raise UserError(f"{path}: ONNX Runtime output differs from PyTorch (max abs diff {max_abs:.2e}, "
                                f"min cosine {cos.min():.6f}); nothing was written — try another --opset")
            model = onnx.load(str(tmp))
            meta = model.metadata_props.add()
            meta.key, meta.value = "crossreid", json.dumps(record)
            onnx.save(model, str(tmp))
        records[m.value] = record
    write_json(Path(out).with_suffix(".json"), {"format": "crossreid-onnx", "models": records})
    return records
