"""Render one time step of one person seen by one camera, in that camera's modalities."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from crossreid.data.synth.cameras import Backdrop, Camera, make_backdrop, make_cameras
from crossreid.data.synth.params import SynthParams
from crossreid.data.synth.scene import Geometry, View, rasterize, sample_view
from crossreid.data.synth.shade import material_labels, shade_depth, shade_ir, shade_rgb
from crossreid.data.synth.traits import PersonTraits, person_traits
from crossreid.errors import UserError


@dataclass
class Shot:
    """One rendered time step: the images per modality and what produced them."""

    images: dict[str, np.ndarray]
    traits: PersonTraits
    camera: Camera
    view: View
    geometry: Geometry      # of the RGB (or IR) image; depth may use a shifted gait phase


class Renderer:
    """Holds the cameras and their backgrounds for one parameter set."""

    def __init__(self, params: SynthParams):
        self.params = params
        self.cameras = make_cameras(params)
        self.backdrops: list[Backdrop] = [make_backdrop(c, params.height, params.width) for c in self.cameras]
        self.traits = lru_cache(maxsize=None)(lambda pid: person_traits(params.seed, pid, params.trait_spread))

    def shot(self, pid: int, cam: int, t: int) -> Shot:
        p = self.params
        if not (1 <= pid <= p.identities and 1 <= cam <= len(self.cameras) and 0 <= t < p.images_per_camera):
            raise UserError(f"no image for person {pid}, camera {cam}, time step {t} with identities="
                            f"{p.identities}, cameras={len(self.cameras)}, images_per_camera={p.images_per_camera}")
        camera, backdrop, traits = self.cameras[cam - 1], self.backdrops[cam - 1], self.traits(pid)
        view = sample_view(camera, (p.seed, 2, pid, cam), t, backdrop.margin)
        geom = rasterize(traits, camera, view, p.height, p.width)
        images: dict[str, np.ndarray] = {}
        labels = material_labels(geom, traits)
        for modality in camera.modalities:
            rng = np.random.default_rng([p.seed, 4, pid, cam, t, "rgb depth ir".split().index(modality)])
            if modality == "rgb":
                images["rgb"] = shade_rgb(geom, labels, traits, camera, view, backdrop, rng)
            elif modality == "ir":
                images["ir"] = shade_ir(geom, labels, traits, camera, view, backdrop, rng)
            else:
                dgeom = geom
                if p.depth_time_offset:
                    dgeom = rasterize(traits, camera, view, p.height, p.width, phase=view.phase + p.depth_time_offset)
                images["depth"] = shade_depth(dgeom, camera, view, backdrop, rng)
        return Shot(images=images, traits=traits, camera=camera, view=view, geometry=geom)


def render_person(params: SynthParams, pid: int, cam: int, t: int = 0) -> dict[str, np.ndarray]:
    """Images of person ``pid`` at time step ``t`` of camera ``cam``: modality -> array.

    RGB is uint8 H×W×3, depth uint16 H×W in millimetres (0 = no reading), IR uint8 H×W.
    Identical to what ``generate`` writes for the same parameters.
    """
    return Renderer(params).shot(pid, cam, t).images
