"""Write a synthetic dataset to disk (layout in docs/synthetic.md) and cache it by parameters."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from crossreid.data.synth.params import GENERATOR_VERSION, SynthParams, camera_modalities, identity_splits
from crossreid.data.synth.render import Renderer
from crossreid.io import atomic_dir, write_json
from crossreid.io import cache_dir as user_cache_dir
from crossreid.progress import progress_bar

FORMAT = "crossreid-synthetic"
COLUMNS = ("path", "person", "camera", "modality", "split", "frame", "sequence")


def image_path(modality: str, cam: int, pid: int, t: int) -> str:
    return f"images/{modality}/cam{cam:02d}/{pid:04d}/{pid:04d}_c{cam:02d}_t{t:03d}.png"


def _png(array: np.ndarray, modality: str) -> Image.Image:
    if modality == "depth":
        return Image.fromarray(array.astype(np.uint16))  # 16-bit grey, millimetres
    return Image.fromarray(array, "RGB" if modality == "rgb" else "L")


def _write(folder: Path, params: SynthParams, progress: bool) -> None:
    renderer = Renderer(params)
    splits = identity_splits(params)
    split_of = {pid: name for name, pids in splits.items() for pid in pids}
    cams = range(1, len(renderer.cameras) + 1)
    rows: list[dict] = []
    total = sum(len(camera_modalities(params, c)) for c in cams) * params.identities * params.images_per_camera
    made_dirs: set[Path] = set()
    with progress_bar(total=total, desc="rendering synthetic persons", unit="img", enabled=progress) as bar:
        for pid in range(1, params.identities + 1):
            for cam in cams:
                if not camera_modalities(params, cam):
                    continue
                for t in range(params.images_per_camera):
                    shot = renderer.shot(pid, cam, t)
                    frame = f"p{pid:04d}_c{cam:02d}_t{t:03d}"
                    for modality, array in shot.images.items():
                        rel = image_path(modality, cam, pid, t)
                        target = folder / rel
                        if target.parent not in made_dirs:
                            target.parent.mkdir(parents=True, exist_ok=True)
                            made_dirs.add(target.parent)
                        _png(array, modality).save(target, format="PNG", compress_level=1)
                        rows.append({"path": rel, "person": pid, "camera": cam, "modality": modality,
                                     "split": split_of[pid], "frame": frame, "sequence": f"p{pid:04d}_c{cam:02d}"})
                        bar.update(1)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (folder / "manifest.csv").write_text(buf.getvalue(), encoding="utf-8")
    write_json(folder / "meta.json", {
        "format": FORMAT, "version": GENERATOR_VERSION, "params": params.model_dump(),
        "cameras": [c.describe() for c in renderer.cameras],
        "splits": splits, "images": len(rows),
    })


def generate(out: str | os.PathLike, params: SynthParams, overwrite: bool = False, progress: bool = True) -> Path:
    """Render the dataset into ``out`` (built under a temporary name, renamed on success)."""
    out = Path(out)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        _write(tmp, params, progress)
    return out


def default_cache_dir() -> Path:
    return user_cache_dir("synthetic")


def cached_dataset(params: SynthParams, cache_dir: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """The dataset for ``params`` in the cache (keyed by parameters and generator version), generated once."""
    folder = Path(cache_dir or default_cache_dir()) / params.key()
    if not (folder / "meta.json").is_file():
        generate(folder, params, overwrite=folder.exists(), progress=progress)
    return folder
