"""Published sizes of the real datasets, for ``crossreid check``: a tree with person folders
missing (a partial download or extraction) loads, but has fewer images than the dataset has.

Counts are images per (pool group, modality, camera) with the official split files and the
loaders' default layout; ``train`` means train + val (the held-out ids come from the training
ids). They are the counts the loaders' tests verify (datasets.md in the specs).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from crossreid.data.samples import Catalog

# dataset -> {(pool group, modality): {camera: images}}; "*" sums every camera.
PUBLISHED: dict[str, dict[tuple[str, str], dict[Any, int]]] = {
    "sysu_mm01": {
        ("train", "rgb"): {"*": 22258}, ("train", "ir"): {"*": 11909},
        ("query", "ir"): {3: 1883, 6: 1920},
        ("gallery", "rgb"): {1: 1374, 2: 1565, 4: 1918, 5: 1918},
    },
    "regdb": {  # every trial: 206 training and 206 test ids, 10 images per id and modality
        ("train", "rgb"): {"*": 2060}, ("train", "ir"): {"*": 2060},
        ("query", "rgb"): {"*": 2060}, ("query", "ir"): {"*": 2060},
    },
    "llcm": {
        ("train", "rgb"): {"*": 16946}, ("train", "ir"): {"*": 13975},
        ("query", "rgb"): {1: 139, 2: 12, 3: 2773, 4: 3063, 5: 1994, 6: 18, 7: 345, 8: 252, 9: 84},
        ("query", "ir"): {1: 19, 2: 47, 4: 58, 5: 2119, 6: 4276, 7: 217, 8: 311, 9: 119},
    },
}
# (training + validation ids, test ids) of the official splits: a split with other ids is the user's.
PUBLISHED_IDS = {"sysu_mm01": (395, 96), "regdb": (206, 206), "llcm": (713, 351)}
# Options that change which files make up the dataset: with any of them set, the split is the user's.
SPLIT_OPTIONS = {"exp_dir", "idx_dir"}
NAMES = {"sysu_mm01": "SYSU-MM01", "regdb": "RegDB", "llcm": "LLCM"}


def size_problems(name: str, catalog: Catalog, options: dict[str, Any]) -> list[str]:
    """One problem line per (pool, modality, camera) whose image count differs from the published
one, when the catalog has the official split's ids (whole persons missing already fail in the
loader or show as missing files)."""
    expected = PUBLISHED.get(name)
    if expected is None or SPLIT_OPTIONS & {k for k, v in options.items() if v is not None}:
        return []
    ids = (len({s.pid for s in catalog.train + catalog.val}), len({s.pid for s in catalog.query}))
    if ids != PUBLISHED_IDS[name]:
        return []  # not the official split: a user-built dataset
    found: Counter = Counter()
    for group, pools in (("train", ("train", "val")), ("query", ("query",)), ("gallery", ("gallery",))):
        for pool in pools:
            for s in catalog.pool(pool):
                found[(group, str(s.modality), s.cam)] += 1
                found[(group, str(s.modality), "*")] += 1
    out = []
    for (group, modality), cams in expected.items():
        for cam, want in cams.items():
            have = found[(group, modality, cam)]
            if have != want:
                where = f"{group} {modality}" + ("" if cam == "*" else f" cam {cam}")
                pool = "train + val" if group == "train" else group
                out.append(f"{where}: {have} images, {NAMES[name]} has {want} ({pool} pool); "
                           f"{'missing ' + str(want - have) if have < want else 'extra ' + str(have - want)}: "
                           "a partial download or extraction? re-extract the dataset")
    return out
