"""The same metrics as :mod:`crossreid.evaluation.metrics`, one query at a time.

Deliberately plain: full stable sort per query, explicit removal, explicit
de-duplication. Tests compare the fast evaluator against it; the benchmark times it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from crossreid.evaluation.metrics import DEFAULT_RANKS, NO_EXCLUSION, ExclusionRule, Metrics, check_level


def reference_metrics(distances: np.ndarray, query_ids: Sequence[int], gallery_ids: Sequence[int],
                      query_cams: Sequence[int] | None = None, gallery_cams: Sequence[int] | None = None, *,
                      exclusion: ExclusionRule = NO_EXCLUSION,
                      query_keys: Mapping[str, Sequence] | None = None,
                      gallery_keys: Mapping[str, Sequence] | None = None,
                      cmc: str = "image", ranks: Sequence[int] = DEFAULT_RANKS) -> Metrics:
    check_level(cmc)
    distances = np.asarray(distances)
    qids, gids = np.asarray(query_ids), np.asarray(gallery_ids)
    qcols = {"pid": qids, "cam": query_cams, **(query_keys or {})}
    gcols = {"pid": gids, "cam": gallery_cams, **(gallery_keys or {})}
    qvals = {k: exclusion.relabelled(k, qcols[k]) for k in exclusion.keys}
    gvals = {k: np.array(exclusion.relabelled(k, gcols[k]), dtype=object) for k in exclusion.keys}

    firsts, aps, inps = [], [], []
    per_query = np.full(len(qids), np.nan)
    for q in range(len(qids)):
        removed = np.zeros(len(gids), dtype=bool)
        for clause in exclusion.clauses:
            same = np.ones(len(gids), dtype=bool)
            for key in clause:
                value = qvals[key][q]
                same &= (gvals[key] == value) if value is not None else False
            removed |= same
        order = np.argsort(distances[q], kind="stable")
        order = order[~removed[order]]
        ranked_ids = gids[order]
        hit_ranks = np.flatnonzero(ranked_ids == qids[q]) + 1
        if len(hit_ranks) == 0:
            continue  # invalid query: no true match left
        total = 0.0
        for i, r in enumerate(hit_ranks.tolist(), start=1):
            total += i / r
        ap = total / len(hit_ranks)
        if cmc == "identity":
            _, first_seen = np.unique(ranked_ids, return_index=True)
            deduplicated = ranked_ids[np.sort(first_seen)]
            first = int(np.flatnonzero(deduplicated == qids[q])[0]) + 1
        else:
            first = int(hit_ranks[0])
        firsts.append(first)
        aps.append(ap)
        inps.append(len(hit_ranks) / int(hit_ranks[-1]))
        per_query[q] = ap
    return Metrics.from_per_query(np.array(firsts, dtype=np.int64), np.array(aps), np.array(inps),
                                  len(qids), ranks, cmc, per_query, len(gids))
