"""Run a method over a catalog's test (or validation) pools and score retrieval directions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from crossreid import distributed as D
from crossreid.data.pipeline import ImageStore
from crossreid.data.registry import dataset_protocol
from crossreid.data.samples import Catalog
from crossreid.errors import UserError
from crossreid.evaluation.protocols import evaluate_protocol, protocol_for, setting_protocols
from crossreid.modality import direction_name, parse_direction
from crossreid.retrieval.extract import extract_features


def pool_features(method, query_store: ImageStore, gallery_store: ImageStore,
                  batch_size: int = 128, device="cpu", progress: bool = False, amp: str | None = None,
                  dist: D.Dist = D.Dist()) -> tuple[np.ndarray, np.ndarray]:
    """Features of the query and gallery pools (extracted once if they hold the same images), on
    ``device`` under ``amp`` (:func:`crossreid.device.inference`); under torchrun (``dist``) each
    rank embeds its share of every pool and every rank gets all the features.

    Rows of modalities the method cannot embed are NaN; protocols never select them,
    and the metrics reject NaN in what they are given.
    """
    def features(store: ImageStore) -> np.ndarray:
        rows = [i for i, s in enumerate(store.samples) if s.modality in method.embeddable]
        feats = extract_features(method, store, rows, batch_size, device, progress, amp=amp, dist=dist)
        out = np.full((len(store), feats.shape[1]), np.nan, dtype=np.float32)
        out[rows] = feats
        return out

    qf = features(query_store)
    if gallery_store.samples == query_store.samples:
        return qf, qf
    return qf, features(gallery_store)


def table_protocols(method, catalog: Catalog, name: str, options: dict | None, metric: str | None) -> dict:
    """The settings of protocol ``name``'s full table (``setting_protocols``), each of which the
    catalog and the method must have the modalities of (a UserError names the first that lacks one)."""
    available = set(catalog.modalities) & set(method.embeddable)
    protocols = setting_protocols(name, options, metric)
    for label, p in protocols.items():
        lacking = [m for m in (p.query_modality, p.gallery_modality) if m not in available]
        if lacking:
            raise UserError(f"--all: setting {label!r} of protocol {name!r} needs {lacking[0]} images, which "
                            f"dataset {catalog.name!r} or the method (embeds {', '.join(map(str, method.embeddable))}) "
                            "lacks; drop --all and name the directions you can score with --direction")
    return protocols


def scorable_directions(method, catalog: Catalog, directions: Sequence[str]) -> list[tuple]:
    """``(name, query modality, gallery modality)`` of each direction whose modalities the catalog
    holds and the method embeds."""
    available = set(catalog.modalities) & set(method.embeddable)
    wanted = [(direction_name(d), *parse_direction(d)) for d in directions]
    return [(d, q, g) for d, q, g in wanted if q in available and g in available]


def evaluate_directions(method, catalog: Catalog, query_store: ImageStore, gallery_store: ImageStore,
                        directions: Sequence[str], metric: str | None = None, protocol: str | None = None,
                        batch_size: int = 128, device="cpu", progress: bool = False,
                        features: tuple[np.ndarray, np.ndarray] | None = None,
                        protocol_options: dict | None = None, validation: bool = False, rerank=None,
                        amp: str | None = None, dist: D.Dist = D.Dist(), all_settings: bool = False) -> dict:
    """``{direction: ProtocolResult}`` for each direction whose modalities the catalog and method have.

    ``protocol`` defaults to the one the dataset registered (``validation``: the one for its
    held-out val ids); every direction is given to it as ``query``/``gallery``, and a direction
    it does not support is an error. ``metric`` is the default of the protocol's ``distance``
    option; ``protocol_options`` are its other options; ``rerank`` re-ranks every trial.
    Without ``features`` the pools are embedded (:func:`pool_features`); under torchrun every
    rank takes part in that and rank 0 alone scores: the others get ``{}``.
    ``all_settings``: instead of ``directions``, every setting of the protocol's full table
    (``{label: ProtocolResult}``, e.g. SYSU-MM01's four), all of which the method must embed.
    """
    name = protocol or dataset_protocol(catalog.name, validation)
    if all_settings:
        protocols = table_protocols(method, catalog, name, protocol_options, metric)
    else:
        wanted = scorable_directions(method, catalog, directions)
        if not wanted:
            return {}
        protocols = {d: protocol_for(name, q, g, protocol_options, metric) for d, q, g in wanted}
    qf, gf = features or pool_features(method, query_store, gallery_store, batch_size, device, progress,
                                       amp, dist)
    if not dist.main:
        return {}
    return {d: evaluate_protocol(p, catalog, qf, gf, rerank=rerank) for d, p in protocols.items()}
