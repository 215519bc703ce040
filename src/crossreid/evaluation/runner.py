"""Evaluate a trained method on a catalog in one or more retrieval directions."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from crossreid.data.pipeline import ImageStore
from crossreid.data.samples import Catalog
from crossreid.retrieval.extract import extract_features


def parse_direction(direction: str) -> tuple[str, str]:
    from crossreid.errors import UserError
    from crossreid.modality import Modality

    query, sep, gallery = direction.partition("->")
    if not sep:
        raise UserError(f"direction {direction!r} must look like 'rgb->depth'")
    return Modality.parse(query).value, Modality.parse(gallery).value


def pool_features(method, catalog: Catalog, query_store: ImageStore, gallery_store: ImageStore,
                  batch_size: int = 128, device="cpu", progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Features of the query and gallery pools (extracted once if they are the same list).

    Rows of modalities the method cannot embed are NaN; protocols never select them,
    and the metrics reject NaN in what they are given.
    """
    def features(store: ImageStore) -> np.ndarray:
        rows = [i for i, s in enumerate(store.samples) if s.modality in method.embeddable]
        feats = extract_features(method, store, rows, batch_size, device, progress)
        out = np.full((len(store), feats.shape[1]), np.nan, dtype=np.float32)
        out[rows] = feats
        return out

    qf = features(query_store)
    if gallery_store is query_store or catalog.gallery is catalog.query:
        return qf, qf
    return qf, features(gallery_store)


# The protocol a dataset is scored with when none is named, and how a direction maps to its options.
DEFAULT_PROTOCOL = {"synthetic": "synthetic", "generic": "synthetic", "sysu_mm01": "sysu_mm01",
                    "regdb": "regdb", "llcm": "llcm", "biwi": "rgbd", "robotpku": "rgbd"}


def direction_options(protocol: str, query: str, gallery: str) -> dict:
    """Options that point ``protocol`` at the query -> gallery direction."""
    from crossreid.errors import UserError

    if protocol in ("synthetic", "rgbd"):
        return {"query": query, "gallery": gallery}
    if protocol in ("regdb", "llcm"):
        return {"direction": f"{query}->{gallery}"}
    if protocol.startswith("sysu_mm01"):
        if (query, gallery) != ("ir", "rgb"):
            raise UserError(f"protocol {protocol!r} scores ir->rgb only (infrared queries, RGB gallery); "
                            f"drop {query}->{gallery} from eval.directions")
        return {}
    return {}


def evaluate_directions(method, catalog: Catalog, query_store: ImageStore, gallery_store: ImageStore,
                        directions: Sequence[str], metric: str = "euclidean", protocol: str | None = None,
                        batch_size: int = 128, device="cpu", progress: bool = False,
                        features: tuple[np.ndarray, np.ndarray] | None = None,
                        protocol_options: dict | None = None, rerank=None) -> dict:
    """``{direction: ProtocolResult}`` for each direction whose modalities the catalog and method have.

    ``protocol`` defaults to the dataset's own (``DEFAULT_PROTOCOL``); ``protocol_options``
    are added to the direction's options.
    """
    from crossreid.evaluation.protocols import evaluate_protocol, get_protocol

    name = protocol or DEFAULT_PROTOCOL.get(catalog.name, "synthetic")
    available = {m.value for m in catalog.modalities} & {m.value for m in method.embeddable}
    wanted = [(d, *parse_direction(d)) for d in directions]
    wanted = [(d, q, g) for d, q, g in wanted if q in available and g in available]
    if not wanted:
        return {}
    protocols = {d: get_protocol(name, **direction_options(name, q, g), **(protocol_options or {}))
                 for d, q, g in wanted}
    qf, gf = features or pool_features(method, catalog, query_store, gallery_store, batch_size, device, progress)
    return {d: evaluate_protocol(p, catalog, qf, gf, metric, rerank=rerank) for d, p in protocols.items()}
