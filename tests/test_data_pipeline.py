from collections import Counter

import numpy as np
import pytest
import torch

from crossreid.data.datasets.manifest import read_manifest
from crossreid.data.images import decode, depth_channels, depth_to_unit
from crossreid.data.pipeline import ImageStore
from crossreid.data.registry import load_dataset
from crossreid.data.samplers import CrossModalIdentitySampler
from crossreid.errors import UserError
from crossreid.modality import Modality


def test_manifest_catalog(tiny_root):
    cat = load_dataset("generic", tiny_root)
    assert cat.train_pids == [1, 2, 3] and cat.label_map == {1: 0, 2: 1, 3: 2}
    assert {s.pid for s in cat.val} == {4} and {s.pid for s in cat.query} == {5, 6}
    assert cat.gallery == cat.query
    assert cat.modalities == [Modality.RGB, Modality.DEPTH, Modality.IR]
    assert cat.summary()["train"]["depth"] == 3 * 2 * 3


def test_manifest_errors(tiny_root):
    text = (tiny_root / "manifest.csv").read_text().splitlines()
    (tiny_root / "bad.csv").write_text("\n".join([text[0], text[1].replace(",train,", ",training,")]) + "\n")
    with pytest.raises(UserError, match=r"bad.csv:2: bad row"):
        read_manifest(tiny_root / "bad.csv", tiny_root)
    (tiny_root / "nocol.csv").write_text("path,person\nx.png,1\n")
    with pytest.raises(UserError, match="missing column"):
        read_manifest(tiny_root / "nocol.csv", tiny_root)
    (tiny_root / "rgb" / "0001_c1_t0.png").unlink()
    with pytest.raises(UserError, match="0001_c1_t0.png: listed in"):
        load_dataset("generic", tiny_root)


def test_unreadable_image(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(UserError, match="broken.png: unreadable"):
        decode(bad, Modality.RGB)


def test_depth_units():
    unit = depth_to_unit(np.array([0.0, 500.0, 8000.0, 4250.0]))
    assert unit.tolist() == [0.0, 1.0, 0.0, 0.5]


@pytest.mark.parametrize("k", [2, 1])  # K = 1 is the demo's: every same-identity pair is cross-modal
def test_sampler_layout_and_determinism(tiny_root, k):
    cat = load_dataset("generic", tiny_root)
    mods = [Modality.RGB, Modality.DEPTH, Modality.IR]
    sampler = CrossModalIdentitySampler(cat.train, mods, ids_per_batch=2, images_per_id=k, seed=1)
    batches = list(sampler)
    assert batches == list(CrossModalIdentitySampler(cat.train, mods, 2, k, seed=1))
    sampler.set_epoch(1)
    assert list(sampler) != batches
    for batch in batches:
        assert len(batch) == 2 * k * 3
        blocks = [batch[i * 2 * k:(i + 1) * 2 * k] for i in range(3)]
        for m, block in zip(mods, blocks):
            assert all(cat.train[i].modality is m for i in block)
        pids = [[cat.train[i].pid for i in block] for block in blocks]
        assert pids[0] == pids[1] == pids[2]  # row-aligned identities
        assert len(set(pids[0])) == 2 and Counter(pids[0]).most_common(1)[0][1] == k


def test_paired_sampler_returns_coregistered_rows(tiny_root):
    cat = load_dataset("generic", tiny_root)
    sampler = CrossModalIdentitySampler(cat.train, [Modality.DEPTH, Modality.RGB], 2, 3, paired=True)
    for batch in sampler:
        depth, rgb = batch[:6], batch[6:]
        assert [cat.train[i].frame for i in depth] == [cat.train[i].frame for i in rgb]


def test_sampler_too_few_ids(tiny_root):
    cat = load_dataset("generic", tiny_root)
    with pytest.raises(UserError, match="fewer than ids_per_batch=5"):
        CrossModalIdentitySampler(cat.train, [Modality.RGB], 5, 2)


def test_store_gives_float_images_in_unit_range(tiny_root):
    cat = load_dataset("generic", tiny_root)
    store = ImageStore(cat.train, 16, 8, depth_encoding="normals")
    store.preload(progress=False)
    batch = store.batch([0, 1, 2])
    assert batch.shape == (3, 3, 16, 8) and batch.dtype == torch.float32
    assert 0 <= float(batch.min()) and float(batch.max()) <= 1
    depth_idx = next(i for i, s in enumerate(cat.train) if s.modality is Modality.DEPTH)
    single = store.get(depth_idx)
    assert single.shape == (depth_channels("normals"), 16, 8)   # 3 for normals, else 1
