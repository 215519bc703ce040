"""``report.html``: one self-contained page (images inlined) for one or several evaluated runs:
what each run is (method, kept weights, protocol set-ups), one results table, CMC curves and
ranked lists. ``crossreid report`` and ``crossreid demo`` write it from
:class:`~crossreid.evaluation.document.Evaluation` records."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

from crossreid.data.pipeline import load_resized
from crossreid.data.samples import Sample
from crossreid.evaluation.document import Evaluation
from crossreid.io import write_text
from crossreid.modality import Modality
from crossreid.report.plots import cmc_plot, ranked_strip
from crossreid.version import __version__

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:75em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .7em;text-align:right;
white-space:nowrap}
th{background:#f3f3f3}td.l,th.l{text-align:left}.note{color:#a33}ul{padding-left:1.2em}
img{image-rendering:pixelated;margin:.2em 0}h3{margin-top:1.5em}.small{color:#555;font-size:90%}"""


def png_data_uri(data: bytes) -> str:
    """A PNG's bytes as a ``data:`` URI, so a page is one self-contained file."""
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _img(data: bytes, alt: str, height: int | None = None) -> str:
    size = f' height="{height}"' if height else ""
    return f'<img alt="{html.escape(alt)}"{size} src="{png_data_uri(data)}">'


def _e(text: object) -> str:
    return html.escape(str(text))


def protocol_notes(results: dict) -> list[str]:
    """One sentence per distinct protocol set-up in ``results`` ({run: {label: ProtocolResult}}),
    read from what each result recorded."""
    seen: dict[tuple, list[str]] = {}
    for by_label in results.values():
        for label, res in by_label.items():
            p = res.protocol
            key = (p.get("name"), p.get("cmc"), tuple(p.get("exclusion") or ()), res.distance,
                   p.get("precision", "float32"), p.get("trials"), str(p.get("shots")),
                   "re-ranked" if res.rerank else "not re-ranked")
            seen.setdefault(key, [])
            if label not in seen[key]:
                seen[key].append(label)
    out = []
    for (name, cmc, exclusion, distance, precision, trials, shots, rerank), labels in seen.items():
        removed = "; ".join(exclusion) or "nothing"
        out.append(f"Protocol {name} ({', '.join(labels)}): {cmc}-level CMC in percent, mAP and mINP over "
                   f"valid queries; gallery items removed per query: {removed}; {distance} distance in "
                   f"{precision}; {trials} trial(s), gallery shots: {shots}; {rerank}.")
    return out


def _runs_section(evaluations: Sequence[Evaluation]) -> list[str]:
    parts = ["<h2>Runs</h2><ul>"]
    for e in evaluations:
        kept = e.kept[0] if len(e.kept) == 1 else f"{len(e.kept)} trial runs: " + "; ".join(
            f"trial {i + 1}: {k}" for i, k in enumerate(e.kept))
        settings = sorted({r.setting() for r in e.results.values()})
        feature = next((r.protocol["test_feature"] for r in e.results.values() if "test_feature" in r.protocol), None)
        parts.append(f"<li><b>{_e(e.name)}</b> ({_e(e.method)}, <span class='small'>{_e(e.run)}</span>)<br>"
                     f"weights: {_e(kept)}<br>"
                     + "".join(f"{_e(s)}<br>" for s in settings)
                     + ("test feature: " + _e(", ".join(f"{k} {v}" for k, v in feature.items())) if feature else "")
                     + "</li>")
    parts.append("</ul>")
    return parts


def _results_table(evaluations: Sequence[Evaluation]) -> list[str]:
    labels = ["R1", "R5", "R10", "R20", "mAP", "mINP"]
    parts = ["<h2>Results</h2><table><tr><th class='l'>run</th><th class='l'>setting</th>"
             + "".join(f"<th>{k}</th>" for k in labels) + "<th>trials</th><th>chance R1</th></tr>"]
    for e in evaluations:
        for label, res in e.results.items():
            cells, chance = res.cells(), res.chance_rank1()
            parts.append(f"<tr><td class='l'>{_e(e.name)}</td><td class='l'>{_e(label)}</td>"
                         + "".join(f"<td>{cells.get(k, '-')}</td>" for k in labels)
                         + f"<td>{len(res.trials)}</td><td>{'?' if chance is None else f'{100 * chance:.1f}'}</td></tr>")
    parts.append("</table><p>Percent, mean ± std over trials. Chance R1: what a random ranking scores on "
                 "each trial's gallery (after the protocol's exclusion rule), for comparison. '-': a CMC rank "
                 "beyond the smallest gallery a query ranks (a padded curve, not a result).</p>")
    return parts


def _cmc_section(evaluations: Sequence[Evaluation]) -> list[str]:
    """One plot per run (a curve per setting), or, with several runs, one per setting (a curve per run)."""
    parts = ["<h2>CMC curves</h2>"]
    if len(evaluations) == 1:
        e = evaluations[0]
        plots = {e.name: {label: r.cmc for label, r in e.results.items()}}
    else:
        plots = {}
        for e in evaluations:
            for label, r in e.results.items():
                plots.setdefault(label, {})[e.name] = r.cmc
    for title, curves in plots.items():
        parts.append(_img(cmc_plot(curves, f"{title} (CMC)"), f"CMC curves of {title}"))
    return parts


def _thumbnail(record: dict, image: dict):
    sample = Sample(Path(record["path"]), record["pid"], record["cam"], Modality.parse(record["modality"]))
    return load_resized(sample, image["height"], image["width"], image["depth_encoding"])


def _ranked_section(evaluations: Sequence[Evaluation]) -> list[str]:
    parts = ["<h2>Ranked lists</h2><p>First trial of each cross-modal setting: query (blue frame), then its top "
             "gallery images after the protocol's exclusion rule, ranked by the protocol's distance (before any "
             "re-ranking): green = same person, red = another person.</p>"]
    for e in evaluations:
        for label, examples in e.examples.items():
            options = e.results[label].options if label in e.results else {}
            if not examples or options.get("query", 0) == options.get("gallery"):
                continue  # within one modality (the demo's reference rows)
            parts.append(f"<h3>{_e(e.name)} · {_e(label)}</h3>")
            for example in examples:
                query = example["query"]
                try:
                    strip = ranked_strip(_thumbnail(query, e.image),
                                         [(_thumbnail(r, e.image), r["same"]) for r in example["ranked"]])
                    parts.append(_img(strip, f"ranked list of query {query['path']}", height=96) + "<br>")
                except OSError as exc:  # the dataset moved or is not on this machine: the ids only
                    ids = " ".join(f"{r['pid']}{'✓' if r['same'] else '✗'}" for r in example["ranked"])
                    parts.append(f"<p class='small'>query {query['pid']} ({_e(query['path'])}): {ids} "
                                 f"(images not readable here: {_e(exc)})</p>")
    return parts


def write_report(path: str | Path, evaluations: Sequence[Evaluation], title: str,
                 notes: Sequence[str] = ()) -> None:
    """The page for ``evaluations`` (one or several runs scored on one dataset), written atomically."""
    first = evaluations[0]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{_e(title)}</h1>",
             f"<p>crossreid {__version__} · dataset <b>{_e(first.dataset)}</b> at {_e(first.root)}</p>"]
    roots = sorted({e.root for e in evaluations})
    if len(roots) > 1:
        parts.append(f"<p class='note'>The runs were evaluated on copies of {_e(first.dataset)} at "
                     f"{len(roots)} places: {_e(', '.join(roots))}.</p>")
    if first.dataset == "synthetic":
        parts.append("<p class='note'>Synthetic data: these figures are not comparable with "
                     "published results on real datasets.</p>")
    parts += [f"<p>{_e(note)}</p>" for note in notes]
    parts += _runs_section(evaluations) + _results_table(evaluations)
    parts += [f"<p class='small'>{_e(note)}</p>" for note in protocol_notes({e.name: e.results for e in evaluations})]
    parts += _cmc_section(evaluations) + _ranked_section(evaluations)
    parts.append("</body></html>\n")
    write_text(path, "\n".join(parts))
