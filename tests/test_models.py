import pytest
import torch
from torch import nn

from crossreid.errors import UserError
from crossreid.models import (
    STAGES,
    AvgPool,
    BNNeckHead,
    EmbeddingHead,
    GatedAttention,
    GeM,
    NonLocalBlock,
    build_model,
    build_resnet,
    freeze_from,
)

X = torch.randn(2, 3, 64, 32)

# names as torchvision's resnet18 / resnet50 state dicts spell them (fc removed)
TV_RESNET18_KEYS = [
    "conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked",
    "layer1.0.conv1.weight", "layer1.0.bn2.running_var", "layer1.1.conv2.weight",
    "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_mean", "layer3.1.bn1.bias",
    "layer4.0.downsample.1.weight", "layer4.1.bn2.num_batches_tracked",
]
TV_RESNET50_KEYS = [
    "conv1.weight", "bn1.running_mean", "layer1.0.conv3.weight", "layer1.0.bn3.weight",
    "layer1.0.downsample.0.weight", "layer1.0.downsample.1.running_var", "layer1.2.bn3.bias",
    "layer2.3.conv2.weight", "layer3.0.conv3.weight", "layer3.5.bn3.running_mean",
    "layer4.0.downsample.0.weight", "layer4.2.conv3.weight", "layer4.2.bn3.num_batches_tracked",
]


@pytest.fixture(scope="module")
def r50():
    return build_resnet("resnet50").eval()


@pytest.fixture(scope="module")
def r18():
    return build_resnet("resnet18").eval()


@pytest.mark.parametrize("arch,params,keys", [
    ("resnet18", 11_176_512, 120), ("resnet34", 21_284_672, 216), ("resnet50", 23_508_032, 318)])
def test_parameter_and_key_counts_match_torchvision_without_fc(arch, params, keys):
    net = build_resnet(arch)
    assert sum(p.numel() for p in net.parameters()) == params
    assert len(net.state_dict()) == keys


def test_torchvision_key_names(r18, r50):
    for net, known in ((r18, TV_RESNET18_KEYS), (r50, TV_RESNET50_KEYS)):
        names = set(net.state_dict())
        assert set(known) <= names
        assert not any(k.startswith("fc.") for k in names)
    assert "layer1.0.downsample.0.weight" not in r18.state_dict()  # BasicBlock layer1 keeps its width


@pytest.mark.parametrize("arch,channels", [("resnet18", 512), ("resnet34", 512), ("resnet50", 2048)])
def test_layer4_map_size_follows_last_stride(arch, channels):
    with torch.no_grad():
        for last_stride, hw in ((2, (2, 1)), (1, (4, 2))):
            net = build_resnet(arch, last_stride=last_stride).eval()
            assert net(X).shape == (2, channels, *hw)
            assert net.layer4[0].downsample[0].stride == (last_stride, last_stride)


def test_base_width_scales_every_stage_and_keeps_names(r18):
    slim = build_resnet("resnet18", base_width=32).eval()
    assert set(slim.state_dict()) == set(r18.state_dict())
    assert slim.conv1.out_channels == 32 and slim.layer2[0].conv1.out_channels == 64
    assert slim.out_channels == 256
    with torch.no_grad():
        assert slim(X).shape == (2, 256, 2, 1)
    # about a quarter of the standard trunk's parameters (and multiply-adds)
    ratio = sum(p.numel() for p in slim.parameters()) / sum(p.numel() for p in r18.parameters())
    assert 0.24 < ratio < 0.26
    assert build_model("resnet18", base_width=32, embedding_dim=64).embedding_dim == 64
    with pytest.raises(UserError, match="base_width"):
        build_resnet("resnet18", base_width=4)


def test_pretrained_weights_need_the_standard_width(tmp_path, r18):
    path = tmp_path / "r18.pth"
    torch.save(r18.state_dict(), path)
    with pytest.raises(UserError, match="model.base_width=64"):
        build_model("resnet18", base_width=32, pretrained=path)


def test_bad_last_stride_and_arch():
    with pytest.raises(UserError):
        build_resnet("resnet18", last_stride=3)
    with pytest.raises(UserError):
        build_resnet("resnet101")


def test_zero_init_residual():
    net = build_resnet("resnet50", zero_init_residual=True)
    assert all(torch.count_nonzero(b.bn3.weight) == 0 for layer in (net.layer1, net.layer4) for b in layer)
    assert torch.count_nonzero(build_resnet("resnet50").layer1[0].bn3.weight) > 0


def test_stagewise_forward_equals_full_forward(r50):
    with torch.no_grad():
        full = r50(X)
        mid = r50.forward_stages(X, end="layer2")
        assert mid.shape == (2, 512, 8, 4)
        assert torch.allclose(r50.forward_stages(mid, start="layer3"), full, atol=1e-5)
        out = X
        for name in STAGES:
            out = r50.forward_stage(name, out)
        assert torch.allclose(out, full, atol=1e-5)


def test_stem_copy_is_independent_and_equal(r18):
    stem = r18.make_stem().eval()
    assert set(stem.state_dict()) == {k for k in r18.state_dict() if k.startswith(("conv1.", "bn1."))}
    with torch.no_grad():
        assert torch.allclose(stem(X), r18.forward_stem(X))
        stem.conv1.weight.add_(1.0)
        assert not torch.allclose(stem(X), r18.forward_stem(X))


def test_gem_p1_is_average_and_large_p_tends_to_max():
    x = torch.rand(2, 5, 4, 3) + 0.1
    assert torch.allclose(GeM(p=1.0)(x), AvgPool()(x), atol=1e-6)
    assert torch.allclose(GeM(p=3.0)(x), x.pow(3).mean((2, 3)).pow(1 / 3), atol=1e-6)
    assert torch.allclose(GeM(p=80.0)(x), x.amax((2, 3)), rtol=0.05)


def test_gem_learnable_p_gets_gradient():
    gem = GeM(p=3.0, learnable=True)
    gem(torch.rand(2, 4, 3, 3) + 0.1).sum().backward()
    assert gem.p.grad is not None and gem.p.grad.abs() > 0
    assert [n for n, _ in GeM(p=3.0).named_parameters()] == []


def test_bnneck_head_bias_frozen_and_outputs():
    head = BNNeckHead(16, num_classes=5)
    assert not head.neck.bias.requires_grad and torch.count_nonzero(head.neck.bias) == 0
    assert head.classifier.bias is None
    assert abs(head.neck.weight.detach().mean().item() - 1.0) < 0.05
    opt = torch.optim.SGD([p for p in head.parameters() if p.requires_grad], lr=1.0)
    x = torch.randn(4, 16)
    out = head(x)
    assert torch.equal(out.features, x) and out.logits.shape == (4, 5)
    (out.logits.sum() + out.embedding.pow(2).sum()).backward()
    opt.step()
    assert torch.count_nonzero(head.neck.bias) == 0
    head.eval()
    out = head(x)
    assert out.logits is None and torch.allclose(out.embedding, head.neck(x))


def test_bnneck_head_projection():
    head = BNNeckHead(16, num_classes=3, embedding_dim=8)
    out = head(torch.randn(4, 16))
    assert out.features.shape == (4, 8) and out.embedding.shape == (4, 8) and head.out_dim == 8


def test_embedding_head_non_negative_and_dropout_free_in_eval():
    head = EmbeddingHead(32, num_classes=4, embedding_dim=8, dropout=0.9)
    x = torch.randn(6, 32)
    head(x)  # a training step moves BN stats away from the identity
    head.eval()
    out = head(x)
    manual = torch.relu(head.bn(head.fc(x)))
    assert torch.equal(out.embedding, manual) and torch.equal(out.features, out.embedding)
    assert (out.embedding >= 0).all() and (out.embedding > 0).any()
    assert out.logits is None
    assert torch.equal(head(x).embedding, out.embedding)
    head.train()
    assert head(x).logits.shape == (6, 4)
    assert torch.count_nonzero(head.classifier.bias) == 0


def test_nonlocal_block_identity_at_init_and_matches_formula():
    x = torch.randn(2, 8, 4, 3)
    for inter in (None, 1):
        block = NonLocalBlock(8, inter).eval()
        assert torch.allclose(block(x), x)
    block = NonLocalBlock(8).eval()
    nn.init.ones_(block.W[1].weight)
    g, th, ph = (m(x).flatten(2) for m in (block.g, block.theta, block.phi))  # B, I, N
    f = torch.einsum("bin,bim->bnm", th, ph) / 12
    y = torch.einsum("bnm,bim->bin", f, g).reshape(2, 4, 4, 3)
    assert torch.allclose(block(x), x + block.W(y), atol=1e-5)
    assert not torch.allclose(block(x), x)


def test_resnet_with_nonlocal_keeps_torchvision_names_and_output(r50):
    net = build_resnet("resnet50", nonlocal_after={"layer2": [2, 3], "layer3": [3, 4, 5]}, nonlocal_inter=1)
    assert sorted(net.nonlocal_blocks) == ["layer2_2", "layer2_3", "layer3_3", "layer3_4", "layer3_5"]
    assert net.nonlocal_blocks["layer2_2"].g.out_channels == 1
    result = net.load_state_dict(r50.state_dict(), strict=False)
    assert result.unexpected_keys == [] and all(k.startswith("nonlocal_blocks.") for k in result.missing_keys)
    with torch.no_grad():
        assert torch.allclose(net.eval()(X), r50(X), atol=1e-5)
    with pytest.raises(UserError):
        build_resnet("resnet50", nonlocal_after={"layer2": [4]})


def test_gated_attention():
    x = torch.randn(2, 3, 4, 4)
    guide = torch.randn(2, 5, 4, 4)
    gate = GatedAttention()
    assert torch.allclose(gate(x, guide), x * (1 + torch.sigmoid(guide.mean(1, keepdim=True))))
    assert torch.allclose(gate(x), x * (1 + torch.sigmoid(x.mean(1, keepdim=True))))
    assert torch.allclose(GatedAttention("max")(x, guide), x * (1 + torch.sigmoid(guide.amax(1, keepdim=True))))


@pytest.mark.parametrize("head,dim", [("bnneck", 512), ("embedding", 128)])
def test_reidnet_outputs_and_embed(head, dim):
    net = build_model("resnet18", num_classes=7, pooling="gem", head=head)
    out = net(X)
    assert out.features.shape == (2, dim) and out.logits.shape == (2, 7)
    emb = net.embed(X)
    assert emb.shape == (2, dim) and not emb.requires_grad and net.training
    assert net.embedding_dim == dim


def test_reidnet_channels_last_matches_contiguous():
    net = build_model("resnet18", num_classes=0, pooling="gem").eval()
    with torch.no_grad():
        ref = net(X).embedding
        net = net.to(memory_format=torch.channels_last)
        out = net(X.contiguous(memory_format=torch.channels_last)).embedding
    assert torch.allclose(out, ref, atol=1e-4)


def test_reidnet_partial_forward_with_gate():
    net = build_model("resnet18", num_classes=0, pooling="avg").eval()
    gate = GatedAttention()
    with torch.no_grad():
        mid = gate(net.backbone.forward_stages(X, end="layer2"))
        out = net.forward_head(net.backbone.forward_stages(mid, start="layer3"))
        assert out.embedding.shape == (2, 512)
        assert not torch.allclose(out.embedding, net(X).embedding)


@pytest.mark.parametrize("kwargs", [{"head": "arcface"}, {"pooling": "max"}, {"arch": "vit"}])
def test_build_model_rejects_unknown_names(kwargs):
    with pytest.raises(UserError):
        build_model(**{"arch": "resnet18", **kwargs})


def test_freeze_from_first_1024_channel_conv():
    net = build_model("resnet50", num_classes=3, head="embedding")
    first_1024 = next(n for n, p in net.named_parameters() if p.shape[0] == 1024)
    assert first_1024 == "backbone.layer3.0.conv3.weight"
    frozen = freeze_from(net, "backbone.layer3.0.conv3")
    assert frozen[0] == first_1024
    params = dict(net.named_parameters())
    for name in ("backbone.conv1.weight", "backbone.layer2.3.conv3.weight", "backbone.layer3.0.conv2.weight",
                 "backbone.layer3.0.bn2.bias"):
        assert params[name].requires_grad, name
    for name in ("backbone.layer3.0.bn3.weight", "backbone.layer3.0.downsample.0.weight",
                 "backbone.layer4.2.conv3.weight", "head.fc.weight", "head.bn.weight"):
        assert not params[name].requires_grad, name
    with pytest.raises(ValueError):
        freeze_from(net, "backbone.layer9")


# ---- weight loading -------------------------------------------------------------------------

class NotATensor:
    pass


def checkpoint_like_torchvision(net: nn.Module) -> dict:
    """A DataParallel-wrapped torchvision-style state dict with a classifier and two broken keys."""
    sd = {f"module.{k}": v.clone() + 1.0 if v.is_floating_point() else v.clone() for k, v in net.state_dict().items()}
    sd["module.fc.weight"] = torch.zeros(1000, 512)
    sd["module.fc.bias"] = torch.zeros(1000)
    sd["module.layer1.0.conv_renamed.weight"] = sd.pop("module.layer1.0.conv1.weight")
    sd["module.conv1.weight"] = torch.zeros(64, 1, 7, 7)  # single-channel stem
    return sd


def test_load_weights_report_and_values(tmp_path, r18):
    from crossreid.models import load_weights
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": checkpoint_like_torchvision(r18)}, path)
    target = build_resnet("resnet18")
    before = target.layer1[0].conv1.weight.detach().clone()
    with pytest.raises(UserError, match=r"r18.pth: shape mismatch at conv1.weight .*pretrained_strict=false"):
        load_weights(target, path)  # strict by default: nothing is loaded
    assert torch.equal(target.layer4[1].bn2.running_var, build_resnet("resnet18").layer4[1].bn2.running_var)
    report = load_weights(target, path, strict=False)
    assert report.skipped == ["fc.weight", "fc.bias"]
    assert report.unexpected == ["module.layer1.0.conv_renamed.weight"]
    assert report.missing == ["layer1.0.conv1.weight"]
    assert report.mismatched == [("conv1.weight", (64, 1, 7, 7), (64, 3, 7, 7))]
    assert len(report.loaded) == 120 - 2
    assert torch.equal(target.layer1[0].conv1.weight, before)
    assert torch.allclose(target.layer4[1].bn2.running_var, r18.layer4[1].bn2.running_var + 1.0)
    assert "shape mismatch" in report.summary()


def test_load_weights_safetensors_into_build_model(tmp_path, r18):
    from safetensors.torch import save_file
    path = tmp_path / "r18.safetensors"
    save_file({f"backbone.{k}": v.contiguous() for k, v in r18.state_dict().items()}, str(path))
    net = build_model("resnet18", num_classes=2, pretrained=path)
    report = net.weights_report
    assert len(report.loaded) == 120 and not (report.missing or report.unexpected or report.mismatched)
    assert torch.equal(net.backbone.layer3[0].conv2.weight, r18.layer3[0].conv2.weight)


@pytest.mark.parametrize("content", ["object", "list", "foreign", "garbage", "suffix", "missing"])
def test_load_weights_refuses_bad_files(tmp_path, content):
    from crossreid.models import load_weights
    path = tmp_path / ("w.ckpt" if content == "suffix" else "w.pth")
    if content == "object":
        torch.save({"conv1.weight": NotATensor()}, path)  # arbitrary pickle: weights_only refuses it
    elif content == "list":
        torch.save([torch.zeros(1)], path)
    elif content == "foreign":
        torch.save({"encoder.weight": torch.zeros(3)}, path)
    elif content in ("garbage", "suffix"):
        path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="w.pth|w.ckpt"):
        load_weights(build_resnet("resnet18"), path)


def test_gem_half_precision_does_not_overflow():
    x = torch.full((1, 2, 2, 2), 60.0, dtype=torch.float16)  # 60^3 > float16 max
    out = GeM(p=3.0)(x)
    assert out.dtype == torch.float16 and torch.allclose(out.float(), torch.full((1, 2), 60.0))
