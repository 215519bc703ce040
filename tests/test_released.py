"""`crossreid import-weights`: AGW's released checkpoint format, read safely, imported by name,
exported back, and evaluated under our protocols; every bad input is one line and no folder."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from crossreid.cli import cli
from crossreid.engine.runs import load_run
from crossreid.errors import UserError
from crossreid.modality import Modality
from crossreid.released import AGW, export_released, import_released, rename

SYSU_IDS = 395

# ---- the authors' layout, written from their model definitions -----------------------------------
# mangye16/Cross-Modal-Re-ID-baseline @ e817a26: resnet.py's ResNet(Bottleneck, [3, 4, 6, 3]) has
# conv1, bn1, layer1-4 and no fc; model.py's embed_net holds three of them (thermal_module.thermal,
# visible_module.visible, base_resnet.base), NL_2 (2 x Non_local(512)) and NL_3 (3 x Non_local(1024))
# with one intermediate channel (g is a Sequential(conv); W is Sequential(conv, BatchNorm2d)),
# bottleneck = BatchNorm1d(2048) and classifier = Linear(2048, n_class, bias=False).


def _bn(prefix: str, c: int) -> dict:
    return {f"{prefix}weight": (c,), f"{prefix}bias": (c,), f"{prefix}running_mean": (c,),
            f"{prefix}running_var": (c,), f"{prefix}num_batches_tracked": ()}


def authors_resnet50(prefix: str) -> dict:
    shapes = {f"{prefix}conv1.weight": (64, 3, 7, 7), **_bn(f"{prefix}bn1.", 64)}
    inplanes = 64
    for layer, (planes, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3)), start=1):
        for b in range(blocks):
            p = f"{prefix}layer{layer}.{b}."
            shapes.update({f"{p}conv1.weight": (planes, inplanes, 1, 1), **_bn(f"{p}bn1.", planes),
                           f"{p}conv2.weight": (planes, planes, 3, 3), **_bn(f"{p}bn2.", planes),
                           f"{p}conv3.weight": (planes * 4, planes, 1, 1), **_bn(f"{p}bn3.", planes * 4)})
            if b == 0:
                shapes.update({f"{p}downsample.0.weight": (planes * 4, inplanes, 1, 1),
                               **_bn(f"{p}downsample.1.", planes * 4)})
            inplanes = planes * 4
    return shapes


def authors_nonlocal(prefix: str, c: int) -> dict:
    return {f"{prefix}g.0.weight": (1, c, 1, 1), f"{prefix}g.0.bias": (1,),
            f"{prefix}W.0.weight": (c, 1, 1, 1), f"{prefix}W.0.bias": (c,), **_bn(f"{prefix}W.1.", c),
            f"{prefix}theta.weight": (1, c, 1, 1), f"{prefix}theta.bias": (1,),
            f"{prefix}phi.weight": (1, c, 1, 1), f"{prefix}phi.bias": (1,)}


def authors_agw_shapes(n_class: int = SYSU_IDS) -> dict:
    shapes = {**authors_resnet50("thermal_module.thermal."), **authors_resnet50("visible_module.visible."),
              **authors_resnet50("base_resnet.base.")}
    for i in range(2):
        shapes.update(authors_nonlocal(f"NL_2.{i}.", 512))
    for i in range(3):
        shapes.update(authors_nonlocal(f"NL_3.{i}.", 1024))
    shapes.update({**_bn("bottleneck.", 2048), "classifier.weight": (n_class, 2048)})
    return shapes


UNUSED = ("visible_module.visible.layer", "thermal_module.thermal.layer", "base_resnet.base.conv1.",
          "base_resnet.base.bn1.")


def authors_state_dict(n_class: int = SYSU_IDS, seed: int = 0) -> dict:
    """Random values where the network runs; the never-run copies as cheap zero views of full shape."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in authors_agw_shapes(n_class).items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(80 * 700)
        elif key.startswith(UNUSED):
            out[key] = torch.zeros(1).expand(shape)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=g) + 0.5
        else:
            out[key] = torch.randn(shape, generator=g) * 0.05
    return out


def save_like_2020(path: Path, state: dict, epoch: int = 80) -> Path:
    """train.py's dict, saved as the torch 1.x of the time did (legacy format, pickle protocol 2),
    with numpy 1.x's module names for the metric arrays and scalars."""
    saved = {"net": state, "cmc": np.linspace(0.475, 0.99, 50).astype(np.float32),
             "mAP": np.float64(0.4765), "mINP": np.float64(0.353), "epoch": epoch}
    torch.save(saved, path, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    return path


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("released") / "sysu_agw_p4_n8_lr_0.1_seed_0_best.t"
    return save_like_2020(path, authors_state_dict())


def images(n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 64, 32, generator=torch.Generator().manual_seed(seed))


# ---- the mapping -------------------------------------------------------------------------------

def test_mapping_is_one_to_one_over_the_authors_layout():
    shapes = authors_agw_shapes()
    used = [k for k in shapes if not k.startswith(UNUSED)]
    ours = {AGW.to_ours(k) for k in used}
    assert None not in ours and len(ours) == len(used)
    assert all(AGW.to_theirs(AGW.to_ours(k)) == k for k in used)
    assert not any(k.startswith(UNUSED) for k in shapes if AGW.to_ours(k) is not None and k not in used)


def test_released_file_imports_with_nothing_missing_or_unexpected(released, tmp_path):
    report = import_released("agw", released, tmp_path / "run", "sysu_mm01")
    shapes = authors_agw_shapes()
    skipped = sum(1 for k in shapes if k.startswith(UNUSED))
    assert report.mapped == len(shapes) - skipped and sum(report.skipped.values()) == skipped
    assert report.skipped["visible_module.visible.layer"] == report.skipped["thermal_module.thermal.layer"] > 0
    assert report.num_classes == SYSU_IDS and report.recorded["epoch"] == 80
    assert report.recorded == {"epoch": 80, "R1": 47.5, "R5": 51.7, "R10": 56.96, "R20": 67.47, "mAP": 47.65,
                               "mINP": 35.3}
    assert report.options == {"non_local": True, "pooling": "gem", "nonlocal_inter": "released"}
    cfg, method = load_run(tmp_path / "run")
    state = method.state_dict()
    theirs = authors_state_dict()  # same seed: the values the file holds
    for key, tensor in state.items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(tensor, theirs[AGW.to_theirs(key)]), key
    assert torch.equal(state["backbone.stems.ir.conv1.weight"], theirs["thermal_module.thermal.conv1.weight"])
    assert (cfg.data.dataset, cfg.model.arch, cfg.model.pretrained) == ("sysu_mm01", "resnet50", "none")
    with torch.no_grad():
        feats = method.embed(images(), Modality.IR)
    assert feats.shape == (3, 2048) and torch.allclose(feats.norm(dim=1), torch.ones(3))


def test_export_to_the_authors_layout_and_back_gives_identical_features(released, tmp_path):
    _, first = load_run(_imported(released, tmp_path / "a"))
    with torch.no_grad():
        for p in first.parameters():
            p.add_(torch.randn_like(p) * 0.01)  # ours now differs from the fixture
    exported = export_released(first.state_dict(), AGW)
    assert set(exported) == {k for k in authors_agw_shapes() if not k.startswith(UNUSED)}
    path = tmp_path / "exported.t"
    torch.save({"net": exported, "epoch": 3}, path)  # today's zip format and numpy names
    _, second = load_run(_imported(path, tmp_path / "b"))
    x = images()
    with torch.no_grad():
        for m in (Modality.RGB, Modality.IR):
            assert torch.equal(first.embed(x, m), second.embed(x, m))


def _imported(path: Path, out: Path) -> Path:
    import_released("agw", path, out, "sysu_mm01")
    return out


# ---- evaluation under our protocols, from the command line ---------------------------------------

def test_imported_run_evaluates_with_agws_protocol(released, tmp_path):
    from fixtures_real import build_sysu

    counts = [(1, 1, 2), (3, 1, 2), (2, 2, 2), (6, 2, 2), (4, 7, 2), (5, 7, 2), (3, 7, 2), (6, 7, 2), (1, 9, 2),
              (6, 9, 2)]
    root = build_sysu(tmp_path / "SYSU-MM01", counts, {"train": [1], "val": [2], "test": [7, 9]})
    runner = CliRunner()
    result = runner.invoke(cli, ["import-weights", "agw", str(released), "--dataset", "sysu_mm01", "--root", str(root),
                                 "--out", str(tmp_path / "run"), "--set", "data.height=64", "--set", "data.width=32"])
    assert result.exit_code == 0, result.output
    assert "395 identities" in result.output and "epoch 80, R1 47.5 %" in result.output
    result = runner.invoke(cli, ["evaluate", str(tmp_path / "run"), "--protocol", "sysu_mm01_agw", "--quiet",
                                 "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    assert "ir->rgb" in result.output and (tmp_path / "r.json").is_file()


# ---- bad input: one line, nothing written --------------------------------------------------------

class Payload:
    def __reduce__(self):
        return (print, ("pickled code ran",))


@pytest.mark.parametrize("case", ["code", "other_method", "identities", "dataset", "truncated", "not_released",
                                  "exists"])
def test_bad_input_is_one_line_and_writes_nothing(released, tmp_path, case, capsys):
    path, method, dataset = released, "agw", "sysu_mm01"
    out = tmp_path / "run"
    if case == "code":
        path = tmp_path / "evil.t"
        with open(path, "wb") as fh:
            pickle.dump({"net": {}, "hook": Payload()}, fh, protocol=2)
        message = "print, which is neither a tensor nor a plain numpy value"  # torch 2.6 names it builtins.print
    elif case == "other_method":  # a plain ImageNet ResNet-50 (or another method's) state dict
        path = tmp_path / "resnet50.pth"
        torch.save({k[len("base_resnet.base."):]: torch.zeros(1) for k in authors_resnet50("base_resnet.base.")}, path)
        message = "not a agw checkpoint: key 'conv1.weight' has no place"
    elif case == "identities":
        dataset = "regdb"
        message = "classifier has 395 identities but regdb trains 206: a checkpoint of another dataset? pass --dataset sysu_mm01"
    elif case == "dataset":
        dataset = "llcm"
        message = "agw's released code trains on sysu_mm01, regdb"
    elif case == "truncated":
        path = tmp_path / "cut.t"
        path.write_bytes(released.read_bytes()[: 5_000_000])
        message = "not a plain tensor checkpoint"
    elif case == "not_released":
        method = "idkl"
        message = "idkl: no released weights to import"
    else:
        out.mkdir()
        message = "already exists"
    result = CliRunner().invoke(cli, ["import-weights", method, str(path), "--dataset", dataset, "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert "pickled code ran" not in capsys.readouterr().out + result.output
    assert case != "code" or "refused: its pickle needs" in lines[0]
    assert (out.exists() and not any(out.iterdir())) if case == "exists" else not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run.")]  # no half-written folder


def test_missing_or_misshapen_tensor_is_named(tmp_path):
    state = authors_state_dict()
    del state["NL_3.2.phi.bias"]
    with pytest.raises(UserError, match=r"lacks NL_3.2.phi.bias \(1 tensors"):
        import_released("agw", save_like_2020(tmp_path / "a.t", state), tmp_path / "a", "sysu_mm01")
    state = authors_state_dict()
    state["base_resnet.base.layer4.0.conv2.weight"] = torch.zeros(512, 512, 1, 1)
    with pytest.raises(UserError, match=r"base_resnet.base.layer4.0.conv2.weight has shape \[512, 512, 1, 1\]"):
        import_released("agw", save_like_2020(tmp_path / "b.t", state), tmp_path / "b", "sysu_mm01")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_rename_skips_only_the_unused_copies_by_name():
    state = {"module.visible_module.visible.layer1.0.conv1.weight": torch.zeros(1),
             "module.bottleneck.weight": torch.zeros(1)}
    ours, skipped = rename(state, AGW, Path("f.t"))
    assert list(ours) == ["head.neck.weight"] and skipped["visible_module.visible.layer"] == 1
    with pytest.raises(UserError, match="'module.visible_module.visible.fc.weight' has no place"):
        rename({**state, "module.visible_module.visible.fc.weight": torch.zeros(1)}, AGW, Path("f.t"))
