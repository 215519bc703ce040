"""Identity traits: everything fixed about one person, drawn from a seeded generator.

Shape traits come from overlapping population distributions (many persons share a
build), so body shape alone is a weak cue; clothing colour is the strong RGB cue and
is invisible to depth and infrared.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SKIN = np.array([[0.96, 0.80, 0.69], [0.90, 0.70, 0.56], [0.78, 0.57, 0.42],
                 [0.60, 0.42, 0.30], [0.42, 0.28, 0.20]])
HAIR = np.array([[0.08, 0.06, 0.05], [0.25, 0.16, 0.09], [0.45, 0.30, 0.16],
                 [0.80, 0.66, 0.40], [0.62, 0.62, 0.62], [0.55, 0.22, 0.10]])
HAIR_P = np.array([0.35, 0.25, 0.15, 0.1, 0.1, 0.05])
# Common trouser colours: denim, black, grey, khaki, navy; others are drawn at random.
BOTTOMS = np.array([[0.20, 0.30, 0.50], [0.10, 0.10, 0.11], [0.45, 0.45, 0.47],
                    [0.66, 0.58, 0.42], [0.12, 0.15, 0.30]])
PATTERNS = ("plain", "stripes", "checks")
HAIR_STYLES = ("short", "medium", "long", "bald")  # hair length
BAGS = ("none", "backpack", "shoulder")


@dataclass(frozen=True)
class Garment:
    colour: tuple[float, float, float]     # RGB albedo in [0, 1]
    colour2: tuple[float, float, float]    # pattern colour
    pattern: str                           # one of PATTERNS
    period: float                          # pattern period in metres
    cover: float                           # share of the limb covered (sleeve / leg length)
    insulation: float                      # 0 = skin temperature on the surface, 1 = ambient
    nir: float                             # near-infrared reflectance (unrelated to colour)


@dataclass(frozen=True)
class PersonTraits:
    pid: int
    height: float          # metres
    shoulder: float        # half-width, metres
    hip: float             # half-width, metres
    chest_depth: float     # half front-back thickness, metres
    limb: float            # limb thickness factor (build)
    head: float            # head vertical radius, metres
    leg_ratio: float       # hip height / height
    arm_ratio: float       # arm length / height
    skin: tuple[float, float, float]
    hair_style: str
    hair: tuple[float, float, float]
    top: Garment
    bottom: Garment
    shoes: tuple[float, float, float]
    bag: str
    bag_colour: tuple[float, float, float]
    skin_temp: float       # degrees Celsius
    gait: float            # stride amplitude factor


def _colour(rng: np.random.Generator) -> tuple[float, float, float]:
    """A random garment colour: saturated hues and neutrals, as in street clothing."""
    if rng.random() < 0.3:
        v = rng.uniform(0.08, 0.92)
        return (v, v, v)
    hue = rng.uniform(0, 1)
    sat = rng.uniform(0.35, 0.9)
    val = rng.uniform(0.3, 0.95)
    k = (np.array([5.0, 3.0, 1.0]) + hue * 6) % 6
    rgb = val - val * sat * np.clip(np.minimum(k, 4 - k), 0, 1)
    return tuple(float(c) for c in rgb)


def _garment(rng: np.random.Generator, colour: tuple[float, float, float], covers: tuple[float, ...],
             cover_p: tuple[float, ...]) -> Garment:
    pattern = str(rng.choice(PATTERNS, p=[0.55, 0.25, 0.2]))
    return Garment(colour=colour, colour2=_colour(rng), pattern=pattern,
                   period=float(rng.uniform(0.05, 0.14)),
                   cover=float(rng.choice(covers, p=cover_p)),
                   insulation=float(rng.uniform(0.25, 0.8)), nir=float(rng.uniform(0.2, 0.9)))


def _pick(rng: np.random.Generator, table: np.ndarray, p: np.ndarray | None = None, jitter: float = 0.04):
    row = table[rng.choice(len(table), p=p)] + rng.normal(0, jitter, 3)
    return tuple(float(c) for c in np.clip(row, 0.02, 1.0))


def person_traits(seed: int, pid: int) -> PersonTraits:
    """The traits of person ``pid``; independent of every other person and of image order."""
    rng = np.random.default_rng([seed, 0, pid])
    height = float(np.clip(rng.normal(1.71, 0.08), 1.50, 1.95))
    build = rng.normal(0, 1)  # shared factor: broad people are broad everywhere, a bit
    bottom_colour = (_pick(rng, BOTTOMS, jitter=0.05) if rng.random() < 0.6 else _colour(rng))
    return PersonTraits(
        pid=pid,
        height=height,
        shoulder=float(np.clip(0.19 + 0.012 * build + rng.normal(0, 0.012), 0.15, 0.25)),
        hip=float(np.clip(0.16 + 0.010 * build + rng.normal(0, 0.012), 0.12, 0.21)),
        chest_depth=float(np.clip(0.115 + 0.01 * build + rng.normal(0, 0.01), 0.08, 0.16)),
        limb=float(np.clip(1.0 + 0.08 * build + rng.normal(0, 0.06), 0.75, 1.3)),
        head=float(np.clip(rng.normal(0.115, 0.006), 0.10, 0.13)),
        leg_ratio=float(np.clip(rng.normal(0.49, 0.015), 0.44, 0.54)),
        arm_ratio=float(np.clip(rng.normal(0.44, 0.012), 0.40, 0.48)),
        skin=_pick(rng, SKIN, jitter=0.03),
        hair_style=str(rng.choice(HAIR_STYLES, p=[0.45, 0.25, 0.22, 0.08])),
        hair=_pick(rng, HAIR, HAIR_P),
        top=_garment(rng, _colour(rng), covers=(0.35, 0.6, 0.85), cover_p=(0.4, 0.1, 0.5)),
        bottom=_garment(rng, bottom_colour, covers=(0.4, 0.75, 1.0), cover_p=(0.2, 0.1, 0.7)),
        shoes=_pick(rng, np.array([[0.08, 0.08, 0.08], [0.9, 0.9, 0.9], [0.35, 0.22, 0.12]]), jitter=0.05),
        bag=str(rng.choice(BAGS, p=[0.55, 0.25, 0.2])),
        bag_colour=_colour(rng),
        skin_temp=float(rng.normal(34.0, 0.6)),
        gait=float(rng.uniform(0.7, 1.2)),
    )
