"""Bad input fed to each command as a user would: one `error:` line naming the true source and a
fix that works, and nothing half-written."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from crossreid.config import load_config
from crossreid.data.registry import load_dataset
from crossreid.engine.trainer import Trainer
from crossreid.errors import UserError

TINY = ["data.dataset=generic", "model.arch=resnet18", "data.height=32", "data.width=16",
        "train.ids_per_batch=2", "train.images_per_id=2", "train.iterations_per_epoch=2", "train.progress=false",
        "eval.directions=[rgb->depth,depth->rgb]", "train.epochs=1"]


def cfg(*extra):
    return load_config(None, [*TINY, *extra])


def run_cli(*args, cwd=None):
    proc = subprocess.run([sys.executable, "-m", "crossreid", *args], capture_output=True, text=True, cwd=cwd)
    return proc.returncode, proc.stdout, proc.stderr


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_unreadable_training_image_leaves_no_run_folder(tiny_root, tmp_path):
    catalog = load_dataset("generic", tiny_root)
    (catalog.train[5].path).write_bytes(b"not an image")
    with pytest.raises(UserError, match="unreadable or truncated image"):
        Trainer(cfg(), tmp_path / "run", catalog, progress=False)
    assert not (tmp_path / "run").exists()  # a corrected rerun needs no --overwrite


def test_failed_resume_keeps_the_runs_config(tiny_root, tmp_path):
    catalog = load_dataset("generic", tiny_root)
    run = tmp_path / "run"
    Trainer(cfg(), run, catalog, progress=False).fit()
    before = (run / "config.yaml").read_text()
    with pytest.raises(UserError, match="written under another config"):
        Trainer(cfg("optim.lr=0.01"), run, catalog, resume=True, progress=False)
    (run / "checkpoints" / "main-last.safetensors").write_bytes(b"corrupt")
    with pytest.raises(UserError, match="not a crossreid checkpoint"):
        Trainer(cfg("train.epochs=2"), run, catalog, resume=True, progress=False)
    assert (run / "config.yaml").read_text() == before


def test_a_run_stopped_before_its_first_checkpoint_points_to_overwrite(tiny_root, tmp_path):
    catalog = load_dataset("generic", tiny_root)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("left by a run killed in its first epoch\n")
    with pytest.raises(UserError, match="holds no checkpoint to resume; pass --overwrite") as exc:
        Trainer(cfg(), run, catalog, progress=False)
    assert "--resume" not in str(exc.value)
    with pytest.raises(UserError, match="nothing to resume.*start it again with --overwrite"):
        Trainer(cfg(), run, catalog, resume=True, progress=False)
    Trainer(cfg(), run, catalog, overwrite=True, progress=False).fit()  # the suggested fix works
    assert (run / "model.safetensors").is_file()


def test_a_second_trainer_does_not_reseed_the_process(tiny_root, tmp_path):
    catalog = load_dataset("generic", tiny_root)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    Trainer(cfg(), tmp_path / "a", catalog, progress=False).fit()
    assert torch.equal(torch.rand(3), expected)  # the caller's generator is untouched
    # and each run's randomness is its own: the same config trains the same weights in any order
    a = Trainer(cfg(), tmp_path / "b", catalog, progress=False)
    a.fit()
    torch.rand(100)
    b = Trainer(cfg(), tmp_path / "c", catalog, progress=False)
    b.fit()
    for (name, p), q in zip(a.method.state_dict().items(), b.method.state_dict().values()):
        assert torch.equal(p, q), name


def test_root_that_is_a_file_is_one_error_line(tmp_path):
    afile = tmp_path / "a-file"
    afile.write_text("x")
    for args in (["check", "sysu_mm01", "--root", str(afile)],
                 ["score", "f.npz", "--protocol", "synthetic", "--dataset", "generic", "--root", str(afile)]):
        code, _, err = run_cli(*args, cwd=tmp_path)
        if args[0] == "score":  # the features file is read after the protocol; give it one
            np.savez(tmp_path / "f.npz", paths=np.array(["a.png"]), features=np.zeros((1, 2), np.float32))
            code, _, err = run_cli(*args, cwd=tmp_path)
        assert code == 2 and "is a file, not the dataset folder" in one_error_line(err)


def test_refused_pickle_weights_are_one_line(tiny_root, tmp_path):
    import pickle

    with open(tmp_path / "w.pth", "wb") as fh:
        pickle.dump({"a": 1}, fh, protocol=4)  # torch warns about this protocol on its own
    code, _, err = run_cli("train", "demo", "--out", "run", f"model.pretrained={tmp_path / 'w.pth'}", *TINY,
                           f"data.root={tiny_root}", "--quiet", cwd=tmp_path)
    line = one_error_line(err)
    assert code == 2 and "pickled objects are refused" in line, err
    assert not (tmp_path / "run").exists()


def test_command_line_values_are_blamed_not_the_yaml(tmp_path):
    code, _, err = run_cli("train", "demo", "--out", "x", "train.epochs=abc", cwd=tmp_path)
    assert code == 2 and "command-line override 'train.epochs=abc'" in one_error_line(err)
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  epochs: abc\n")
    code, _, err = run_cli("train", str(config), "--out", "x", cwd=tmp_path)
    assert code == 2 and one_error_line(err).startswith(f"error: {config}: 'train.epochs'")
    assert not (tmp_path / "x").exists()


def test_empty_features_file_is_called_empty(tmp_path):
    np.savez(tmp_path / "none.npz")
    np.savez(tmp_path / "rows.npz", paths=np.array([], dtype=str), features=np.zeros((0, 8), np.float32))
    for name in ("none.npz", "rows.npz"):
        code, _, err = run_cli("score", name, "--protocol", "synthetic", cwd=tmp_path)
        assert code == 2 and "empty" in one_error_line(err), err


def test_8bit_depth_warns_once_naming_file_and_rule(tmp_path):
    for k in range(2):
        Image.fromarray(np.full((4, 4), 128, np.uint8), "L").save(tmp_path / f"d{k}.png")
    code = ("import sys; from crossreid.data.images import decode; from crossreid.modality import Modality\n"
            "d = decode(sys.argv[1], Modality.DEPTH); decode(sys.argv[2], Modality.DEPTH); print(float(d[0, 0]))")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "d0.png"), str(tmp_path / "d1.png")],
                          capture_output=True, text=True)
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and str(tmp_path / "d0.png") in warnings[0] and "/ 255 * 8000 mm" in warnings[0]
    assert float(proc.stdout) == pytest.approx(128 / 255 * 8000)
