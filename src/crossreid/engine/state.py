"""What a checkpoint must hold beyond the weights for an exact resume: a config
fingerprint and every random generator's state."""

from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import torch

from crossreid.config import RunConfig
from crossreid.errors import UserError

# Keys that may change between a run and its resume: they do not change what is trained.
RESUMABLE = {"train": {"epochs", "progress", "checkpoint_every_steps", "keep_checkpoints", "disk_cache", "cache_dir",
                       "decode_workers"}}


def _flat(tree: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key in ("data", "model", "method", "optim", "schedule", "loss", "train", "eval"):
            out.update(_flat(value, f"{key}."))
        else:
            out[prefix + key] = value
    return out


def resume_view(cfg: RunConfig) -> dict[str, object]:
    """The config as flat ``section.key`` values, without the keys a resume may change."""
    tree = cfg.model_dump(mode="json")
    for section, keys in RESUMABLE.items():
        for key in keys:
            tree[section].pop(key, None)
    return _flat(tree)


def config_hash(cfg: RunConfig) -> str:
    return hashlib.sha256(json.dumps(resume_view(cfg), sort_keys=True).encode()).hexdigest()[:16]


def check_same_config(cfg: RunConfig, state: dict, where: str) -> None:
    """A UserError naming the first differing key when ``state`` was written under another config."""
    if state.get("config_hash") == config_hash(cfg):
        return
    saved, now = state.get("config", {}), resume_view(cfg)
    diff = sorted(k for k in set(saved) | set(now) if saved.get(k, "<unset>") != now.get(k, "<unset>"))
    detail = f"{diff[0]}: {saved.get(diff[0], '<unset>')!r} in the checkpoint, {now.get(diff[0], '<unset>')!r} now" \
        if diff else "no config recorded"
    raise UserError(f"{where}: written under another config ({detail}); resume with the run's own "
                    "config.yaml (only train.epochs and progress options may change)")


def capture_rng() -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, JSON) holding the torch, CUDA, NumPy and Python generators. (Augmentation needs
    none: each batch's draw is keyed by its seed, stage, epoch and step, ``data.augment``.)"""
    np_state = np.random.get_state()
    tensors = {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(np_state[1].astype(np.int64))}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state()
    py = random.getstate()
    plain = {"numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
             "python": [py[0], list(py[1]), py[2]]}
    return tensors, plain


def restore_rng(tensors: dict[str, torch.Tensor], plain: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda"])
    name, pos, has_gauss, gauss = plain["numpy"]
    np.random.set_state((name, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = plain["python"]
    random.setstate((version, tuple(internal), gauss_next))
