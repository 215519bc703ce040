"""The modalities crossreid knows, and how each one becomes a network input."""

from __future__ import annotations

from enum import Enum

from crossreid.errors import UserError


class Modality(str, Enum):
    """A sensor modality. ``IR`` covers near-infrared and thermal cameras."""

    RGB = "rgb"
    DEPTH = "depth"
    IR = "ir"

    @classmethod
    def parse(cls, value: "str | Modality") -> "Modality":
        if isinstance(value, Modality):
            return value
        key = str(value).strip().lower()
        aliases = {"visible": "rgb", "vis": "rgb", "color": "rgb", "colour": "rgb",
                   "nir": "ir", "infrared": "ir", "thermal": "ir", "d": "depth"}
        key = aliases.get(key, key)
        try:
            return cls(key)
        except ValueError:
            names = ", ".join(m.value for m in cls)
            raise UserError(f"unknown modality {value!r}; use one of: {names}") from None

    def __str__(self) -> str:
        return self.value


def parse_direction(direction: str, what: str = "direction") -> tuple[Modality, Modality]:
    """``"rgb->depth"`` (modality aliases allowed, e.g. ``visible->thermal``) to a (query, gallery) pair."""
    parts = str(direction).split("->")
    if len(parts) != 2:
        raise UserError(f"{what} {direction!r} must look like 'rgb->depth' (query->gallery)")
    return Modality.parse(parts[0]), Modality.parse(parts[1])
