"""RGB-D datasets in the open-reid manifest layout of Hafner et al. (BIWI RGBD-ID, RobotPKU).

Layout (one root per dataset; RGB and depth files carry identical names)::

    <root>/rgb/images/*.jpg     <root>/depth/images/*.jpg
    <root>/meta.json            identities[slot][cam] = file names
    <root>/splits.json          5 splits of trainval/train/val/query/gallery slot lists

As in open-reid, the slot index is the person id and the list position the camera
(0-based); for BIWI the same person in other clothes is another slot. ``frame`` is the
shared file name (RGB and depth of one time step share it) and ``sequence`` is
``{slot}_{cam}``. Pools for ``split`` (default 0, the split printed in Hafner et al.'s
appendix): ``train`` = trainval slots, or train slots with ``val`` = val slots when
``hold_out_val=True``; both directions (RGB→depth, depth→RGB) are reported, so
``query`` and ``gallery`` both hold every RGB and depth image of the test slots
(query == gallery in splits.json). Slots with no images (RobotPKU slot 89) stay empty.
``meta_dir`` reads meta.json/splits.json from another folder.
"""

from __future__ import annotations

from pathlib import Path

from crossreid.data.datasets.common import require_dir, require_file, require_files
from crossreid.data.registry import register_dataset
from crossreid.data.samples import Catalog, Sample
from crossreid.errors import UserError
from crossreid.io import read_json
from crossreid.modality import Modality

MODALITY_DIRS = {Modality.RGB: "rgb", Modality.DEPTH: "depth"}
SPLIT_KEYS = ("trainval", "train", "val", "query", "gallery")


def read_meta(path: Path) -> list[list[list[str]]]:
    """``identities`` of an open-reid meta.json, checked to be slot → camera → file names."""
    meta = read_json(require_file(path, "open-reid meta.json", "it ships with the prepared dataset"))
    identities = meta.get("identities") if isinstance(meta, dict) else None
    if not isinstance(identities, list):
        raise UserError(f"{path}: no 'identities' list; expected an open-reid meta.json")
    for slot, cams in enumerate(identities):
        if not isinstance(cams, list) or not all(isinstance(c, list) and all(isinstance(n, str) for n in c)
                                                 for c in cams):
            raise UserError(f"{path}: identities[{slot}] must be a list (cameras) of lists of file names")
        for names in cams:
            for name in names:
                if "/" in name or "\\" in name or name.startswith("."):
                    raise UserError(f"{path}: identities[{slot}] lists {name!r}; expected plain file names")
    return identities


def read_splits(path: Path, num_slots: int) -> list[dict[str, list[int]]]:
    splits = read_json(require_file(path, "open-reid splits.json", "it ships with the prepared dataset"))
    if not isinstance(splits, list) or not splits:
        raise UserError(f"{path}: expected a list of splits")
    for i, split in enumerate(splits):
        if not isinstance(split, dict) or any(k not in split for k in SPLIT_KEYS):
            raise UserError(f"{path}: split {i} must have the keys {', '.join(SPLIT_KEYS)}")
        for key in SPLIT_KEYS:
            bad = [s for s in split[key] if not isinstance(s, int) or not 0 <= s < num_slots]
            if bad:
                raise UserError(f"{path}: split {i} {key} lists slot {bad[0]!r}, but meta.json has "
                                f"{num_slots} slots")
    return splits


def slot_samples(root: Path, identities: list[list[list[str]]], slots: list[int]) -> list[Sample]:
    out = []
    for slot in sorted(slots):
        for cam, names in enumerate(identities[slot]):
            for name in names:
                for modality, folder in MODALITY_DIRS.items():
                    out.append(Sample(path=root / folder / "images" / name, pid=slot, cam=cam,
                                      modality=modality, frame=name, sequence=f"{slot}_{cam}"))
    return out


def load_openreid_rgbd(name: str, root: Path, split: int = 0, hold_out_val: bool = False,
                       meta_dir: str | Path | None = None, check_files: bool = True) -> Catalog:
    root = Path(root)
    for folder in MODALITY_DIRS.values():
        require_dir(root / folder / "images", f"{name} {folder} images",
                    f"expected {root}/rgb/images and {root}/depth/images with identical file names")
    meta_root = Path(meta_dir) if meta_dir is not None else root
    identities = read_meta(meta_root / "meta.json")
    splits = read_splits(meta_root / "splits.json", len(identities))
    if not isinstance(split, int) or not 0 <= split < len(splits):
        raise UserError(f"{name} split={split!r} must be an integer from 0 to {len(splits) - 1}")
    chosen = splits[split]
    if set(chosen["query"]) != set(chosen["gallery"]):
        raise UserError(f"{meta_root / 'splits.json'}: split {split} has different query and gallery slots; "
                        "this loader expects the cross-modal layout where they are equal")
    catalog = Catalog(root=root)
    if hold_out_val:
        catalog.train = slot_samples(root, identities, chosen["train"])
        catalog.val = slot_samples(root, identities, chosen["val"])
    else:
        catalog.train = slot_samples(root, identities, chosen["trainval"])
    catalog.query = slot_samples(root, identities, chosen["query"])
    catalog.gallery = list(catalog.query)
    if check_files:
        require_files(catalog.train + catalog.val + catalog.query, str(meta_root / "meta.json"))
    return catalog


def _register(name: str, folder: str, description: str) -> None:
    def loader(root: Path, split: int = 0, hold_out_val: bool = False, meta_dir: str | Path | None = None,
               check_files: bool = True) -> Catalog:
        return load_openreid_rgbd(name, root, split=split, hold_out_val=hold_out_val, meta_dir=meta_dir,
                                  check_files=check_files)

    loader.__name__ = f"load_{name}"
    loader.__doc__ = (f"{description}. Options: split (0-4), hold_out_val, meta_dir, check_files; "
                      "see the module docstring.")
    register_dataset(name, folder=folder, description=description, protocol="rgbd")(loader)


_register("biwi", "BIWI", "BIWI RGBD-ID prepared as open-reid crops (Hafner et al.): 78 slots, RGB and depth")
_register("robotpku", "RobotPKU", "RobotPKU RGBD-ID prepared as open-reid crops (Hafner et al.): 90 slots, "
          "RGB and depth")
