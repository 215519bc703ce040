"""``report.html``: one self-contained page (images inlined) with tables, CMC curves and ranked lists."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

from crossreid.version import __version__
from crossreid.data.pipeline import ImageStore
from crossreid.data.samples import Catalog
from crossreid.evaluation.distance import pairwise_distance
from crossreid.evaluation.protocols import first_trial
from crossreid.evaluation.results import ProtocolResult
from crossreid.modality import parse_direction
from crossreid.io import write_text
from crossreid.report.plots import cmc_plot, ranked_strip

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .7em;text-align:right}
th{background:#f3f3f3}td:first-child,td:nth-child(2){text-align:left}.note{color:#a33}
img{image-rendering:pixelated;margin:.2em 0}h3{margin-top:1.5em}"""


def _img(data: bytes, alt: str, height: int | None = None) -> str:
    size = f' height="{height}"' if height else ""
    return f'<img alt="{html.escape(alt)}"{size} src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def ranked_examples(catalog: Catalog, result: ProtocolResult, features: tuple[np.ndarray, np.ndarray],
                    queries: int = 4, top: int = 8) -> list[tuple[int, list[tuple[int, bool]]]]:
    """First trial of the protocol ``result`` was scored with: a few evenly spaced queries and
    their top-k gallery items after its exclusion rule (stable order), marked correct or not."""
    protocol, trial, picks, q_cols, g_cols, removed = first_trial(catalog, result, spread=queries)
    dist = np.asarray(pairwise_distance(features[0][picks], features[1][trial.gallery], protocol.distance,
                                        precision=protocol.precision), dtype=np.float64)
    if removed is not None:
        dist[removed] = np.inf
    out = []
    for row, q in enumerate(picks):
        order = np.argsort(dist[row], kind="stable")[:top]
        out.append((int(q), [(int(trial.gallery[j]), g_cols["pid"][j] == q_cols["pid"][row]) for j in order]))
    return out


def protocol_notes(results: dict) -> list[str]:
    """One sentence per distinct protocol set-up in ``results``, read from what each result recorded."""
    seen: dict[tuple, list[str]] = {}
    for by_dir in results.values():
        for direction, res in by_dir.items():
            p = res.protocol
            key = (p.get("name"), p.get("cmc"), tuple(p.get("exclusion") or ()), res.distance,
                   p.get("precision", "float32"), p.get("trials"), str(p.get("shots")))
            seen.setdefault(key, [])
            if direction not in seen[key]:
                seen[key].append(direction)
    out = []
    for (name, cmc, exclusion, distance, precision, trials, shots), directions in seen.items():
        removed = "; ".join(exclusion) or "nothing"
        out.append(f"Protocol {name} ({', '.join(directions)}): {cmc}-level CMC in percent, mAP and mINP over "
                   f"valid queries; gallery items removed per query: {removed}; {distance} distance in "
                   f"{precision}; {trials} trial(s), gallery shots: {shots}.")
    return out


def write_report(path: Path, results: dict, catalog: Catalog, query_store: ImageStore,
                 gallery_store: ImageStore, title: str, features: dict | None = None,
                 notes: list[str] | None = None) -> None:
    """``results``: {method: {direction: ProtocolResult}}; ``features``: {method: (query, gallery)}."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p>crossreid {__version__} · dataset <b>{html.escape(catalog.name)}</b> "
             f"({len(catalog.query)} query-pool and {len(catalog.gallery)} gallery-pool images)</p>"]
    if catalog.name == "synthetic":
        parts.append("<p class='note'>Synthetic data: these figures are not comparable with "
                     "published results on real datasets.</p>")
    for note in notes or []:
        parts.append(f"<p>{html.escape(note)}</p>")
    parts.append("<h2>Results</h2><table><tr><th>method</th><th>direction</th><th>R1</th><th>R5</th>"
                 "<th>R10</th><th>R20</th><th>mAP</th><th>mINP</th><th>trials</th><th>chance R1</th></tr>")
    for method, by_dir in results.items():
        for direction, res in by_dir.items():
            mean, std = res.mean(), res.std()
            cells = "".join(f"<td>{100 * mean[k]:.1f}" + (f" ± {100 * std[k]:.1f}" if len(res.trials) > 1 else "")
                            + "</td>" for k in ("rank1", "rank5", "rank10", "rank20", "map", "minp"))
            parts.append(f"<tr><td>{html.escape(method)}</td><td>{html.escape(direction)}</td>{cells}"
                         f"<td>{len(res.trials)}</td><td>{100 * res.chance_rank1():.1f}</td></tr>")
    parts.append("</table><p>Chance R1: what a random ranking scores on the first trial's gallery "
                 "(after the protocol's exclusion rule), for comparison.</p>")
    parts += [f"<p>{html.escape(note)}</p>" for note in protocol_notes(results)]
    parts.append("<h2>CMC curves</h2>")
    for method, by_dir in results.items():
        curves = {d: r.cmc for d, r in by_dir.items()}
        if curves:
            parts.append(_img(cmc_plot(curves, f"{method} (CMC)"), f"CMC curves of {method}"))
    if features:
        parts.append("<h2>Ranked lists</h2><p>Query (blue frame), then the top gallery images: "
                     "green = same person, red = another person.</p>")
        for method, by_dir in results.items():
            for direction, res in by_dir.items():
                if len(set(parse_direction(direction))) == 1:
                    continue  # ranked lists for the cross-modal directions only
                parts.append(f"<h3>{html.escape(method)} · {html.escape(direction)}</h3>")
                for q, ranked in ranked_examples(catalog, res, features[method]):
                    strip = ranked_strip(query_store, q, gallery_store, ranked)
                    parts.append(_img(strip, f"ranked list of query {q}", height=96) + "<br>")
    parts.append("</body></html>\n")
    write_text(path, "\n".join(parts))
