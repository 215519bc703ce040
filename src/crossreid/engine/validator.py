"""Validation during training: the held-out ids, scored with their dataset's validation protocol."""

from __future__ import annotations

import numpy as np
import torch

from crossreid import distributed as D
from crossreid.config import RunConfig
from crossreid.data.pipeline import ImageStore
from crossreid.data.samples import Catalog
from crossreid.methods import Method, Stage
from crossreid.retrieval.evaluate import evaluate_directions
from crossreid.retrieval.extract import extract_features


class Validator:
    """Mean validation mAP over a stage's directions (``stage.val_directions`` or ``eval.directions``)."""

    def __init__(self, cfg: RunConfig, method: Method, catalog: Catalog, store: ImageStore,
                 device: torch.device, dist: D.Dist) -> None:
        self.cfg, self.method, self.catalog, self.store = cfg, method, catalog, store
        self.device, self.dist = device, dist

    @property
    def active(self) -> bool:
        return bool(self.store.samples)

    def due(self, epoch: int, stage: Stage) -> bool:
        return self.active and ((epoch + 1) % self.cfg.train.validate_every == 0 or epoch + 1 == stage.epochs)

    def __call__(self, stage: Stage) -> dict:
        """Under DDP each rank embeds every world-th image, rank 0 gathers the features and
        scores them, every rank gets the result."""
        d, n = self.dist, len(self.store)
        D.broadcast_module(d, self.method, buffers_only=True)  # each rank's BN statistics saw only its rows
        feats = extract_features(self.method, self.store, range(n), batch_size=self.cfg.eval.batch_size,
                                 device=self.device, channels_last=self.cfg.train.channels_last, dist=d)
        out = None
        if d.main:
            directions = stage.val_directions or self.cfg.eval.directions
            results = evaluate_directions(self.method, self.catalog, self.store, self.store, directions,
                                          self.cfg.eval.metric, features=(feats, feats), validation=True)
            out = {f"{k}/mAP": r.mean()["map"] for k, r in results.items()}
            out["mAP"] = float(np.mean([r.mean()["map"] for r in results.values()])) if results else float("nan")
        return D.broadcast_object(d, out)
