"""The synthetic tri-modal (RGB / depth / infrared) person generator, the embedded default dataset.

Deterministic from a seed, procedural, nothing downloaded. See docs/synthetic.md.
"""

from crossreid.data.synth.params import GENERATOR_VERSION, SynthParams, identity_splits
from crossreid.data.synth.preview import save_preview
from crossreid.data.synth.render import Renderer, render_person
from crossreid.data.synth.writer import cached_dataset, default_cache_dir, generate

__all__ = ["GENERATOR_VERSION", "Renderer", "SynthParams", "cached_dataset", "default_cache_dir", "generate",
           "identity_splits", "render_person", "save_preview"]
