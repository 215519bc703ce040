"""What a run's backbone starts from: checked before training, said in one line, kept in the run.

``model.pretrained`` is read once, when a run starts: the file it names is loaded (strictly
unless ``model.pretrained_strict=false``) while the method builds its networks, and every
load report (file, sha256, tensors loaded / missing / unexpected / shape-mismatched,
classifier keys skipped) is printed in one line and saved as ``init.json``. Whatever opens
the run afterwards (``load_run``: evaluate, extract, export, search; and ``--resume``)
builds the method from ``without_init(cfg)``: its weights come from the run's checkpoints,
so the weights file may move or vanish.
"""

from __future__ import annotations

from pathlib import Path

from crossreid import distributed as D
from crossreid.config import RunConfig
from crossreid.errors import UserError
from crossreid.io import write_json
from crossreid.models.hub import SCRATCH, canonical, fetch, published_url
from crossreid.models.weights import LoadReport

INIT_FILE = "init.json"
# Datasets where an unset model.pretrained means "from scratch": the small synthetic nets and
# bring-your-own manifests. On the published datasets it must be said (imagenet or none).
UNSET_MEANS_SCRATCH = ("synthetic", "generic")


def check_init(cfg: RunConfig) -> None:
    """A UserError when a run on a published dataset leaves ``model.pretrained`` unset."""
    if cfg.model.pretrained is None and cfg.data.dataset not in UNSET_MEANS_SCRATCH:
        raise UserError(f"model.pretrained is unset for dataset {cfg.data.dataset}: set model.pretrained=imagenet "
                        "(the papers' initialisation) or model.pretrained=none to train the backbone from scratch")


def fetch_init(cfg: RunConfig, dist: D.Dist, progress: bool) -> None:
    """Bring a named initialisation (``model.pretrained: imagenet``) into the hub cache before the
    method builds, with a progress bar only when the run shows progress. Under torchrun the first
    process of each machine downloads while the others wait, so a machine fetches the file once."""
    name = canonical(cfg.model.pretrained)
    if name is None or name == SCRATCH:
        return
    url = published_url(name, cfg.model.arch)
    if dist.local_rank == 0:
        fetch(url, progress)
    D.barrier(dist)


def without_init(cfg: RunConfig) -> RunConfig:
    """``cfg`` with ``model.pretrained=none``: how a saved run's method is built (its weights
    come from its checkpoint; ``cfg`` itself is left as recorded)."""
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"pretrained": SCRATCH})})


def init_line(cfg: RunConfig, loads: list[LoadReport]) -> str:
    """One line: what the backbone was initialised from."""
    pretrained = cfg.model.pretrained
    if not loads:
        said = "unset" if pretrained is None else f"={pretrained}"
        return f"init: backbone from scratch (model.pretrained {said})"
    name = canonical(pretrained)
    head = f"init: model.pretrained={pretrained}" + (f" ({name})" if name and name != pretrained else "")
    files = {(r.path, r.sha256) for r in loads}
    where = "; ".join(f"{path} (sha256 {sha[:12]}…)" for path, sha in sorted(files))
    counts = [r.counts() for r in loads]
    if len(set(counts)) > 1:
        what = "; ".join(counts)
    else:
        what = (f"{len(loads)} trunks, each " if len(loads) > 1 else "") + counts[0]
    return f"{head} -> {where}: {what}"


def save_init(run_dir: str | Path, cfg: RunConfig, loads: list[LoadReport]) -> str:
    """Write ``init.json`` (the load reports) into the run folder; return the one line."""
    line = init_line(cfg, loads)
    write_json(Path(run_dir) / INIT_FILE, {"pretrained": cfg.model.pretrained,
                                           "strict": cfg.model.pretrained_strict, "summary": line,
                                           "loads": [r.to_json() for r in loads]})
    return line
