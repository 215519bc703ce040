"""Cross-modal distillation (Hafner et al.): freezing, weight copy, loss, attention, target cache."""

import pytest
import torch

from crossreid.config import load_config
from crossreid.data.pipeline import ImageStore, normalize
from crossreid.data.registry import load_dataset
from crossreid.engine.trainer import stage_context
from crossreid.errors import UserError
from crossreid.methods import Batch, build_method
from crossreid.modality import Modality
from crossreid.tensor_cache import TensorCache

D, R = Modality.DEPTH, Modality.RGB


def make(options=(), num_classes=3):
    cfg = load_config(None, ["model.arch=resnet18", "model.head=embedding", "model.embedding_dim=16",
                             "method.name=cross_modal_distillation", "data.modalities=[depth,rgb]", *options])
    return build_method(cfg, num_classes, [D, R])


def paired_batch(rows=4, size=(32, 16)):
    torch.manual_seed(0)
    images = torch.randn(2 * rows, 3, *size)
    return Batch(images, torch.tensor([0, 0, 1, 1] * (2 * rows // 4)), [D, R], rows, list(range(2 * rows)))


def start(method, stage, tmp_path, store=None, resumed=False):
    cache = TensorCache(tmp_path / "cache")
    method.on_stage_start(stage, stage_context(method, store, torch.device("cpu"), resumed, cache))
    for name, p in method.named_parameters():
        p.requires_grad_(not name.startswith(tuple(stage.frozen)))


def test_stages_and_frozen_boundary():
    method = make()
    teacher, student = method.stages()
    assert teacher.modalities == [D] and student.modalities == [D, R] and student.paired
    frozen = [n for n in student.frozen if n.startswith("student.")]
    assert frozen[0] == "student.backbone.layer3.0.conv1.weight"  # ResNet-18: first conv at layer3 width
    assert "student.head.fc.weight" in frozen or any(n.startswith("student.head.") for n in frozen)
    assert not any(n.startswith("student.backbone.layer2") for n in frozen)


def test_weight_copy_is_exact_and_frozen_params_do_not_move(tmp_path):
    method = make(["method.options.freeze_from=backbone.layer3.0.conv2", "optim.name=sgd", "optim.lr=0.1"])
    _, student = method.stages()
    start(method, student, tmp_path)
    for (n1, a), (n2, b) in zip(method.teacher.state_dict().items(), method.student.state_dict().items()):
        assert n1 == n2 and torch.equal(a, b)
    before = {n: p.detach().clone() for n, p in method.named_parameters()}
    groups = method.param_groups(student)
    opt = torch.optim.SGD(groups, lr=0.1)
    method.train()
    loss = method.training_step(paired_batch(), student).losses["loss"]
    loss.backward()
    opt.step()
    moved = {n for n, p in method.named_parameters() if not torch.equal(p, before[n])}
    assert moved, "the trainable part of the student must learn"
    assert all(n.startswith("student.") for n in moved)
    frozen = set(student.frozen[1:])
    assert not moved & frozen
    assert not any(n.startswith("teacher.") for n in moved)
    assert "student.backbone.conv1.weight" in moved


def test_loss_equals_hand_mse(tmp_path):
    method = make(["method.options.reduction=sum"])
    _, student = method.stages()
    start(method, student, tmp_path)
    method.train()
    batch = paired_batch()
    loss = method.training_step(batch, student).losses["loss"]
    assert not method.teacher.training and method.student.training  # frozen teacher, BN stats "update"
    with torch.no_grad():
        t = method.teacher(batch.images[:4]).embedding
        s = method.student(batch.images[4:]).embedding
    assert torch.allclose(loss, ((t - s) ** 2).sum(), rtol=1e-4)
    mean_method = make(["method.options.reduction=mean"])
    start(mean_method, mean_method.stages()[1], tmp_path)
    mean_method.load_state_dict(method.state_dict())
    mean_method.train()
    assert torch.allclose(mean_method.training_step(batch, student).losses["loss"], loss / 4, rtol=1e-4)
    # the released code's dropout of the student embedding before the MSE (here p = 0: the same loss)
    dropped = make(["method.options.reduction=sum", "method.options.student_dropout=true", "model.dropout=0.0"])
    start(dropped, dropped.stages()[1], tmp_path)
    dropped.load_state_dict(method.state_dict())
    dropped.train()
    assert torch.allclose(dropped.training_step(batch, student).losses["loss"], loss, rtol=1e-4)


def test_no_copy_ablation_keeps_fresh_student(tmp_path):
    method = make(["method.options.copy_weights=false", "method.options.freeze=false"])
    _, student = method.stages()
    assert [n for n in student.frozen if n.startswith("student.")] == []
    start(method, student, tmp_path)
    assert not torch.equal(method.teacher.backbone.conv1.weight, method.student.backbone.conv1.weight)


def test_attention_at_test_reads_only_input_modality(tmp_path):
    method = make(["method.options.attention=true"])
    _, student = method.stages()
    start(method, student, tmp_path)
    method.eval()
    rgb = torch.randn(2, 3, 32, 16)
    reference = method.embed(rgb, R)

    def boom(*args, **kwargs):
        raise AssertionError("teacher used while embedding RGB")

    method.teacher.forward = boom
    method.teacher.backbone.forward_stages = boom
    assert torch.equal(method.embed(rgb, R), reference)
    # Training gates with the paired depth map: changing the depth image changes the student loss.
    method.teacher.forward = type(method.teacher).forward.__get__(method.teacher)
    del method.teacher.backbone.forward_stages
    method.train()
    b1 = paired_batch()
    b2 = paired_batch()
    b2.images[:4] = torch.randn(4, 3, 32, 16)
    with torch.no_grad():
        g1 = method.student_forward(b1.images[4:], method.teacher.backbone.forward_stages(b1.images[:4], "stem", "layer2"))
        g2 = method.student_forward(b1.images[4:], method.teacher.backbone.forward_stages(b2.images[:4], "stem", "layer2"))
    assert not torch.allclose(g1.embedding, g2.embedding)


def test_offline_cache_keyed_to_teacher(tiny_root, tmp_path):
    cat = load_dataset("generic", tiny_root)
    store = ImageStore(cat.train, 32, 16, depth_encoding="normals")
    method = make(["method.options.targets=offline"])
    _, student = method.stages()
    start(method, student, tmp_path, store)
    files = list((tmp_path / "cache").glob("teacher-targets-*.safetensors"))
    assert len(files) == 1
    depth_rows = [i for i, s in enumerate(cat.train) if s.modality is D]
    method.eval()
    with torch.no_grad():
        expected = method.teacher(normalize(store.batch(depth_rows[:2]))).embedding
    assert torch.allclose(method._cache[:2], expected, atol=1e-5)
    # Same teacher: the cache file is reused. Changed teacher: a new cache is computed.
    start(method, student, tmp_path, store, resumed=True)
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1
    with torch.no_grad():
        method.teacher.head.fc.weight.mul_(2)
    start(method, student, tmp_path, store, resumed=True)
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2
    assert not torch.allclose(method._cache[:2], expected, atol=1e-5)


def test_bad_options():
    with pytest.raises(UserError, match="did you mean 'attention'"):
        make(["method.options.atention=true"])
    with pytest.raises(UserError, match="source and target"):
        make(["method.options.target=depth"])
    with pytest.raises(UserError, match="freeze_from"):
        make(["method.options.freeze_from=backbone.layer9"]).stages()


@pytest.mark.parametrize("mode, should_move", [("update", True), ("freeze", False)])
def test_frozen_bn_running_stats(tmp_path, mode, should_move):
    method = make([f"method.options.frozen_bn={mode}"])
    _, student = method.stages()
    start(method, student, tmp_path)
    method.train()
    frozen_bn = method.student.backbone.layer4[0].bn1
    trainable_bn = method.student.backbone.bn1
    before = frozen_bn.running_mean.clone(), trainable_bn.running_mean.clone()
    method.training_step(paired_batch(), student)
    assert (not torch.equal(frozen_bn.running_mean, before[0])) == should_move
    assert not torch.equal(trainable_bn.running_mean, before[1])


def test_offline_targets_are_the_cached_embeddings_of_the_source_rows_and_embed_uses_the_teacher(tiny_root, tmp_path):
    cat = load_dataset("generic", tiny_root)
    store = ImageStore(cat.train, 32, 16, depth_encoding="normals")
    method = make(["method.options.targets=offline", "method.options.reduction=sum"])
    _, student = method.stages()
    start(method, student, tmp_path, store)
    depth = [i for i, s in enumerate(cat.train) if s.modality is D][:2]
    rgb = [i for i, s in enumerate(cat.train) if s.modality is R][:2]
    torch.manual_seed(1)
    noise = torch.randn(2, 3, 32, 16)  # the batch's depth images differ from the cached test-time view
    batch = Batch(torch.cat([noise, normalize(store.batch(rgb))]), torch.tensor([0, 1, 0, 1]), [D, R], 2, depth + rgb)
    method.train()
    loss = method.training_step(batch, student).losses["loss"]
    with torch.no_grad():
        target = method.teacher(normalize(store.batch(depth))).embedding   # the teacher is frozen in eval mode
        s = method.student(batch.images[2:]).embedding
    assert torch.allclose(loss, ((target - s) ** 2).sum(), rtol=1e-4)
    method.eval()
    with torch.no_grad():
        assert torch.equal(method.embed(noise, D), method.teacher(noise).embedding)
