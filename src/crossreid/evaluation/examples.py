"""Ranked-list examples of a scored result: a few queries of its first trial and their top gallery
items, as plain records (image path, person, camera, modality) a report draws later."""

from __future__ import annotations

import numpy as np

from crossreid.data.samples import Catalog, Sample
from crossreid.evaluation.distance import pairwise_distance
from crossreid.evaluation.protocols import first_trial
from crossreid.evaluation.results import ProtocolResult


def sample_record(sample: Sample) -> dict:
    return {"path": str(sample.path), "pid": int(sample.pid), "cam": int(sample.cam), "modality": sample.modality.value}


def ranked_examples(catalog: Catalog, result: ProtocolResult, features: tuple[np.ndarray, np.ndarray],
                    queries: int = 4, top: int = 8) -> list[dict]:
    """The first trial of the protocol ``result`` was scored with: ``queries`` evenly spaced queries,
    each with its ``top`` gallery items after the protocol's exclusion rule (by the protocol's
    distance, stable order; before any re-ranking), each marked ``same`` person or not:
    ``[{"query": record, "ranked": [{**record, "same": bool}, ...]}, ...]``."""
    protocol, trial, picks, q_cols, g_cols, removed = first_trial(catalog, result, spread=queries)
    dist = np.asarray(pairwise_distance(features[0][picks], features[1][trial.gallery], protocol.distance,
                                        precision=protocol.precision), dtype=np.float64)
    if removed is not None:
        dist[removed] = np.inf
    out = []
    for row, q in enumerate(picks):
        order = [j for j in np.argsort(dist[row], kind="stable")[:top] if np.isfinite(dist[row, j])]
        ranked = [{**sample_record(catalog.gallery[trial.gallery[j]]), "same": bool(g_cols["pid"][j] == q_cols["pid"][row])}
                  for j in order]
        out.append({"query": sample_record(catalog.query[q]), "ranked": ranked})
    return out
