"""Figures for reports, rendered with matplotlib's Agg backend into PNG bytes."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image, ImageDraw


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def cmc_plot(curves: dict[str, np.ndarray], title: str) -> bytes:
    """One CMC curve per label (values in [0, 1], index k-1 = rank k)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for label, cmc in curves.items():
        ranks = np.arange(1, len(cmc) + 1)
        ax.plot(ranks, 100 * np.asarray(cmc), marker="o", markersize=3, label=label)
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    data = png_bytes(fig)
    plt.close(fig)
    return data


def _thumb(image: torch.Tensor, border: tuple[int, int, int] | None) -> Image.Image:
    """A C×H×W image in [0, 1] (1 or 3 channels) as an RGB picture, framed in ``border``."""
    arr = (image.float().expand(3, -1, -1).permute(1, 2, 0).numpy() * 255).clip(0, 255)
    img = Image.fromarray(arr.astype(np.uint8))
    if border is not None:
        ImageDraw.Draw(img).rectangle([0, 0, img.width - 1, img.height - 1], outline=border, width=3)
    return img


def ranked_strip(query: torch.Tensor, ranked: list[tuple[torch.Tensor, bool]]) -> bytes:
    """The query image, a gap, then its top-k gallery images framed green (same id) or red."""
    q = _thumb(query, (60, 60, 220))
    thumbs = [_thumb(g, (30, 170, 60) if ok else (210, 40, 40)) for g, ok in ranked]
    w, h, gap = q.width, q.height, 4
    strip = Image.new("RGB", (w * (len(thumbs) + 1) + gap * (len(thumbs) + 2) + 8, h), "white")
    strip.paste(q, (0, 0))
    for k, t in enumerate(thumbs):
        strip.paste(t, (w + 12 + k * (w + gap), 0))
    buf = io.BytesIO()
    strip.save(buf, format="PNG")
    return buf.getvalue()
