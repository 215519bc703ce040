"""Raw BIWI RGBD-ID: the real frame's depth, user map, skeleton, crops; prepare_biwi; broken files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from fixtures_real import BIWI_FRAME, needs_shared
from PIL import Image

from crossreid.data.datasets.biwi import (
    crop_depth,
    find_frames,
    person_box,
    prepare_biwi,
    read_ground_plane,
    read_pgm,
    read_skeleton,
    rgb_box,
)
from crossreid.data.images import decode
from crossreid.data.registry import load_dataset
from crossreid.errors import UserError
from crossreid.modality import Modality


@pytest.fixture(scope="module")
def frame():
    if not BIWI_FRAME.is_dir():
        pytest.skip("shared/data (real BIWI frame) absent")
    frames = find_frames(BIWI_FRAME)
    assert len(frames) == 1
    return frames[0]


@needs_shared
def test_real_depth_and_user_map(frame):
    depth, users = read_pgm(frame.depth), read_pgm(frame.user_map)
    assert depth.dtype == np.uint16 and depth.shape == (480, 640) and users.shape == (480, 640)
    assert np.median(depth[depth > 0]) == pytest.approx(3493, abs=5)
    assert np.median(depth[users > 0]) == pytest.approx(3115, abs=5)
    assert set(np.unique(users)) == {0, 2} and int((users > 0).sum()) == 23188
    assert person_box(users) == (248, 64, 365, 407) and person_box(users, user=1) is None
    # Pillow and images.decode agree with the big-endian reader
    assert np.array_equal(np.asarray(Image.open(frame.depth)), depth)
    assert np.array_equal(decode(frame.depth, Modality.DEPTH), depth.astype(np.float32))


@needs_shared
def test_real_crops(frame):
    depth, users = read_pgm(frame.depth), read_pgm(frame.user_map)
    box = person_box(users)
    crop = crop_depth(depth, users, box)
    assert crop.shape == (344, 118) and int((crop > 0).sum()) <= 23188
    assert np.median(crop[crop > 0]) == pytest.approx(3115, abs=30)
    x0, y0, x1, y1 = rgb_box(box, margin=0.0)
    assert (x0, y0, x1, y1) == (496, 128, 731, 815)
    wide = rgb_box(box, margin=0.1)
    assert wide[0] < x0 and wide[3] > y1 and wide[3] <= 959
    assert decode(frame.rgb, Modality.RGB).shape == (960, 1280, 3)


@needs_shared
def test_real_skeleton_and_ground(frame):
    skeletons = read_skeleton(frame.skeleton)  # 40 rows: person 2, then an all-zero block
    assert len(skeletons) == 1 and skeletons[0].shape == (20, 14) and set(skeletons[0][:, 0]) == {2.0}
    u, v = skeletons[0][:, 4], skeletons[0][:, 5]
    assert 248 - 20 <= np.median(u) <= 365 + 20 and 64 <= np.median(v) <= 407
    assert np.allclose(read_ground_plane(frame.ground), [-0.0207, 0.9929, -0.1169, 1.2432])


def test_skeleton_and_ground_edge_cases(tmp_path):
    rows = ["1," + ",".join(["0.5"] * 13)] * 20 + [",".join(["0"] * 14)] * 20
    (tmp_path / "s.txt").write_text("\r\n".join(rows) + "\r\n")
    assert len(read_skeleton(tmp_path / "s.txt")) == 1
    (tmp_path / "s.txt").write_text("\n".join(rows[:19]) + "\n")
    with pytest.raises(UserError, match="19 rows"):
        read_skeleton(tmp_path / "s.txt")
    (tmp_path / "g.txt").write_text("")
    assert read_ground_plane(tmp_path / "g.txt") is None


def synthetic_frame(folder: Path, index: int, prefix: str = "003") -> None:
    """A synthetic BIWI frame (5 files, different time stamps) with a person rectangle of user 2."""
    folder.mkdir(parents=True, exist_ok=True)
    depth = np.full((480, 640), 4000, np.uint16)
    depth[100:300, 200:260] = 2500
    users = np.zeros((480, 640), np.uint8)
    users[100:300, 200:260] = 2
    stem = f"{prefix}_{index:06d}"
    with open(folder / f"{stem}-b_{900 + index}_depth.pgm", "wb") as fh:
        fh.write(b"P5\n# kinect\n640 480\n65535\n" + depth.astype(">u2").tobytes())
    with open(folder / f"{stem}-c_{901 + index}_userMap.pgm", "wb") as fh:
        fh.write(b"P5 640 480 255\n" + users.tobytes())
    Image.fromarray(np.full((960, 1280, 3), 90, np.uint8)).save(folder / f"{stem}-a_{899 + index}_rgb.jpg")
    (folder / f"{stem}-d_{903 + index}_skel.txt").write_text("")
    (folder / f"{stem}-e_{903 + index}_groundCoeff.txt").write_text("")


def test_synthetic_pgm_matches_pillow(tmp_path):
    synthetic_frame(tmp_path, 0)
    (frame,) = find_frames(tmp_path)
    depth = read_pgm(frame.depth)
    assert depth[150, 230] == 2500 and depth[0, 0] == 4000  # big-endian, not byte-swapped (2500 -> 50185)
    assert np.array_equal(np.asarray(Image.open(frame.depth)), depth)


def test_truncated_pgm(tmp_path):
    synthetic_frame(tmp_path, 0)
    (frame,) = find_frames(tmp_path)
    frame.depth.write_bytes(frame.depth.read_bytes()[:5000])
    with pytest.raises(UserError, match=rf"{frame.depth.name}: truncated PGM"):
        read_pgm(frame.depth)
    frame.user_map.write_bytes(b"P2\n640 480\n255\n0 0 0")
    with pytest.raises(UserError, match="expected P5"):
        read_pgm(frame.user_map)


def test_prepare_biwi_layout_loads(tmp_path):
    raw = tmp_path / "raw"
    for k in range(3):
        synthetic_frame(raw / "Training" / "003", k)
        synthetic_frame(raw / "Testing" / "Still" / "003", k)
    synthetic_frame(raw / "Testing" / "Walking" / "003", 7)
    synthetic_frame(raw / "Training" / "004", 0, prefix="004")
    os.remove(next((raw / "Training" / "004").glob("*rgb.jpg")))  # incomplete frame: skipped
    stats = prepare_biwi(raw, tmp_path / "out")
    assert stats == {"frames": 7, "skipped": 1, "slots": 3}
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["identities"][0] == [[f"00000003_00_{k:04d}.jpg" for k in range(3)]]
    assert meta["identities"][1][1] == ["00000003_02_0000.jpg"] and meta["identities"][2] == [[]]
    depth = decode(tmp_path / "out" / "depth" / "images" / "00000003_00_0000.jpg", Modality.DEPTH)
    assert depth.shape == (200, 60) and np.median(depth) == pytest.approx(2500, abs=40)
    rgb = Image.open(tmp_path / "out" / "rgb" / "images" / "00000003_00_0000.jpg")
    assert rgb.size == (132, 440)  # 60x200 depth box, x2, + 5 % margin per side
    splits = [{"trainval": [0, 2], "train": [0], "val": [2], "query": [1], "gallery": [1]}]
    (tmp_path / "out" / "splits.json").write_text(json.dumps(splits))
    cat = load_dataset("biwi", tmp_path / "out", hold_out_val=True)
    assert len(cat.train) == 6 and not cat.val and {s.cam for s in cat.query} == {0, 1}
    with pytest.raises(UserError, match="already exists"):
        prepare_biwi(raw, tmp_path / "out")
