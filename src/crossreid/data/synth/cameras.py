"""Cameras: each has its own viewpoint range, distance, framing, illumination and background."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crossreid.data.synth.params import SynthParams, camera_modalities

# Viewpoints as (name, yaw centre in degrees); 0 = the person faces the camera.
VIEWPOINTS = (("front", 0.0), ("side", 90.0), ("back", 180.0), ("side", -90.0),
              ("front-side", 45.0), ("back-side", -135.0))


@dataclass(frozen=True)
class Camera:
    cam: int
    kind: str                 # "rgbd" or "ir"
    modalities: tuple[str, ...]
    viewpoint: str
    yaw: float                # degrees
    yaw_spread: float         # degrees, uniform half-range per image
    distance: float           # metres to the person
    fill: float               # person height / image height
    gain: float               # illumination gain (RGB)
    cast: tuple[float, float, float]  # colour cast (RGB)
    light: float              # horizontal light direction, -1..1
    noise: float              # sensor noise (8-bit units)
    occlusion: float          # probability of a partial occluder per image
    ambient: float            # scene temperature for IR, Celsius
    nir_mix: float            # IR: weight of near-infrared reflectance vs temperature
    wall: float               # depth background in metres, 0 = out of range (no reading)
    seed: tuple[int, ...]     # seed of the background texture

    def describe(self) -> dict:
        return {"cam": self.cam, "kind": self.kind, "modalities": list(self.modalities),
                "viewpoint": self.viewpoint, "yaw_deg": round(self.yaw, 1),
                "yaw_spread_deg": round(self.yaw_spread, 1), "distance_m": round(self.distance, 2),
                "fill": round(self.fill, 3), "gain": round(self.gain, 3),
                "colour_cast": [round(c, 3) for c in self.cast], "occlusion": round(self.occlusion, 3),
                "ambient_c": round(self.ambient, 1),
                "nir_mix": round(self.nir_mix, 3), "depth_background_m": round(self.wall, 2)}


def make_cameras(params: SynthParams) -> list[Camera]:
    """Cameras 1..rgbd (RGB-D) then the IR cameras; viewpoints rotate through VIEWPOINTS."""
    cams = []
    offset = np.random.default_rng([params.seed, 1]).integers(len(VIEWPOINTS))
    for cam in range(1, params.rgbd_cameras + params.ir_cameras + 1):
        rng = np.random.default_rng([params.seed, 1, cam])
        name, yaw = VIEWPOINTS[(offset + cam - 1) % len(VIEWPOINTS)]
        kind = "rgbd" if cam <= params.rgbd_cameras else "ir"
        cams.append(Camera(
            cam=cam, kind=kind, modalities=tuple(camera_modalities(params, cam)),
            viewpoint=name, yaw=yaw + float(rng.normal(0, 10)),
            yaw_spread=float(rng.uniform(15, 35)) * params.viewpoint_spread,
            distance=float(rng.uniform(2.0, 4.5)), fill=float(rng.uniform(0.78, 0.92)),
            gain=float(rng.uniform(0.6, 1.25)),
            cast=tuple(float(c) for c in np.clip(1 + rng.normal(0, 0.08, 3), 0.75, 1.25)),
            light=float(rng.uniform(-0.7, 0.7)), noise=float(rng.uniform(1.5, 5.0)) * params.noise,
            occlusion=min(0.9, float(rng.uniform(0.05, 0.3)) * params.occlusion), ambient=float(rng.uniform(14, 26)),
            nir_mix=float(rng.uniform(0.25, 0.55)),
            wall=float(rng.choice([0.0, rng.uniform(4.5, 7.5)])),
            seed=(params.seed, 1, cam, 7)))
    return cams


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a coarse random grid upsampled bilinearly."""
    gh, gw = cells + 1, max(2, cells * w // h + 1)
    grid = rng.random((gh, gw))
    ys = np.linspace(0, gh - 1, h)
    xs = np.linspace(0, gw - 1, w)
    y0 = np.minimum(ys.astype(int), gh - 2)
    x0 = np.minimum(xs.astype(int), gw - 2)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bot = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bot * fy


@dataclass(frozen=True)
class Backdrop:
    """Per-camera background canvases, larger than the image so each image crops a shifted view."""

    rgb: np.ndarray    # (H+2m, W+2m, 3) albedo in [0, 1]
    temp: np.ndarray   # (H+2m, W+2m) Celsius
    depth: np.ndarray  # (H+2m, W+2m) metres, 0 = no reading
    margin: int


def make_backdrop(camera: Camera, height: int, width: int) -> Backdrop:
    rng = np.random.default_rng(camera.seed)
    m = max(4, width // 8)
    h, w = height + 2 * m, width + 2 * m
    horizon = int(h * rng.uniform(0.55, 0.8))
    wall_c, floor_c = rng.uniform(0.2, 0.85, 3), rng.uniform(0.15, 0.7, 3)
    rows = np.arange(h)[:, None, None]
    rgb = np.where(rows < horizon, wall_c, floor_c) * (0.75 + 0.5 * _smooth_noise(rng, h, w, 4))[..., None]
    temp = np.full((h, w), camera.ambient) + 1.5 * (_smooth_noise(rng, h, w, 3) - 0.5)
    for _ in range(rng.integers(1, 4)):  # pillars, doors, radiators
        x0 = rng.integers(0, w - 4)
        x1 = min(w, x0 + rng.integers(3, max(4, w // 3)))
        y1 = rng.integers(horizon // 2, h)
        rgb[:y1, x0:x1] = rng.uniform(0.1, 0.9, 3)
        temp[:y1, x0:x1] += rng.choice([-1.0, 0.5, 6.0])
    depth = np.zeros((h, w))
    if camera.wall > 0:
        floor = camera.wall * (h - horizon) / np.maximum(rows[..., 0] - horizon + 1, 1) * 0.35
        depth = np.where(rows[..., 0] < horizon, camera.wall, np.clip(floor, camera.distance - 1.0, camera.wall))
        depth = np.broadcast_to(depth, (h, w)).copy()
    return Backdrop(rgb=np.clip(rgb, 0, 1).astype(np.float32), temp=temp.astype(np.float32),
                    depth=depth.astype(np.float32), margin=m)
