"""Datasets: samples and catalogs, loaders, the synthetic generator, transforms, samplers."""

from crossreid.data import datasets  # noqa: F401  (registers the built-in loaders)
from crossreid.data.samples import Catalog, Sample

__all__ = ["Catalog", "Sample"]
