"""Inference on the user's device: the CPU numbers pinned, --device, autocast, sharded evaluation, bad input."""

import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from retrieval_helpers import seeded_run

import crossreid
from crossreid import distributed as D
from crossreid.cli import cli
from crossreid.device import autocast_dtype, inference, resolve_device
from crossreid.errors import UserError


def invoke(*args) -> tuple[int, str, str]:
    res = CliRunner().invoke(cli, [str(a) for a in args])
    return res.exit_code, res.stdout, res.stderr

# Features of the seeded run (torch's initialisation under seed 0; 32×16 tiny images) as the
# CPU inference path computes them: the first eight dimensions and the norm of the first test
# image of each modality, and the sum of every test feature. Re-pinned when the decoded cache
# became uint8 (issue 23 §2): RGB and IR images are now exactly pixel/255 where the float16 cache
# rounded them (rounding the new images through float16 gives the old pins within 4e-7), and
# depth is stored in 16 bits where float16 held it (moves depth features by up to 2e-4).
PINNED = {
    "rgb/0006_c1_t0.png": ([0.029443, 0.0, 0.010342, 0.828089, 0.274271, 0.125071, 0.823974, 0.093828], 8.89159),
    "depth/0006_c1_t0.png": ([0.077218, 0.0, 0.080268, 1.095156, 0.279947, 0.224375, 1.260061, 0.338058], 13.70007),
    "ir/0006_c3_t0.png": ([0.049919, 0.0, 0.082392, 0.880474, 0.290835, 0.358173, 1.041116, 0.335368], 12.75553),
}
PINNED_SUM = 7163.800981093667


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    return seeded_run(tmp_path_factory.mktemp("seeded"))


def _pool(run, root, **options):
    from crossreid.data.registry import load_dataset
    from crossreid.experiment import TestStores
    from crossreid.retrieval.evaluate import pool_features

    embedder = crossreid.load_run(run, **options)
    catalog = load_dataset("generic", root)
    stores = TestStores.of(catalog, embedder.cfg.data)
    return catalog, pool_features(embedder.method, stores.query, stores.gallery, 5)[0]


def test_cpu_features_are_pinned(seeded):
    """The evaluation pass and the embed API give the features they gave before devices existed."""
    run, root = seeded
    catalog, qf = _pool(run, root)
    assert qf.dtype == np.float32
    assert float(qf.sum(dtype=np.float64)) == pytest.approx(PINNED_SUM, rel=1e-6)
    embedder = crossreid.load_run(run)
    for rel, (head, norm) in PINNED.items():
        row = next(i for i, s in enumerate(catalog.query) if s.path == root / rel)
        np.testing.assert_allclose(qf[row, :8], head, atol=2e-6)
        assert float(np.linalg.norm(qf[row])) == pytest.approx(norm, abs=1e-4)
        api = embedder.embed([root / rel], rel.split("/")[0])
        assert api.dtype == np.float32
        np.testing.assert_allclose(api[0], qf[row], atol=1e-5)


def test_extract_on_the_cpu_gives_the_pinned_features(seeded, tmp_path):
    run, root = seeded
    catalog, qf = _pool(run, root)
    out = tmp_path / "f.npz"
    code, _, err = invoke("extract", run, "--images", root / "manifest.csv", "--split", "test", "--out", out,
                          "--quiet", "--device", "cpu", "--batch-size", "4")
    assert code == 0, err
    with np.load(out, allow_pickle=False) as npz:
        rows = {p: i for i, p in enumerate(npz["paths"].tolist())}
        feats = npz["features"]
    assert feats.dtype == np.float32
    order = [rows[str(s.path.resolve())] for s in catalog.query]
    np.testing.assert_allclose(feats[order], qf, atol=1e-5)


def test_amp_autocasts_and_features_stay_float32(seeded):
    """On the CPU ``auto`` and ``off`` are float32 (bit-equal); ``bf16`` autocasts: close, not equal."""
    run, root = seeded
    paths = sorted((root / "rgb").glob("*.png"))[:6]
    plain = crossreid.load_run(run, "cpu").embed(paths, "rgb")
    assert np.array_equal(crossreid.load_run(run, "cpu", amp="off").embed(paths, "rgb"), plain)
    bf16 = crossreid.load_run(run, "cpu", amp="bf16").embed(paths, "rgb")
    assert bf16.dtype == np.float32
    diff = np.abs(bf16 - plain).max() / np.abs(plain).max()
    assert 1e-4 < diff < 0.05, diff
    cos = (bf16 * plain).sum(1) / (np.linalg.norm(bf16, axis=1) * np.linalg.norm(plain, axis=1))
    assert cos.min() > 0.999
    with pytest.raises(UserError, match="--amp fp8: unknown"):
        crossreid.load_run(run, "cpu", amp="fp8")


# ---------------------------------------------------------------- device strings (GPUs mocked)
@pytest.fixture
def gpus(monkeypatch):
    """Pretend torch sees ``n`` GPUs of compute capability ``major`` (call it with n, major)."""
    def set_gpus(n: int, major: int = 9):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: SimpleNamespace(major=major))
    return set_gpus


@pytest.mark.parametrize("spec, n, expect", [
    (None, 0, "cpu"), ("auto", 0, "cpu"), ("cpu", 2, "cpu"), (" CPU ", 0, "cpu"),
    (None, 2, "cuda:0"), ("cuda", 2, "cuda:0"), ("cuda:1", 2, "cuda:1"), (torch.device("cuda", 1), 2, "cuda:1"),
])
def test_resolve_device(gpus, spec, n, expect):
    gpus(n)
    assert resolve_device(spec, D.Dist()) == torch.device(expect)


@pytest.mark.parametrize("spec, n, rank, needle", [
    ("cuda", 0, None, "--device cuda: no CUDA GPU is visible to torch"),
    ("cuda:0", 0, None, "no CUDA GPU is visible"),
    ("cuda:2", 2, None, "--device cuda:2: there is no GPU 2; this machine has 2 (cuda:0 to cuda:1)"),
    ("cuda:1", 1, None, "there is no GPU 1; this machine has 1 (cuda:0)"),
    ("gpu", 2, None, "--device gpu: unknown device; use cpu, cuda or cuda:N"),
    ("cuda:x", 2, None, "unknown device"),
    ("mps", 0, None, "unknown device"),
    ("cuda:0", 2, 1, "under torchrun each process uses the GPU of its LOCAL_RANK (1 here)"),
    ("cuda", 2, 2, "process LOCAL_RANK=2 has no GPU of its own (2 visible); start at most 2 processes"),
    (None, 2, 2, "the default device (cuda): process LOCAL_RANK=2 has no GPU"),
])
def test_unusable_devices_are_one_clear_error(gpus, spec, n, rank, needle):
    gpus(n)
    dist = D.Dist() if rank is None else D.Dist(rank, 4, rank)
    with pytest.raises(UserError) as err:
        resolve_device(spec, dist)
    assert needle in str(err.value)


def test_under_torchrun_cuda_is_the_process_own_gpu(gpus, monkeypatch):
    gpus(4)
    for key, value in {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "3"}.items():
        monkeypatch.setenv(key, value)
    assert resolve_device("cuda") == resolve_device(None) == resolve_device("cuda:3") == torch.device("cuda", 3)


def test_autocast_dtype_follows_the_gpu(gpus):
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    gpus(1, major=8)  # Ampere and later: bfloat16
    assert autocast_dtype(cuda, "auto") is torch.bfloat16
    gpus(1, major=7)  # Volta / Turing: float16
    assert autocast_dtype(cuda, "auto") is torch.float16
    assert autocast_dtype(cuda, "bf16") is torch.bfloat16 and autocast_dtype(cpu, "fp16") is torch.float16
    assert autocast_dtype(cpu, "auto") is None and autocast_dtype(cuda, "off") is None
    assert autocast_dtype(cuda, None) is None  # the training services: as the process is set


def test_amp_off_on_a_gpu_is_true_float32_and_restores_the_process_setting():
    """cuDNN convolutions default to TF32 on recent GPUs; ``--amp off`` means the CPU's float32."""
    from crossreid.device import tf32_switches

    def state():
        return [getattr(obj, name) for obj, name, _ in tf32_switches()]

    before = state()
    assert before[1] in ("tf32", True)  # torch's default for cuDNN convolutions
    with inference(torch.device("cuda", 0), "off"):
        assert state() == [strict for _, _, strict in tf32_switches()]
        assert not torch.is_grad_enabled()
    assert state() == before
    with inference(torch.device("cpu"), "off"):
        assert state() == before


def test_inference_under_a_training_autocast_keeps_it_unless_asked():
    """The training services (amp None) leave the trainer's autocast alone; an explicit mode sets its own."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with inference(torch.device("cpu"), None):
            assert torch.is_autocast_enabled("cpu")
        with inference(torch.device("cpu"), "off"):
            assert not torch.is_autocast_enabled("cpu")


# ---------------------------------------------------------------- bad input on the command line
def one_error_line(code: int, err: str, needle: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err


def _command(name: str, run, root, out) -> list:
    return {
        "evaluate": ["evaluate", run, "--json", out, "--quiet"],
        "extract": ["extract", run, "--images", root / "manifest.csv", "--out", out, "--quiet"],
        "search": ["search", out, "--query", root / "rgb" / "0006_c1_t0.png", "--modality", "rgb", "--run", run],
        "export": ["export", run, "--out", out],
        "demo": ["demo", "--out", out, "--quiet"],
        "reproduce": ["reproduce", "baselines", "--out", out, "--seeds", "0", "--quiet"],
        "calibrate": ["calibrate", "--out", out, "--quiet"],
        "train": ["train", "demo", "--out", out, "--quiet"],
    }[name]


COMMANDS = ["evaluate", "extract", "search", "export", "demo", "reproduce", "calibrate", "train"]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_refuses_a_gpu_that_is_not_there(seeded, tmp_path, gpus, name):
    run, root = seeded
    out = tmp_path / "out"
    gpus(0)
    code, _, err = invoke(*_command(name, run, root, out), "--device", "cuda")
    one_error_line(code, err, "--device cuda: no CUDA GPU is visible to torch")
    gpus(2)
    code, _, err = invoke(*_command(name, run, root, out), "--device", "cuda:2")
    one_error_line(code, err, "--device cuda:2: there is no GPU 2; this machine has 2 (cuda:0 to cuda:1)")
    assert not out.exists()


def _out_of_memory(self, images, modality):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


@pytest.mark.parametrize("name, extra, fix", [
    ("evaluate", ["--batch-size", "3"], "batch of 3 images; pass a smaller --batch-size (now 3)"),
    ("extract", ["--batch-size", "4"], "batch of 4 images; pass a smaller --batch-size (now 4)"),
    ("export", ["--check-images", "5"], "batch of 5 images; pass a smaller --check-images (now 5)"),
])
def test_a_batch_too_big_for_the_gpu_is_one_line_naming_the_fix(seeded, tmp_path, monkeypatch, name, extra, fix):
    pytest.importorskip("onnxruntime") if name == "export" else None
    from crossreid.methods.one_stream import OneStream

    run, root = seeded
    out = tmp_path / "out"
    monkeypatch.setattr(OneStream, "embed", _out_of_memory)
    code, _, err = invoke(*_command(name, run, root, out), "--device", "cpu", *extra)
    one_error_line(code, err, f"cpu: out of GPU memory with a {fix}")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_the_embed_api_names_its_batch_size_when_out_of_memory(seeded, monkeypatch):
    from crossreid.device import DeviceOutOfMemory
    from crossreid.methods.one_stream import OneStream

    run, root = seeded
    monkeypatch.setattr(OneStream, "embed", _out_of_memory)
    with pytest.raises(DeviceOutOfMemory, match=r"batch of 2 images; pass a smaller --batch-size \(now 2\)"):
        crossreid.load_run(run, "cpu").embed(sorted((root / "ir").glob("*.png"))[:3], "ir", batch_size=2)


# ---------------------------------------------------------------- evaluate sharded under torchrun
SPY = """
import os, sys
import numpy as np
import crossreid.retrieval.evaluate as E
import crossreid.retrieval.extract as X
from crossreid.cli import main

rank = os.environ.get("RANK", "0")
real_pool, real_rows = E.pool_features, X.embed_rows

def pool_spy(*args, **kwargs):
    qf, gf = real_pool(*args, **kwargs)
    np.save(f"{sys.argv[1]}{rank}.npy", qf)
    return qf, gf

def rows_spy(model, store, rows, *args, **kwargs):
    with open(f"{sys.argv[1]}{rank}.rows", "a") as fh:
        print(len(rows), file=fh)
    return real_rows(model, store, rows, *args, **kwargs)

E.pool_features, X.embed_rows = pool_spy, rows_spy
main(sys.argv[2:])
"""


def test_evaluate_under_torchrun_embeds_each_image_once_and_equals_one_process(seeded, tmp_path):
    """Two gloo processes: each embeds half of the test pool, both end with every feature, equal to
    one process's; rank 0 alone prints and writes the results, which equal one process's."""
    import json
    import subprocess
    import sys

    from test_engine_ddp import _port

    run, _ = seeded
    spy = tmp_path / "spy.py"
    spy.write_text(SPY)
    args = ["evaluate", str(run), "--quiet", "--device", "cpu"]
    one = subprocess.run([sys.executable, str(spy), str(tmp_path / "one"), *args, "--json", str(tmp_path / "one.json")],
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                          "127.0.0.1", "--master_port", str(_port()), str(spy), str(tmp_path / "two"), *args,
                          "--json", str(tmp_path / "two.json"), "--batch-size", "4"],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    single = np.load(tmp_path / "one0.npy")
    embedded = {r: [int(n) for n in (tmp_path / f"{r}.rows").read_text().split()] for r in ("one0", "two0", "two1")}
    assert embedded["one0"] == [len(single)]
    assert embedded["two0"] == [(len(single) + 1) // 2] and embedded["two1"] == [len(single) // 2]
    for rank in (0, 1):
        np.testing.assert_allclose(np.load(tmp_path / f"two{rank}.npy"), single, atol=1e-5)
    assert two.stdout.count("direction") == one.stdout.count("direction") == 1  # one table, from rank 0
    a, b = (json.loads((tmp_path / f"{n}.json").read_text())["results"] for n in ("one", "two"))
    assert a.keys() == b.keys() == {"rgb->depth"}
    for key in ("rank1", "rank5", "map", "minp"):
        assert b["rgb->depth"]["mean"][key] == pytest.approx(a["rgb->depth"]["mean"][key], abs=1e-9)



@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_features_agree_with_the_cpu(seeded):
    """Where a GPU exists: float32 on the GPU (TF32 off) is the CPU's arithmetic; the default
    autocast is close."""
    run, root = seeded
    paths = sorted((root / "depth").glob("*.png"))[:8]
    cpu = crossreid.load_run(run, "cpu").embed(paths, "depth")
    exact = crossreid.load_run(run, "cuda", amp="off").embed(paths, "depth")
    np.testing.assert_allclose(exact, cpu, atol=1e-4 * np.abs(cpu).max())
    fast = crossreid.load_run(run, "cuda").embed(paths, "depth")
    assert fast.dtype == np.float32
    cos = (fast * cpu).sum(1) / (np.linalg.norm(fast, axis=1) * np.linalg.norm(cpu, axis=1))
    assert cos.min() > 0.999


def test_a_training_batch_too_big_for_the_gpu_is_one_line_suggesting_a_smaller_one(tiny_root, tmp_path, monkeypatch):
    import yaml

    from crossreid.methods.one_stream import OneStream

    def out_of_memory(self, batch, stage):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"dataset": "generic", "root": str(tiny_root), "height": 32, "width": 16},
        "model": {"arch": "resnet18"}, "train": {"ids_per_batch": 2, "images_per_id": 2, "epochs": 1}}))
    monkeypatch.setattr(OneStream, "training_step", out_of_memory)
    code, _, err = invoke("train", config, "--out", tmp_path / "run", "--quiet", "--device", "cpu")
    errors = [line for line in err.splitlines() if not line.startswith("init: ")]  # the initialisation line
    one_error_line(code, "\n".join(errors), "cpu: out of GPU memory in a training step (2 ids x 2 per modality x "
                   "3 modalities, 32x16) with a batch of 12 images; use a smaller batch, e.g. train.images_per_id=1, "
                   "or train.amp=bf16, and run again with --overwrite")


def test_a_direction_nothing_can_score_is_refused_before_any_image_is_embedded(tmp_path, monkeypatch):
    import crossreid.experiment as experiment

    run, _ = seeded_run(tmp_path, modalities=("rgb", "depth"))

    def embedded(*args, **kwargs):
        raise AssertionError("embedded the pools")
    monkeypatch.setattr(experiment, "pool_features", embedded)
    code, out, err = invoke("evaluate", run, "--direction", "rgb:ir", "--quiet", "--device", "cpu")
    assert code != 0 and "share none of the requested directions' modalities" in out + err
    assert not (run / "evaluation.json").exists()
