"""The modalities crossreid knows, and how each one becomes a network input."""

from __future__ import annotations

from enum import Enum

from crossreid.errors import UserError

# Other names accepted wherever a modality is read (manifests, folder names, options), case-insensitive.
ALIASES = {"visible": "rgb", "vis": "rgb", "color": "rgb", "colour": "rgb",
           "nir": "ir", "infrared": "ir", "thermal": "ir", "d": "depth"}


class Modality(str, Enum):
    """A sensor modality. ``IR`` covers near-infrared and thermal cameras."""

    RGB = "rgb"
    DEPTH = "depth"
    IR = "ir"

    @classmethod
    def parse(cls, value: str | Modality) -> Modality:
        if isinstance(value, Modality):
            return value
        key = str(value).strip().lower()
        try:
            return cls(ALIASES.get(key, key))
        except ValueError:
            raise UserError(f"unknown modality {value!r}; use one of: {accepted_names()}") from None

    def __str__(self) -> str:
        return self.value


def accepted_names() -> str:
    """Every accepted modality name with its aliases, e.g. ``rgb (visible, vis, color, colour), ...``."""
    return ", ".join(f"{m.value} ({', '.join(a for a, v in ALIASES.items() if v == m.value)})" for m in Modality)


def parse_direction(direction: str, what: str = "direction") -> tuple[Modality, Modality]:
    """``"rgb->depth"`` or the shell-safe ``"rgb:depth"`` (modality aliases allowed, e.g.
    ``visible:thermal``) to a (query, gallery) pair."""
    text = str(direction)
    parts = text.split("->") if "->" in text else text.split(":")
    if len(parts) != 2:
        raise UserError(f"{what} {direction!r} must look like rgb:depth or 'rgb->depth' (query, then gallery; "
                        "quote the arrow form in a shell, where > is a redirect)")
    return Modality.parse(parts[0]), Modality.parse(parts[1])


def direction_name(direction: str) -> str:
    """The canonical spelling ``query->gallery`` of a direction given in any accepted form."""
    query, gallery = parse_direction(direction)
    return f"{query}->{gallery}"
