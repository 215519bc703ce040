"""docs/extending.md's examples, executed: the method, its config, the dataset and the protocol.

The page's ```python blocks run in order (each as its own module, as the page's files
would be), in a fresh interpreter so their registrations stay out of this one; the method
then trains an epoch on the tiny dataset with the page's YAML config, the dataset loads a
tree in the layout its loader reads, and the protocol scores that catalog.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_tiny_dataset

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "extending.md"

DRIVER = r"""
import json, shutil, sys
from pathlib import Path

import numpy as np
from PIL import Image

blocks, config_text, tiny, work = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]).read_text(), \
    Path(sys.argv[3]), Path(sys.argv[4])
for i, code in enumerate(blocks):                       # each block is one file of the page
    exec(compile(code, f"extending.md python block {i + 1}", "exec"), {"__name__": f"block{i + 1}"})

from crossreid.config import PACKAGED_CONFIGS, load_config
from crossreid.data.registry import load_dataset
from crossreid.engine.trainer import Trainer
from crossreid.evaluation.protocols import evaluate_protocol, get_protocol

# The method, trained with the page's config (its base: the shipped demo.yaml), tiny settings.
configs = work / "configs"
configs.mkdir()
shutil.copy(PACKAGED_CONFIGS / "demo.yaml", configs / "demo.yaml")
(configs / "my_method_synthetic.yaml").write_text(config_text)
cfg = load_config(configs / "my_method_synthetic.yaml", [
    "data.dataset=generic", f"data.root={tiny}", "data.height=32", "data.width=16", "model.base_width=16",
    "train.epochs=2", "train.iterations_per_epoch=2", "train.ids_per_batch=2", "train.images_per_id=2",
    "train.progress=false", "train.threads=1"])
Trainer(cfg, work / "run", load_dataset("generic", tiny), progress=False).fit()
records = [json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines()]

# The dataset: a tree in the layout its loader reads (images/<pid>_<cam>_<modality>.png).
root = work / "MyData"
(root / "images").mkdir(parents=True)
rng = np.random.default_rng(0)
for pid in range(1, 7):
    for cam, kind in ((1, "rgb"), (2, "ir")):
        pixels = rng.integers(0, 255, (16, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"{pid}_{cam}_{kind}.png")
catalog = load_dataset("my_data", root)

# The protocol, scoring that catalog's test pools.
protocol = get_protocol("my_protocol")
features = rng.normal(size=(len(catalog.query), 4)).astype(np.float32)
result = evaluate_protocol(protocol, catalog, features, features)
print(json.dumps({"records": records, "catalog": [catalog.name, len(catalog.train), len(catalog.query)],
                  "protocol": result.protocol, "rank1": result.mean()["rank1"]}))
"""


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)


def test_the_extending_guide_runs(tmp_path):
    python, yaml = blocks("python"), blocks("yaml")
    assert len(python) == 3 and len(yaml) == 1            # method, dataset, protocol; the method's config
    (tmp_path / "blocks.json").write_text(json.dumps(python))
    (tmp_path / "config.yaml").write_text(yaml[0])
    tiny = write_tiny_dataset(tmp_path / "tiny")
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run([sys.executable, "-c", DRIVER, str(tmp_path / "blocks.json"), str(tmp_path / "config.yaml"),
                           str(tiny), str(work)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    last = out["records"][-1]
    # every term of the page's method is logged by name, and `loss` is their weighted sum
    assert {"id", "triplet", "centre", "loss"} <= set(last)
    assert last["centre"] > 0 and last["loss"] == pytest.approx(last["id"] + last["triplet"] + 0.01 * last["centre"],
                                                                rel=1e-4)
    assert out["catalog"] == ["my_data", 6, 6]            # odd ids train, even ids query (2 images each)
    assert out["protocol"]["name"] == "my_protocol" and out["protocol"]["direction"] == "ir->rgb"
    assert 0.0 <= out["rank1"] <= 1.0
