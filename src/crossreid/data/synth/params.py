"""Generator parameters, their validation, and the identity split rule."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

import numpy as np
import pydantic

# Bump when the rendered pixels change for the same parameters (invalidates caches).
GENERATOR_VERSION = 2
KNOWN_MODALITIES = ("rgb", "depth", "ir")

# Difficulty presets: nuisance and overlap levels (docs/synthetic.md, "Difficulty").
# trait_spread scales the population spread of body shape (lower: persons overlap more);
# occlusion, viewpoint_spread and noise scale the cameras' occluder probability, per-image
# yaw spread and sensor noise. A value given explicitly overrides the preset's.
DIFFICULTIES: dict[str, dict[str, float]] = {
    "easy": {"trait_spread": 1.25, "occlusion": 0.5, "viewpoint_spread": 0.6, "noise": 0.6},
    "default": {"trait_spread": 1.0, "occlusion": 1.0, "viewpoint_spread": 1.0, "noise": 1.0},
    "hard": {"trait_spread": 0.7, "occlusion": 2.0, "viewpoint_spread": 1.6, "noise": 1.8},
}


class SynthParams(pydantic.BaseModel, extra="forbid"):
    """What to generate. Every image is a pure function of these values."""

    identities: int = pydantic.Field(60, ge=2, description="total persons")
    val_identities: int = pydantic.Field(6, ge=0, description="taken from the training half")
    test_fraction: float = pydantic.Field(0.5, gt=0.0, lt=1.0, description="share of identities held out for test")
    rgbd_cameras: int = pydantic.Field(2, ge=0, description="cameras producing co-registered rgb+depth")
    ir_cameras: int = pydantic.Field(2, ge=0, description="infrared cameras")
    images_per_camera: int = pydantic.Field(6, ge=1, description="time steps per (person, camera)")
    modalities: list[str] = pydantic.Field(default_factory=lambda: list(KNOWN_MODALITIES))
    height: int = pydantic.Field(128, ge=32, le=1024)
    width: int = pydantic.Field(64, ge=16, le=1024)
    seed: int = pydantic.Field(0, ge=0)
    depth_time_offset: float = pydantic.Field(
        0.0, ge=-0.5, le=0.5, description="pose-phase offset of depth vs rgb, in gait cycles (RobotPKU-like)")
    difficulty: Literal["easy", "default", "hard"] = pydantic.Field(
        "default", description="preset for the four levels below (those left unset)")
    trait_spread: float | None = pydantic.Field(None, gt=0.0, le=2.0, description="population spread of body shape")
    occlusion: float | None = pydantic.Field(None, ge=0.0, le=3.0, description="occluder probability scale")
    viewpoint_spread: float | None = pydantic.Field(None, ge=0.0, le=3.0, description="per-image yaw spread scale")
    noise: float | None = pydantic.Field(None, ge=0.0, le=4.0, description="sensor noise scale")

    @pydantic.model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        """Fill the levels left unset from the difficulty preset (explicit values win); they are
        then validated like given ones. An unknown difficulty is left to the field's own check."""
        if isinstance(data, dict):
            preset = DIFFICULTIES.get(data.get("difficulty", "default"), {})
            data = {**data, **{k: v for k, v in preset.items() if data.get(k) is None}}
        return data

    @pydantic.field_validator("modalities")
    @classmethod
    def _known_modalities(cls, value: list[str]) -> list[str]:
        value = [str(v).strip().lower() for v in value]
        bad = [v for v in value if v not in KNOWN_MODALITIES]
        if bad or not value or len(set(value)) != len(value):
            raise ValueError(f"modalities must be distinct values from {list(KNOWN_MODALITIES)}, got {value}")
        return [m for m in KNOWN_MODALITIES if m in value]

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> SynthParams:
        n_test, n_val, n_train = split_sizes(self)
        if n_test < 1 or n_train < 1:
            raise ValueError(f"identities={self.identities}, test_fraction={self.test_fraction}, "
                             f"val_identities={self.val_identities} leave {n_train} training and {n_test} "
                             "test identities; each needs at least 1")
        if not any(camera_modalities(self, cam) for cam in range(1, self.rgbd_cameras + self.ir_cameras + 1)):
            raise ValueError(f"no camera records any of {self.modalities}; add rgbd_cameras (rgb, depth) "
                             "or ir_cameras (ir)")
        return self

    def key(self) -> str:
        """A short hash of the parameters and generator version (cache key)."""
        blob = json.dumps({"generator": GENERATOR_VERSION, **self.model_dump()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def split_sizes(params: SynthParams) -> tuple[int, int, int]:
    """(test, val, train) identity counts."""
    n_test = int(round(params.identities * params.test_fraction))
    n_val = params.val_identities
    return n_test, n_val, params.identities - n_test - n_val


def identity_splits(params: SynthParams) -> dict[str, list[int]]:
    """Seeded shuffle of person ids 1..N: the first share is test, then val, the rest train."""
    n_test, n_val, _ = split_sizes(params)
    order = np.random.default_rng([params.seed, 3]).permutation(np.arange(1, params.identities + 1))
    return {
        "train": sorted(int(p) for p in order[n_test + n_val:]),
        "val": sorted(int(p) for p in order[n_test:n_test + n_val]),
        "test": sorted(int(p) for p in order[:n_test]),
    }


def camera_modalities(params: SynthParams, cam: int) -> list[str]:
    """Modalities camera ``cam`` records: RGB-D cameras come first, then IR cameras."""
    native = ("rgb", "depth") if cam <= params.rgbd_cameras else ("ir",)
    return [m for m in native if m in params.modalities]
