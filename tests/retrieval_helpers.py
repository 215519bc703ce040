"""A tiny trained run on the tiny bring-your-own dataset, shared by the retrieval tests."""

from __future__ import annotations

from pathlib import Path

import yaml
from conftest import write_tiny_dataset


def train_tiny_run(base: Path, arch: str = "resnet18") -> tuple[Path, Path]:
    """(run folder, dataset root): one-stream ResNet-18 on 32×16 RGB/depth/IR images, one short epoch."""
    from crossreid.config import load_config
    from crossreid.data.registry import load_dataset
    from crossreid.engine.trainer import Trainer

    root = write_tiny_dataset(base / "tiny", ids=8)
    raw = {"data": {"dataset": "generic", "root": str(root), "height": 32, "width": 16,
                    "modalities": ["rgb", "depth", "ir"]},
           "model": {"arch": arch, "dropout": 0.0},
           "train": {"ids_per_batch": 2, "images_per_id": 2, "iterations_per_epoch": 2, "epochs": 1,
                     "threads": 1, "progress": False},
           "eval": {"directions": ["rgb->depth"]}}
    cfg_path = base / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    run = base / "run"
    Trainer(load_config(cfg_path), run, load_dataset("generic", root), progress=False).fit()
    return run, root


def seeded_run(base: Path, modalities=("rgb", "depth", "ir")) -> tuple[Path, Path]:
    """(run folder, dataset root): a one-stream ResNet-18 run whose weights are torch's initialisation
    under seed 0, written without training, so its features depend only on the inference path."""
    import torch

    from crossreid.config import dump_config, load_config
    from crossreid.engine.checkpoint import save_checkpoint
    from crossreid.methods import build_method
    from crossreid.modality import Modality

    root = write_tiny_dataset(base / "tiny", ids=8)
    cfg_path = base / "seeded.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "data": {"dataset": "generic", "root": str(root), "height": 32, "width": 16, "modalities": list(modalities)},
        "model": {"arch": "resnet18", "dropout": 0.0}, "eval": {"directions": ["rgb->depth"], "batch_size": 5}}))
    cfg = load_config(cfg_path)
    run = base / "seeded_run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_config(cfg))
    torch.manual_seed(0)
    mods = [Modality.parse(m) for m in modalities]
    save_checkpoint(run / "model.safetensors", build_method(cfg, 4, mods),
                    {"num_classes": 4, "modalities": [m.value for m in mods]})
    return run, root
