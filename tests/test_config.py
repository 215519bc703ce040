from pathlib import Path

import pytest

from crossreid.config import apply_overrides, load_config, resolve_config
from crossreid.errors import UserError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_and_shipped_demo():
    cfg = load_config(resolve_config("demo"))
    assert cfg.method.name == "one_stream"
    assert cfg.data.modalities == ["rgb", "depth", "ir"]


def test_base_inheritance_and_overrides(tmp_path):
    write(tmp_path / "base.yaml", "train:\n  epochs: 5\n  seed: 3\nmodel:\n  arch: resnet34\n")
    child = write(tmp_path / "child.yaml", "base: base.yaml\ntrain:\n  epochs: 7\n")
    cfg = load_config(child, ["optim.lr=0.01", "data.modalities=[rgb,depth]"])
    assert (cfg.train.epochs, cfg.train.seed, cfg.model.arch) == (7, 3, "resnet34")
    assert cfg.optim.lr == 0.01 and cfg.data.modalities == ["rgb", "depth"]


def test_unknown_key_suggests_nearest(tmp_path):
    path = write(tmp_path / "c.yaml", "train:\n  epoch: 5\n")
    with pytest.raises(UserError, match=r"unknown key 'train.epoch'; did you mean 'train.epochs'"):
        load_config(path)


def test_unknown_section(tmp_path):
    with pytest.raises(UserError, match=r"unknown key 'trian'; did you mean 'train'"):
        load_config(None, ["trian.epochs=3"])


def test_wrong_type_names_key(tmp_path):
    with pytest.raises(UserError, match=r"'train.epochs'.*'abc'"):
        load_config(None, ["train.epochs=abc"])


def test_bad_modality_and_circular_base(tmp_path):
    with pytest.raises(UserError, match="modality"):
        load_config(None, ["data.modalities=[rgb,sonar]"])
    with pytest.raises(UserError, match=r"data.modalities.*no modality given; name one or more of rgb, depth, ir"):
        load_config(None, ["data.modalities=[]"])
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(UserError, match="circular"):
        load_config(tmp_path / "a.yaml")


def test_malformed_override_and_missing_file(tmp_path):
    with pytest.raises(UserError, match="section.key=value"):
        apply_overrides({}, ["novalue"])
    with pytest.raises(UserError, match="no such config"):
        resolve_config(tmp_path / "nope.yaml")


def test_model_base_width_reaches_every_method_network():
    from crossreid.methods.base import build_net

    cfg = load_config(resolve_config("demo"), ["model.base_width=16"])
    net = build_net(cfg.model, num_classes=5)
    assert net.backbone.conv1.out_channels == 16 and net.embedding_dim == 8 * 16  # layer4 width, BNNeck
    assert load_config(resolve_config("demo")).model.base_width == 64  # the standard ResNet by default
    with pytest.raises(UserError, match="model.base_width"):
        load_config(None, ["model.base_width=4"])


def test_synth_parameters_are_checked_and_filled_in():
    cfg = load_config(None, ["data.synth.identities=30"])
    assert cfg.data.synth["identities"] == 30 and cfg.data.synth["images_per_camera"] == 6  # defaults filled in
    cfg.data.synth = {"identities": 40}  # assignment is checked and filled in too
    assert cfg.data.synth["identities"] == 40 and cfg.data.synth["difficulty"] == "default"
    assert load_config(None, ["data.root=/elsewhere", "data.synth.anything=1"]).data.synth == {"anything": 1}
    with pytest.raises(UserError, match=r"'data.synth.identities': Input should be greater than or equal to 2"):
        load_config(None, ["data.synth.identities=1"])
    # An error of the values together (pydantic gives it no key) is one line too.
    with pytest.raises(UserError, match=r"'data.synth': identities=12, .* leave 0 training and 6 test identities"):
        load_config(None, ["data.synth.identities=12"])


def test_config_does_not_load_the_data_package():
    """config sits above data: importing it loads no dataset loader, and no data module imports config."""
    import subprocess
    import sys

    from test_import_graph import imports_of, module_names

    code = "import sys, crossreid.config; print(sorted(m for m in sys.modules if m.startswith('crossreid.data')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    modules = module_names()
    up = {m for m, path in modules.items() if m.startswith("crossreid.data") and "crossreid.config" in
          imports_of(m, path, modules)}
    assert not up, f"data modules import crossreid.config: {sorted(up)}"


def test_depth_encodings_of_the_config_are_the_encoders():
    from typing import get_args

    from crossreid.config import DataConfig
    from crossreid.data.images import DEPTH_ENCODINGS

    assert get_args(DataConfig.model_fields["depth_encoding"].annotation) == DEPTH_ENCODINGS
