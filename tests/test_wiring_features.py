"""Each method's test feature by its numbers: the baselines embed the post-BNNeck vector, AGW's
``test_feature`` and ``normalize`` and IDKL's ``normalize`` change it as documented.

A fresh BNNeck is nearly the identity (running mean 0, variance 1, weight ~1, bias 0), so pre- and
post-BN features would agree and a wrong choice would pass; every test here first gives the necks
random statistics and weights, then compares ``embed`` with the neck applied by hand to a pooled
feature computed outside the method's own embedding code.
"""

import pytest
import torch
import torch.nn.functional as F

from crossreid.config import load_config
from crossreid.data.pipeline import normalize
from crossreid.methods import build_method
from crossreid.methods.zero_padding import zero_pad
from crossreid.modality import Modality

RGB, DEPTH, IR = Modality.RGB, Modality.DEPTH, Modality.IR


def make(name, *overrides, modalities=(RGB, DEPTH)):
    cfg = load_config(None, ["model.arch=resnet18", "model.base_width=16", f"method.name={name}", *overrides])
    return build_method(cfg, 3, list(modalities))


def images(n=3, seed=0):
    return normalize(torch.rand(n, 3, 32, 16, generator=torch.Generator().manual_seed(seed)))


def scramble_necks(method, seed=1):
    """Random running statistics, weights and biases in every BatchNorm1d (the necks)."""
    g = torch.Generator().manual_seed(seed)
    for m in method.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(0.2 + 3 * torch.rand(n, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(n, generator=g))
            m.bias.data.copy_(torch.randn(n, generator=g))
    return method.eval()


def by_hand_bn(x, bn):
    return (x - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias


def avg(feature_map):
    return feature_map.mean(dim=(2, 3))


def gem(feature_map, p=3.0, eps=1e-6):
    return feature_map.clamp(min=eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


@torch.no_grad()
def test_one_stream_embeds_the_bn_feature():
    m = scramble_necks(make("one_stream"))
    x = images()
    pooled = avg(m.net.backbone(x))
    expected = by_hand_bn(pooled, m.net.head.neck)
    assert not torch.allclose(expected, pooled, atol=1e-2)  # the neck matters here
    for modality in (RGB, DEPTH):
        torch.testing.assert_close(m.embed(x, modality), expected, rtol=1e-4, atol=1e-4)


@torch.no_grad()
@pytest.mark.parametrize("modality", [RGB, DEPTH])
def test_two_stream_embeds_the_bn_feature_of_its_modality_trunk(modality):
    m = scramble_necks(make("two_stream"))
    x = images()
    pooled = avg(m.backbone[modality.value](x))
    torch.testing.assert_close(m.embed(x, modality), by_hand_bn(pooled, m.head.neck), rtol=1e-4, atol=1e-4)
    other = RGB if modality is DEPTH else DEPTH
    assert not torch.allclose(m.embed(x, other), m.embed(x, modality), atol=1e-3)


@torch.no_grad()
@pytest.mark.parametrize("padding", ["input", "pixel"])
def test_zero_padding_embeds_the_bn_feature_of_the_padded_input(padding):
    m = scramble_necks(make("zero_padding", f"method.options.padding={padding}"))
    x = images()
    for modality in (RGB, DEPTH):
        pooled = avg(m.backbone(zero_pad(x, modality, padding)))
        torch.testing.assert_close(m.embed(x, modality), by_hand_bn(pooled, m.head.neck), rtol=1e-4, atol=1e-4)


@torch.no_grad()
@pytest.mark.parametrize("test_feature, norm", [("bn", True), ("bn", False), ("pool", True), ("pool", False)])
def test_agw_test_feature_and_normalize(test_feature, norm):
    m = scramble_necks(make("agw", "model.pooling=gem", f"method.options.test_feature={test_feature}",
                            f"method.options.normalize={str(norm).lower()}"))
    x = images()
    trunk = m.backbone["shared"]
    pooled = gem(trunk.forward_stages(m.backbone["stems"]["rgb"](x), start="layer1"))
    feature = by_hand_bn(pooled, m.head.neck) if test_feature == "bn" else pooled
    expected = feature / feature.norm(dim=1, keepdim=True) if norm else feature
    torch.testing.assert_close(m.embed(x, RGB), expected, rtol=1e-4, atol=1e-4)


@torch.no_grad()
@pytest.mark.parametrize("norm", [True, False])
def test_idkl_normalize(norm):
    m = scramble_necks(make("idkl", "model.pooling=gem", f"method.options.normalize={str(norm).lower()}",
                            "train.ids_per_batch=2", modalities=(RGB, IR)))
    x = images()
    trunk = m.backbone["shared"]
    pooled = gem(trunk.forward_stages(trunk.forward_stages(x, "stem", "layer2"), "layer3", "layer4"))
    feature = by_hand_bn(pooled, m.neck_shared)
    expected = F.normalize(feature, dim=1) if norm else feature
    for modality in (RGB, IR):
        torch.testing.assert_close(m.embed(x, modality), expected, rtol=1e-4, atol=1e-4)
    assert m.retrieval_settings()["l2_normalised"] is norm
