"""The narrow method contract: trunk stages kept or cut, one way to add non-local blocks,
explicit backbone parameters, freezing from a parameter name, the engine's tensor cache,
named and weighted loss terms through one helper."""

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from crossreid.config import load_config
from crossreid.engine.trainer import learning_rates
from crossreid.errors import UserError
from crossreid.methods import MethodSetup, build_method
from crossreid.methods.base import parameters_from
from crossreid.methods.step import LossTerms, reid_terms
from crossreid.modality import Modality
from crossreid.models.resnet import resnet18
from crossreid.tensor_cache import TensorCache


def test_keep_stages_cuts_weights_and_forward():
    trunk = resnet18().eval()
    x = torch.randn(2, 3, 64, 32)
    mid = trunk.forward_stages(x, "stem", "layer2")
    full = trunk(x)
    branch = copy.deepcopy(trunk).keep_stages("layer3", "layer4")
    assert not any(k.startswith(("conv1", "bn1", "layer1", "layer2")) for k in branch.state_dict())
    assert torch.allclose(branch(mid), full, atol=1e-5)  # forward runs the kept range
    with pytest.raises(ValueError, match="not in this trunk"):
        branch.forward_stages(x, "stem", "layer1")


def test_one_way_to_add_nonlocal_blocks():
    a = resnet18(nonlocal_after={"layer2": [1]})
    b = resnet18()
    b.add_nonlocal({"layer2": [1]})
    assert list(a.nonlocal_blocks) == list(b.nonlocal_blocks) == ["layer2_1"]
    assert a.state_dict().keys() == b.state_dict().keys()
    with pytest.raises(UserError, match="out of range"):
        b.add_nonlocal({"layer2": [7]})
    b.keep_stages("layer3")
    assert not b.nonlocal_blocks  # cut with its stage


def test_backbone_parameters_are_declared_and_default_to_self_backbone():
    cfg = load_config(None, ["model.arch=resnet18", "method.name=agw", "data.modalities=[rgb,ir]"])
    method = build_method(cfg, 4, [Modality.RGB, Modality.IR])
    trunk_ids = {id(p) for m in method.backbone_modules() for p in m.parameters()}
    assert trunk_ids == {id(p) for p in method.backbone.parameters()}
    groups = {g["name"]: g for g in learning_rates(method.param_groups(method.stages()[0]), method.stages()[0],
                                                   cfg.optim)}
    assert {id(p) for p in groups["backbone"]["params"]} == trunk_ids
    assert groups["backbone"]["lr"] == cfg.optim.lr * cfg.optim.backbone_lr_scale

    class Declared(type(method)):
        def backbone_modules(self):
            return [self.backbone["stems"]]  # only the stems count as trunk here
    declared = Declared(MethodSetup.of(cfg, 4, [Modality.RGB, Modality.IR]))
    groups = {g["name"]: g for g in declared.param_groups(declared.stages()[0])}
    assert {id(p) for p in groups["backbone"]["params"]} == {id(p) for p in declared.backbone["stems"].parameters()}


def test_parameters_from_a_name():
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 1))
    assert parameters_from(net, "1", prefix="net.") == ["net.1.weight", "net.1.bias", "net.2.weight", "net.2.bias"]
    assert parameters_from(net, "2.bias") == ["2.bias"]
    with pytest.raises(UserError, match="no parameter '9'"):
        parameters_from(net, "9")


def test_tensor_cache_computes_once(tmp_path):
    cache, calls = TensorCache(tmp_path / "cache"), []

    def compute():
        calls.append(1)
        return {"x": torch.arange(3)}
    assert cache.get_or_compute("a", compute)["x"].tolist() == [0, 1, 2]
    assert cache.get_or_compute("a", compute)["x"].tolist() == [0, 1, 2] and len(calls) == 1
    cache.path("a").write_bytes(b"broken")
    with pytest.raises(UserError, match="delete it to recompute"):
        cache.get_or_compute("a", compute)


def test_loss_terms_weight_in_one_place_and_log_every_term():
    terms = LossTerms()
    terms.add("a", torch.tensor(2.0), 0.5)
    terms.add("b", torch.tensor(3.0), 0.0)     # logged, not optimised
    terms.log("part", torch.tensor(7.0))       # logged only
    terms.add("c", torch.tensor(4.0))          # weight 1 by default
    out = terms.output(features=torch.ones(2, requires_grad=True))
    assert {k: float(v) for k, v in out.losses.items()} == {"a": 2.0, "b": 3.0, "part": 7.0, "c": 4.0, "loss": 5.0}
    assert not out.state["features"].requires_grad   # after_step reads detached tensors
    with pytest.raises(ValueError, match="given twice"):
        terms.add("a", torch.tensor(1.0))
    with pytest.raises(ValueError, match="named 'loss'"):
        terms.log("loss", torch.tensor(1.0))
    nothing = LossTerms()
    nothing.add("id", torch.tensor(1.0), 0.0)
    with pytest.raises(UserError, match=r"every loss term of this step has weight 0 \(id\)"):
        nothing.output()


def test_reid_terms_follow_the_loss_section():
    out = SimpleNamespace(logits=torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
                          features=torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]]))
    labels = torch.tensor([0, 1, 0])
    cfg = load_config(None, ["loss.id_weight=0.5", "loss.triplet_weight=2.0", "loss.label_smoothing=0",
                             "loss.triplet_margin=10"]).loss
    losses = reid_terms(out, labels, cfg).output().losses
    ce = torch.nn.functional.cross_entropy(out.logits, labels)
    # batch-hard by hand: hardest positive, hardest negative per anchor: (1, 5), (0, sqrt 18), (1, sqrt 18)
    triplet = ((1 - 5 + 10) + (0 - 18 ** 0.5 + 10) + (1 - 18 ** 0.5 + 10)) / 3
    assert float(losses["id"]) == pytest.approx(float(ce)) and float(losses["triplet"]) == pytest.approx(triplet)
    assert float(losses["loss"]) == pytest.approx(0.5 * float(ce) + 2.0 * triplet)
    only_id = load_config(None, ["loss.triplet_weight=0"]).loss
    assert set(reid_terms(out, labels, only_id).output().losses) == {"id", "loss"}   # a 0 weight: not computed


def test_the_registration_is_a_plugins_only_name(tiny_root):
    from crossreid.data.registry import load_dataset
    from crossreid.evaluation.protocols import PROTOCOLS
    from crossreid.methods.base import METHODS
    from crossreid.registry import Registry

    for registry in (METHODS, PROTOCOLS):
        for name in registry.names():
            assert registry.get(name).name == name     # stamped by the decorator, written nowhere else
    assert load_dataset("generic", tiny_root).name == "generic"   # the catalog is named by its registration
    things = Registry("thing")
    with pytest.raises(ValueError, match="sets its own 'name'"):
        @things.decorator("b")
        class B:
            name = "b"


def test_the_trainer_refuses_a_step_without_its_output(tiny_root, tmp_path, monkeypatch):
    from crossreid.data.registry import load_dataset
    from crossreid.engine.trainer import Trainer
    from crossreid.methods.one_stream import OneStream

    step = OneStream.training_step
    monkeypatch.setattr(OneStream, "training_step", lambda self, batch, stage: step(self, batch, stage).losses)
    cfg = load_config(None, ["data.dataset=generic", "model.arch=resnet18", "model.base_width=16", "data.height=32",
                             "data.width=16", "train.epochs=1", "train.iterations_per_epoch=1", "train.progress=false",
                             "train.ids_per_batch=2", "train.images_per_id=2"])
    with pytest.raises(TypeError, match=r"returned dict; declare the losses with LossTerms and return terms.output\(\)"):
        Trainer(cfg, tmp_path / "run", load_dataset("generic", tiny_root), progress=False).fit()
