"""RegDB (visible ↔ thermal, 412 ids × 10 synchronised image pairs).

Layout: ``Visible/{pid}/{sex}_{view}_v_{NNNNN}_{pid}.bmp``, ``Thermal/{pid}/…_t_…bmp``
and the ten-trial index files ``idx/{train,test}_{visible,thermal}_{trial}.txt``
(``<relpath> <label>`` lines, LF or CRLF, blank lines skipped).

The person id comes from the folder (the label column is re-indexed per file and
ignored); visible images are camera 1, thermal camera 2. ``frame`` is
``{pid}_{NNNNN}``, shared by a visible image and its thermal partner; ``sequence``
is None. Pools: ``train`` = the trial's training lists; ``val`` = ``val_ids`` training
ids drawn with ``seed`` (none by default: RegDB has no official validation split).
Both directions (visible→thermal, thermal→visible) are official, so ``query`` and
``gallery`` both hold all 2 × 2,060 test images of the trial.
"""

from __future__ import annotations

import re
from pathlib import Path

from crossreid.data.datasets.common import (
    IndexLine,
    hold_out_ids,
    match_name,
    read_listed,
    require_dir,
    require_file,
    require_files,
    split_train_val,
)
from crossreid.data.registry import register_dataset
from crossreid.data.samples import Catalog, Sample
from crossreid.errors import UserError
from crossreid.modality import Modality

NAME = re.compile(r"(?P<sex>female|male)_(?P<view>front|back)_(?P<flag>[vt])_(?P<frame>\d{5})_(?P<pid>\d+)\.bmp")
FOLDERS = {"Visible": ("v", Modality.RGB, 1), "Thermal": ("t", Modality.IR, 2)}
LISTS = {"visible": "Visible", "thermal": "Thermal"}


def parse_line(line: IndexLine, root: Path, folder: str) -> Sample:
    """A sample from one idx line whose path must lie under ``folder``/<pid>/."""
    parts = line.relpath.split("/")
    if len(parts) != 3 or parts[0] != folder or not parts[1].isdigit():
        raise UserError(f"{line.where}: path {line.relpath!r} is not {folder}/<pid>/<file>.bmp; "
                        "fix the line or restore the idx file")
    m = match_name(NAME, parts[2], line.where, "{female|male}_{front|back}_{v|t}_{NNNNN}_{pid}.bmp")
    flag, modality, cam = FOLDERS[folder]
    pid = int(parts[1])
    if m["flag"] != flag or int(m["pid"]) != pid:
        raise UserError(f"{line.where}: {parts[2]!r} does not belong in {folder}/{pid}/ "
                        f"(expected the _{flag}_ flag and pid suffix {pid}); fix the line")
    return Sample(path=root.joinpath(*parts), pid=pid, cam=cam, modality=modality,
                  frame=f"{pid}_{m['frame']}")


def read_list(path: Path, root: Path, folder: str) -> list[Sample]:
    return read_listed(path, lambda line: parse_line(line, root, folder))


@register_dataset("regdb", folder="RegDB",
                  description="RegDB: 412 ids, visible and thermal pairs, 10 trials (both directions)",
                  protocol="regdb")
def load_regdb(root: Path, trial: int = 1, idx_dir: str | Path | None = None, val_ids: int = 0,
               seed: int = 0, check_files: bool = True) -> Catalog:
    """Read trial ``trial`` (1-10); ``idx_dir`` overrides ``root/idx``."""
    root = Path(root)
    if not isinstance(trial, int) or not 1 <= trial <= 10:
        raise UserError(f"regdb trial={trial!r} must be an integer from 1 to 10")
    for folder in FOLDERS:
        require_dir(root / folder, f"RegDB {folder}", f"is {root} the RegDB folder (it needs Visible/, Thermal/, idx/)?")
    idx = Path(idx_dir) if idx_dir is not None else root / "idx"
    require_dir(idx, "RegDB index (idx)", "copy the idx/ files of the split, or pass idx_dir=DIR")
    pools: dict[str, list[Sample]] = {}
    for part in ("train", "test"):
        pools[part] = []
        for word, folder in LISTS.items():
            path = require_file(idx / f"{part}_{word}_{trial}.txt", f"RegDB {part} list for trial {trial}",
                                "restore the 40 idx files (train/test × visible/thermal × trials 1-10)")
            pools[part].extend(read_list(path, root, folder))
    overlap = {s.pid for s in pools["train"]} & {s.pid for s in pools["test"]}
    if overlap:
        raise UserError(f"{idx}: trial {trial} lists person {min(overlap)} in both train and test; "
                        "restore the idx files")
    catalog = Catalog(root=root)
    held = hold_out_ids((s.pid for s in pools["train"]), val_ids, seed) if val_ids else set()
    catalog.train, catalog.val = split_train_val(pools["train"], held)
    catalog.query = list(pools["test"])
    catalog.gallery = list(pools["test"])
    if check_files:
        require_files(pools["train"] + pools["test"], f"{idx} (trial {trial})")
    return catalog
