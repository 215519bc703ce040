"""Turn a rasterised scene into sensor images: RGB, depth (mm) and infrared/thermal."""

from __future__ import annotations

import numpy as np

from crossreid.data.synth.cameras import Backdrop, Camera
from crossreid.data.synth.scene import (
    BAG,
    BOTTOM,
    BOTTOM2,
    HAIR,
    HAT,
    MATERIALS,
    OCCLUDER,
    SHOES,
    SKIN,
    TOP,
    TOP2,
    Geometry,
    View,
)
from crossreid.data.synth.traits import Garment, PersonTraits

DEPTH_MAX_MM = 8000  # beyond the sensor range: no reading


def _crop(canvas: np.ndarray, view: View, height: int, width: int) -> np.ndarray:
    return canvas[view.bg_y:view.bg_y + height, view.bg_x:view.bg_x + width]


def _patterned(geom: Geometry, labels: np.ndarray, garment: Garment, base: int, alt: int) -> None:
    """Relabel the pattern share of a garment (stripes or checks in body-relative metres)."""
    if garment.pattern == "plain":
        return
    h, w = labels.shape
    rows = (np.arange(h, dtype=np.float32)[:, None] + 0.5 - geom.cy) / (geom.ppm * garment.period)
    on = (rows % 1.0) < 0.5
    if garment.pattern == "checks":
        cols = (np.arange(w, dtype=np.float32)[None, :] + 0.5 - geom.cx) / (geom.ppm * garment.period)
        on = on ^ ((cols % 1.0) < 0.5)
    labels[(labels == base) & on] = alt


def material_labels(geom: Geometry, tr: PersonTraits) -> np.ndarray:
    """Labels with pattern colours split out (TOP2, BOTTOM2)."""
    labels = geom.labels.copy()
    _patterned(geom, labels, tr.top, TOP, TOP2)
    _patterned(geom, labels, tr.bottom, BOTTOM, BOTTOM2)
    return labels


def _box_blur(img: np.ndarray, axis: int) -> np.ndarray:
    out = img.copy()
    a = np.moveaxis(img, axis, 0)
    o = np.moveaxis(out, axis, 0)
    o[1:-1] = (a[:-2] + a[1:-1] + a[2:]) / 3.0
    return out


def shade_rgb(geom: Geometry, labels: np.ndarray, tr: PersonTraits, cam: Camera, view: View,
              backdrop: Backdrop, rng: np.random.Generator) -> np.ndarray:
    h, w = labels.shape
    palette = np.zeros((MATERIALS, 3), dtype=np.float32)
    palette[[SKIN, HAIR, TOP, BOTTOM, SHOES, BAG, TOP2, BOTTOM2, HAT]] = [
        tr.skin, tr.hair, tr.top.colour, tr.bottom.colour, tr.shoes, tr.bag_colour, tr.top.colour2, tr.bottom.colour2,
        tr.headwear.colour]
    palette[OCCLUDER] = rng.uniform(0.1, 0.8, 3)
    lz = np.sqrt(1 - cam.light ** 2)
    light = 0.45 + 0.55 * np.clip(cam.light * geom.nx + lz * geom.nz, 0.0, 1.0)
    body = geom.body
    img = np.where(body[..., None], palette[labels] * light[..., None], _crop(backdrop.rgb, view, h, w))
    img = img * (255.0 * cam.gain * view.gain) * np.asarray(cam.cast, dtype=np.float32)
    if view.blur:
        img = _box_blur(img, 1)
    img += rng.normal(0.0, cam.noise, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def shade_depth(geom: Geometry, cam: Camera, view: View, backdrop: Backdrop,
                rng: np.random.Generator) -> np.ndarray:
    """Kinect-like depth in mm: quadratic noise and quantisation, holes at edges, 0 = no reading."""
    h, w = geom.labels.shape
    body = geom.body
    z = np.where(body, cam.distance + np.where(body, geom.zrel, 0.0), _crop(backdrop.depth, view, h, w)) * 1000.0
    valid = z > 0
    z2 = z * z
    z = z + rng.normal(0.0, 1.0, z.shape) * 0.8e-6 * z2
    step = np.maximum(1.5e-6 * z2, 1.0)
    z = np.round(z / step) * step
    # Holes: depth discontinuities (and the projector shadow to their left), dark hair, random blobs.
    jump = np.abs(np.diff(np.where(valid, z, 0.0), axis=1)) > 150.0
    edge = np.zeros((h, w), dtype=bool)
    edge[:, 1:] |= jump
    edge[:, :-1] |= jump
    shadow = int(rng.integers(1, 3))
    edge[:, :-shadow] |= edge[:, shadow:]
    drop = (edge & (rng.random((h, w)) < 0.5)) | ((geom.labels == HAIR) & (rng.random((h, w)) < 0.25))
    for _ in range(rng.poisson(1.5)):
        y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
        drop[y:y + int(rng.integers(2, 7)), x:x + int(rng.integers(2, 6))] = True
    drop[:, :int(rng.integers(0, 4))] = True  # registration border
    z[drop | ~valid | (z > DEPTH_MAX_MM)] = 0.0
    return z.astype(np.uint16)


def shade_ir(geom: Geometry, labels: np.ndarray, tr: PersonTraits, cam: Camera, view: View,
             backdrop: Backdrop, rng: np.random.Generator) -> np.ndarray:
    """Thermal emission (temperature, no colour) with a weak near-infrared reflectance term."""
    h, w = labels.shape
    amb = cam.ambient

    def surface(g: Garment) -> float:
        return tr.skin_temp - g.insulation * (tr.skin_temp - amb)

    temp = np.full(MATERIALS, amb, dtype=np.float32)
    nir = np.full(MATERIALS, 0.5, dtype=np.float32)
    temp[[SKIN, HAIR, TOP, BOTTOM, SHOES, BAG, TOP2, BOTTOM2, HAT]] = [
        tr.skin_temp, amb + 0.5 * (tr.skin_temp - amb), surface(tr.top), surface(tr.bottom),
        amb + 0.2 * (tr.skin_temp - amb), amb + 0.05 * (tr.skin_temp - amb),
        surface(tr.top) + 0.3, surface(tr.bottom) + 0.3, surface(tr.headwear)]
    nir[[SKIN, HAIR, TOP, BOTTOM, BAG, TOP2, BOTTOM2, HAT]] = [
        0.6, 0.3, tr.top.nir, tr.bottom.nir, tr.bag_nir, tr.top.nir2, tr.bottom.nir2, tr.headwear.nir]
    temp[OCCLUDER] = amb + rng.uniform(-1.0, 3.0)
    body = geom.body
    emit = amb + (temp[labels] - amb) * (0.75 + 0.25 * geom.nz)
    t = np.where(body, emit, _crop(backdrop.temp, view, h, w))
    lo = amb - 2.0 + rng.normal(0, 0.5)
    hi = 36.5 + rng.normal(0, 1.0)
    level = (1 - cam.nir_mix) * (t - lo) / (hi - lo) + cam.nir_mix * np.where(body, nir[labels], 0.4)
    img = _box_blur(_box_blur(level * 255.0, 0), 1)
    stripes = np.random.default_rng(cam.seed + (1,)).normal(0, 3.0, w).astype(np.float32)
    img += stripes[None, :] + rng.normal(0.0, cam.noise, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)
