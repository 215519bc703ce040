"""The authors' released checkpoints as run folders (``crossreid import-weights``).

A released file is read safely (``models.weights.load_pickle``: tensors and plain numpy
values only, never pickled code). Its state dict is renamed with the method's ``KeyMap``,
a table of (authors' prefix, our prefix) pairs written from the authors' model definition;
keys of modules their code builds but never runs are skipped by name, and every other key
must map (an unknown key, a missing one or a shape mismatch is an error naming it). The
number of identities in the file's classifier must be the dataset's. The run folder
(``config.yaml`` from the method's shipped config for the dataset, ``model.safetensors``,
``import.json``) is written atomically, and ``evaluate``, ``extract``, ``export`` and
``search`` open it like a trained run. Methods whose authors released no weights have no
``KeyMap`` (docs/methods.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from crossreid.config import RunConfig, apply_overrides, build_config, dump_config, read_yaml, resolve_config
from crossreid.data.datasets.published import PUBLISHED_IDS
from crossreid.engine.checkpoint import save_checkpoint
from crossreid.engine.state import config_hash, resume_view
from crossreid.errors import UserError
from crossreid.io import atomic_dir, write_json
from crossreid.methods import build_method
from crossreid.modality import Modality
from crossreid.models.hub import SCRATCH
from crossreid.models.weights import load_pickle, sha256_of, strip_prefixes, unwrap_state_dict

NOT_RELEASED = {  # seed methods whose authors published no weights (docs/methods.md)
    "idkl": "IDKL's repository (1KK077/IDKL) has code only",
    "cross_modal_distillation": "Hafner et al.'s repository has code only",
    "smmd": "SMMD has neither code nor weights",
    "wan": "Wan et al. published neither code nor weights",
}


@dataclass(frozen=True)
class KeyMap:
    """How an authors' checkpoint maps onto one of our methods.

    ``prefixes``: (theirs, ours) pairs, the first match wins in either direction (specific
    pairs before general ones). ``unused``: prefixes of theirs skipped by name (modules their
    code builds and never runs). ``container``: the key of the state dict in the saved dict.
    ``configs``: dataset -> shipped config. ``options``: the config values the renamed keys
    reveal (e.g. which variant was trained).
    """

    method: str
    source: str
    container: str
    prefixes: tuple[tuple[str, str], ...]
    unused: tuple[str, ...]
    configs: dict[str, str]
    options: Callable[[dict[str, torch.Tensor]], dict]

    def to_ours(self, key: str) -> str | None:
        return next((ours + key[len(theirs):] for theirs, ours in self.prefixes if key.startswith(theirs)), None)

    def to_theirs(self, key: str) -> str | None:
        return next((theirs + key[len(ours):] for theirs, ours in self.prefixes if key.startswith(ours)), None)


_NL = "backbone.shared.nonlocal_blocks."


def _agw_options(ours: dict[str, torch.Tensor]) -> dict:
    """AGW's variant from its keys: non-local blocks and GeM (``agw``) or neither (``base``);
    a non-local width of 1 is the released code's (``nonlocal_inter=released``)."""
    g = ours.get(_NL + "layer2_2.g.weight")
    if g is None:
        return {"method.options.non_local": False, "model.pooling": "avg"}
    return {"method.options.non_local": True, "model.pooling": "gem",
            "method.options.nonlocal_inter": "released" if g.shape[0] == 1 else "paper"}


# AGW (Ye et al.), mangye16/Cross-Modal-Re-ID-baseline @ e817a26, model.py / resnet.py: embed_net with
# visible_module.visible and thermal_module.thermal (full ResNet-50s of which only conv1/bn1 run),
# base_resnet.base (a full ResNet-50 whose layer1-4 run), NL_2 / NL_3 (non-local blocks after
# layer2 blocks 2, 3 and layer3 blocks 3, 4, 5; their g is a Sequential, hence g.0), bottleneck
# (BNNeck) and classifier. train.py saves {'net': state_dict, 'cmc', 'mAP', 'mINP', 'epoch'}.
AGW = KeyMap(
    method="agw",
    source="mangye16/Cross-Modal-Re-ID-baseline @ e817a26 (model.py, resnet.py, train.py)",
    container="net",
    prefixes=(
        ("visible_module.visible.conv1.", "backbone.stems.rgb.conv1."),
        ("visible_module.visible.bn1.", "backbone.stems.rgb.bn1."),
        ("thermal_module.thermal.conv1.", "backbone.stems.ir.conv1."),
        ("thermal_module.thermal.bn1.", "backbone.stems.ir.bn1."),
        ("base_resnet.base.layer", "backbone.shared.layer"),
        ("NL_2.0.g.0.", _NL + "layer2_2.g."), ("NL_2.0.", _NL + "layer2_2."),
        ("NL_2.1.g.0.", _NL + "layer2_3.g."), ("NL_2.1.", _NL + "layer2_3."),
        ("NL_3.0.g.0.", _NL + "layer3_3.g."), ("NL_3.0.", _NL + "layer3_3."),
        ("NL_3.1.g.0.", _NL + "layer3_4.g."), ("NL_3.1.", _NL + "layer3_4."),
        ("NL_3.2.g.0.", _NL + "layer3_5.g."), ("NL_3.2.", _NL + "layer3_5."),
        ("bottleneck.", "head.neck."),
        ("classifier.", "head.classifier."),
    ),
    unused=("visible_module.visible.layer", "thermal_module.thermal.layer",
            "base_resnet.base.conv1.", "base_resnet.base.bn1."),
    configs={"sysu_mm01": "agw_sysu", "regdb": "agw_regdb"},
    options=_agw_options,
)
KEYMAPS = {AGW.method: AGW}


def keymap(method: str) -> KeyMap:
    if method in KEYMAPS:
        return KEYMAPS[method]
    why = NOT_RELEASED.get(method, "no such method")
    raise UserError(f"{method}: no released weights to import ({why}); methods with released weights: "
                    f"{', '.join(KEYMAPS)}")


@dataclass
class ImportReport:
    method: str
    file: str
    sha256: str
    dataset: str
    num_classes: int
    mapped: int
    skipped: dict[str, int]
    options: dict
    recorded: dict = field(default_factory=dict)

    def lines(self, out: Path) -> list[str]:
        skipped = ", ".join(f"{p}* ({n})" for p, n in self.skipped.items() if n) or "none"
        lines = [f"wrote {out}: {self.method} on {self.dataset} ({self.num_classes} identities) from {self.file}",
                 f"  {self.mapped} tensors mapped, 0 missing, 0 unexpected; unused copies skipped by name: {skipped}",
                 f"  inferred from the keys: {', '.join(f'{k}={v}' for k, v in self.options.items())}"]
        if self.recorded:
            shown = ", ".join(f"{k} {v}" + ("" if k == "epoch" else " %") for k, v in self.recorded.items())
            lines.append(f"  the file records {shown} (the authors' own test during training, not ours)")
        return lines


def recorded_metrics(saved: object) -> dict:
    """What a released file records besides the weights (AGW's train.py: the epoch, and the CMC
    curve, mAP and mINP of its own test during training), metrics in percent."""
    if not isinstance(saved, dict):
        return {}
    out = {"epoch": int(saved["epoch"])} if "epoch" in saved else {}
    cmc = saved.get("cmc")
    if cmc is not None and len(cmc) >= 20:
        out.update({f"R{k}": round(100 * float(cmc[k - 1]), 2) for k in (1, 5, 10, 20)})
    out.update({k: round(100 * float(saved[k]), 2) for k in ("mAP", "mINP") if k in saved})
    return out


def rename(state: dict[str, torch.Tensor], km: KeyMap, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Their state dict in our names, and how many keys of each unused prefix were skipped."""
    ours: dict[str, torch.Tensor] = {}
    skipped = {p: 0 for p in km.unused}
    unknown = []
    for raw, tensor in state.items():
        key = strip_prefixes(raw, ("module.",))
        unused = next((p for p in km.unused if key.startswith(p)), None)
        if unused:
            skipped[unused] += 1
        elif (mapped := km.to_ours(key)) is not None:
            ours[mapped] = tensor
        else:
            unknown.append(raw)
    if unknown or not ours:
        first = unknown[0] if unknown else next(iter(state), "<empty>")
        raise UserError(f"{path}: not a {km.method} checkpoint: key {first!r} has no place in its layout "
                        f"({len(unknown)} of {len(state)} keys unknown; layout of {km.source}); pass a file "
                        f"saved by {km.method}'s released code")
    return ours, skipped


def export_released(method_state: dict[str, torch.Tensor], km: KeyMap) -> dict[str, torch.Tensor]:
    """Our method's state dict in the authors' names (without their unused copies)."""
    out = {}
    for key, tensor in method_state.items():
        theirs = km.to_theirs(key)
        if theirs is None:
            raise UserError(f"{key}: no place in {km.method}'s released layout; export a {km.method} run")
        out[theirs] = tensor
    return out


def _check_identities(num_classes: int, dataset: str, km: KeyMap, path: Path) -> None:
    trained = PUBLISHED_IDS.get(dataset, (num_classes,))[0]
    if num_classes != trained:
        other = [d for d in km.configs if PUBLISHED_IDS.get(d, (None,))[0] == num_classes]
        hint = f"pass --dataset {other[0]}" if other else "pass the checkpoint of this dataset"
        raise UserError(f"{path}: its classifier has {num_classes} identities but {dataset} trains {trained}: "
                        f"a checkpoint of another dataset? {hint}")


def import_released(method: str, file: str | Path, out: str | Path, dataset: str, root: str | None = None,
                    data_options: dict | None = None, overrides: list[str] | None = None,
                    overwrite: bool = False) -> ImportReport:
    """Write the run folder ``out`` from the released checkpoint ``file`` of ``method`` on ``dataset``."""
    km, path, out = keymap(method), Path(file), Path(out)
    if dataset not in km.configs:
        raise UserError(f"--dataset {dataset}: {method}'s released code trains on {', '.join(km.configs)}; "
                        "pass one of them")
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found; pass the file you downloaded")
    if out.exists() and not overwrite:
        raise UserError(f"{out}: already exists; choose another --out or pass --overwrite")
    saved = load_pickle(path)
    state = saved.get(km.container, saved) if isinstance(saved, dict) else saved
    ours, skipped = rename(unwrap_state_dict(state, path), km, path)
    num_classes = int(ours["head.classifier.weight"].shape[0]) if "head.classifier.weight" in ours else 0
    _check_identities(num_classes, dataset, km, path)
    inferred = km.options(ours)
    cfg = _run_config(km, dataset, overrides or [], {
        "data.dataset": dataset, **({"data.root": root} if root else {}),
        **{f"data.options.{k}": v for k, v in (data_options or {}).items()},
        "model.pretrained": SCRATCH, **inferred})  # the weights replace any initialisation
    modalities = [Modality.parse(m) for m in cfg.data.modalities]
    net = build_method(cfg, num_classes, modalities)
    _load_exactly(net, ours, path, km)
    report = ImportReport(method, str(path.resolve()), sha256_of(path), dataset, num_classes, len(ours), skipped,
                          {k.rpartition(".")[2]: v for k, v in inferred.items()}, recorded_metrics(saved))
    state = {"method": method, "num_classes": num_classes, "modalities": [m.value for m in modalities],
             "final": True, "imported": True, "config_hash": config_hash(cfg), "config": resume_view(cfg)}
    with atomic_dir(out, overwrite) as tmp:
        (tmp / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
        save_checkpoint(tmp / "model.safetensors", net, state)
        write_json(tmp / "import.json", {**report.__dict__, "source_layout": km.source})
    return report


def _run_config(km: KeyMap, dataset: str, overrides: list[str], values: dict) -> RunConfig:
    """The method's shipped config for ``dataset``, with the user's overrides, then ``values``
    (dotted keys: what the import knows) on top."""
    config = resolve_config(km.configs[dataset])
    raw = apply_overrides(read_yaml(config), overrides)
    for key, value in values.items():
        *sections, last = key.split(".")
        node = raw
        for section in sections:
            node = node.setdefault(section, {})
        node[last] = value
    return build_config(raw, source=str(config), overrides=overrides)


def _load_exactly(net: torch.nn.Module, ours: dict[str, torch.Tensor], path: Path, km: KeyMap) -> None:
    """Load ``ours`` into ``net``: every tensor of the net (BatchNorm counters aside) from the file,
    with its shape; else a UserError naming the first offending key."""
    target = net.state_dict()
    for key, tensor in ours.items():
        if key not in target:
            raise UserError(f"{path}: {km.to_theirs(key)} has no place in our {km.method} "
                            f"(as {key}); a checkpoint of another variant?")
        if tensor.shape != target[key].shape:
            raise UserError(f"{path}: {km.to_theirs(key)} has shape {list(tensor.shape)}, our {km.method} "
                            f"expects {list(target[key].shape)} ({key}); a checkpoint of another architecture?")
    missing = [k for k in target if k not in ours and not k.endswith("num_batches_tracked")]
    if missing:
        raise UserError(f"{path}: lacks {km.to_theirs(missing[0]) or missing[0]} ({len(missing)} tensors of our "
                        f"{km.method} in all); a truncated or partial state dict?")
    net.load_state_dict(ours, strict=False)
