"""Shared fixtures: a tiny bring-your-own dataset written with the real manifest format."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(1)

# The real split files beside the checkout; CROSSREID_SHARED points elsewhere (the mutation run's copy of
# the tests lives one folder deeper, docs/testing.md).
SHARED = Path(os.environ.get("CROSSREID_SHARED") or Path(__file__).resolve().parents[2] / "shared")


def write_tiny_dataset(root: Path, ids: int = 6, frames: int = 3, size=(32, 16), seed: int = 0) -> Path:
    """RGB + depth (co-registered, cam 1-2) and IR (cam 3) images, ids 1..n split train/val/test."""
    rng = np.random.default_rng(seed)
    rows = []
    h, w = size
    for pid in range(1, ids + 1):
        split = "train" if pid <= ids // 2 else ("val" if pid == ids // 2 + 1 else "test")
        colour = rng.integers(0, 255, 3)
        for cam, mods in ((1, ("rgb", "depth")), (2, ("rgb", "depth")), (3, ("ir",))):
            for t in range(frames):
                frame = f"p{pid}_c{cam}_t{t}"
                for mod in mods:
                    rel = Path(mod) / f"{pid:04d}_c{cam}_t{t}.png"
                    (root / rel).parent.mkdir(parents=True, exist_ok=True)
                    noise = rng.integers(0, 30, (h, w, 3))
                    if mod == "rgb":
                        img = Image.fromarray(np.clip(colour + noise, 0, 255).astype(np.uint8), "RGB")
                    elif mod == "depth":
                        depth = (1000 + 100 * pid + 10 * noise[..., 0]).astype(np.uint16)
                        img = Image.fromarray(depth)
                    else:
                        img = Image.fromarray(np.clip(40 * pid % 255 + noise[..., 0], 0, 255).astype(np.uint8), "L")
                    img.save(root / rel)
                    rows.append({"path": rel.as_posix(), "person": pid, "camera": cam, "modality": mod,
                                 "split": split, "frame": frame, "sequence": f"p{pid}_c{cam}"})
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path_factory):
    """Tests never touch the network: torch hub's cache is a test folder, and a weights download
    from anywhere but loopback or a file:// URL fails the test that caused it."""
    from urllib.parse import urlparse

    import torch.hub

    download = torch.hub.download_url_to_file

    def loopback_only(url, *args, **kwargs):
        parts = urlparse(url)
        if parts.scheme != "file" and parts.hostname not in ("127.0.0.1", "localhost"):
            raise AssertionError(f"a test tried to download {url}")
        return download(url, *args, **kwargs)

    monkeypatch.setattr(torch.hub, "download_url_to_file", loopback_only)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.getbasetemp() / "torch_home"))


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    return write_tiny_dataset(tmp_path / "tiny")
