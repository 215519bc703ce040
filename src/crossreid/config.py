"""Typed run configuration: YAML files with a ``base:`` parent and dotted overrides.

Unknown keys and wrong types are rejected with one line naming the key and, for a
misspelt key, the nearest valid one. The resolved config is saved in every run folder.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from crossreid.errors import UserError, explain_validation, parse_assignment


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    dataset: str = "synthetic"
    root: str | None = None  # None with dataset "synthetic": generate (or reuse) the cached default
    options: dict[str, Any] = Field(default_factory=dict)  # loader options, e.g. {trial: 3} for RegDB
    synth: dict[str, Any] = Field(default_factory=dict, validate_default=True)  # SynthParams fields (data.synth)
    height: int = Field(128, ge=16)
    width: int = Field(64, ge=8)
    modalities: list[str] = Field(default_factory=lambda: ["rgb", "depth", "ir"])
    cache: Literal["memory", "none"] = "memory"
    # How depth becomes network input (crossreid.data.images.encode_depth, whose DEPTH_ENCODINGS
    # these are); the default was chosen from the depth->depth measurement in docs/synthetic.md.
    depth_encoding: Literal["global", "relative", "normals"] = "normals"

    @field_validator("synth")
    @classmethod
    def _check_synth(cls, synth: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """The generator parameters, validated and filled in, when the dataset is the generated one."""
        if info.data.get("dataset") != "synthetic" or info.data.get("root") is not None:
            return synth
        from crossreid.data.synth.params import SynthParams

        try:
            return SynthParams(**synth).model_dump()
        except ValidationError as exc:
            raise explain_validation(exc, SynthParams, prefix="data.synth") from None

    @field_validator("modalities")
    @classmethod
    def _check_modalities(cls, value: list[str]) -> list[str]:
        from crossreid.modality import Modality

        if not value:
            raise ValueError(f"no modality given; name one or more of {', '.join(m.value for m in Modality)}")
        return [Modality.parse(v).value for v in value]


class ModelConfig(_Strict):
    arch: Literal["resnet18", "resnet34", "resnet50"] = "resnet18"
    # imagenet (= imagenet-v1) / imagenet-v2: torchvision's published file, fetched into torch hub's cache;
    # none: from scratch, said explicitly; or a local .pth/.safetensors file (docs/models.md)
    pretrained: str | None = None
    pretrained_strict: bool = True  # false: load what fits, report the rest (shape mismatches, missing keys)
    last_stride: Literal[1, 2] = 1
    base_width: int = Field(64, ge=8, le=256)  # trunk base width; 64 = standard (ImageNet weights), 32 ≈ 1/4 the work
    pooling: Literal["avg", "gem"] = "avg"
    head: Literal["bnneck", "embedding"] = "bnneck"
    embedding_dim: int | None = Field(None, ge=8)
    dropout: float = Field(0.5, ge=0.0, lt=1.0)


class MethodConfig(_Strict):
    name: str = "one_stream"
    options: dict[str, Any] = Field(default_factory=dict)


class OptimConfig(_Strict):
    name: Literal["sgd", "adam"] = "adam"
    lr: float = Field(3.5e-4, gt=0)
    backbone_lr_scale: float = Field(1.0, gt=0)  # backbone lr = lr × scale (heads use lr)
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0)


class ScheduleConfig(_Strict):
    name: Literal["step", "cosine", "constant"] = "step"
    warmup_epochs: int = Field(0, ge=0)
    warmup_factor: float = Field(0.1, gt=0, le=1)
    milestones: list[int] = Field(default_factory=list)
    gamma: float = Field(0.1, gt=0)


class LossConfig(_Strict):
    id_weight: float = Field(1.0, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    triplet_weight: float = Field(1.0, ge=0)
    triplet_margin: float | None = Field(0.3, gt=0)  # None: soft margin


class TrainConfig(_Strict):
    epochs: int = Field(20, ge=1)
    ids_per_batch: int = Field(8, ge=2)       # P
    images_per_id: int = Field(4, ge=1)       # K per modality
    iterations_per_epoch: int | None = Field(None, ge=1)  # default: one pass over the largest modality
    identity_draw: Literal["random", "pass"] = "random"  # pass: IDKL's per-epoch chunks without replacement
    seed: int = 0
    deterministic: bool = False
    threads: int | None = Field(None, ge=1)
    amp: Literal["off", "bf16", "fp16"] = "off"
    channels_last: bool = False
    flip: bool = True
    pad: int = Field(8, ge=0)
    random_erasing: float = Field(0.5, ge=0, le=1)
    random_grayscale: float = Field(0.0, ge=0, le=1)  # RGB training images turned to luminance
    validate_every: int = Field(1, ge=1)
    # The epoch a run keeps (crossreid.engine.selection): last, val (best validation mAP; needs
    # validation identities) or loss (lowest training loss).
    select: Literal["last", "val", "loss"] = "val"
    progress: bool = True
    checkpoint_every_steps: int | None = Field(None, ge=1)  # mid-epoch checkpoints (exact resume)
    # What a finished run keeps besides model.safetensors: all checkpoints, the last stage's
    # '-last' (optimiser state: --resume with more epochs continues it), or none.
    keep_checkpoints: Literal["all", "last", "none"] = "last"
    disk_cache: bool = False      # keep the decoded images in one file under cache_dir, reused across runs
    cache_dir: str | None = None  # default: $CROSSREID_CACHE/images or ~/.cache/crossreid/images
    decode_workers: int = Field(2, ge=1)  # threads for the first decode
    # torchrun: BatchNorm statistics over the global batch (SyncBatchNorm on CUDA, its CPU twin on gloo)
    sync_bn: bool = False
    # torchrun: the losses see the global P x K batch (global: one process's recipe) or each
    # process's share (per_rank: FastReID's convention); docs/training.md
    batch_scope: Literal["global", "per_rank"] = "per_rank"


class EvalConfig(_Strict):
    directions: list[str] = Field(default_factory=lambda: ["rgb->depth", "depth->rgb", "rgb->ir", "ir->rgb"])
    metric: Literal["euclidean", "cosine"] = "euclidean"
    batch_size: int = Field(128, ge=1)

    @field_validator("directions")
    @classmethod
    def _check_directions(cls, value: list[str]) -> list[str]:
        """Any accepted spelling (``rgb:ir``, ``visible->thermal``) becomes ``rgb->ir``."""
        from crossreid.modality import direction_name

        return [direction_name(v) for v in value]


class RunConfig(_Strict):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)


# --------------------------------------------------------------------------- loading

def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Read a YAML config, resolving ``base:`` (a path relative to the file) recursively."""
    path = Path(path).resolve()
    if path in _seen:
        raise UserError(f"{path}: circular 'base:' chain; remove the loop")
    if not path.is_file():
        raise UserError(f"{path}: config file not found; check the path")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: invalid YAML ({str(exc).splitlines()[0]}); fix the syntax") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a config must be a mapping of sections; see configs/demo.yaml")
    base = raw.pop("base", None)
    if base is None:
        return raw
    return _merge(read_yaml(path.parent / base, _seen + (path,)), raw)


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``section.key=value`` overrides (values parsed as YAML scalars/lists)."""
    out = copy.deepcopy(raw)
    for item in overrides:
        key, value = parse_assignment(item, "override (section.key=value)")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = value
    return out


def _blamed(source: str, key: str, overrides: list[str]) -> str:
    """The command-line override that set ``key`` (or a section around it), else ``source``."""
    for item in reversed(overrides):
        given = item.partition("=")[0].strip()
        if key == given or key.startswith(given + ".") or given.startswith(key + "."):
            return f"command-line override {item!r}"
    return source


def _explain(exc: ValidationError, source: str, overrides: list[str] | None = None) -> UserError:
    loc = ".".join(str(p) for p in exc.errors()[0]["loc"] if not isinstance(p, int))
    return explain_validation(exc, RunConfig, _blamed(source, loc, overrides or []))


def build_config(raw: dict, source: str = "config", overrides: list[str] | None = None) -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise _explain(exc, source, overrides) from None
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    raw = read_yaml(path) if path is not None else {}
    raw = apply_overrides(raw, overrides or [])
    return build_config(raw, source=str(path) if path is not None else "config", overrides=overrides)


def absolute_paths(cfg: RunConfig, base: str | Path | None = None) -> RunConfig:
    """A copy of ``cfg`` whose relative paths (``data.root``, ``train.cache_dir``) are made absolute
    against ``base`` (default: the working directory), so a run's saved config works from any folder."""
    out = cfg.model_copy(deep=True)
    anchor = Path(base) if base is not None else Path.cwd()
    for section, key in (("data", "root"), ("train", "cache_dir")):
        value = getattr(getattr(out, section), key)
        if value is not None:
            setattr(getattr(out, section), key, str((anchor / Path(value).expanduser()).absolute()))
    return out


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


PACKAGED_CONFIGS = Path(__file__).parent / "configs"


def packaged_config_names() -> list[str]:
    return sorted(p.stem for p in PACKAGED_CONFIGS.glob("*.yaml"))


def packaged_configs_by_dataset() -> dict[str, list[str]]:
    """Shipped config names grouped by the dataset each one trains on (``data.dataset``)."""
    out: dict[str, list[str]] = {}
    for name in packaged_config_names():
        data = read_yaml(PACKAGED_CONFIGS / f"{name}.yaml").get("data") or {}
        out.setdefault(str(data.get("dataset", DataConfig().dataset)), []).append(name)
    return out


# Shipped names before config files followed method names; they still resolve.
FORMER_NAMES = {f"{old}_{data}": f"{new}_{data}" for old, new in
                (("onestream", "one_stream"), ("twostream", "two_stream"), ("zeropadding", "zero_padding"))
                for data in ("biwi", "robotpku")}


def resolve_config(name_or_path: str | Path) -> Path:
    """A config file path, or the name of a config shipped with crossreid (e.g. ``demo``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = PACKAGED_CONFIGS / f"{FORMER_NAMES.get(str(name_or_path), name_or_path)}.yaml"
    if shipped.is_file():
        return shipped
    close = difflib.get_close_matches(str(name_or_path), packaged_config_names(), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; shipped configs: {', '.join(packaged_config_names())}"
    raise UserError(f"{name_or_path}: no such config file or shipped config{hint}")
