"""The trainer end to end on the tiny dataset: run folder, checkpoints, resume, bad input."""

import copy
import json

import pytest
import torch

from crossreid.config import load_config
from crossreid.data.registry import load_dataset
from crossreid.engine.checkpoint import load_checkpoint
from crossreid.engine.runs import load_run
from crossreid.engine.trainer import Trainer
from crossreid.errors import UserError

TINY = ["data.dataset=generic", "model.arch=resnet18", "data.height=32", "data.width=16",
        "train.ids_per_batch=2", "train.images_per_id=2", "train.iterations_per_epoch=2", "train.progress=false",
        "eval.directions=[rgb->depth,depth->rgb]"]


def cfg(*extra):
    return load_config(None, [*TINY, *extra])


def test_fit_writes_run_folder(tiny_root, tmp_path):
    catalog = load_dataset("generic", tiny_root)
    run = tmp_path / "run"
    Trainer(cfg("train.epochs=2", "train.keep_checkpoints=all"), run, catalog, progress=False).fit()
    for name in ("config.yaml", "metrics.jsonl", "model.safetensors", "checkpoints/main-last.safetensors",
                 "checkpoints/main-best.safetensors"):
        assert (run / name).is_file(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    for r in records:
        assert {"val/mAP", "val/rgb->depth/mAP", "val/depth->rgb/mAP", "loss", "images_per_s"} <= set(r)
        assert 0.0 <= r["val/mAP"] <= 1.0
    _, method = load_run(run)
    assert not method.training


def test_resume_continues_and_matches_uninterrupted(tiny_root, tmp_path):
    catalog = load_dataset("generic", tiny_root)
    full = tmp_path / "full"
    Trainer(cfg("train.epochs=3"), full, catalog, progress=False).fit()
    part = tmp_path / "part"
    Trainer(cfg("train.epochs=2"), part, catalog, progress=False).fit()
    Trainer(cfg("train.epochs=3"), part, catalog, resume=True, progress=False).fit()
    a, sa, _, _ = load_checkpoint(full / "checkpoints/main-last.safetensors")
    b, sb, _, _ = load_checkpoint(part / "checkpoints/main-last.safetensors")
    assert sa["epoch"] == sb["epoch"] == 2
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), key


def test_run_folder_protection(tiny_root, tmp_path):
    catalog = load_dataset("generic", tiny_root)
    run = tmp_path / "run"
    with pytest.raises(UserError, match="nothing to resume"):
        Trainer(cfg(), run, catalog, resume=True, progress=False)
    run.mkdir()
    (run / "mine.txt").write_text("user data")
    with pytest.raises(UserError, match="--overwrite"):
        Trainer(cfg(), run, catalog, progress=False)


def test_bad_batch_and_modalities_fail_before_training(tiny_root, tmp_path):
    catalog = load_dataset("generic", tiny_root)
    with pytest.raises(UserError, match="ids_per_batch=5"):
        Trainer(cfg("train.ids_per_batch=5"), tmp_path / "a", catalog, progress=False).fit()
    assert not (tmp_path / "a").exists()  # nothing written, so a corrected rerun needs no --overwrite
    catalog.train = [s for s in catalog.train if s.modality.value != "ir"]
    catalog.val = [s for s in catalog.val if s.modality.value != "ir"]
    catalog.query = catalog.gallery = [s for s in catalog.query if s.modality.value != "ir"]
    with pytest.raises(UserError, match="no ir images"):
        Trainer(cfg(), tmp_path / "b", catalog, progress=False)
    with pytest.raises(UserError, match="unknown method 'one_stram'; did you mean 'one_stream'"):
        Trainer(cfg("method.name=one_stram", "data.modalities=[rgb,depth]"), tmp_path / "c", catalog, progress=False)


def test_two_stage_distillation_runs(tiny_root, tmp_path):
    catalog = load_dataset("generic", tiny_root)
    run = tmp_path / "hafner"
    summary = Trainer(cfg("method.name=cross_modal_distillation", "data.modalities=[depth,rgb]",
                          "model.head=embedding", "model.embedding_dim=16", "train.epochs=1",
                          "method.options.attention=true"), run, catalog, progress=False).fit()
    assert set(summary) == {"teacher", "student"}
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["student-last.safetensors"]
    cfg_, method = load_run(run)
    assert [m.value for m in method.embeddable] == ["depth", "rgb"]


@pytest.mark.parametrize("optim", [["optim.name=adam"], ["optim.name=sgd", "optim.momentum=0.9", "optim.nesterov=true"]])
def test_optimizer_is_fused_on_cpu_and_makes_the_plain_update(optim):
    from crossreid.engine.trainer import make_optimizer
    c = cfg(*optim, "optim.lr=0.01", "optim.weight_decay=0.001")
    torch.manual_seed(0)
    start = [torch.randn(50), torch.randn(7, 3)]
    grads = [[torch.randn_like(p) for p in start] for _ in range(4)]
    params = {}
    for fused in (True, False):
        ps = [p.clone().requires_grad_() for p in start]
        # fused=None is the default choice (fused on the CPU); False is the per-tensor path
        opt = make_optimizer([{"params": ps, "lr": 0.01}], c, fused=None if fused else False)
        assert bool(opt.param_groups[0]["fused"]) is fused
        for step in grads:
            for p, g in zip(ps, step):
                p.grad = g.clone()
            opt.step()
        params[fused] = ps
    for a, b, s in zip(params[True], params[False], start):
        assert torch.allclose(a, b, atol=1e-6)
        assert not torch.allclose(a, s, atol=1e-3)  # the steps did move them


def test_a_plain_optimizer_state_resumes_in_the_fused_optimizer():
    """Checkpoints written before the optimiser was fused resume with the same update."""
    from crossreid.engine.trainer import load_optimizer_state, make_optimizer
    c = cfg("optim.name=adam", "optim.lr=0.01")
    torch.manual_seed(0)
    plain_params = [torch.randn(40).requires_grad_()]
    plain = make_optimizer([{"params": plain_params}], c, fused=False)
    for _ in range(3):
        plain_params[0].grad = torch.randn(40)
        plain.step()
    fused_params = [plain_params[0].detach().clone().requires_grad_()]
    fused = make_optimizer([{"params": fused_params}], c)
    load_optimizer_state(fused, copy.deepcopy(plain.state_dict()))  # a checkpoint shares no tensors
    grad = torch.randn(40)
    for p, opt in ((plain_params[0], plain), (fused_params[0], fused)):
        p.grad = grad.clone()
        opt.step()
    assert fused.param_groups[0]["fused"]
    assert torch.allclose(plain_params[0], fused_params[0], atol=1e-6)


@pytest.mark.parametrize("rule", ["last", "val", "loss"])
def test_select_keeps_the_epoch_its_rule_names(tiny_root, tmp_path, rule):
    """The kept weights (model.safetensors) are the epoch the rule picks from metrics.jsonl, and fit()
    reports that epoch and its value."""
    from crossreid.engine.selection import describe_fit

    catalog = load_dataset("generic", tiny_root)
    run = tmp_path / rule
    summary = Trainer(cfg("train.epochs=4", f"train.select={rule}", "train.validate_every=2", "optim.lr=0.1",
                          "train.keep_checkpoints=all"), run, catalog, progress=False).fit()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    if rule == "last":
        want = 3
    elif rule == "loss":
        want = min(range(4), key=lambda e: records[e]["loss"])
    else:  # validated after epochs 2 and 4 only (validate_every=2)
        assert [("val/mAP" in r) for r in records] == [False, True, False, True]
        want = max((1, 3), key=lambda e: (records[e]["val/mAP"], -e))
    kept, state, _, _ = load_checkpoint(run / "model.safetensors")
    assert state["epoch"] == want and state["select"] == rule and summary["main"]["epoch"] == want
    epoch_weights, _, _, _ = load_checkpoint(run / "checkpoints" / "main-best.safetensors")
    assert all(torch.equal(kept[k], epoch_weights[k]) for k in kept)
    value = records[want]["val/mAP"] if rule == "val" else records[want]["loss"]
    words = describe_fit(summary)
    assert words.startswith(f"kept epoch {want + 1} of 4 (train.select={rule}: ")
    assert (f"{100 * value:.1f} %" if rule == "val" else f"{value:.4g}") in words


def test_select_val_without_validation_ids_is_one_line_before_anything_is_written(tiny_root, tmp_path):
    catalog = load_dataset("generic", tiny_root)
    catalog.val = []
    with pytest.raises(UserError, match="train.select=val .* holds no validation identities.*train.select=last"):
        Trainer(cfg("train.select=val"), tmp_path / "run", catalog, progress=False)
    assert not (tmp_path / "run").exists()
    Trainer(cfg("train.select=last", "train.epochs=1"), tmp_path / "run", catalog, progress=False).fit()
    with pytest.raises(UserError, match="train.select"):
        cfg("train.select=best")
