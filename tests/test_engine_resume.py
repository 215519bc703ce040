"""Exact resume: a run killed with SIGKILL mid-epoch and resumed ends bit-identical; bad resumes fail."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from crossreid.config import load_config
from crossreid.data.registry import load_dataset
from crossreid.engine.checkpoint import load_checkpoint
from crossreid.engine.trainer import TIMINGS, Trainer
from crossreid.errors import UserError

TINY = ["data.dataset=generic", "model.arch=resnet18", "data.height=32", "data.width=16",
        "train.ids_per_batch=2", "train.images_per_id=2", "train.iterations_per_epoch=3", "train.progress=false",
        "train.threads=1", "eval.directions=[rgb->depth,depth->rgb]", "train.epochs=2",
        "train.checkpoint_every_steps=1"]

# Runs a Trainer, but parks (sleeps) right after the mid-epoch checkpoint of epoch 1, step 2 is on
# disk, announcing it with a marker file, so the test can SIGKILL it at a known point.
CHILD = r"""
import sys, time
from pathlib import Path
import crossreid.engine.checkpointer as ck
import crossreid.engine.trainer as tr
from crossreid.config import load_config
from crossreid.data.registry import load_dataset

root, run, marker, *overrides = sys.argv[1:]
original = ck.save_checkpoint
def parked(path, model, state, *args):
    original(path, model, state, *args)
    if not state["epoch_done"] and (state["epoch"], state["step"]) == (1, 2):
        Path(marker).write_text("checkpoint written")
        time.sleep(600)
ck.save_checkpoint = parked
from crossreid.engine.process import setup_process
cfg = load_config(None, overrides)
setup_process(cfg.train)  # one thread, as in the parent: bit-exact sums need the same thread count
tr.Trainer(cfg, run, load_dataset("generic", root), progress=False).fit()
"""


def metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in rows]


def test_sigkill_mid_epoch_then_resume_is_bit_exact(tiny_root, tmp_path):
    from crossreid.engine.process import setup_process

    setup_process(load_config(None, TINY).train)  # train.threads=1, as the child process sets it
    catalog = load_dataset("generic", tiny_root)
    full = tmp_path / "full"
    Trainer(load_config(None, TINY), full, catalog, progress=False).fit()

    run, marker = tmp_path / "killed", tmp_path / "parked"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tiny_root), str(run), str(marker), *TINY],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while not marker.exists():
        assert child.poll() is None, child.stdout.read().decode()
        assert time.time() < deadline, "child never reached the mid-epoch checkpoint"
        time.sleep(0.1)
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    _, state, _, _ = load_checkpoint(run / "checkpoints/main-last.safetensors")
    assert (state["epoch"], state["step"], state["epoch_done"]) == (1, 2, False)
    assert not (run / "model.safetensors").exists()

    Trainer(load_config(None, TINY), run, catalog, resume=True, progress=False).fit()
    a, _, _, _ = load_checkpoint(full / "checkpoints/main-last.safetensors")
    b, _, _, _ = load_checkpoint(run / "checkpoints/main-last.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert metrics(run) == metrics(full)


def test_resume_refuses_other_config_and_other_method(tiny_root, tmp_path):
    catalog = load_dataset("generic", tiny_root)
    run = tmp_path / "run"
    Trainer(load_config(None, [*TINY, "train.epochs=1"]), run, catalog, progress=False).fit()
    before = (run / "checkpoints/main-last.safetensors").read_bytes()
    with pytest.raises(UserError, match=r"optim.lr: 0.00035 in the checkpoint, 0.001 now"):
        Trainer(load_config(None, [*TINY, "optim.lr=0.001"]), run, catalog, resume=True, progress=False).fit()
    with pytest.raises(UserError, match="written by method 'one_stream'"):
        Trainer(load_config(None, [*TINY, "method.name=two_stream"]), run, catalog, resume=True,
                progress=False).fit()
    assert (run / "checkpoints/main-last.safetensors").read_bytes() == before
    # train.epochs and progress options may change: the run goes on.
    Trainer(load_config(None, [*TINY, "train.epochs=2", "train.checkpoint_every_steps=2"]), run, catalog,
            resume=True, progress=False).fit()
    assert [r["epoch"] for r in metrics(run)] == [0, 1]


def test_resume_of_a_missing_checkpoint_is_an_error(tiny_root, tmp_path):
    catalog = load_dataset("generic", tiny_root)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(UserError, match="nothing to resume: the run folder holds no checkpoint.*--overwrite"):
        Trainer(load_config(None, TINY), run, catalog, resume=True, progress=False).fit()
    (run / "checkpoints" / "teacher-last.safetensors").write_bytes(b"another method's stage")
    with pytest.raises(UserError, match="no '<stage>-last.safetensors' for stages"):
        Trainer(load_config(None, TINY), run, catalog, resume=True, progress=False).fit()
    assert not (run / "config.yaml").exists()  # a failed resume writes nothing


def test_finished_run_keeps_what_keep_checkpoints_says_and_resumes_with_more_epochs(tiny_root, tmp_path):
    from crossreid.data.registry import load_dataset

    catalog = load_dataset("generic", tiny_root)
    sizes = {}
    for keep in ("all", "last", "none"):
        run = tmp_path / keep
        Trainer(load_config(None, [*TINY, f"train.keep_checkpoints={keep}"]), run, catalog, progress=False).fit()
        names = sorted(p.name for p in (run / "checkpoints").glob("*")) if (run / "checkpoints").exists() else []
        sizes[keep] = names
        assert (run / "model.safetensors").is_file()
    assert sizes["all"] == ["main-best.safetensors", "main-last.safetensors"]
    assert sizes["last"] == ["main-last.safetensors"]
    assert sizes["none"] == []
    # resume-by-choice: the kept '-last' continues for more epochs; the final weights stand in for '-best'
    more = load_config(None, [*TINY, "train.keep_checkpoints=last", "train.epochs=3"])
    Trainer(more, tmp_path / "last", catalog, resume=True, progress=False).fit()
    _, state, _, _ = load_checkpoint(tmp_path / "last/checkpoints/main-last.safetensors")
    assert state["epoch"] == 2


def test_full_disk_during_a_checkpoint_is_one_error_and_resume_is_exact(tiny_root, tmp_path, monkeypatch):
    import errno

    import crossreid.engine.checkpoint as checkpoint
    from crossreid.engine.process import setup_process

    setup_process(load_config(None, TINY).train)
    catalog = load_dataset("generic", tiny_root)
    full = tmp_path / "full"
    Trainer(load_config(None, TINY), full, catalog, progress=False).fit()

    written = checkpoint.save_file

    def disk_fills_up(tensors, filename, metadata):
        state = json.loads(metadata["crossreid_state"])
        if (state["epoch"], state["step"], state["epoch_done"]) == (1, 2, False):
            Path(filename).write_bytes(b"half a checkpoint")  # the device fills up mid-write
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)
        written(tensors, filename, metadata=metadata)

    run = tmp_path / "run"
    monkeypatch.setattr(checkpoint, "save_file", disk_fills_up)
    with pytest.raises(UserError) as failure:
        Trainer(load_config(None, TINY), run, catalog, progress=False).fit()
    message = str(failure.value)
    assert message.startswith(f"{run / 'checkpoints'}: could not write main-last.safetensors (No space left on device)")
    assert "--resume" in message and "\n" not in message
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["main-best.safetensors", "main-last.safetensors"]
    _, state, _, _ = load_checkpoint(run / "checkpoints/main-last.safetensors")  # the last good one
    assert (state["epoch"], state["step"], state["epoch_done"]) == (1, 1, False)

    monkeypatch.setattr(checkpoint, "save_file", written)
    Trainer(load_config(None, TINY), run, catalog, resume=True, progress=False).fit()
    assert (run / "model.safetensors").read_bytes() == (full / "model.safetensors").read_bytes()
    assert metrics(run) == metrics(full)
