"""Augmentation switches from a run config by their effect on the trainer's batch (flip mirrors rows,
pad shifts them inside a zero border, random erasing fills a rectangle with the mean, grayscale turns
colour rows grey; all off leaves the normalised images), and the depth encodings' edge cases by their
numbers. The batch augmentation itself is checked against a per-image reference in test_input_path.py."""

import numpy as np
import pytest
import torch

from crossreid.config import load_config
from crossreid.data.images import (
    DEPTH_FAR_MM,
    DEPTH_NEAR_MM,
    depth_channels,
    depth_to_unit,
    encode_depth,
    person_depth_mm,
)
from crossreid.data.pipeline import IMAGENET_MEAN, IMAGENET_STD, normalize
from crossreid.data.registry import load_dataset
from crossreid.engine.trainer import Trainer
from crossreid.modality import Modality

# ------------------------------------------------------------------ through the trainer's batch
TINY = ["data.dataset=generic", "model.arch=resnet18", "data.height=32", "data.width=16", "train.progress=false",
        "train.ids_per_batch=3", "train.images_per_id=2", "train.iterations_per_epoch=1",
        "data.modalities=[rgb,depth]", "eval.directions=[rgb->depth]"]
OFF_CFG = ["train.flip=false", "train.pad=0", "train.random_erasing=0", "train.random_grayscale=0"]


def shift_of(row: torch.Tensor, source: torch.Tensor, pad: int) -> tuple[int, int] | None:
    """The (dy, dx) window of ``source`` zero-padded by ``pad`` that equals ``row`` (None: no window does)."""
    h, w = source.shape[-2:]
    padded = torch.nn.functional.pad(source, (pad, pad, pad, pad))
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            if torch.allclose(padded[:, dy:dy + h, dx:dx + w], row, atol=1e-5, rtol=0):
                return dy, dx
    return None


def trainer_batch(tiny_root, tmp_path, *switches):
    """The first training batch the trainer builds under ``switches`` and its un-augmented images in [0, 1]."""
    cfg = load_config(None, [*TINY, *OFF_CFG, *switches])
    trainer = Trainer(cfg, tmp_path / "run", load_dataset("generic", tiny_root), progress=False)
    stage, sampler = trainer.method.stages()[0], trainer.samplers[0]
    indices = next(iter(sampler.global_batches()))
    made = trainer.make_batch(indices, stage, sampler.shard(), key=(cfg.train.seed, 0, 0, 0))
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return made.images * std + mean, trainer.store.batch(indices), made


def test_trainer_batch_without_augmentation_is_the_normalised_store(tiny_root, tmp_path):
    images, plain, made = trainer_batch(tiny_root, tmp_path)
    torch.testing.assert_close(made.images, normalize(plain))
    assert made.modalities == [Modality.RGB, Modality.DEPTH] and made.rows == 6


@pytest.mark.parametrize("switch", ["train.flip=true", "train.pad=4", "train.random_erasing=1",
                                    "train.random_grayscale=1"])
def test_each_train_switch_reaches_the_batch(tiny_root, tmp_path, switch):
    images, plain, made = trainer_batch(tiny_root, tmp_path, switch)
    close = [torch.allclose(a, b, atol=1e-5) for a, b in zip(images, plain)]
    if switch == "train.flip=true":
        mirrored = [torch.allclose(a, b.flip(-1), atol=1e-5) for a, b in zip(images, plain)]
        assert all(c or m for c, m in zip(close, mirrored)) and any(m and not c for c, m in zip(close, mirrored))
    elif switch == "train.pad=4":
        shifts = [shift_of(a, b, 4) for a, b in zip(images, plain)]
        assert all(s is not None for s in shifts) and any(s != (4, 4) for s in shifts)
    elif switch == "train.random_erasing=1":
        erased = [(a - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)).abs().amax(0) < 1e-5 for a in images]
        assert not any(close) and all(bool(e.any()) for e in erased)
    else:  # grayscale: the RGB block (first 6 rows) grey, depth rows untouched
        rgb = images[:6]
        assert torch.allclose(rgb[:, 0], rgb[:, 1], atol=1e-5) and torch.allclose(rgb[:, 1], rgb[:, 2], atol=1e-5)
        assert all(close[6:]) and not all(close[:6])
    assert np.isfinite(made.images.numpy()).all()


# The depth encodings' edge cases (found by mutation testing): readings outside the sensor range, a
# reading of 1 mm, integer millimetres.
def test_global_encoding_clips_to_the_sensor_range_and_keeps_only_zero_as_no_reading():
    mm = np.array([0.0, 1.0, 300.0, DEPTH_NEAR_MM, 2375.0, DEPTH_FAR_MM, 9000.0])
    # (8000 - clip(d, 500, 8000)) / 7500; 0 = no reading
    expected = [0.0, 1.0, 1.0, 1.0, 0.75, 0.0, 0.0]
    assert depth_to_unit(mm).tolist() == expected
    assert encode_depth(mm.reshape(1, -1), "global")[0, 0].tolist() == expected


def test_integer_millimetres_give_float32():
    mm = np.array([[0, 500, 2375, 8000]], dtype=np.uint16)
    unit = depth_to_unit(mm)
    assert unit.dtype == np.float32 and unit.tolist() == [[0.0, 1.0, 0.75, 0.0]]
    assert encode_depth(mm, "global").dtype == np.float32


def naive_gradient(d, mask, axis):
    """Per pixel along ``axis``: central difference between valid neighbours, else one-sided, else 0."""
    d, mask = np.moveaxis(d, axis, 0), np.moveaxis(mask, axis, 0)
    g = np.zeros_like(d)
    for i in range(d.shape[0]):
        for j in range(d.shape[1]):
            before = i > 0 and mask[i - 1, j]
            after = i + 1 < d.shape[0] and mask[i + 1, j]
            if before and after:
                g[i, j] = (d[i + 1, j] - d[i - 1, j]) / 2
            elif after:
                g[i, j] = d[i + 1, j] - d[i, j]
            elif before:
                g[i, j] = d[i, j] - d[i - 1, j]
    return np.moveaxis(g, 0, axis)


def test_normals_encoding_equals_the_gradients_between_valid_neighbours():
    rng = np.random.default_rng(0)
    h, w = 16, 8
    mm = 3000.0 + 40.0 * np.arange(w)[None, :] + 15.0 * np.arange(h)[:, None] ** 1.5 + rng.normal(0, 5, (h, w))
    mm[5, 3] = mm[9, 5] = 0.0                     # holes: their neighbours fall back to one-sided differences
    mm[12:, :2] = 5000.0                           # a wall beyond the relief window: masked out
    mm = mm.astype(np.float32)
    channels = depth_channels("normals")
    out = encode_depth(mm, "normals")
    assert out.shape == (channels, h, w) == (3, h, w) and out.dtype == np.float32
    assert encode_depth(mm, "relative").shape == (depth_channels("relative"), h, w) == (1, h, w)
    ref = person_depth_mm(mm)
    mask = (mm > 0) & (np.abs(mm - ref) <= 600.0)
    pixel = 2000.0 / h
    gy, gx = naive_gradient(mm, mask, 0) / pixel, naive_gradient(mm, mask, 1) / pixel
    n = np.stack([-gx, -gy, np.ones_like(mm)])
    n = n / np.sqrt((n ** 2).sum(0))
    expected = np.where(mask, (n + 1) / 2, 0.0)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    # the holes, the wall and the far end of the ramp (beyond 600 mm of the person) are masked out
    assert not (mask[5, 3] or mask[9, 5] or mask[12:, :2].any()) and 0.5 * h * w < mask.sum() < h * w - 10
