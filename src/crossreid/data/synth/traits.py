"""Identity traits: everything fixed about one person, drawn from a seeded generator.

Latent causes are shared across modalities, each shown by the sensors that would see it:
- shape and volume (height, build, belly, head and hair volume, posture, garment
  silhouettes: coats, jackets, skirts and dresses, hats and hoods, bags of several
  shapes) shape the silhouette in RGB and IR and the metric relief in depth;
- colour and colour patterns are seen by RGB only;
- fabric near-infrared reflectance (and the pattern's NIR contrast), skin temperature,
  garment insulation and how much skin is uncovered (sleeves, legs, face, hands) drive IR.
``spread`` scales the population spread of the shape traits (difficulty presets).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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
HAIR_STYLES = ("short", "medium", "long", "bald", "bun", "curly")
# Garment kinds: (probability, sleeve/leg cover choices, insulation range, puff in metres, length below waist in m).
TOPS = {
    "tshirt": (0.28, (0.3, 0.4), (0.15, 0.35), 0.005, 0.0),
    "shirt": (0.20, (0.85, 1.0), (0.3, 0.5), 0.01, 0.05),
    "hoodie": (0.14, (1.0,), (0.5, 0.7), 0.025, 0.08),
    "jacket": (0.16, (1.0,), (0.6, 0.85), 0.04, 0.12),
    "coat": (0.14, (1.0,), (0.7, 0.9), 0.035, 0.45),
    "dress": (0.08, (0.0, 0.35, 0.9), (0.2, 0.4), 0.005, 0.0),
}
BOTTOMS_KINDS = {
    "trousers": (0.62, (1.0,), (0.3, 0.6)),
    "shorts": (0.16, (0.35, 0.45), (0.3, 0.5)),
    "skirt": (0.22, (0.0,), (0.3, 0.5)),
}
HEADWEAR = ("none", "cap", "beanie", "hood", "hat")
HEADWEAR_P = (0.5, 0.125, 0.125, 0.125, 0.125)
BAGS = ("none", "backpack", "large_backpack", "shoulder", "handbag")
BAGS_P = (0.3, 0.22, 0.14, 0.17, 0.17)
ARMS = ("swing", "pockets", "carry", "crossed")  # how a person holds the arms while walking
ARMS_P = (0.55, 0.17, 0.17, 0.11)
# Population spread of body shape at trait_spread = 1 (wider than real populations: a
# 64x32 crop shows only coarse shape, so the spread is what makes shape identifying).
SHAPE_SPREAD = 2.0


@dataclass(frozen=True)
class Garment:
    kind: str                              # a key of TOPS / BOTTOMS_KINDS, or a headwear name
    colour: tuple[float, float, float]     # RGB albedo in [0, 1]
    colour2: tuple[float, float, float]    # pattern colour
    pattern: str                           # one of PATTERNS
    period: float                          # pattern period in metres
    cover: float                           # share of the limb covered (sleeve / leg length)
    insulation: float                      # 0 = skin temperature on the surface, 1 = ambient
    nir: float                             # near-infrared reflectance (partly follows the colour's lightness)
    nir2: float                            # near-infrared reflectance of the pattern's second dye
    puff: float = 0.0                      # added thickness in metres (padding, loose fabric)
    length: float = 0.0                    # top: hem below the waist (m); skirt: hem above the ankle share


@dataclass(frozen=True)
class PersonTraits:
    pid: int
    height: float          # metres
    shoulder: float        # half-width, metres
    hip: float             # half-width, metres
    chest_depth: float     # half front-back thickness, metres
    belly: float           # forward protrusion of the abdomen, metres
    limb: float            # limb thickness factor (build)
    head: float            # head vertical radius, metres
    leg_ratio: float       # hip height / height
    arm_ratio: float       # arm length / height
    lean: float            # forward lean of the upper body, radians (posture)
    arms: str              # one of ARMS
    skin: tuple[float, float, float]
    hair_style: str
    hair_volume: float     # scale of the hair mass around the head
    hair: tuple[float, float, float]
    top: Garment
    bottom: Garment
    headwear: Garment
    shoes: tuple[float, float, float]
    bag: str
    bag_size: float        # scale of the bag
    bag_colour: tuple[float, float, float]
    bag_nir: float
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


def _nir(colour: tuple[float, float, float], fabric: float) -> float:
    """NIR reflectance: half the visible lightness (black dyes with carbon absorb NIR too), half
    the fabric's own draw (many dyes are transparent in NIR, so a dark garment can glow)."""
    return float(np.clip(0.5 * float(np.dot(colour, (0.3, 0.59, 0.11))) + 0.5 * fabric, 0.03, 0.97))


def _garment(rng: np.random.Generator, kind: str, colour: tuple[float, float, float], covers: tuple[float, ...],
             insulation: tuple[float, float], puff: float = 0.0, length: float = 0.0) -> Garment:
    pattern = str(rng.choice(PATTERNS, p=[0.5, 0.28, 0.22]))
    fabric = float(rng.uniform(0.1, 0.9))
    colour2 = _colour(rng)
    return Garment(kind=kind, colour=colour, colour2=colour2, pattern=pattern,
                   period=float(rng.uniform(0.06, 0.16)), cover=float(rng.choice(covers)),
                   insulation=float(rng.uniform(*insulation)), nir=_nir(colour, fabric),
                   nir2=_nir(colour2, float(np.clip(fabric + rng.choice([-1, 1]) * rng.uniform(0.25, 0.5),
                                                    0.05, 0.95))),
                   puff=puff * float(rng.uniform(0.7, 1.3)), length=length * float(rng.uniform(0.8, 1.2)))


def _pick(rng: np.random.Generator, table: np.ndarray, p: np.ndarray | None = None, jitter: float = 0.04):
    row = table[rng.choice(len(table), p=p)] + rng.normal(0, jitter, 3)
    return tuple(float(c) for c in np.clip(row, 0.02, 1.0))


def _choose(rng: np.random.Generator, table: dict) -> str:
    names = list(table)
    return str(rng.choice(names, p=[table[n][0] for n in names]))


def person_traits(seed: int, pid: int, spread: float = 1.0) -> PersonTraits:
    """The traits of person ``pid``; independent of every other person and of image order."""
    rng = np.random.default_rng([seed, 0, pid])
    s = spread * SHAPE_SPREAD
    height = float(np.clip(rng.normal(1.70, 0.06 * s), 1.45, 2.0))
    build = float(np.clip(rng.normal(0, 1), -2.5, 2.5))  # shared factor: broad people are broad everywhere
    top_kind = _choose(rng, TOPS)
    _, covers, ins, puff, length = TOPS[top_kind]
    top = _garment(rng, top_kind, _colour(rng), covers, ins, puff, length)
    if top_kind == "dress":  # one fabric from shoulders to the hem
        bottom = Garment(kind="skirt", colour=top.colour, colour2=top.colour2, pattern=top.pattern,
                         period=top.period, cover=0.0, insulation=top.insulation, nir=top.nir, nir2=top.nir2,
                         length=float(rng.uniform(0.25, 0.6)))
    else:
        bottom_kind = _choose(rng, BOTTOMS_KINDS)
        colour = _pick(rng, BOTTOMS, jitter=0.05) if bottom_kind == "trousers" and rng.random() < 0.6 \
            else _colour(rng)
        _, covers, ins = BOTTOMS_KINDS[bottom_kind]
        bottom = _garment(rng, bottom_kind, colour, covers, ins,
                          length=0.45 if bottom_kind == "skirt" else 0.0)
    hood_ok = top_kind in ("hoodie", "coat", "jacket")
    hw = str(rng.choice(HEADWEAR, p=HEADWEAR_P))
    if hw == "hood" and not hood_ok:
        hw = "none"
    headwear = replace(top, kind="hood") if hw == "hood" else _garment(rng, hw, _colour(rng), (1.0,), (0.5, 0.8))
    bag = str(rng.choice(BAGS, p=BAGS_P))
    return PersonTraits(
        pid=pid,
        height=height,
        shoulder=float(np.clip(0.19 + 0.018 * s * build + rng.normal(0, 0.012 * s), 0.13, 0.29)),
        hip=float(np.clip(0.16 + 0.014 * s * build + rng.normal(0, 0.014 * s), 0.10, 0.26)),
        chest_depth=float(np.clip(0.12 + 0.018 * s * build + rng.normal(0, 0.01 * s), 0.07, 0.22)),
        belly=float(np.clip(0.02 + 0.03 * s * build + rng.normal(0, 0.015 * s), 0.0, 0.16)),
        limb=float(np.clip(1.0 + 0.1 * s * build + rng.normal(0, 0.06 * s), 0.65, 1.45)),
        head=float(np.clip(rng.normal(0.115, 0.008 * s), 0.09, 0.145)),
        leg_ratio=float(np.clip(rng.normal(0.49, 0.02 * s), 0.41, 0.57)),
        arm_ratio=float(np.clip(rng.normal(0.44, 0.015 * s), 0.38, 0.50)),
        lean=float(np.clip(rng.normal(0.05, 0.07 * s), -0.15, 0.3)),
        arms=str(rng.choice(ARMS, p=ARMS_P)),
        skin=_pick(rng, SKIN, jitter=0.03),
        hair_style=str(rng.choice(HAIR_STYLES, p=[0.36, 0.2, 0.2, 0.08, 0.08, 0.08])),
        hair_volume=float(np.clip(rng.normal(1.0, 0.1 * s), 0.75, 1.4)),
        hair=_pick(rng, HAIR, HAIR_P),
        top=top,
        bottom=bottom,
        headwear=headwear,
        shoes=_pick(rng, np.array([[0.08, 0.08, 0.08], [0.9, 0.9, 0.9], [0.35, 0.22, 0.12]]), jitter=0.05),
        bag=bag,
        bag_size=float(rng.uniform(0.8, 1.25)),
        bag_colour=_colour(rng),
        bag_nir=float(rng.uniform(0.1, 0.9)),
        skin_temp=float(rng.normal(34.0, 0.7)),
        gait=float(rng.uniform(0.7, 1.2)),
    )
