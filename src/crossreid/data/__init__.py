"""Datasets: samples and catalogs, loaders, the synthetic generator, transforms, samplers."""

from crossreid.data.samples import Catalog, Sample

__all__ = ["Catalog", "Sample"]
