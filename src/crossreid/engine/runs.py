"""Open a finished run folder: its resolved config and its selected model."""

from __future__ import annotations

from pathlib import Path

from crossreid.config import RunConfig, load_config
from crossreid.engine.checkpoint import load_checkpoint
from crossreid.errors import UserError
from crossreid.methods import Method, build_method
from crossreid.modality import Modality


def load_run(run_dir: str | Path) -> tuple[RunConfig, Method]:
    """The run's config and its method with the selected weights (``model.safetensors``), in eval mode."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir}: not a run folder (no config.yaml); pass the --out folder of `crossreid train`")
    cfg = load_config(run_dir / "config.yaml")
    weights, state, _, _ = load_checkpoint(run_dir / "model.safetensors")
    if "num_classes" not in state:
        raise UserError(f"{run_dir / 'model.safetensors'}: lacks the training metadata; retrain with this version")
    method = build_method(cfg, state["num_classes"], [Modality.parse(m) for m in state["modalities"]])
    result = method.load_state_dict(weights, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise UserError(f"{run_dir / 'model.safetensors'}: weights do not fit the run's config "
                        f"(missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})")
    return cfg, method.eval()
