"""The training input path: the compact image cache, the batch augmentation against a plain
per-image reference, the draw's documented distributions, prefetching, and each process
building only its own rows of a global batch (2 gloo processes against one)."""

import json
import os
import threading
import time

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image
from safetensors import safe_open

from crossreid.config import load_config
from crossreid.data.augment import Recipe, crop_rows, draw, erase, finish
from crossreid.data.images import decode, encode_depth
from crossreid.data.pipeline import LUMA_WEIGHTS, ImageStore, normalize, storage_dtype
from crossreid.data.registry import load_dataset
from crossreid.data.samplers import CrossModalIdentitySampler
from crossreid.engine.loader import BatchMaker, Prefetcher
from crossreid.engine.trainer import Trainer
from crossreid.errors import UserError
from crossreid.modality import Modality

RGB, DEPTH, IR = Modality.RGB, Modality.DEPTH, Modality.IR


# ---------------------------------------------------------------- the cache
@pytest.mark.parametrize("encoding", ["global", "relative", "normals"])
def test_cache_stores_pixels_and_depth_compactly(tiny_root, tmp_path, encoding):
    cat = load_dataset("generic", tiny_root)
    store = ImageStore(cat.train, 16, 8, depth_encoding=encoding)
    store.preload(progress=False)
    for m in (RGB, IR):  # the resized 8-bit pixels themselves, as PIL resizes them
        i = next(k for k, s in enumerate(cat.train) if s.modality is m)
        assert store.arrays[m].dtype == np.uint8
        pil = np.asarray(Image.fromarray(decode(cat.train[i].path, m)).resize((8, 16), Image.BILINEAR))
        assert np.array_equal(store.stored(i), pil.transpose(2, 0, 1) if m is RGB else pil[None])
        assert torch.equal(store.get(i), torch.from_numpy(store.stored(i).astype(np.float32)) / 255)
    i = next(k for k, s in enumerate(cat.train) if s.modality is DEPTH)
    assert store.arrays[DEPTH].dtype == storage_dtype(DEPTH, encoding)
    depth = np.asarray(Image.fromarray(decode(cat.train[i].path, DEPTH), mode="F").resize((8, 16), Image.NEAREST))
    step = 1 / (255 if store.arrays[DEPTH].dtype == np.uint8 else 65535)
    assert float((store.get(i) - torch.from_numpy(encode_depth(depth, encoding))).abs().max()) <= step / 2 + 1e-7
    # The disk cache: one safetensors file holding the same arrays, reopened without decoding.
    disk = ImageStore(cat.train, 16, 8, depth_encoding=encoding, disk_dir=tmp_path, root=cat.root)
    disk.preload(progress=False)
    with safe_open(str(disk.disk_path()), "np") as f:
        assert sorted(f.keys()) == sorted(m.value for m in store.modalities)
        for m in store.modalities:
            assert np.array_equal(f.get_tensor(m.value), store.arrays[m])
    again = ImageStore(cat.train, 16, 8, depth_encoding=encoding, disk_dir=tmp_path, root=cat.root)
    again._decoded = None  # would fail if called
    again.preload(progress=False)
    assert all(np.array_equal(again.arrays[m], store.arrays[m]) for m in store.modalities)


def test_depth_is_stored_in_the_precision_its_encoding_resolves():
    """A person's 10 cm of relief (a ramp at 2 m) through the cache: global depth (0.5-8 m over [0, 1])
    keeps it to 0.1 mm and in over 100 levels (8 bits would leave 4 levels, 15 mm error); relative
    depth (±600 mm) within half its 8-bit step, 2.4 mm."""
    from crossreid.data.pipeline import resize_stored, to_unit

    ramp = np.linspace(2000, 2100, 32 * 16, dtype=np.float32).reshape(32, 16)
    for encoding, mm_per_unit, limit_mm in (("global", 7500, 0.1), ("relative", 1200, 1200 / 510)):
        stored = to_unit(resize_stored(ramp, DEPTH, 32, 16, encoding))
        error_mm = float((stored - torch.from_numpy(encode_depth(ramp, encoding))).abs().max()) * mm_per_unit
        assert error_mm <= limit_mm + 1e-4, encoding
        if encoding == "global":
            assert len(torch.unique(stored)) > 100


def test_a_broken_cache_file_is_one_clear_error(tiny_root, tmp_path):
    cat = load_dataset("generic", tiny_root)
    store = ImageStore(cat.train, 16, 8, depth_encoding="normals", disk_dir=tmp_path, root=cat.root)
    store.disk_path().write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(UserError, match="unreadable image cache .*delete it"):
        store.preload(progress=False)


# ---------------------------------------------------------------- augmentation
def random_store(n: int, h: int, w: int, seed: int = 0, depth: str = "global") -> ImageStore:
    """A store of n random images cycling RGB, IR, depth (uint16 for global depth), without files."""
    from crossreid.data.samples import Sample

    mods = [RGB, IR, DEPTH]
    store = ImageStore([Sample(f"img{i}", i // 3, 0, mods[i % 3]) for i in range(n)], h, w, depth_encoding=depth)
    rng = np.random.default_rng(seed)
    store.arrays = {m: rng.integers(0, np.iinfo(storage_dtype(m, depth)).max + 1, store.shapes[m],
                                    dtype=storage_dtype(m, depth)) for m in store.modalities}
    store._ready[:] = True
    return store


def reference(store: ImageStore, indices, d, pad: int) -> torch.Tensor:
    """The documented augmentation, image by image: flip, zero-pad, crop, grey, normalise, erase."""
    out = []
    for p, i in enumerate(indices):
        x = store.get(i).expand(3, -1, -1)
        h, w = x.shape[1:]
        if d.flip[p]:
            x = x.flip(-1)
        dy, dx = d.shift[p]  # the image moves down by dy, right by dx
        x = torch.nn.functional.pad(x, (pad, pad, pad, pad))[:, pad - dy:pad - dy + h, pad - dx:pad - dx + w]
        if d.grey[p]:
            x = (x * torch.tensor(LUMA_WEIGHTS).view(3, 1, 1)).sum(0, keepdim=True).expand(3, -1, -1)
        x = normalize(x[None])[0]
        y0, y1, x0, x1 = d.erase[p]
        x[:, y0:y1, x0:x1] = 0
        out.append(x)
    return torch.stack(out)


def test_batch_augmentation_equals_the_per_image_reference():
    store, pad = random_store(60, 24, 12), 5
    indices = [0, 3, 6, 9, 12, 15, 1, 4, 7, 10, 13, 16, 2, 5, 8, 11, 14, 17]  # RGB, IR, depth blocks
    colour = np.array([store.samples[i].modality is RGB for i in indices])
    for step in range(4):
        d = draw((0, 0, 0, step), Recipe(True, pad, 0.7, 0.6), colour, 24, 12)
        assert d.flip.any() and d.grey.any() and (d.erase[:, 1] > 0).any() and (d.shift != 0).any()
        parts = crop_rows(store, indices, d)
        assert [(p.start, p.stop, p.pixels.dtype) for p in parts] == [(0, 6, torch.uint8), (6, 12, torch.uint8),
                                                                      (12, 18, torch.uint16)]
        got = finish(parts, d, torch.empty(len(indices), 3, 24, 12))
        torch.testing.assert_close(got, reference(store, indices, d, pad), rtol=0, atol=2e-6)


def test_batched_and_per_row_erasing_agree():
    d = draw((3,), Recipe(erasing=1.0), np.zeros(16, bool), 20, 10)
    x = torch.randn(16, 3, 20, 10)
    a, b = x.clone(), x.clone()
    erase(a, d.erase, batched=True)
    erase(b, d.erase, batched=False)
    assert torch.equal(a, b) and not torch.equal(a, x)


def test_draw_follows_the_documented_distributions():
    b, h, w, pad = 4000, 64, 32, 4
    colour = np.arange(b) % 2 == 0
    d = draw((7,), Recipe(True, pad, 0.5, 0.3), colour, h, w)
    assert abs(d.flip.mean() - 0.5) < 0.03
    assert d.shift.min() == -pad and d.shift.max() == pad
    assert np.allclose(np.bincount(d.shift[:, 0] + pad) / b, 1 / (2 * pad + 1), atol=0.02)
    erased = d.erase[:, 1] > d.erase[:, 0]
    assert abs(erased.mean() - 0.5) < 0.03
    eh, ew = (d.erase[erased, 1] - d.erase[erased, 0]), (d.erase[erased, 3] - d.erase[erased, 2])
    area = eh * ew / (h * w)
    assert area.min() > 0.015 and area.max() < 0.36 and 0.1 < area.mean() < 0.2
    assert (d.erase[erased, 1] <= h).all() and (d.erase[erased, 3] <= w).all() and (d.erase[erased] >= 0).all()
    assert not d.grey[~colour].any() and abs(d.grey[colour].mean() - 0.3) < 0.03
    # Paired blocks share flip and shift row by row; erasing is drawn per image.
    p = draw((7,), Recipe(True, pad, 0.5), np.zeros(200, bool), h, w, groups=2)
    assert np.array_equal(p.flip[:100], p.flip[100:]) and np.array_equal(p.shift[:100], p.shift[100:])
    assert not np.array_equal(p.erase[:100], p.erase[100:])
    # Switching one augmentation off leaves the others' draws as they were.
    q = draw((7,), Recipe(False, pad, 0.5, 0.3), colour, h, w)
    assert not q.flip.any() and np.array_equal(q.shift, d.shift) and np.array_equal(q.erase, d.erase)
    assert np.array_equal(draw((7,), Recipe(True, pad, 0.5, 0.3), colour, h, w).erase, d.erase)
    assert not np.array_equal(draw((8,), Recipe(True, pad, 0.5, 0.3), colour, h, w).erase, d.erase)


def test_paired_rows_stay_aligned_through_the_whole_path():
    store = random_store(30, 16, 8, depth="normals")   # normals: 3-channel uint16 depth
    store.arrays[RGB][:] = store.arrays[RGB][:1]       # every RGB and depth image the same picture
    store.arrays[DEPTH][:] = store.arrays[RGB][:1].astype(np.uint16) * 257  # v / 255 == 257 v / 65535
    rgb = [i for i in range(30) if store.samples[i].modality is RGB][:4]
    depth = [i for i in range(30) if store.samples[i].modality is DEPTH][:4]
    d = draw((1,), Recipe(True, 3), np.zeros(8, bool), 16, 8, groups=2)
    out = finish(crop_rows(store, rgb + depth, d), d, torch.empty(8, 3, 16, 8))
    # equal but for float rounding of the two scales (1/255 against 257/65535)
    assert torch.allclose(out[:4], out[4:], atol=1e-5) and not torch.allclose(out[0], out[1], atol=0.1)


# ---------------------------------------------------------------- prefetching
def test_prefetcher_gives_the_inline_batches_and_times_the_wait():
    def make(item):
        time.sleep(0.02)
        return item * 2

    with Prefetcher(make, range(6), torch.device("cpu"), ahead=1) as ahead:
        got = list(ahead)
    with Prefetcher(make, range(6), torch.device("cpu"), ahead=0) as inline:
        assert list(inline) == got == [0, 2, 4, 6, 8, 10]
    assert inline.waited >= 0.11 and 0.015 <= ahead.waited
    # The consumer's own work overlaps the next batch: the wait all but disappears.
    with Prefetcher(make, range(6), torch.device("cpu"), ahead=1) as ahead:
        for _ in ahead:
            time.sleep(0.04)
    assert ahead.waited < 0.04


def test_a_batch_stays_untouched_while_the_next_ones_are_prepared():
    from crossreid.engine.trainer import PREFETCH

    store = random_store(30, 16, 8)
    maker = BatchMaker(store, Recipe(True, 2), {i: i for i in range(10)}, torch.device("cpu"), buffers=PREFETCH + 2)
    rows = list(range(0, 30, 3)) + list(range(1, 30, 3))

    def make(step):
        return maker((step,), rows, list(range(20)), [RGB, IR])

    with Prefetcher(make, range(8), torch.device("cpu"), ahead=PREFETCH) as batches:
        for batch in batches:
            kept = batch.images.clone()
            time.sleep(0.05)   # the producer runs ahead meanwhile
            assert torch.equal(batch.images, kept)


def test_prefetcher_raises_the_producers_error_and_stops_its_thread():
    def make(item):
        if item == 2:
            raise UserError("bad batch")
        return item

    with pytest.raises(UserError, match="bad batch"):
        with Prefetcher(make, range(5), torch.device("cpu")) as batches:
            list(batches)
    before = threading.active_count()
    with Prefetcher(lambda i: i, range(1000), torch.device("cpu")) as batches:
        next(iter(batches))   # leave early: the thread must stop
    assert threading.active_count() <= before


# ---------------------------------------------------------------- the trainer's batches
TINY = ["data.dataset=generic", "model.arch=resnet18", "data.height=32", "data.width=16", "train.ids_per_batch=2",
        "train.images_per_id=2", "train.iterations_per_epoch=3", "train.progress=false", "train.threads=1",
        "eval.directions=[rgb->depth,depth->rgb]", "train.epochs=1", "train.random_erasing=0.5",
        "train.random_grayscale=0.5", "train.pad=3"]


def test_trainer_logs_the_data_wait(tiny_root, tmp_path, monkeypatch):
    """Batches that take 0.3 s each to make: the loop waits at least that long for the first one, at most
    as long as all three took (the steps overlap the later ones)."""
    make = Trainer.make_batch

    def slow(self, *args, **kwargs):
        time.sleep(0.3)
        return make(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "make_batch", slow)
    cfg = load_config(None, TINY)
    Trainer(cfg, tmp_path / "run", load_dataset("generic", tiny_root), progress=False).fit()
    record = json.loads((tmp_path / "run/metrics.jsonl").read_text().splitlines()[0])
    elapsed = 3 * 12 / record["images_per_s"]           # 3 steps of 2 ids x 2 images x 3 modalities
    assert 0.3 <= record["data_wait"] * elapsed < 1.5


def test_each_training_batch_is_augmented_by_the_draw_of_its_seed_stage_epoch_and_step(tiny_root, tmp_path,
                                                                                      monkeypatch):
    seen, call = [], BatchMaker.__call__

    def record(self, key, indices, *args, **kwargs):
        batch = call(self, key, indices, *args, **kwargs)
        seen.append((key, indices, batch.images.clone()))
        return batch

    monkeypatch.setattr(BatchMaker, "__call__", record)
    cfg = load_config(None, [*TINY, "train.epochs=2", "train.seed=4"])
    trainer = Trainer(cfg, tmp_path / "run", load_dataset("generic", tiny_root), progress=False)
    trainer.fit()
    assert [key for key, _, _ in seen] == [(4, 0, e, s) for e in range(2) for s in range(3)]
    again = BatchMaker(trainer.store, Recipe.of(cfg.train), trainer.label_map, torch.device("cpu"))
    for key, indices, images in seen:   # the same draw, made afresh: the batch depends on nothing else
        assert torch.equal(call(again, key, indices, list(range(len(indices))), [RGB, DEPTH, IR]).images, images)


def _rank_rows(rank: int, world: int, root: str, port: int, out: str) -> None:
    """A process of a gloo job: the batches this rank's BatchMaker builds for three global batches."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.save(_batches(root, rank, world), out.format(rank))
    finally:
        torch.distributed.destroy_process_group()


def _batches(root: str, rank: int, world: int) -> list[dict]:
    cfg = load_config(None, TINY)
    cat = load_dataset("generic", root)
    store = ImageStore.for_data(cat.train, cfg.data)
    mods = [RGB, DEPTH]
    sampler = CrossModalIdentitySampler(cat.train, mods, 2, 2, seed=5, rank=rank, world=world)
    maker = BatchMaker(store, Recipe.of(cfg.train), cat.label_map, torch.device("cpu"), global_layout=world > 1)
    out = []
    for step, indices in enumerate(sampler.global_batches()):
        b = maker((0, 0, 0, step), indices, sampler.shard(), mods)
        out.append({"images": b.images.clone(), "labels": b.labels, "indices": b.indices,
                    "whole": b.whole.labels, "rows": b.rows})
    return out


def test_two_processes_build_exactly_their_rows_of_the_one_process_batch(tiny_root, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "rank{}.pt")
    mp.spawn(_rank_rows, args=(2, str(tiny_root), port, out), nprocs=2, join=True)
    ranks = [torch.load(out.format(r)) for r in range(2)]
    alone = _batches(str(tiny_root), 0, 1)
    for step, whole in enumerate(alone):
        r0, r1 = ranks[0][step], ranks[1][step]
        assert r0["rows"] == r1["rows"] == whole["rows"] // 2
        for r, part in enumerate((r0, r1)):
            rows = [m * 4 + r * 2 + j for m in range(2) for j in range(2)]   # rank r's rows: its identity per block
            assert torch.equal(part["images"], whole["images"][rows])
            assert part["indices"] == [whole["indices"][p] for p in rows]
            assert torch.equal(part["whole"], whole["labels"])
    assert any(not torch.equal(a["images"], b["images"]) for a, b in zip(alone, alone[1:]))
