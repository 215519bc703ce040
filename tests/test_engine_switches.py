"""Engine switches: bf16 autocast, channels_last, fp16 on CPU, deterministic mode, disk cache, sharded sampler."""

import json
import math

import pytest
import torch

import crossreid.data.pipeline as pipeline
from crossreid.config import load_config
from crossreid.data.registry import load_dataset
from crossreid.data.samplers import CrossModalIdentitySampler
from crossreid.engine.checkpoint import load_checkpoint
from crossreid.engine.trainer import TIMINGS, Trainer
from crossreid.errors import UserError
from crossreid.methods.one_stream import OneStream
from crossreid.modality import Modality

TINY = ["data.dataset=generic", "model.arch=resnet18", "data.height=32", "data.width=16",
        "train.ids_per_batch=2", "train.images_per_id=2", "train.iterations_per_epoch=2", "train.progress=false",
        "train.threads=1", "eval.directions=[rgb->depth,depth->rgb]", "train.epochs=1"]


def fit(catalog, run, *extra) -> list[dict]:
    Trainer(load_config(None, [*TINY, *extra]), run, catalog, progress=False).fit()
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("extra", [["train.amp=bf16"], ["train.channels_last=true"],
                                   ["train.amp=bf16", "train.channels_last=true"]])
def test_bf16_and_channels_last_give_finite_losses(tiny_root, tmp_path, monkeypatch, extra):
    seen = []
    step = OneStream.training_step

    def spy(self, batch, stage):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"),
                     batch.images.is_contiguous(memory_format=torch.channels_last)))
        return step(self, batch, stage)

    monkeypatch.setattr(OneStream, "training_step", spy)
    records = fit(load_dataset("generic", tiny_root), tmp_path / "run", *extra)
    assert math.isfinite(records[0]["loss"]) and math.isfinite(records[0]["val/mAP"])
    bf16, channels_last = "train.amp=bf16" in extra, "train.channels_last=true" in extra
    assert seen and all(s == (bf16, torch.bfloat16, channels_last) if bf16 else s[0] is False and
                        s[2] == channels_last for s in seen)


def test_fp16_on_cpu_is_an_error_before_anything_is_written(tiny_root, tmp_path):
    with pytest.raises(UserError, match="train.amp=fp16 needs a CUDA GPU"):
        fit(load_dataset("generic", tiny_root), tmp_path / "run", "train.amp=fp16")
    assert not (tmp_path / "run").exists()


def test_deterministic_runs_repeat_exactly(tiny_root, tmp_path):
    catalog = load_dataset("generic", tiny_root)
    runs = [fit(catalog, tmp_path / name, "train.deterministic=true", "train.epochs=2") for name in "ab"]
    strip = [[{k: v for k, v in r.items() if k not in TIMINGS} for r in run] for run in runs]
    assert strip[0] == strip[1] and len(strip[0]) == 2
    wa, _, _, _ = load_checkpoint(tmp_path / "a/checkpoints/main-last.safetensors")
    wb, _, _, _ = load_checkpoint(tmp_path / "b/checkpoints/main-last.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_disk_cache_is_reused_and_equals_memory(tiny_root, tmp_path, monkeypatch):
    catalog = load_dataset("generic", tiny_root)
    cache = tmp_path / "cache"
    disk = fit(catalog, tmp_path / "disk", "train.disk_cache=true", f"train.cache_dir={cache}")
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 2 and all(f.startswith("images-32x16-") and f.endswith(".safetensors") for f in files)
    memory = fit(catalog, tmp_path / "memory")
    assert [r["loss"] for r in disk] == [r["loss"] for r in memory]

    def no_decoding(*args):
        raise AssertionError("decoded although the disk cache exists")

    monkeypatch.setattr(pipeline, "load_resized", no_decoding)
    again = fit(catalog, tmp_path / "again", "train.disk_cache=true", f"train.cache_dir={cache}")
    assert [r["loss"] for r in again] == [r["loss"] for r in disk]
    # Another image size is another cache file.
    store = pipeline.ImageStore(catalog.train, 16, 8, depth_encoding="normals", disk_dir=cache,
                                  root=catalog.root)
    assert store.disk_path().name not in files


def test_sampler_shards_split_identities_and_keep_the_layout(tiny_root):
    catalog = load_dataset("generic", tiny_root)
    mods = [Modality.RGB, Modality.DEPTH]
    whole = list(CrossModalIdentitySampler(catalog.train, mods, 2, 2, seed=3))
    shards = [list(CrossModalIdentitySampler(catalog.train, mods, 2, 2, seed=3, rank=r, world=2)) for r in (0, 1)]
    pid = {i: s.pid for i, s in enumerate(catalog.train)}
    for b, (s0, s1) in enumerate(zip(*shards)):
        assert sorted(s0 + s1) == sorted(whole[b])
        for shard in (s0, s1):
            assert len(shard) == 4 and pid[shard[0]] == pid[shard[2]]  # rows aligned across modalities
            assert [catalog.train[i].modality for i in shard] == [Modality.RGB] * 2 + [Modality.DEPTH] * 2
        assert {pid[i] for i in s0}.isdisjoint({pid[i] for i in s1})
    resumed = list(CrossModalIdentitySampler(catalog.train, mods, 2, 2, seed=3).global_batches(start=1))
    assert resumed == whole[1:]
    with pytest.raises(UserError, match="ids_per_batch=3 does not split over 2 processes"):
        CrossModalIdentitySampler(catalog.train, mods, 3, 2, rank=0, world=2)
