"""Scene geometry: a walking skeleton projected into the image and rasterised.

A person is a set of 2D primitives (rounded, tapered boxes and ellipses) between
projected joints, each with a depth profile (a cylinder bulging toward the camera).
Rasterisation keeps, per pixel, the nearest part: a material label, the depth
relative to the person's centre, and the surface normal used for shading.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crossreid.data.synth.cameras import Camera
from crossreid.data.synth.traits import PersonTraits

# Material labels of the rasterised map.
BG, SKIN, HAIR, TOP, BOTTOM, SHOES, BAG, OCCLUDER, TOP2, BOTTOM2, HAT = range(11)
MATERIALS = 11


@dataclass(frozen=True)
class View:
    """Per-image nuisances."""

    yaw: float            # degrees, 0 = facing the camera
    phase: float          # gait phase in cycles
    dx: float             # person shift, pixels
    dy: float
    rot: float            # in-plane rotation, radians
    scale: float          # framing jitter
    gain: float           # illumination jitter
    blur: bool            # horizontal motion blur (RGB)
    bg_x: int             # background crop offset
    bg_y: int
    occluder: tuple[float, float, float, float, float] | None  # x0, y0, x1, y1 (fractions), metres closer


def sample_view(camera: Camera, seq_rng_seed: tuple[int, ...], t: int, margin: int) -> View:
    """Nuisances of time step ``t`` of a (person, camera) sequence: the walk advances with t."""
    seq = np.random.default_rng(seq_rng_seed)
    yaw0 = camera.yaw + seq.uniform(-camera.yaw_spread, camera.yaw_spread)
    phase0 = seq.random()
    rng = np.random.default_rng(seq_rng_seed + (t,))
    occ = None
    if rng.random() < camera.occlusion:
        if rng.random() < 0.5:  # something low in front: a bench, a car bonnet, a railing
            y0, x0 = rng.uniform(0.6, 0.85), rng.uniform(-0.2, 0.4)
            occ = (x0, y0, x0 + rng.uniform(0.6, 1.2), 1.0, rng.uniform(0.4, 1.5))
        else:  # a pole or another pedestrian at the side
            x0 = rng.choice([rng.uniform(-0.1, 0.15), rng.uniform(0.6, 0.85)])
            occ = (x0, 0.0, x0 + rng.uniform(0.15, 0.35), 1.0, rng.uniform(0.4, 1.5))
    return View(
        yaw=float(yaw0 + 8 * t * seq.normal(0, 0.5) + rng.normal(0, 6)),
        phase=float(phase0 + 0.13 * t + rng.normal(0, 0.03)),
        dx=float(rng.normal(0, 2.0)), dy=float(rng.normal(0, 1.5)), rot=float(rng.normal(0, 0.035)),
        scale=float(rng.normal(1.0, 0.04)), gain=float(rng.normal(1.0, 0.07)), blur=bool(rng.random() < 0.2),
        bg_x=int(rng.integers(0, 2 * margin + 1)), bg_y=int(rng.integers(0, 2 * margin + 1)), occluder=occ)


def _skeleton(tr: PersonTraits, phase: float) -> dict[str, np.ndarray]:
    """3D joints in metres (x: the person's right, y: up, z: forward) at gait phase (cycles)."""
    phi = 2 * np.pi * phase
    amp = 0.32 * tr.gait
    leg = tr.leg_ratio * tr.height
    thigh, shin = 0.5 * leg, 0.5 * leg - 0.06
    sy = tr.height - 2 * tr.head - 0.04
    arm = tr.arm_ratio * tr.height
    j = {"neck": np.array([0.0, sy, 0.0]), "head": np.array([0.0, tr.height - tr.head, 0.01]),
         "pelvis": np.array([0.0, leg, 0.0])}
    for side, sign in (("l", -1.0), ("r", 1.0)):
        swing = amp * np.sin(phi) * sign
        knee_bend = 0.1 + 0.5 * max(0.0, -np.cos(phi) * sign)
        hip = np.array([sign * tr.hip * 0.55, leg, 0.0])
        knee = hip + thigh * np.array([0.0, -np.cos(swing), np.sin(swing)])
        ankle = knee + shin * np.array([0.0, -np.cos(swing - knee_bend), np.sin(swing - knee_bend)])
        j["hip_" + side], j["knee_" + side], j["ankle_" + side] = hip, knee, ankle
        j["toe_" + side] = ankle + np.array([0.0, -0.03, 0.14])
        j["heel_" + side] = ankle + np.array([0.0, -0.03, -0.04])
        aswing = -0.8 * swing
        elbow_bend = 0.15 + 0.35 * max(0.0, aswing)
        style = tr.arms if side == "r" or tr.arms != "carry" else "swing"
        if style == "pockets":  # hands in the pockets: arms hang still, forearms bent to the hips
            aswing, elbow_bend = 0.05 * aswing, 0.55
        elif style == "carry":  # the right forearm held forward (a phone, a cup)
            aswing, elbow_bend = 0.1 * aswing, 1.45
        elif style == "crossed":  # arms folded in front of the chest
            aswing, elbow_bend = 0.15, 1.9
        shoulder = np.array([sign * (tr.shoulder - 0.035), sy - 0.02, 0.0])
        elbow = shoulder + 0.43 * arm * np.array([sign * 0.06, -np.cos(aswing), np.sin(aswing)])
        inward = -0.55 if style == "crossed" else 0.04
        wrist = elbow + 0.57 * arm * np.array([sign * inward, -np.cos(aswing + elbow_bend),
                                               np.sin(aswing + elbow_bend)])
        j["shoulder_" + side], j["elbow_" + side], j["wrist_" + side] = shoulder, elbow, wrist
    # Posture: the upper body leans forward about the pelvis.
    cl, sl = np.cos(tr.lean), np.sin(tr.lean)
    for name in ("neck", "head", "shoulder_l", "shoulder_r", "elbow_l", "elbow_r", "wrist_l", "wrist_r"):
        y, z = j[name][1] - leg, j[name][2]
        j[name] = np.array([j[name][0], leg + cl * y - sl * z, sl * y + cl * z])
    return j


def _parts(tr: PersonTraits, joints: dict[str, np.ndarray], yaw: float) -> list[tuple]:
    """Primitives in body coordinates: (a, b, r0, r1, ext, power, half_depth, mat0, mat1, split)."""
    c, s = abs(np.cos(yaw)), abs(np.sin(yaw))

    def width(front: float, side: float) -> float:  # apparent half-width of an elliptic section
        return float(np.hypot(front * c, side * s))

    def thick(front: float, side: float) -> float:  # half-depth seen from the camera
        return float(np.hypot(front * s, side * c))

    def blob(centre, half_w: float, half_d: float, half_h: float, mat: int) -> tuple:  # an ellipsoid
        centre = np.asarray(centre, dtype=float)
        return (centre + [0, half_h, 0], centre - [0, half_h, 0], width(half_w, half_d), width(half_w, half_d),
                0.0, 2, thick(half_w, half_d), mat, mat, 1.0)

    j, lf, top, bottom = joints, tr.limb, tr.top, tr.bottom
    leg = tr.leg_ratio * tr.height
    waist, crotch = leg + 0.1, leg - 0.07
    lean = np.array([0.0, 0.0, np.sin(tr.lean)])
    top_end, bot_start = np.array([0.0, waist, 0.0]) + 0.1 * lean, np.array([0.0, crotch, 0.0])
    cd, pt = tr.chest_depth, top.puff
    parts = [
        (j["neck"] + [0, 0.01, 0], top_end, width(tr.shoulder + pt, cd + pt), width(tr.hip * 1.02 + pt, cd + pt),
         0.015, 4, thick(tr.shoulder + pt, cd + pt), TOP, TOP, 1.0),
        (top_end + [0, 0.03, 0], bot_start, width(tr.hip * 1.02, cd), width(tr.hip * 1.05, cd),
         0.02, 4, thick(tr.hip, cd), BOTTOM, BOTTOM, 1.0),
        (j["neck"] - [0, 0.02, 0], j["head"], 0.05, 0.05, 0.0, 2, 0.05, SKIN, SKIN, 1.0),
        blob(j["head"], 0.8 * tr.head, 0.85 * tr.head, tr.head, SKIN),
    ]
    if tr.belly > 0.005:  # the abdomen bulges forward under the top
        parts.append(blob(top_end + [0, 0.14, 0.45 * cd + 0.5 * tr.belly + 0.5 * pt], 0.85 * tr.hip + pt,
                          0.55 * cd + 0.5 * tr.belly + 0.5 * pt, 0.17, TOP))
    if top.length > 0:  # a jacket or coat hangs below the waist, flaring out over the legs
        hem = np.array([0.0, waist - top.length, 0.0])
        flare = 0.25 * top.length
        parts.append((top_end, hem, width(tr.hip * 1.1 + pt, cd + pt),
                      width(tr.hip * 1.1 + pt + flare, cd + pt + flare),
                      0.01, 4, thick(tr.hip * 1.1 + pt + flare, cd + pt + flare), TOP, TOP, 1.0))
    if bottom.kind == "skirt":
        hem = np.array([0.0, bottom.length * leg, 0.0])
        flare = 0.08 + 0.12 * (1 - bottom.length)
        parts.append((top_end + [0, 0.03, 0], hem, width(tr.hip * 1.05, cd), width(tr.hip + flare, cd + flare),
                      0.01, 4, thick(tr.hip + flare, cd + flare), BOTTOM, BOTTOM, 1.0))
    head, hv = j["head"], tr.hair_volume
    hat = tr.headwear.kind
    if tr.hair_style != "bald" and hat not in ("hood",):
        r = tr.head * hv * (1.25 if tr.hair_style == "curly" else 1.0)
        parts.append(blob(head + [0, 0.02 + 0.3 * (r - tr.head), -0.03], 0.88 * r, 0.95 * r, 1.02 * r, HAIR))
        drop = {"medium": 0.12, "long": 0.32}.get(tr.hair_style, 0.0)
        if drop:
            back = head + [0, 0, -0.06]
            parts.append((back, back - [0, tr.head + drop, 0], 0.8 * r, 0.85 * r, 0.02, 4, 0.5 * r, HAIR, HAIR, 1.0))
        if tr.hair_style == "bun":
            parts.append(blob(head + [0, 1.05 * tr.head, -0.05], 0.055 * hv, 0.055 * hv, 0.05 * hv, HAIR))
    if hat == "cap":
        parts += [blob(head + [0, 0.45 * tr.head, -0.005], 0.9 * tr.head, 0.95 * tr.head, 0.62 * tr.head, HAT),
                  blob(head + [0, 0.35 * tr.head, 0.11], 0.06, 0.06, 0.012, HAT)]
    elif hat == "beanie":
        parts.append(blob(head + [0, 0.55 * tr.head, -0.01], 0.95 * tr.head, 1.0 * tr.head, 0.75 * tr.head, HAT))
    elif hat == "hat":
        parts += [blob(head + [0, 0.55 * tr.head, 0], 0.19, 0.19, 0.015, HAT),
                  blob(head + [0, 0.85 * tr.head, 0], 0.85 * tr.head, 0.9 * tr.head, 0.55 * tr.head, HAT)]
    elif hat == "hood":
        parts.append(blob(head + [0, 0.12 * tr.head, -0.03], 1.2 * tr.head, 1.25 * tr.head, 1.3 * tr.head, HAT))
    sleeve, legs = top.cover, bottom.cover
    for side in ("l", "r"):
        ua, fa = 0.045 * lf + 0.6 * pt, 0.036 * lf + 0.5 * pt
        parts += [
            (j["shoulder_" + side], j["elbow_" + side], ua, fa, ua, 4, ua, TOP, SKIN, sleeve / 0.43),
            (j["elbow_" + side], j["wrist_" + side], fa, 0.03 * lf, fa, 4, fa, TOP, SKIN, (sleeve - 0.43) / 0.57),
            (j["hip_" + side], j["knee_" + side], 0.078 * lf, 0.058 * lf, 0.03, 4, 0.07 * lf,
             BOTTOM, SKIN, legs / 0.5),
            (j["knee_" + side], j["ankle_" + side], 0.056 * lf, 0.042 * lf, 0.03, 4, 0.05 * lf,
             BOTTOM, SKIN, (legs - 0.5) / 0.5),
            (j["heel_" + side], j["toe_" + side], 0.045, 0.04, 0.02, 4, 0.045, SHOES, SHOES, 1.0),
        ]
    sy, bs = j["neck"][1], tr.bag_size
    if tr.bag in ("backpack", "large_backpack"):
        big = 1.35 if tr.bag == "large_backpack" else 1.0
        half_d = 0.07 * big * bs
        z = -(cd + pt + half_d + 0.01)
        parts.append((np.array([0, sy - 0.05, z]) + 0.3 * lean, np.array([0, sy - 0.05 - 0.36 * big * bs, z]),
                      width(0.14 * big * bs, half_d), width(0.15 * big * bs, half_d), 0.03, 4,
                      thick(0.14 * big * bs, half_d), BAG, BAG, 1.0))
    elif tr.bag == "shoulder":
        x, y = tr.shoulder + pt + 0.05, leg
        parts.append((np.array([x, y + 0.15 * bs, 0]), np.array([x, y - 0.1 * bs, 0]), width(0.045, 0.15 * bs),
                      width(0.05, 0.16 * bs), 0.01, 4, thick(0.05, 0.16 * bs), BAG, BAG, 1.0))
    elif tr.bag == "handbag":
        w = j["wrist_r"]
        parts.append((w - [0, 0.04, 0], w - [0, 0.04 + 0.22 * bs, 0], width(0.05, 0.13 * bs), width(0.06, 0.15 * bs),
                      0.01, 4, thick(0.06, 0.15 * bs), BAG, BAG, 1.0))
    return parts


@dataclass
class Geometry:
    """Rasterised scene: per-pixel material, relative depth (m, inf = background) and normal."""

    labels: np.ndarray   # uint8 (H, W)
    zrel: np.ndarray     # float32 (H, W), metres behind the person's centre
    nx: np.ndarray       # float32 (H, W), normal toward image right
    nz: np.ndarray       # float32 (H, W), normal toward the camera
    ppm: float           # pixels per metre
    cx: float            # image position of the body axis
    cy: float            # image row of mid-height

    @property
    def body(self) -> np.ndarray:
        return np.isfinite(self.zrel)


def rasterize(tr: PersonTraits, camera: Camera, view: View, height: int, width: int,
              phase: float | None = None) -> Geometry:
    """Project and rasterise the person of ``view`` (optionally at another gait ``phase``)."""
    yaw = np.deg2rad(view.yaw)
    joints = _skeleton(tr, view.phase if phase is None else phase)
    ppm = camera.fill * height * view.scale * (tr.height / 1.71) ** 0.35 / tr.height
    cx, cy = width / 2 + view.dx, height / 2 + view.dy
    cr, sr = np.cos(view.rot), np.sin(view.rot)
    cosy, siny = np.cos(yaw), np.sin(yaw)

    def project(p: np.ndarray) -> tuple[float, float, float]:
        x = (p[0] * cosy + p[2] * siny) * ppm
        y = (tr.height / 2 - p[1]) * ppm
        return cx + cr * x - sr * y, cy + sr * x + cr * y, p[0] * siny - p[2] * cosy

    zbuf = np.full((height, width), np.inf, dtype=np.float32)
    labels = np.zeros((height, width), dtype=np.uint8)
    nx = np.zeros((height, width), dtype=np.float32)
    nz = np.ones((height, width), dtype=np.float32)
    for a3, b3, r0, r1, ext, power, half_depth, mat0, mat1, split in _parts(tr, joints, yaw):
        ax, ay, az = project(a3)
        bx, by, bz = project(b3)
        r0, r1, ext = r0 * ppm, r1 * ppm, ext * ppm
        pad = max(r0, r1) + ext + 1
        x0, x1 = max(0, int(min(ax, bx) - pad)), min(width, int(max(ax, bx) + pad) + 1)
        y0, y1 = max(0, int(min(ay, by) - pad)), min(height, int(max(ay, by) + pad) + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        dx, dy = bx - ax, by - ay
        length = float(np.hypot(dx, dy))
        ux, uy = (dx / length, dy / length) if length > 1e-6 else (0.0, 1.0)
        xs = np.arange(x0, x1, dtype=np.float32) + 0.5 - ax
        ys = (np.arange(y0, y1, dtype=np.float32) + 0.5 - ay)[:, None]
        along = xs * ux + ys * uy
        perp = xs * uy - ys * ux
        t = np.clip(along / max(length, 1e-6), 0.0, 1.0)
        q = perp / (r0 + (r1 - r0) * t)
        sn = (along - length / 2) / (length / 2 + ext)
        q2, s2 = q * q, sn * sn
        inside = (q2 * q2 + s2 * s2 <= 1.0) if power == 4 else (q2 + s2 <= 1.0)
        bulge = np.sqrt(np.clip(1.0 - q2, 0.0, 1.0))
        z = az + (bz - az) * t - half_depth * bulge
        zb = zbuf[y0:y1, x0:x1]
        win = inside & (z < zb)
        if not win.any():
            continue
        zb[win] = z[win]
        mat = np.where(t < split, mat0, mat1) if mat0 != mat1 else mat0
        labels[y0:y1, x0:x1][win] = mat if np.isscalar(mat) else mat[win]
        nx[y0:y1, x0:x1][win] = np.clip(q[win], -1, 1)
        nz[y0:y1, x0:x1][win] = bulge[win]
    if view.occluder is not None:
        fx0, fy0, fx1, fy1, closer = view.occluder
        sl = (slice(max(0, int(fy0 * height)), int(fy1 * height)), slice(max(0, int(fx0 * width)), int(fx1 * width)))
        zbuf[sl], labels[sl], nx[sl], nz[sl] = -closer, OCCLUDER, 0.0, 1.0
    return Geometry(labels=labels, zrel=zbuf, nx=nx, nz=nz, ppm=ppm, cx=cx, cy=cy)

