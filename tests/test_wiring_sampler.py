"""The P×K sampler by its numbers: batch layout and count, distinct draws without replacement while an
identity has enough images, K with replacement when it has fewer, and IDKL's "pass" draw (every image at
most once per pass, modalities truncated to the shortest, chunks of K), each against a hand count."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from crossreid.data.samplers import CrossModalIdentitySampler
from crossreid.data.samples import Sample
from crossreid.modality import Modality

RGB, IR = Modality.RGB, Modality.IR


def pool(counts: dict[int, tuple[int, int]]) -> list[Sample]:
    """``counts[pid] = (rgb images, ir images)``; frames are unique per image."""
    return [Sample(Path(f"{m.value}/{pid}_{i}.png"), pid, 1 if m is RGB else 2, m, frame=f"{m.value}{pid}_{i}")
            for pid, per_mod in counts.items() for m, n in zip((RGB, IR), per_mod) for i in range(n)]


def blocks(samples, batch, P, K):
    """The batch as {modality: [[indices of identity row 0], [row 1], ...]} after checking its layout."""
    assert len(batch) == 2 * P * K
    out = {}
    for b, m in enumerate((RGB, IR)):
        block = batch[b * P * K:(b + 1) * P * K]
        assert all(samples[i].modality is m for i in block)
        out[m] = [block[r * K:(r + 1) * K] for r in range(P)]
        assert all(len({samples[i].pid for i in row}) == 1 for row in out[m])
    assert [samples[r[0]].pid for r in out[RGB]] == [samples[r[0]].pid for r in out[IR]]  # row-aligned
    return out


def test_random_draw_layout_count_and_distinct_images():
    counts = {pid: (6, 5) for pid in range(5)}
    samples = pool(counts)
    P, K = 3, 4
    sampler = CrossModalIdentitySampler(samples, [RGB, IR], P, K, seed=7)
    assert len(sampler) == 30 // (P * K)  # one pass over the largest modality (30 RGB images): 2 batches
    batches = list(sampler)
    assert len(batches) == 2
    for batch in batches:
        rows = blocks(samples, batch, P, K)
        assert len({samples[r[0]].pid for r in rows[RGB]}) == P  # P distinct identities
        for m in (RGB, IR):
            for row in rows[m]:
                assert len(set(row)) == K  # 6 or 5 images >= K = 4: drawn without replacement


def test_random_draw_repeats_only_when_an_identity_has_fewer_than_k():
    samples = pool({0: (2, 3), 1: (2, 3)})  # 2 RGB < K = 3 <= 3 IR
    sampler = CrossModalIdentitySampler(samples, [RGB, IR], 2, 3, seed=0, iterations=20)
    for batch in sampler:
        rows = blocks(samples, batch, 2, 3)
        for row in rows[IR]:
            assert len(set(row)) == 3                      # enough: all three, each once
        for row in rows[RGB]:
            assert len(set(row)) < 3                       # only 2 exist: K = 3 repeats one


def test_random_draw_uses_every_identity_and_image():
    samples = pool({pid: (4, 4) for pid in range(6)})
    sampler = CrossModalIdentitySampler(samples, [RGB, IR], 2, 2, seed=1, iterations=60)
    seen = Counter(i for b in sampler for i in b)
    assert set(seen) == set(range(len(samples)))           # nobody is left out over many batches


def test_pass_draw_uses_each_image_at_most_once_and_truncates_to_the_shortest_modality():
    # P = the number of identities, so every batch takes one chunk of each: batches = min chunks = 2.
    counts = {0: (5, 4), 1: (6, 7), 2: (4, 9)}             # shortest modality: 4, 6, 4 -> chunks of K=2: 2, 3, 2
    samples = pool(counts)
    sampler = CrossModalIdentitySampler(samples, [RGB, IR], 3, 2, seed=5, draw="pass")
    batches = list(sampler)
    assert len(sampler) == len(batches) == 2
    used = [i for b in batches for i in b]
    assert len(used) == len(set(used)) == 2 * 3 * 2 * 2    # no image twice in the pass
    for batch in batches:
        rows = blocks(samples, batch, 3, 2)
        assert sorted(samples[r[0]].pid for r in rows[RGB]) == [0, 1, 2]


def test_pass_draw_batch_count_follows_the_chunks():
    # 4 identities of 3 chunks each (K=1, 3 images in each modality), P = 4: 3 batches, every image once.
    samples = pool({pid: (3, 3) for pid in range(4)})
    sampler = CrossModalIdentitySampler(samples, [RGB, IR], 4, 1, seed=2, draw="pass")
    batches = list(sampler)
    assert len(sampler) == len(batches) == 3
    assert sorted(i for b in batches for i in b) == list(range(len(samples)))


def test_pass_draw_with_fewer_than_k_takes_k_with_replacement():
    samples = pool({0: (1, 5), 1: (1, 5)})                 # 1 RGB image < K = 2: one chunk, drawn with replacement
    sampler = CrossModalIdentitySampler(samples, [RGB, IR], 2, 2, seed=0, draw="pass")
    (batch,) = list(sampler)
    rows = blocks(samples, batch, 2, 2)
    for row in rows[RGB]:
        assert row[0] == row[1]                            # the one image, twice


def test_pass_draw_iterations_span_further_passes_without_changing_the_first():
    samples = pool({pid: (2, 2) for pid in range(3)})
    first = list(CrossModalIdentitySampler(samples, [RGB, IR], 3, 1, seed=4, draw="pass"))
    longer = list(CrossModalIdentitySampler(samples, [RGB, IR], 3, 1, seed=4, draw="pass", iterations=5))
    assert len(first) == 2 and len(longer) == 5 and longer[:2] == first
    assert sorted(i for b in longer[2:4] for i in b) == list(range(len(samples)))  # the second pass: each once


@pytest.mark.parametrize("draw", ["random", "pass"])
def test_resumed_epoch_replays_the_same_batches(draw):
    samples = pool({pid: (4, 4) for pid in range(4)})
    sampler = CrossModalIdentitySampler(samples, [RGB, IR], 2, 2, seed=3, draw=draw)
    sampler.set_epoch(2)
    whole = list(sampler.global_batches())
    assert list(sampler.global_batches(1)) == whole[1:]


def test_pass_draw_with_exactly_k_images_draws_them_without_replacement():
    samples = pool({pid: (2, 2) for pid in range(3)})      # n = K = 2: one chunk each, a permutation
    for seed in range(5):
        (batch,) = list(CrossModalIdentitySampler(samples, [RGB, IR], 3, 2, seed=seed, draw="pass"))
        assert sorted(batch) == list(range(len(samples)))


@pytest.mark.parametrize("seed", range(6))
def test_a_pass_epoch_ends_when_fewer_than_p_identities_have_a_chunk_left(seed):
    # chunks of K=1 per identity: 1, 2, 3, 4, 5; P = 2: how many batches a pass makes depends on the draw
    counts = {pid: (pid + 1, pid + 2) for pid in range(5)}
    samples = pool(counts)
    sampler = CrossModalIdentitySampler(samples, [RGB, IR], 2, 1, seed=seed, draw="pass")
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        used = Counter(samples[i].pid for b in batches for i in b[:2])  # RGB rows: one chunk each
        assert all(used[pid] <= counts[pid][0] for pid in counts)      # no chunk twice: one pass, no more
        left = [pid for pid in counts if used[pid] < counts[pid][0]]
        assert len(left) < 2                                           # and no less


def test_paired_sampling_takes_only_identities_with_co_registered_pairs():
    samples = pool({0: (3, 3), 1: (3, 3), 2: (3, 3)})
    paired = [s if s.pid == 2 else Sample(s.path, s.pid, s.cam, s.modality, frame=f"{s.pid}_{s.path.stem[-1]}")
              for s in samples]                            # ids 0, 1: RGB i and IR i share a frame; id 2: none do
    sampler = CrossModalIdentitySampler(paired, [RGB, IR], 2, 2, paired=True, seed=0)
    assert sampler.pids == [0, 1]
    for batch in sampler:
        assert [paired[i].frame for i in batch[:4]] == [paired[i].frame for i in batch[4:]]


def test_the_draw_of_a_seed_is_pinned():
    """A run's draw is part of its reproducibility: a change here must be deliberate (update the pin)."""
    samples = pool({pid: (3, 3) for pid in range(4)})
    expected = {"random": [[19, 20, 1, 2, 21, 22, 3, 4], [13, 12, 20, 18, 16, 17, 23, 21], [0, 1, 19, 18, 4, 5, 23, 22]],
                "pass": [[7, 6, 19, 20, 9, 10, 23, 21], [0, 1, 14, 12, 4, 3, 16, 15]]}
    for draw, batches in expected.items():
        sampler = CrossModalIdentitySampler(samples, [RGB, IR], 2, 2, seed=11, draw=draw)
        sampler.set_epoch(1)
        assert list(sampler.global_batches()) == batches
    two_passes = CrossModalIdentitySampler(samples, [RGB, IR], 2, 2, seed=11, draw="pass", iterations=4)
    two_passes.set_epoch(1)
    assert list(two_passes.global_batches()) == expected["pass"] + [[2, 1, 12, 14, 4, 3, 17, 16],
                                                                     [20, 19, 7, 8, 22, 23, 11, 10]]


def test_each_further_pass_draws_afresh_from_its_own_seed():
    samples = pool({pid: (3, 3) for pid in range(4)})            # 2 batches per pass
    sampler = CrossModalIdentitySampler(samples, [RGB, IR], 2, 2, seed=11, draw="pass", iterations=5)
    sampler.set_epoch(1)
    passes = [sampler._pass(np.random.default_rng([11, 1, n])) for n in range(3)]
    assert [len(p) for p in passes] == [2, 2, 2] and passes[1] != passes[2]
    assert list(sampler.global_batches()) == (passes[0] + passes[1] + passes[2])[:5]


def test_the_pass_draw_refuses_paired_sampling():
    from crossreid.errors import UserError

    samples = pool({pid: (3, 3) for pid in range(4)})
    with pytest.raises(UserError, match="cannot draw co-registered pairs"):
        CrossModalIdentitySampler(samples, [RGB, IR], 2, 2, paired=True, draw="pass")


def test_an_epoch_is_one_pass_over_the_largest_modality_and_at_least_one_batch():
    # batches = max(1, images in the largest modality // (P x K)), with P = K = 2 (4 images a modality a batch)
    assert len(CrossModalIdentitySampler(pool({0: (4, 2), 1: (4, 2)}), [RGB, IR], 2, 2)) == 2  # 8 RGB // 4
    assert len(CrossModalIdentitySampler(pool({0: (2, 2), 1: (2, 2)}), [RGB, IR], 2, 2)) == 1  # 4 // 4
    assert len(CrossModalIdentitySampler(pool({0: (1, 1), 1: (1, 1)}), [RGB, IR], 2, 2)) == 1  # 2 // 4 = 0 -> 1
    assert len(CrossModalIdentitySampler(pool({0: (4, 2), 1: (4, 2)}), [RGB, IR], 2, 2, iterations=1)) == 1


def test_no_modality_is_one_clear_error():
    from crossreid.errors import UserError

    # the config refuses data.modalities=[] first; the sampler's own guard is a UserError too, not a TypeError
    with pytest.raises(UserError, match="only 0 training identities"):
        CrossModalIdentitySampler(pool({0: (2, 2), 1: (2, 2)}), [], 1, 1)
