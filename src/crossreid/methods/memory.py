"""A per-identity feature memory: ``slots`` momentum-averaged features for each identity.

Shared by the methods that keep stable, globally viewed identity features across training:
one slot per modality (self-mimic prototypes, SMMD) or per view (multi-view memory, Wan et
al.). The memory lives in registered buffers, so it is checkpointed and resumed with the
weights; updates take detached features only (no gradient ever reaches it) and gather
every rank's rows first, so all DDP ranks hold the same memory.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from crossreid.distributed import all_gather_cat


class IdentityMemory(nn.Module):
    """``features[id, slot]`` ← ``momentum · features[id, slot] + (1 − momentum) · batch mean``.

    The batch mean is taken over every row of the (all-rank) batch with that (id, slot).
    ``init="first"`` sets a never-updated entry to its first batch mean; ``init="zero"``
    starts every entry at zero and lets the momentum warm it up. ``filled`` marks entries
    that have been updated at least once.
    """

    def __init__(self, num_ids: int, num_slots: int, dim: int, momentum: float = 0.9,
                 init: Literal["first", "zero"] = "first") -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if init not in ("first", "zero"):
            raise ValueError(f"init must be 'first' or 'zero', got {init!r}")
        self.num_ids, self.num_slots, self.dim = num_ids, num_slots, dim
        self.momentum, self.init = momentum, init
        self.register_buffer("features", torch.zeros(num_ids, num_slots, dim))
        self.register_buffer("filled", torch.zeros(num_ids, num_slots, dtype=torch.bool))

    @torch.no_grad()
    def update(self, features: torch.Tensor, ids: torch.Tensor, slots: torch.Tensor | int = 0) -> None:
        """Fold a batch of features (rows) of identities ``ids`` into slots ``slots``."""
        ids = ids.long()
        slots = torch.full_like(ids, slots) if isinstance(slots, int) else slots.long()
        features, ids, slots = all_gather_cat(features.detach().float(), ids, slots)
        key = ids * self.num_slots + slots
        uniq, inverse = key.unique(return_inverse=True)
        sums = features.new_zeros(len(uniq), self.dim).index_add_(0, inverse, features)
        means = sums / torch.bincount(inverse, minlength=len(uniq)).unsqueeze(1).to(sums.dtype)
        i, s = uniq // self.num_slots, uniq % self.num_slots
        old = self.features[i, s]
        blended = self.momentum * old + (1.0 - self.momentum) * means
        if self.init == "first":
            blended = torch.where(self.filled[i, s].unsqueeze(1), blended, means)
        self.features[i, s] = blended.to(self.features.dtype)
        self.filled[i, s] = True

    def get(self, ids: torch.Tensor, slots: torch.Tensor | int | None = None) -> torch.Tensor:
        """Stored features of ``ids`` (rows × slots × dim, or rows × dim for given slots), detached."""
        ids = ids.long()
        if slots is None:
            return self.features[ids].detach()
        slots = torch.full_like(ids, slots) if isinstance(slots, int) else slots.long()
        return self.features[ids, slots].detach()

    def extra_repr(self) -> str:
        return f"ids={self.num_ids}, slots={self.num_slots}, dim={self.dim}, momentum={self.momentum}, init={self.init}"
