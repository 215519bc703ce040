"""The synthetic generator: determinism, layout, modalities, splits, safety of the output folder."""

import hashlib
from pathlib import Path

import numpy as np
import pytest

from crossreid.data.images import decode
from crossreid.data.registry import load_dataset
from crossreid.data.synth import SynthParams, cached_dataset, generate, render_person
from crossreid.data.synth import writer as synth_writer
from crossreid.errors import UserError
from crossreid.modality import Modality

SMALL = dict(identities=6, val_identities=1, rgbd_cameras=1, ir_cameras=1, images_per_camera=2,
             height=64, width=32)


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(f.relative_to(folder).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("synth") / "a", SynthParams(**SMALL), progress=False)


def test_deterministic_and_seed_dependent(small, tmp_path):
    again = generate(tmp_path / "b", SynthParams(**SMALL), progress=False)
    assert digest(again) == digest(small)
    other = generate(tmp_path / "c", SynthParams(**SMALL, seed=1), progress=False)
    assert digest(other) != digest(small)


def test_layout_read_back_by_loader(small):
    cat = load_dataset("synthetic", small)
    # 6 ids: 3 test, 1 val, 2 train; cam 1 = rgb + depth, cam 2 = ir; 2 time steps each.
    assert {s.pid for s in cat.query} | {s.pid for s in cat.val} | set(cat.train_pids) == set(range(1, 7))
    assert len({s.pid for s in cat.query}) == 3 and len({s.pid for s in cat.val}) == 1
    assert len(cat.train) == 2 * (2 * 2 + 2)
    assert cat.query is not cat.train and cat.gallery == cat.query
    for s in cat.train + cat.val + cat.query:
        assert s.cam == (1 if s.modality in (Modality.RGB, Modality.DEPTH) else 2)
        assert s.path.is_file() and s.path.suffix == ".png"
    from collections import Counter
    per = Counter((s.modality.value, s.cam) for s in cat.query)
    assert per == {("rgb", 1): 3 * 2, ("depth", 1): 3 * 2, ("ir", 2): 3 * 2}
    assert not ({s.pid for s in cat.train} & {s.pid for s in cat.query})
    assert not ({s.pid for s in cat.val} & ({s.pid for s in cat.train} | {s.pid for s in cat.query}))


def test_modalities_decode_as_specified(small):
    cat = load_dataset("synthetic", small)
    rgb = next(s for s in cat.train if s.modality is Modality.RGB)
    depth = next(s for s in cat.train if s.modality is Modality.DEPTH and s.frame == rgb.frame)
    ir = next(s for s in cat.train if s.modality is Modality.IR)
    assert decode(rgb.path, Modality.RGB).shape == (64, 32, 3)
    mm = decode(depth.path, Modality.DEPTH)
    assert mm.shape == (64, 32) and (mm == 0).any()              # holes / invalid pixels
    body = mm[(mm > 0) & (mm < 6000)]
    assert body.size and 1000 < np.median(body) < 6000             # a person a few metres away
    from PIL import Image
    assert Image.open(ir.path).mode == "L"                          # no colour in infrared
    assert depth.frame == rgb.frame and depth.sequence == rgb.sequence  # co-registered pair


def test_identity_traits_fixed_and_images_vary():
    p = SynthParams(**SMALL)
    a, b = render_person(p, 1, 1, 0), render_person(p, 1, 1, 1)
    assert not np.array_equal(a["rgb"], b["rgb"])                   # nuisances change per image
    from crossreid.data.synth.traits import person_traits
    assert person_traits(0, 1) == person_traits(0, 1) and person_traits(0, 1) != person_traits(0, 2)
    from crossreid.data.synth import Renderer
    r = Renderer(p)
    assert r.shot(1, 1, 0).traits == r.shot(1, 2, 1).traits == person_traits(p.seed, 1)


def test_output_folder_protection_and_no_partial_output(small, tmp_path, monkeypatch):
    with pytest.raises(UserError, match="already exists"):
        generate(small, SynthParams(**SMALL), progress=False)
    calls = {"n": 0}
    real = synth_writer._png

    def failing(array, modality):
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError("disk full")
        return real(array, modality)

    monkeypatch.setattr(synth_writer, "_png", failing)
    with pytest.raises(OSError):
        generate(tmp_path / "broken", SynthParams(**SMALL), progress=False)
    assert not (tmp_path / "broken").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".broken")]


def test_cache_is_keyed_by_parameters(tmp_path):
    p = SynthParams(**SMALL)
    first = cached_dataset(p, tmp_path, progress=False)
    stamp = (first / "meta.json").stat().st_mtime_ns
    assert cached_dataset(p, tmp_path, progress=False) == first
    assert (first / "meta.json").stat().st_mtime_ns == stamp          # reused, not regenerated
    assert cached_dataset(SynthParams(**SMALL, seed=3), tmp_path, progress=False) != first


def test_bad_parameters():
    with pytest.raises(Exception, match="identities"):
        SynthParams(identities=2, val_identities=1)
    with pytest.raises(Exception, match="modalities"):
        SynthParams(modalities=["rgb", "sonar"])
