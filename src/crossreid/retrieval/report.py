"""Search results as a text table, a JSON document and a self-contained HTML ranked-list page."""

from __future__ import annotations

import html
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from crossreid import __version__
from crossreid.data.pipeline import load_resized
from crossreid.data.samples import Sample
from crossreid.errors import UserError
from crossreid.io import write_text
from crossreid.modality import Modality
from crossreid.report.html import png_data_uri

FORMAT = "crossreid-search"


def _label(value) -> int | str | None:
    return None if value in (-1, "", None) else (int(value) if isinstance(value, (int, np.integer)) else str(value))


def results_json(index, queries, opts, dist: np.ndarray, rows: np.ndarray, engine: str) -> dict:
    """Everything a reader needs: index, model, settings (re-ranking included) and each ranked list."""
    out = []
    for q in range(len(rows)):
        ranked = [{"rank": r + 1, "path": str(index.paths[g]), "id": _label(index.ids[g]),
                   "camera": _label(index.cameras[g]), "modality": str(index.modalities[g]),
                   "distance": float(dist[q, r])} for r, g in enumerate(rows[q]) if g >= 0]
        out.append({"query": {"path": queries.paths[q], "modality": queries.modalities[q],
                              "id": _label(queries.ids[q]), "camera": _label(queries.cameras[q])},
                    "results": ranked})
    return {"format": FORMAT, "crossreid_version": __version__, "index": str(index.path),
            "model": index.model, "metric": index.metric, "engine": engine, **opts.describe(), "queries": out}


def format_table(doc: dict) -> str:
    lines = []
    for entry in doc["queries"]:
        q = entry["query"]
        lines.append(f"query {q['path']} ({q['modality']}, id {q['id'] if q['id'] is not None else '?'}, "
                     f"camera {q['camera'] if q['camera'] is not None else '?'})")
        lines.append(f"  {'rank':>4} {'distance':>9} {'id':>6} {'camera':>6} {'modality':<8} path")
        for r in entry["results"]:
            mark = "" if r["id"] is None or q["id"] is None else (" ✓" if r["id"] == q["id"] else "")
            lines.append(f"  {r['rank']:>4} {r['distance']:>9.4f} {str(r['id'] if r['id'] is not None else '?'):>6} "
                         f"{str(r['camera'] if r['camera'] is not None else '?'):>6} {r['modality']:<8} {r['path']}{mark}")
    return "\n".join(lines)


def _thumb(path: str, modality: str, size: tuple[int, int, str], border) -> str:
    """A PNG data URI of the image as the network sees it (``size``: height, width, depth encoding), framed."""
    height, width, _ = size
    try:
        planes = load_resized(Sample(Path(path), -1, -1, Modality.parse(modality)), *size)
    except UserError:
        planes = None
    if planes is None:
        img = Image.new("RGB", (width, height), (200, 200, 200))
    else:
        arr = (planes.float().expand(3, -1, -1).permute(1, 2, 0).numpy() * 255).clip(0, 255).astype(np.uint8)
        img = Image.fromarray(arr)
    ImageDraw.Draw(img).rectangle([0, 0, width - 1, height - 1], outline=border, width=3)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return png_data_uri(buf.getvalue())


def write_html(path: str | Path, doc: dict, height: int, width: int, depth_encoding: str) -> None:
    """Each query (blue frame) then its ranked gallery images: green = same id, red = another,
    grey = id unknown; captions give modality, camera and distance. Images are shown as the
    model takes them: ``height`` × ``width``, depth in ``depth_encoding``."""
    size = (height, width, depth_encoding)
    css = ("body{font-family:system-ui,sans-serif;margin:2em;color:#222}figure{display:inline-block;margin:.2em;"
           "text-align:center;font-size:11px;vertical-align:top;max-width:9em;word-break:break-all}"
           "img{image-rendering:pixelated}h2{font-size:1.05em;margin-top:1.5em}")
    settings = {k: doc[k] for k in ("metric", "engine", "k", "gallery_modalities", "cameras", "exclude", "rerank")}
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>crossreid search</title><style>{css}</style>"
             f"</head><body><h1>crossreid search</h1><p>index {html.escape(doc['index'])} · crossreid "
             f"{__version__} · {html.escape(str(settings))}</p>"]
    for n, entry in enumerate(doc["queries"]):
        q = entry["query"]
        parts.append(f"<h2>query {n + 1}: {html.escape(q['path'])}</h2>")
        parts.append(f"<figure><img src='{_thumb(q['path'], q['modality'], size, (60, 60, 220))}' "
                     f"height='{height}'><figcaption>query · {html.escape(q['modality'])}</figcaption></figure>")
        for r in entry["results"]:
            known = r["id"] is not None and q["id"] is not None
            border = (150, 150, 150) if not known else ((30, 170, 60) if r["id"] == q["id"] else (210, 40, 40))
            caption = (f"#{r['rank']} {html.escape(r['modality'])} cam {r['camera'] if r['camera'] is not None else '?'}"
                       f"<br>id {r['id'] if r['id'] is not None else '?'} · d {r['distance']:.3f}")
            parts.append(f"<figure title='{html.escape(r['path'])}'><img src='"
                         f"{_thumb(r['path'], r['modality'], size, border)}' height='{height}'>"
                         f"<figcaption>{caption}</figcaption></figure>")
    parts.append("</body></html>\n")
    write_text(path, "\n".join(parts))
