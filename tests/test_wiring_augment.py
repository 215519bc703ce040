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
    RELIEF_MM,
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


# The person-depth heuristic (person_depth_mm: the strip rows h//8 to h//2, columns w//3 to w - w//3, readings
# > 0, within 300 mm of their 30th percentile, the median) and the relief window around it, on hand-worked
# crops where each constant decides the number. One column wide (w = 3: the strip is column 1).
def strip_crop(h: int, strip, rest: float) -> np.ndarray:
    """An h x 3 crop: ``strip`` down column 1 from row h // 8, every other pixel ``rest``."""
    crop = np.full((h, 3), rest, dtype=np.float32)
    crop[h // 8:h // 8 + len(strip), 1] = strip
    return crop


def test_person_depth_reads_the_rows_from_h_over_8_to_h_over_2():
    # h = 16: rows 16 // 8 = 2 to 16 // 2 = 8 (exclusive), 6 readings; everything around them 1900 mm.
    crop = strip_crop(16, [2000, 2010, 2020, 2030, 2040, 2050], rest=1900)
    # 30th percentile: index 0.3 * 5 = 1.5 -> 2015, all six within 300 mm; median (2020 + 2030) / 2 = 2025.
    # Rows from 16 // 9 = 1 would add a 1900 (median 2020); rows to 16 // 3 = 5 keep three (median 2010); a
    # wider strip (columns from 0 or to 3) adds 1900s (median <= 2020).
    assert person_depth_mm(crop) == 2025.0


def test_person_depth_counts_a_1_mm_reading_and_is_0_without_one():
    assert person_depth_mm(np.zeros((16, 3), np.float32)) == 0.0    # no reading at all: 0, not 1
    # The strip's one reading is 1 mm (a reading, as only 0 is none): percentile, window and median are all 1.
    assert person_depth_mm(strip_crop(16, [1, 0, 0, 0, 0, 0], rest=0)) == 1.0


def test_person_depth_keeps_readings_within_300_mm_of_the_30th_percentile_inclusive():
    # h = 28: rows 3 to 14, 11 readings (shuffled: order must not matter), everything else 5000 mm.
    strip = [1700, 1800, 1900, 2000, 2100, 2110, 2120, 2130, 2140, 2150, 2301]
    crop = strip_crop(28, np.random.default_rng(0).permutation(strip), rest=5000)
    # 30th percentile: index 0.3 * 10 = 3 -> 2000 exactly. Window [1700, 2300]: 1700 (exactly 300 below) is in,
    # 2301 (301 above) is out. Median of the ten kept: (2100 + 2110) / 2 = 2105.
    # The 31st percentile (index 3.1 -> 2010) would drop 1700 and take 2301: (2110 + 2120) / 2 = 2115;
    # a 301 mm window would keep all eleven: 2110; a strict < 300 would drop 1700: 2110.
    assert person_depth_mm(crop) == 2105.0


def test_relief_window_is_600_mm_either_side_inclusive_and_holes_stay_off():
    # The person at 2000 mm (the strip); outside the strip readings at the window's edges and just beyond.
    crop = strip_crop(16, [2000] * 6, rest=2000)
    crop[0] = [2000 - RELIEF_MM, 2000 + RELIEF_MM, 0]               # 1400, 2600 in; a hole out
    crop[15] = [2000 - RELIEF_MM - 1, 2000 + RELIEF_MM + 1, 2000]   # 1399, 2601 out
    relative = encode_depth(crop, "relative")[0]
    # in the window: 0.5 - (d - 2000) / 1200, so 1400 -> 1.0 and 2600 -> 0.0; outside it: 0
    assert relative[0].tolist() == [1.0, 0.0, 0.0] and relative[15].tolist() == [0.0, 0.0, 0.5]
    # normals: 0 in every channel exactly where the mask is off; z = (1 / |n| + 1) / 2 > 0.5 where it is on
    on = encode_depth(crop, "normals")[2] > 0.5
    assert on[0].tolist() == [True, True, False] and on[15].tolist() == [False, False, True] and on[1:15].all()
    # A person at 500 mm: a hole (0) is 500 mm away, a 1 mm reading 499 mm. The hole stays off, the 1 mm
    # reading is in: 0.5 - (1 - 500) / 1200.
    near = strip_crop(16, [500] * 6, rest=500)
    near[0, :2] = [0, 1]
    assert encode_depth(near, "relative")[0, 0, :2].tolist() == [0.0, np.float32(0.5 + 499 / 1200)]
