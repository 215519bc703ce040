"""One file of named arrays, memory-mapped: the decoded-image cache on disk.

The layout is safetensors' (an 8-byte little-endian header length, a JSON header naming each
array's dtype, shape and byte range, then the bytes), so any safetensors reader opens it.
The ``safetensors`` library writes only from arrays already in memory and reads by copying;
the image cache needs the opposite, to fill a file larger than memory row by row and to read
rows in place, so this module writes the header itself and maps each array with NumPy.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from crossreid.errors import UserError

DTYPES = {np.dtype(np.uint8): "U8", np.dtype(np.uint16): "U16"}
FORMAT = "crossreid-image-cache-1"


def create(path: Path, arrays: dict[str, tuple[np.dtype, tuple[int, ...]]]) -> dict[str, np.ndarray]:
    """A new file at ``path`` holding zero-filled arrays ``name: (dtype, shape)``, mapped for writing."""
    header: dict = {"__metadata__": {"format": FORMAT}}
    offset = 0
    for name, (dtype, shape) in arrays.items():
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        header[name] = {"dtype": DTYPES[np.dtype(dtype)], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)  # safetensors aligns the data to 8 bytes
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)) + blob)
        fh.truncate(8 + len(blob) + offset)
    return _map(path, "r+")


def open_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a file written by :func:`create`, mapped read-only."""
    return _map(path, "r")


def _map(path: Path, mode: str) -> dict[str, np.ndarray]:
    try:
        with open(path, "rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(length))
        if header.pop("__metadata__", {}).get("format") != FORMAT:
            raise ValueError("not a crossreid image cache")
        names = {v: k for k, v in DTYPES.items()}
        return {name: np.memmap(path, dtype=names[spec["dtype"]], mode=mode, offset=8 + length + spec["data_offsets"][0],
                                shape=tuple(spec["shape"])) for name, spec in header.items()}
    except (OSError, ValueError, KeyError, struct.error) as exc:
        raise UserError(f"{path}: unreadable image cache ({exc}); delete it to decode the images again") from None
