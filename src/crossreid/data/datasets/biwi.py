"""Raw BIWI RGBD-ID: per-frame file readers, person crops, and preparation to the open-reid layout.

Raw tree: ``Training/<NNN>/``, ``Testing/Still/<NNN>/``, ``Testing/Walking/<NNN>/`` holding,
per frame, ``<id>_<frame6>-{a..e}_<ts>_{rgb.jpg,depth.pgm,userMap.pgm,skel.txt,groundCoeff.txt}``.
The five files of one frame have different time stamps, so they are matched by the
``<id>_<frame6>`` prefix and the letter only. Depth is a 640×480 16-bit big-endian PGM in
millimetres (0 = no reading), the user map an 8-bit PGM of Kinect user ids, the RGB a
1280×960 full-scene JPEG (twice the depth resolution).

The registered ``biwi`` dataset reads the prepared open-reid layout (``rgbd_openreid.py``);
``prepare_biwi`` writes that layout from the raw tree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from crossreid.data.datasets.common import parse_int_dir, read_text_lines, require_dir
from crossreid.data.images import DEPTH_FAR_MM, decode
from crossreid.errors import UserError
from crossreid.io import atomic_dir, write_json
from crossreid.modality import Modality

FILE = re.compile(r"(?P<prefix>[^-/]+_\d{6})-(?P<letter>[a-e])_(?P<ts>\d+)_"
                  r"(?P<kind>rgb\.jpg|depth\.pgm|userMap\.pgm|skel\.txt|groundCoeff\.txt)")
KINDS = {"a": "rgb.jpg", "b": "depth.pgm", "c": "userMap.pgm", "d": "skel.txt", "e": "groundCoeff.txt"}
SEQUENCES = (("Training", 0), ("Testing/Still", 1), ("Testing/Walking", 2))
JOINTS = 20
SKELETON_COLUMNS = ("person", "x", "y", "z", "u", "v", "state", "quality",
                    "joint_start", "joint_end", "qx", "qy", "qz", "qw")


def read_pgm(path: str | Path) -> np.ndarray:
    """A binary (P5) PGM as uint8 or uint16 (16-bit samples are big-endian, per the PGM standard)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: PGM file not found; check the dataset folder") from None
    fields: list[bytes] = []
    pos = 0
    while len(fields) < 4:
        while pos < len(data) and data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            pos = data.find(b"\n", pos) + 1 or len(data)
            continue
        start = pos
        while pos < len(data) and not data[pos:pos + 1].isspace():
            pos += 1
        if start == pos:
            raise UserError(f"{path}: truncated PGM header; re-extract the file")
        fields.append(data[start:pos])
    pos += 1  # the single whitespace after maxval
    try:
        magic, width, height, maxval = fields[0], int(fields[1]), int(fields[2]), int(fields[3])
    except ValueError:
        raise UserError(f"{path}: malformed PGM header; re-extract the file") from None
    if magic != b"P5" or not 0 < maxval < 65536:
        raise UserError(f"{path}: not a binary PGM (magic {magic!r}, maxval {maxval}); expected P5")
    dtype = np.dtype(">u2") if maxval > 255 else np.dtype("u1")
    need = width * height * dtype.itemsize
    if len(data) - pos < need:
        raise UserError(f"{path}: truncated PGM ({len(data) - pos} of {need} pixel bytes); re-extract the file")
    arr = np.frombuffer(data, dtype=dtype, count=width * height, offset=pos).reshape(height, width)
    return arr.astype(np.uint16 if dtype.itemsize == 2 else np.uint8)


def read_skeleton(path: str | Path) -> list[np.ndarray]:
    """Tracked skeletons: one float64 (20, 14) array per non-zero 20-row block (columns: SKELETON_COLUMNS)."""
    path = Path(path)
    rows = []
    for number, line in read_text_lines(path):
        try:
            values = [float(v) for v in line.split(",")]
        except ValueError:
            raise UserError(f"{path}:{number}: not a row of numbers; re-extract the file") from None
        if len(values) != len(SKELETON_COLUMNS):
            raise UserError(f"{path}:{number}: {len(values)} columns, expected {len(SKELETON_COLUMNS)}")
        rows.append(values)
    if len(rows) % JOINTS:
        raise UserError(f"{path}: {len(rows)} rows is not a multiple of {JOINTS} joints; re-extract the file")
    blocks = np.asarray(rows, dtype=np.float64).reshape(-1, JOINTS, len(SKELETON_COLUMNS))
    return [b for b in blocks if np.any(b != 0)]


def read_ground_plane(path: str | Path) -> np.ndarray | None:
    """Plane coefficients (a, b, c, d) of ax + by + cz + d = 0, or None when the file is empty."""
    path = Path(path)
    lines = read_text_lines(path) if path.is_file() else []
    if not lines:
        return None
    number, line = lines[0]
    try:
        coeffs = np.array([float(v) for v in line.split(",")], dtype=np.float64)
    except ValueError:
        raise UserError(f"{path}:{number}: expected 'a,b,c,d'; re-extract the file") from None
    if coeffs.shape != (4,):
        raise UserError(f"{path}:{number}: expected 4 coefficients, found {coeffs.size}")
    return coeffs


def person_box(user_map: np.ndarray, user: int | None = None) -> tuple[int, int, int, int] | None:
    """Inclusive box (x0, y0, x1, y1) of ``user`` (default: the user with most pixels); None if absent."""
    if user is None:
        ids, counts = np.unique(user_map[user_map > 0], return_counts=True)
        if ids.size == 0:
            return None
        user = int(ids[np.argmax(counts)])
    ys, xs = np.nonzero(user_map == user)
    if xs.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def crop_depth(depth: np.ndarray, user_map: np.ndarray, box: tuple[int, int, int, int],
               zero_background: bool = True) -> np.ndarray:
    """The depth inside ``box``; pixels outside the person (user map at the box's user) set to 0."""
    x0, y0, x1, y1 = box
    crop = depth[y0:y1 + 1, x0:x1 + 1].copy()
    if zero_background:
        mask = user_map[y0:y1 + 1, x0:x1 + 1]
        values, counts = np.unique(mask[mask > 0], return_counts=True)
        crop[mask != (values[np.argmax(counts)] if values.size else 1)] = 0
    return crop


def rgb_box(box: tuple[int, int, int, int], depth_size=(640, 480), rgb_size=(1280, 960),
            margin: float = 0.05) -> tuple[int, int, int, int]:
    """Map a depth box to RGB pixels: scale by the size ratio, widen by ``margin`` × box size, clip.

    A cheap mapping that ignores the 2.5 cm RGB-depth baseline (the margin absorbs it).
    """
    sx, sy = rgb_size[0] / depth_size[0], rgb_size[1] / depth_size[1]
    x0, y0, x1, y1 = box[0] * sx, box[1] * sy, (box[2] + 1) * sx - 1, (box[3] + 1) * sy - 1
    mx, my = margin * (x1 - x0 + 1), margin * (y1 - y0 + 1)
    return (max(0, int(round(x0 - mx))), max(0, int(round(y0 - my))),
            min(rgb_size[0] - 1, int(round(x1 + mx))), min(rgb_size[1] - 1, int(round(y1 + my))))


@dataclass(frozen=True)
class BiwiFrame:
    """The files of one raw frame (None where a file is absent)."""

    prefix: str
    index: int
    rgb: Path | None = None
    depth: Path | None = None
    user_map: Path | None = None
    skeleton: Path | None = None
    ground: Path | None = None


def find_frames(folder: Path) -> list[BiwiFrame]:
    """Frames of one sequence folder, sorted by frame number, grouped by prefix + letter."""
    groups: dict[str, dict[str, Path]] = {}
    for path in sorted(folder.iterdir()):
        m = FILE.fullmatch(path.name)
        if m is None:
            continue
        if KINDS[m["letter"]] != m["kind"]:
            raise UserError(f"{path}: letter -{m['letter']} should be a {KINDS[m['letter']]} file; rename it")
        slot = groups.setdefault(m["prefix"], {})
        if m["letter"] in slot:
            raise UserError(f"{path}: second -{m['letter']} file for frame {m['prefix']} "
                            f"(also {slot[m['letter']].name}); remove one")
        slot[m["letter"]] = path
    frames = [BiwiFrame(prefix, int(prefix[-6:]), files.get("a"), files.get("b"), files.get("c"),
                        files.get("d"), files.get("e")) for prefix, files in groups.items()]
    return sorted(frames, key=lambda f: (f.index, f.prefix))


def depth_to_jpeg_levels(depth_mm: np.ndarray) -> np.ndarray:
    """Millimetres as 8-bit grey in the scale ``images.decode`` reads back (v / 255 × far)."""
    return np.clip(np.round(depth_mm.astype(np.float64) / DEPTH_FAR_MM * 255.0), 0, 255).astype(np.uint8)


def prepare_biwi(raw_root: str | Path, out_root: str | Path, margin: float = 0.05, min_pixels: int = 500,
                 overwrite: bool = False) -> dict[str, int]:
    """Cut person crops from the raw tree into the open-reid layout that ``biwi`` loads.

    One slot per (person, session): the Training sequence, then the Still (camera 0) and
    Walking (camera 1) sequences of a test person; names ``{person:08d}_{seq:02d}_{k:04d}.jpg``
    with seq 00/01/02 = Training/Still/Walking. Depth crops are 8-bit JPEGs (see
    ``depth_to_jpeg_levels``). Frames without rgb, depth and user map, or with fewer than
    ``min_pixels`` person pixels, are skipped. Writes meta.json but no splits.json: put
    Hafner et al.'s splits.json next to it (its slot order assumes the full dataset).
    """
    raw_root = Path(raw_root)
    require_dir(raw_root / "Training", "BIWI Training", f"is {raw_root} the extracted BIWI RGBD-ID folder?")
    sessions: dict[tuple[int, bool], list[tuple[int, Path]]] = {}
    for sub, seq in SEQUENCES:
        if seq and not (raw_root / sub).is_dir():
            continue
        for person_dir in sorted(p for p in (raw_root / sub).iterdir() if p.is_dir()):
            person = parse_int_dir(person_dir, "BIWI person")
            sessions.setdefault((person, seq > 0), []).append((seq, person_dir))
    identities: list[list[list[str]]] = []
    stats = {"frames": 0, "skipped": 0}
    with atomic_dir(out_root, overwrite=overwrite) as tmp:
        for sub in ("rgb/images", "depth/images"):
            (tmp / sub).mkdir(parents=True)
        for (person, _), seqs in sorted(sessions.items()):
            cams = []
            for seq, folder in sorted(seqs):
                names, k = [], 0
                for frame in find_frames(folder):
                    if frame.rgb is None or frame.depth is None or frame.user_map is None:
                        stats["skipped"] += 1
                        continue
                    user_map = read_pgm(frame.user_map)
                    box = person_box(user_map)
                    if box is None or np.count_nonzero(user_map) < min_pixels:
                        stats["skipped"] += 1
                        continue
                    depth = crop_depth(read_pgm(frame.depth), user_map, box)
                    rgb = decode(frame.rgb, Modality.RGB)
                    rx0, ry0, rx1, ry1 = rgb_box(box, user_map.shape[::-1], rgb.shape[1::-1], margin)
                    name = f"{person:08d}_{seq:02d}_{k:04d}.jpg"
                    Image.fromarray(rgb[ry0:ry1 + 1, rx0:rx1 + 1]).save(tmp / "rgb/images" / name, quality=95)
                    Image.fromarray(depth_to_jpeg_levels(depth), "L").save(tmp / "depth/images" / name, quality=95)
                    names.append(name)
                    k += 1
                stats["frames"] += len(names)
                cams.append(names)
            identities.append(cams)
        write_json(tmp / "meta.json", {"name": "biwi", "shot": "multiple",
                                       "num_cameras": max(len(c) for c in identities) if identities else 0,
                                       "identities": identities})
    stats["slots"] = len(identities)
    return stats
