"""Generator v2 behaviour: identity traits shared across modalities, metric depth relief,
depth encodings, difficulty presets, the calibration command and its bad-input errors."""

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from crossreid.cli import cli
from crossreid.config import load_config, resolve_config
from crossreid.data.images import RELIEF_MM, encode_depth, person_depth_mm
from crossreid.data.synth import Renderer, SynthParams
from crossreid.data.synth.scene import OCCLUDER
from crossreid.data.synth.traits import person_traits
from crossreid.errors import UserError

SMALL = dict(identities=6, val_identities=1, rgbd_cameras=1, ir_cameras=1, images_per_camera=2,
             height=64, width=32)


def test_new_traits_vary_between_persons_and_stay_fixed_per_person():
    people = [person_traits(0, pid) for pid in range(1, 81)]
    for name in ("bag", "hair_style"):
        assert len({getattr(p, name) for p in people}) >= 4
    assert len({p.top.kind for p in people}) >= 5 and len({p.bottom.kind for p in people}) == 3
    assert len({p.headwear.kind for p in people}) >= 4
    # Shape spreads are wide: belly, lean and chest depth differ by several centimetres / degrees.
    assert np.ptp([p.belly for p in people]) > 0.05 and np.ptp([p.chest_depth for p in people]) > 0.04
    assert np.ptp([p.lean for p in people]) > 0.15
    # A dress is one fabric: its skirt shares the top's colour and NIR reflectance.
    for p in people:
        if p.top.kind == "dress":
            assert p.bottom.kind == "skirt" and p.bottom.colour == p.top.colour and p.bottom.nir == p.top.nir
    r = Renderer(SynthParams(**SMALL))
    assert r.shot(2, 1, 0).traits == r.shot(2, 2, 1).traits == person_traits(0, 2)


def _body_depth(difficulty: str = "default", pid: int = 1) -> tuple[np.ndarray, np.ndarray]:
    r = Renderer(SynthParams(**SMALL, difficulty=difficulty))
    shot = r.shot(pid, 1, 0)
    mm = shot.images["depth"].astype(np.float32)
    body = shot.geometry.body & (shot.geometry.labels != OCCLUDER) & (mm > 0)
    return mm, body


@pytest.mark.parametrize("pid", [1, 2, 3])
def test_depth_has_metric_relief_and_encodings_show_it(pid):
    mm, body = _body_depth(pid=pid)
    lo, hi = np.percentile(mm[body], [2, 98])
    assert 100 < hi - lo < 1000                                   # tens of centimetres of relief
    glob = encode_depth(mm, "global")[0][body]
    rel = encode_depth(mm, "relative")[0][body]
    assert np.ptp(np.percentile(glob, [2, 98])) < 0.06              # the global range flattens it
    assert np.ptp(np.percentile(rel, [2, 98])) > 0.1                # the relative one shows it
    normals = encode_depth(mm, "normals")
    on = normals.any(axis=0)
    assert on.sum() > 0.5 * body.sum()
    vectors = 2 * normals[:, on] - 1
    assert np.allclose(np.linalg.norm(vectors, axis=0), 1.0, atol=1e-3)


def test_encodings_map_as_documented():
    d = np.full((40, 20), 3000.0, dtype=np.float32)
    d[:, :10] -= 300.0                                            # left half 30 cm nearer
    d[0, 0] = 0.0                                                 # a hole
    d[-1, -1] = 3000.0 + RELIEF_MM + 500                          # background beyond the window
    rel = encode_depth(d, "relative")[0]
    ref = person_depth_mm(d)                                      # the central strip's near surface
    assert ref == pytest.approx(2850.0)
    wall = np.full((40, 20), 5000.0, dtype=np.float32)
    wall[4:36, 9:12] = 2500.0                                     # a thin person before a wall filling the crop
    wall[28:, :] = 1500.0                                         # and a bench in front of the legs
    assert person_depth_mm(wall) == 2500.0
    assert rel[0, 0] == 0.0 and rel[-1, -1] == 0.0
    assert rel[5, 15] == pytest.approx(0.5 - (3000.0 - ref) / (2 * RELIEF_MM))
    assert rel[5, 2] - rel[5, 15] == pytest.approx(300.0 / (2 * RELIEF_MM))   # nearer is brighter
    # A plane tilted about the vertical axis: normals all point the same way, away from +x.
    plane = 3000.0 + 20.0 * np.arange(20, dtype=np.float32)[None, :].repeat(40, 0)
    n = 2 * encode_depth(plane, "normals")[:, 5:-5, 5:-5] - 1
    assert np.allclose(n[1], 0.0, atol=1e-6) and (n[0] < -0.1).all() and (n[2] > 0.5).all()
    with pytest.raises(UserError, match="depth_encoding.*global, relative, normals"):
        encode_depth(d, "hha")


def test_store_channels_and_cache_key_follow_the_encoding(tiny_root, tmp_path):
    from crossreid.data.pipeline import ImageStore
    from crossreid.data.registry import load_dataset
    from crossreid.modality import Modality

    cat = load_dataset("generic", tiny_root)
    depth = next(i for i, s in enumerate(cat.train) if s.modality is Modality.DEPTH)
    shapes = {e: ImageStore(cat.train, 16, 8, depth_encoding=e).get(depth).shape for e in ("global", "normals")}
    assert shapes == {"global": (1, 16, 8), "normals": (3, 16, 8)}
    keys = {ImageStore(cat.train, 16, 8, disk_dir=tmp_path, depth_encoding=e).disk_path()
            for e in ("global", "relative", "normals")}
    assert len(keys) == 3


def test_presets_set_levels_and_explicit_values_override():
    easy, default, hard = (SynthParams(**SMALL, difficulty=d) for d in ("easy", "default", "hard"))
    assert easy.occlusion < default.occlusion < hard.occlusion
    assert hard.trait_spread < default.trait_spread < easy.trait_spread
    assert SynthParams(**SMALL, difficulty="hard", noise=0.5).noise == 0.5
    assert SynthParams(**SMALL, difficulty="hard").key() != default.key()
    cams = {d: Renderer(p).cameras for d, p in (("default", default), ("hard", hard))}
    for a, b in zip(cams["default"], cams["hard"]):
        assert b.yaw_spread > a.yaw_spread and b.noise > a.noise and b.occlusion > a.occlusion
    spread = {d: np.std([person_traits(0, pid, p.trait_spread).shoulder for pid in range(1, 200)])
              for d, p in (("easy", easy), ("hard", hard))}
    assert spread["hard"] < spread["easy"]


def test_bad_names_fail_with_one_line_and_write_nothing(tmp_path):
    runner = CliRunner()
    out = tmp_path / "synth"
    res = runner.invoke(cli, ["synth", "--out", str(out), "--difficulty", "medium"])
    assert res.exit_code == 2 and not out.exists()
    assert "--difficulty" in res.output and "'easy', 'default' or 'hard'" in res.output
    assert len(res.output.strip().splitlines()) == 1
    res = runner.invoke(cli, ["calibrate", "--difficulty", "medium", "--out", str(tmp_path / "cal")])
    assert res.exit_code == 2 and "easy, default, hard" in res.output and not (tmp_path / "cal").exists()
    res = runner.invoke(cli, ["calibrate", "--set", "data.depth_encoding=hha", "--out", str(tmp_path / "cal")])
    assert res.exit_code == 2 and "data.depth_encoding" in res.output and "'normals'" in res.output
    assert not (tmp_path / "cal").exists()
    with pytest.raises(UserError, match="data.synth.difficulty"):
        load_config(resolve_config("demo"), ["data.synth.difficulty=medium"])


def test_calibration_table_pass_fail_with_tolerance():
    from crossreid.calibrate import TOLERANCE, calibration_table

    measured = {"rgb->rgb": 90.0, "depth->depth": 40.0 - TOLERANCE - 0.1, "rgb->depth": 12.0, "depth->rgb": 20.0}
    rows = {r["model"] + ":" + r["row"]: r for r in calibration_table("default", measured)}
    assert len(rows) == 3                                          # IR rows were not measured
    by_row = {r["row"]: r for r in rows.values()}
    assert by_row["RGB→RGB (single-modality)"]["pass"]
    assert not by_row["depth→depth (single-modality)"]["pass"]
    assert by_row["RGB↔depth (one-stream)"]["rank1"] == 16.0


def test_calibrate_command_trains_writes_and_reuses(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSREID_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "cal"
    args = ["calibrate", "--only", "depth", "--out", str(out), "--quiet",
            "--set", "data.synth.identities=10", "--set", "data.synth.val_identities=2",
            "--set", "data.synth.images_per_camera=2", "--set", "data.synth.height=64",
            "--set", "data.synth.width=32", "--set", "train.epochs=1", "--set", "train.iterations_per_epoch=1",
            "--set", "train.ids_per_batch=2", "--set", "train.images_per_id=2", "--set", "data.depth_encoding=relative"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "depth→depth" in res.output and (out / "calibration.json").is_file()
    assert "budget depth: demo + train.epochs=16" in res.output       # the recipe each model trained with
    assert (out / "depth" / "test_results.json").is_file()
    # By hand: a depth query of camera 1 sees only camera 2 (same camera removed): 5 test persons x 2
    # frames, 2 of them its own person, so a random ranking puts a match first with chance 2 / 10.
    assert "chance R1 (%): depth->depth 20.0;" in res.output
    again = CliRunner().invoke(cli, args)                          # reuses the finished model
    assert again.exit_code == 0 and "training depth" not in again.output
    changed = CliRunner().invoke(cli, [*args[:-1], "data.depth_encoding=normals"])
    assert changed.exit_code == 2 and "another config (data.depth_encoding" in changed.output
    assert Path(out / "calibration.md").read_text().startswith("calibration, difficulty default")


def test_calibration_one_stream_row_is_the_demo_run():
    from crossreid.calibrate import MODELS, model_config

    models = {m.name: m for m in MODELS}
    demo = load_config(resolve_config("demo_one_stream"))
    assert model_config(models["one_stream"], "default", []).model_dump() == demo.model_dump()
    hard = model_config(models["one_stream"], "hard", [])
    assert hard.data.synth["difficulty"] == "hard" and hard.train == demo.train
    depth = model_config(models["depth"], "default", [])     # single-modality: the fixed 400-step budget
    assert depth.train.epochs * depth.train.iterations_per_epoch == 400 and depth.data.modalities == ["depth"]
