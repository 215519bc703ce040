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
