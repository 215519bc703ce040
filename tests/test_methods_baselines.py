"""Zero-padding, two-stream and AGW baselines: routing, gradients, losses, configs, one tiny fit."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from crossreid.config import load_config, resolve_config
from crossreid.data.pipeline import IMAGENET_MEAN, IMAGENET_STD, normalize
from crossreid.engine.trainer import learning_rates
from crossreid.errors import UserError
from crossreid.losses import WeightedRegularizedTriplet
from crossreid.methods import Batch, build_method
from crossreid.methods.agw import nonlocal_positions
from crossreid.methods.zero_padding import CHANNEL, zero_pad
from crossreid.modality import Modality
from crossreid.models import build_resnet

RGB, DEPTH, IR = Modality.RGB, Modality.DEPTH, Modality.IR
ROUTED = ["zero_padding", "two_stream", "agw"]


def make(name: str, *overrides: str, modalities=(RGB, DEPTH), classes: int = 3):
    cfg = load_config(None, ["model.arch=resnet18", f"method.name={name}", *overrides])
    return build_method(cfg, classes, list(modalities))


def make_batch(modalities=(RGB, DEPTH), rows: int = 4, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    images = normalize(torch.rand(len(modalities) * rows, 3, 32, 16, generator=g))
    labels = torch.arange(rows) // 2
    return Batch(images, labels.repeat(len(modalities)), list(modalities), rows)


def step(method, batch):
    method.train()
    losses = method.training_step(batch, method.stages()[0]).losses
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()
    return losses


def grads(module) -> dict[str, bool]:
    """Trainable parameter name -> whether it received a non-zero gradient."""
    return {n: p.grad is not None and bool(p.grad.abs().sum() > 0)
            for n, p in module.named_parameters() if p.requires_grad}


# ------------------------------------------------------------------ shared behaviour
@pytest.mark.parametrize("name", ROUTED)
def test_embed_shapes_and_unknown_modality(name):
    method = make(name).eval()
    assert method.embeddable == [RGB, DEPTH]
    for m in (RGB, DEPTH, "depth"):
        assert method.embed(make_batch().images[:3], m).shape == (3, 512)
    with pytest.raises(UserError, match="ir"):
        method.embed(make_batch().images[:3], IR)
    with pytest.raises(UserError, match="ir"):
        method.training_step(make_batch((RGB, IR)), method.stages()[0])


@pytest.mark.parametrize("name", ROUTED)
def test_training_step_finite_and_every_parameter_learns(name):
    method = make(name)
    losses = step(method, make_batch())
    assert {"id", "loss"} <= set(losses)
    learned = grads(method)
    dead = [n for n, ok in learned.items() if not ok]
    # a zero-initialised non-local output BN passes gradient only to itself on the first step
    assert all("nonlocal_blocks" in n and ".W.1." not in n for n in dead)
    assert all(ok for n, ok in learned.items() if ".W.1.weight" in n)


def test_unknown_option_is_a_user_error():
    with pytest.raises(UserError, match="method.options.padd"):
        make("zero_padding", "method.options.padd=pixel")
    with pytest.raises(UserError, match="nonlocal_inter"):
        make("agw", "method.options.nonlocal_inter=half")


# ------------------------------------------------------------------ zero-padding
@pytest.mark.parametrize("modality", [RGB, DEPTH, IR])
def test_zero_pad_one_nonzero_channel_holding_normalised_grey(modality):
    pixels = torch.rand(2, 3, 8, 4) if modality is RGB else torch.rand(2, 1, 8, 4).expand(2, 3, 8, 4)
    out = zero_pad(normalize(pixels), modality)
    k = CHANNEL[modality]
    nonzero = [c for c in range(3) if out[:, c].abs().sum() > 0]
    assert nonzero == [k]
    grey = 0.299 * pixels[:, 0] + 0.587 * pixels[:, 1] + 0.114 * pixels[:, 2]
    torch.testing.assert_close(out[:, k], (grey - IMAGENET_MEAN[k]) / IMAGENET_STD[k])
    if modality is not RGB:  # a replicated single-channel image is its own grey
        torch.testing.assert_close(out[:, k], (pixels[:, 0] - IMAGENET_MEAN[k]) / IMAGENET_STD[k])


@pytest.mark.parametrize("padding", ["input", "pixel"])
def test_zero_pad_computes_in_the_images_dtype_and_on_their_device(padding):
    # float64 images: every constant in float64 (float32 constants would be off by ~1e-8)
    pixels = torch.rand(2, 3, 8, 4, dtype=torch.float64)
    mean, std = torch.tensor(IMAGENET_MEAN, dtype=torch.float64), torch.tensor(IMAGENET_STD, dtype=torch.float64)
    out = zero_pad((pixels - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1), RGB, padding)
    grey = 0.299 * pixels[:, 0] + 0.587 * pixels[:, 1] + 0.114 * pixels[:, 2]
    k = CHANNEL[RGB]
    assert out.dtype == torch.float64
    torch.testing.assert_close(out[:, k], (grey - IMAGENET_MEAN[k]) / IMAGENET_STD[k], rtol=0, atol=1e-12)
    # the constants follow the images' device: on torch's "meta" device a CPU constant would fail
    assert zero_pad(torch.empty(2, 3, 8, 4, device="meta"), IR, padding).device.type == "meta"


def test_zero_pad_pixel_mode_pads_with_normalised_black():
    out = zero_pad(normalize(torch.rand(2, 3, 8, 4)), DEPTH, padding="pixel")
    for c in (0, 1):
        torch.testing.assert_close(out[:, c], torch.full_like(out[:, c], -IMAGENET_MEAN[c] / IMAGENET_STD[c]))
    assert CHANNEL[RGB] != CHANNEL[DEPTH] != CHANNEL[IR] != CHANNEL[RGB]


def test_zero_padding_method_routes_with_its_padding_option():
    images = normalize(torch.rand(2, 3, 8, 4))
    for padding in ("input", "pixel"):
        method = make("zero_padding", f"method.options.padding={padding}")
        assert torch.equal(method.route(images, DEPTH), zero_pad(images, DEPTH, padding))


def test_zero_padding_unused_channel_gets_no_gradient():
    method = make("zero_padding")
    step(method, make_batch())
    g = method.backbone.conv1.weight.grad
    assert g[:, CHANNEL[IR]].abs().sum() == 0
    assert g[:, CHANNEL[RGB]].abs().sum() > 0 and g[:, CHANNEL[DEPTH]].abs().sum() > 0


# ------------------------------------------------------------------ two-stream
def test_two_stream_trunks_are_separate_and_head_shared():
    method = make("two_stream", modalities=(RGB, DEPTH, IR))
    assert set(method.backbone) == {"rgb", "depth", "ir"}
    ptrs = [{p.data_ptr() for p in method.backbone[m].parameters()} for m in ("rgb", "depth", "ir")]
    assert not (ptrs[0] & ptrs[1]) and not (ptrs[1] & ptrs[2]) and not (ptrs[0] & ptrs[2])
    step(method, make_batch((RGB,)))
    rgb, depth = grads(method.backbone["rgb"]), grads(method.backbone["depth"])
    assert all(rgb.values()) and not any(depth.values())
    assert all(grads(method.head).values())


def test_two_stream_routes_each_block_through_its_trunk():
    method = make("two_stream").eval()
    batch = make_batch()
    with torch.no_grad():
        joint = method.forward_batch(batch).embedding
        rows = batch.rows
        torch.testing.assert_close(joint[:rows], method.embed(batch.images[:rows], RGB))
        torch.testing.assert_close(joint[rows:], method.embed(batch.images[rows:], DEPTH))
        assert not torch.allclose(joint[rows:], method.embed(batch.images[rows:], RGB))


# ------------------------------------------------------------------ AGW
def test_agw_stems_distinct_layers_shared():
    method = make("agw")
    stems = method.backbone["stems"]
    assert stems["rgb"].conv1.weight.data_ptr() != stems["depth"].conv1.weight.data_ptr()
    torch.testing.assert_close(stems["rgb"].conv1.weight, stems["depth"].conv1.weight)  # copies at init
    assert method.backbone["shared"].conv1 is None
    step(method, make_batch((RGB,)))
    assert all(grads(stems["rgb"]).values()) and not any(grads(stems["depth"]).values())
    assert all(grads(method.backbone["shared"].layer1).values())


def test_agw_nonlocal_positions_and_identity_init():
    assert nonlocal_positions(build_resnet("resnet50")) == {"layer2": [2, 3], "layer3": [3, 4, 5]}
    assert nonlocal_positions(build_resnet("resnet18")) == {"layer2": [0, 1], "layer3": [0, 1]}
    paper = make("agw").backbone["shared"].nonlocal_blocks
    released = make("agw", "method.options.nonlocal_inter=released").backbone["shared"].nonlocal_blocks
    assert sorted(paper) == ["layer2_0", "layer2_1", "layer3_0", "layer3_1"]
    assert paper["layer2_0"].inter_channels == 64 and released["layer3_1"].inter_channels == 1
    x = torch.randn(2, 128, 4, 2)
    torch.testing.assert_close(paper["layer2_1"].eval()(x), x)
    assert not make("agw", "method.options.non_local=false").backbone["shared"].nonlocal_blocks


def test_agw_loss_is_ce_plus_wrt_and_lr_groups():
    method = make("agw", "optim.backbone_lr_scale=0.1", "optim.lr=0.1", "loss.triplet_weight=2.0")
    batch = make_batch()
    losses = method.training_step(batch, method.stages()[0]).losses
    assert "triplet" not in losses
    torch.testing.assert_close(losses["loss"], losses["id"] + 2.0 * losses["wrt"])
    features = method.forward_batch(batch).features
    torch.testing.assert_close(losses["wrt"], WeightedRegularizedTriplet()(features, batch.labels))
    optim = load_config(None, ["optim.backbone_lr_scale=0.1", "optim.lr=0.1"]).optim   # the engine sets the lrs
    groups = {g["name"]: g for g in learning_rates(method.param_groups(method.stages()[0]), method.stages()[0], optim)}
    names = {id(p): n for n, p in method.named_parameters()}
    backbone = {names[id(p)] for p in groups["backbone"]["params"]}
    assert groups["backbone"]["lr"] == pytest.approx(0.01) and groups["head"]["lr"] == pytest.approx(0.1)
    assert "backbone.stems.depth.conv1.weight" in backbone
    assert "backbone.shared.nonlocal_blocks.layer3_0.g.weight" in backbone
    assert all(n.startswith("head.") for n in map(names.get, map(id, groups["head"]["params"])))
    batch_hard = make("agw", "method.options.triplet=batch_hard")
    assert "triplet" in batch_hard.training_step(batch, method.stages()[0]).losses


def test_agw_test_features():
    images = make_batch().images[:3]
    bn = make("agw").eval()
    pool = make("agw", "method.options.test_feature=pool").eval()
    pool.load_state_dict(bn.state_dict())
    raw = make("agw", "method.options.normalize=false").eval()
    raw.load_state_dict(bn.state_dict())
    with torch.no_grad():
        f_bn, f_pool, f_raw = bn.embed(images, RGB), pool.embed(images, RGB), raw.embed(images, RGB)
        out = bn.forward_images(images, RGB)
    torch.testing.assert_close(f_bn.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(f_raw, out.embedding)
    torch.testing.assert_close(f_pool, torch.nn.functional.normalize(out.features, dim=1))
    with pytest.raises(UserError, match="model.head"):
        make("agw", "model.head=embedding")


# ------------------------------------------------------------------ configs and a tiny fit
SHIPPED = ["zero_padding_synthetic", "two_stream_synthetic", "agw_synthetic", "one_stream_synthetic",
           "agw_sysu", "agw_regdb", "one_stream_biwi", "two_stream_biwi", "zero_padding_biwi",
           "one_stream_robotpku", "two_stream_robotpku", "zero_padding_robotpku"]


def test_former_config_names_still_resolve():
    for old, new in (("onestream_biwi", "one_stream_biwi"), ("zeropadding_robotpku", "zero_padding_robotpku")):
        assert resolve_config(old) == resolve_config(new) and resolve_config(new).stem == new


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_config_loads_and_builds(name):
    cfg = load_config(resolve_config(name))
    assert cfg.method.name in name
    small = load_config(resolve_config(name), ["model.arch=resnet18", "model.pretrained=null"])
    method = build_method(small, 4, [Modality.parse(m) for m in small.data.modalities])
    paper = name in ("agw_sysu", "agw_regdb")  # AGW's released code: its WRT weights, the last epoch kept
    if name.startswith("agw"):
        assert method.wrt.softmax == ("released" if paper else "exact")
    assert cfg.train.select == ("last" if paper else "val")


def test_trainer_fit_agw_on_tiny_dataset(tmp_path, tiny_root):
    from crossreid.data.registry import load_dataset
    from crossreid.engine.trainer import Trainer

    catalog = load_dataset("generic", tiny_root)
    if importlib.util.find_spec("crossreid.evaluation.protocols") is None:
        catalog.val = []  # validation needs the protocols module
    cfg = load_config(None, ["model.arch=resnet18", "method.name=agw", "model.pooling=gem", "train.epochs=1",
                             "train.iterations_per_epoch=1", "train.ids_per_batch=2", "train.images_per_id=2",
                             "data.height=32", "data.width=16", "train.progress=false"])
    Trainer(cfg, tmp_path / "run", catalog, progress=False).fit()
    assert (tmp_path / "run" / "model.safetensors").is_file()
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["loss"] == pytest.approx(record["id"] + record["wrt"], rel=1e-4)


def test_agw_sysu_learning_rate_is_agws_schedule_warm_up_included():
    """AGW's adjust_learning_rate: lr·(e+1)/10 for e < 10, lr until 20, ×0.1 until 50, ×0.01 after."""
    from crossreid.engine.schedule import lr_factor

    cfg = load_config(resolve_config("agw_sysu"))
    agw = [(e + 1) / 10 if e < 10 else 1.0 if e < 20 else 0.1 if e < 50 else 0.01 for e in range(cfg.train.epochs)]
    ours = [lr_factor(e, cfg.schedule, cfg.train.epochs) for e in range(cfg.train.epochs)]
    assert ours == pytest.approx(agw, abs=1e-12) and cfg.optim.backbone_lr_scale == 0.1
