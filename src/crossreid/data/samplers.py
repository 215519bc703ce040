"""Cross-modal identity sampling: P identities × K images per modality per batch."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np

from crossreid.data.samples import Sample
from crossreid.errors import UserError
from crossreid.modality import Modality

DRAWS = ("random", "pass")


class CrossModalIdentitySampler:
    """Yields batches of sample indices laid out modality-major and row-aligned.

    Each batch holds P identities; for each modality in ``modalities`` it holds K
    images of every identity, ordered ``[mod0: id0×K, id1×K, …][mod1: …]`` so that
    row ``i`` of every modality block shows the same identity. With ``paired=True``
    the first modality's image is drawn first and the others take its co-registered
    partner (same frame key), so rows are true pairs (as distillation needs).

    Identities present in every modality are eligible. ``draw`` chooses how:

    * ``"random"``: every batch draws P identities afresh and K images per modality
      (without replacement while an identity has enough, else with replacement).
    * ``"pass"`` (IDKL's released sampler, methods.md §5.4): once per epoch each
      identity's modality lists are truncated to the smallest one's length, shuffled and
      cut into chunks of K per modality (fewer than K: K drawn with replacement);
      batches take one unused chunk from each of P identities until fewer than P have
      one left. The epoch is that pass (``iterations``, if given, spans further passes
      or stops early). Not with ``paired``.

    The draw is a pure function of ``(seed, epoch)``, so ``start`` (batches already
    done) resumes an epoch exactly.

    Distributed: with ``world`` > 1, iteration yields rank ``rank``'s share of every
    global batch: P / world of its identities, all their images in every modality,
    still modality-major and row-aligned. The global batches are the same for any
    world size; ``global_batches`` and ``shard`` expose them.
    """

    def __init__(self, samples: Sequence[Sample], modalities: Sequence[Modality], ids_per_batch: int,
                 images_per_id: int, paired: bool = False, seed: int = 0,
                 iterations: int | None = None, rank: int = 0, world: int = 1, draw: str = "random") -> None:
        self.modalities = [Modality.parse(m) for m in modalities]
        self.P, self.K, self.paired, self.seed = ids_per_batch, images_per_id, paired, seed
        if draw not in DRAWS:
            raise UserError(f"train.identity_draw={draw!r} is unknown; use one of: {', '.join(DRAWS)}")
        if draw == "pass" and paired:
            raise UserError("train.identity_draw=pass cannot draw co-registered pairs; this method's paired "
                            "stage needs train.identity_draw=random")
        self.draw, self.fixed_iterations = draw, iterations
        if ids_per_batch % world:
            raise UserError(f"train.ids_per_batch={ids_per_batch} does not split over {world} processes; "
                            f"use a multiple of {world}")
        self.rank, self.world = rank, world
        self.by_id: dict[Modality, dict[int, list[int]]] = {m: defaultdict(list) for m in self.modalities}
        for i, s in enumerate(samples):
            if s.modality in self.by_id:
                self.by_id[s.modality][s.pid].append(i)
        ids = set.intersection(*(set(d) for d in self.by_id.values())) if self.modalities else set()
        if paired:
            self.partner = self._pair_index(samples)
            ids = {pid for pid in ids if self.by_id_pairable(pid)}
        self.pids = sorted(ids)
        if len(self.pids) < self.P:
            mods = "+".join(m.value for m in self.modalities)
            raise UserError(f"only {len(self.pids)} training identities have {mods} images"
                            f"{' pairs' if paired else ''}, fewer than ids_per_batch={self.P}; "
                            "lower train.ids_per_batch or use more identities")
        largest = max(sum(len(v) for v in d.values()) for d in self.by_id.values())
        self.iterations = iterations or max(1, largest // (self.P * self.K))
        self.epoch = 0
        self.set_epoch(0)

    def _pair_index(self, samples: Sequence[Sample]) -> dict[tuple[int, Modality], int]:
        key_to_idx: dict[tuple[str, Modality], int] = {}
        for i, s in enumerate(samples):
            if s.frame is not None and s.modality in self.by_id:
                key_to_idx[(s.frame, s.modality)] = i
        first, rest = self.modalities[0], self.modalities[1:]
        partner: dict[tuple[int, Modality], int] = {}
        for i, s in enumerate(samples):
            if s.modality is first and s.frame is not None:
                for m in rest:
                    j = key_to_idx.get((s.frame, m))
                    if j is not None:
                        partner[(i, m)] = j
        return partner

    def by_id_pairable(self, pid: int) -> bool:
        first = self.modalities[0]
        return any(all((i, m) in self.partner for m in self.modalities[1:]) for i in self.by_id[first][pid])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.draw == "pass" and self.fixed_iterations is None:
            self.iterations = len(self._pass(np.random.default_rng([self.seed, epoch, 0])))

    def __len__(self) -> int:
        return self.iterations

    def _draw(self, rng: np.random.Generator, pool: list[int]) -> list[int]:
        replace = len(pool) < self.K
        return [pool[j] for j in rng.choice(len(pool), size=self.K, replace=replace)]

    def shard(self, batch: Sequence[int] | None = None) -> list[int]:
        """Positions of this rank's rows in a global batch (all positions when alone)."""
        per_mod, share = self.P * self.K, self.P // self.world * self.K
        pos = [m * per_mod + self.rank * share + j for m in range(len(self.modalities)) for j in range(share)]
        return pos if batch is None else [batch[p] for p in pos]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches():
            yield self.shard(batch) if self.world > 1 else batch

    def _pass(self, rng: np.random.Generator) -> list[list[int]]:
        """One pass of the ``"pass"`` draw: every identity's chunks, P identities per batch."""
        chunks: dict[int, list[list[list[int]]]] = {}
        for pid in self.pids:
            pools = [self.by_id[m][pid] for m in self.modalities]
            n = min(len(p) for p in pools)
            if n < self.K:
                picked = [[p[j] for j in rng.choice(len(p), size=self.K, replace=True)] for p in pools]
            else:
                picked = [[p[j] for j in rng.permutation(len(p))[:n]] for p in pools]
            chunks[pid] = [[pool[c * self.K:(c + 1) * self.K] for pool in picked]
                           for c in range(len(picked[0]) // self.K)]
        available = [pid for pid in self.pids if chunks[pid]]
        batches = []
        while len(available) >= self.P:
            pids = [available[j] for j in rng.choice(len(available), size=self.P, replace=False)]
            taken = [chunks[pid].pop(0) for pid in pids]
            available = [pid for pid in available if chunks[pid]]
            batches.append([i for m in range(len(self.modalities)) for chunk in taken for i in chunk[m]])
        if not batches:
            raise UserError(f"train.identity_draw=pass: fewer than ids_per_batch={self.P} identities per pass; "
                            "lower train.ids_per_batch")
        return batches

    def _passes(self) -> Iterator[list[int]]:
        """The ``"pass"`` draw's batches for this epoch: its first pass, then further ones if needed."""
        count, n = 0, 0
        while count < self.iterations:
            for batch in self._pass(np.random.default_rng([self.seed, self.epoch, n])):
                if count == self.iterations:
                    return
                yield batch
                count += 1
            n += 1

    def global_batches(self, start: int = 0) -> Iterator[list[int]]:
        """The epoch's global batches from batch ``start`` on (the draw of earlier ones is replayed)."""
        if self.draw == "pass":
            for step, batch in enumerate(self._passes()):
                if step >= start:
                    yield batch
            return
        rng = np.random.default_rng([self.seed, self.epoch])
        first, rest = self.modalities[0], self.modalities[1:]
        for step in range(self.iterations):
            pids = [self.pids[j] for j in rng.choice(len(self.pids), size=self.P, replace=False)]
            blocks: dict[Modality, list[int]] = {m: [] for m in self.modalities}
            for pid in pids:
                if self.paired:
                    pool = [i for i in self.by_id[first][pid] if all((i, m) in self.partner for m in rest)]
                    anchors = self._draw(rng, pool)
                    blocks[first] += anchors
                    for m in rest:
                        blocks[m] += [self.partner[(i, m)] for i in anchors]
                else:
                    for m in self.modalities:
                        blocks[m] += self._draw(rng, self.by_id[m][pid])
            if step >= start:
                yield [i for m in self.modalities for i in blocks[m]]
