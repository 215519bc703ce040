"""Initialisation: ImageNet weights by name (served from loopback, never the network), strict
loading with the likely cause named, the load report said and kept, and finished runs that no
longer need their weights file."""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from conftest import write_tiny_dataset

from crossreid.cli import cli
from crossreid.config import load_config, resolve_config
from crossreid.engine.init import INIT_FILE, check_init
from crossreid.errors import UserError
from crossreid.io import file_sha256
from crossreid.models import build_model, build_resnet, hub, load_weights
from crossreid.models.weights import recording_loads

# ---- a loopback server for published files --------------------------------------------------------

@contextmanager
def serve(folder: Path, truncate: bool = False):
    """Serve ``folder`` on 127.0.0.1; yields (base URL, list of requested paths). ``truncate``:
    announce the full length, send half, close (a broken download)."""
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def do_GET(self):
            requests.append(self.path)
            if not truncate:
                return super().do_GET()
            data = (folder / self.path.lstrip("/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()


def closed_port_url(name: str) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/models/{name}"


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Path:
    """A ResNet-18 state dict as torchvision publishes it (with fc), named <arch>-<sha256 prefix>.pth."""
    folder = tmp_path_factory.mktemp("published")
    net = build_resnet("resnet18")
    state = {**net.state_dict(), "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}
    tmp = folder / "resnet18.pth"
    torch.save(state, tmp)
    return tmp.rename(folder / f"resnet18-{file_sha256(tmp)[:8]}.pth")


@pytest.fixture
def table(monkeypatch, tmp_path):
    """A fresh torch hub cache; imagenet-v1's ResNet-18 pointed at a URL of the test's choosing."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def point(url: str) -> None:
        monkeypatch.setitem(hub.IMAGENET, "imagenet-v1", {"resnet18": url})
    return point


def cache() -> Path:
    return hub.checkpoints_dir()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# ---- by name ---------------------------------------------------------------------------------------

def test_imagenet_by_name_downloads_once_into_the_hub_cache(published, table, tmp_path):
    with serve(published.parent) as (base, requests):
        table(f"{base}/{published.name}")
        net = build_model("resnet18", num_classes=3, pretrained="imagenet")
        again = build_model("resnet18", num_classes=3, pretrained="imagenet-v1")
    assert requests == [f"/{published.name}"]  # the second build found it in the cache
    assert cache() == tmp_path / "torch" / "hub" / "checkpoints" and leftovers(cache()) == [published.name]
    report = net.weights_report
    assert report.sha256 == file_sha256(published) and report.path == str(cache() / published.name)
    assert (len(report.missing), len(report.unexpected), len(report.mismatched)) == (0, 0, 0)
    assert report.skipped == ["fc.weight", "fc.bias"] and len(report.loaded) == len(build_resnet("resnet18").state_dict())
    source = torch.load(published, weights_only=True)
    assert torch.equal(net.backbone.layer4[1].conv2.weight, source["layer4.1.conv2.weight"])
    assert torch.equal(again.backbone.conv1.weight, source["conv1.weight"])


def test_one_process_per_machine_downloads_and_a_quiet_run_shows_no_bar(published, table, monkeypatch, capfd):
    from crossreid import distributed as D
    from crossreid.engine import init

    cfg = load_config(None, ["model.arch=resnet18", "model.pretrained=imagenet"])
    waited = []
    monkeypatch.setattr(D, "barrier", lambda d: waited.append(d.rank))
    with serve(published.parent) as (base, requests):
        table(f"{base}/{published.name}")
        init.fetch_init(cfg, D.Dist(1, 2, 1), progress=True)  # the machine's second process only waits
        assert requests == [] and leftovers(cache()) == []
        init.fetch_init(cfg, D.Dist(0, 2, 0), progress=False)
    assert requests == [f"/{published.name}"] and leftovers(cache()) == [published.name]
    assert waited == [1, 0]
    assert capfd.readouterr().err == ""  # quiet: no progress bar, no "downloaded" line


def test_a_cached_file_needs_no_network(published, table):
    cache().mkdir(parents=True, exist_ok=True)
    shutil.copy(published, cache() / published.name)
    table(closed_port_url(published.name))
    assert hub.resolve_pretrained("imagenet", "resnet18") == cache() / published.name
    table(published.as_uri())  # file:// URLs are fetched like any other
    (cache() / published.name).unlink()
    assert hub.resolve_pretrained("imagenet", "resnet18") == cache() / published.name


@pytest.mark.parametrize("case", ["hash", "truncated", "offline"])
def test_failed_download_is_one_line_and_keeps_nothing(published, table, tmp_path, case):
    folder = tmp_path / "site"
    folder.mkdir()
    name = "resnet18-00000000.pth" if case == "hash" else published.name
    shutil.copy(published, folder / name)
    with serve(folder, truncate=case == "truncated") as (base, _):
        url = closed_port_url(name) if case == "offline" else f"{base}/{name}"
        table(url)
        with pytest.raises(UserError) as err:
            build_model("resnet18", pretrained="imagenet")
    message = str(err.value)
    assert "\n" not in message and message.startswith(name) and url in message and str(cache()) in message
    assert {"hash": "is corrupt or incomplete", "truncated": "is corrupt or incomplete",
            "offline": "cannot download"}[case] in message
    assert leftovers(cache()) == []  # no file, no partial download


def test_offline_train_says_which_file_to_fetch_and_writes_no_run(published, table, tmp_path):
    root = write_tiny_dataset(tmp_path / "tiny", ids=6)
    url = closed_port_url(published.name)
    table(url)
    result = CliRunner().invoke(cli, ["train", "demo", "--out", str(tmp_path / "run"), "--quiet",
                                      "data.dataset=generic", f"data.root={root}", "data.height=32", "data.width=16",
                                      "model.pretrained=imagenet"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {published.name}: cannot download {url}")
    assert f"put the file, named {published.name}, in {cache()}/" in lines[0]
    assert not (tmp_path / "run").exists() and leftovers(cache()) == []


def test_a_corrupt_cached_file_is_refused(published, table):
    cache().mkdir(parents=True, exist_ok=True)
    (cache() / published.name).write_bytes(published.read_bytes()[:1000])
    table(closed_port_url(published.name))
    with pytest.raises(UserError, match=f"{published.name}: its sha256 does not start with {published.name[9:17]}"):
        hub.resolve_pretrained("imagenet", "resnet18")


def test_names_and_their_errors(table):
    table(closed_port_url("resnet18-5c106cde.pth"))
    assert hub.canonical("imagenet") == "imagenet-v1" and hub.canonical("weights/x.pth") is None
    assert hub.resolve_pretrained("none", "resnet50") is None and hub.resolve_pretrained(None, "resnet50") is None
    with pytest.raises(UserError, match="imagenet-v2 weights for resnet50 only, not resnet18; use model.pretrained=imagenet-v1"):
        hub.resolve_pretrained("imagenet-v2", "resnet18")
    with pytest.raises(UserError, match="imagenet-v3: no such name or file; use one of imagenet, imagenet-v1"):
        hub.resolve_pretrained("imagenet-v3", "resnet18")
    with pytest.raises(UserError, match="fit model.base_width=64 only"):  # refused before any download
        build_model("resnet18", pretrained="imagenet", base_width=32)
    assert build_model("resnet18", pretrained="none").weights_report is None


def test_published_names_are_torchvisions():
    """The files the papers' code downloaded (V1, torchvision <= 0.12) and torchvision's V2."""
    assert hub.IMAGENET["imagenet-v1"] == {
        "resnet18": "https://download.pytorch.org/models/resnet18-5c106cde.pth",
        "resnet34": "https://download.pytorch.org/models/resnet34-333f7ec4.pth",
        "resnet50": "https://download.pytorch.org/models/resnet50-19c8e357.pth"}
    assert hub.IMAGENET["imagenet-v2"] == {"resnet50": "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"}


PAPER = ["agw_sysu", "agw_regdb", "idkl_sysu", "idkl_regdb", "idkl_llcm", "smmd_sysu", "smmd_regdb", "wan_sysu",
         "wan_regdb", "hafner_biwi", "hafner_robotpku", "one_stream_biwi", "two_stream_biwi", "zero_padding_biwi",
         "one_stream_robotpku", "two_stream_robotpku", "zero_padding_robotpku"]
REAL_IMAGES = PAPER + ["own_data_vi"]  # configs for real images start from ImageNet too


def test_paper_configs_start_from_imagenet_and_unset_is_refused_on_real_data():
    from crossreid.config import packaged_config_names

    assert set(REAL_IMAGES) | {n for n in packaged_config_names() if n.endswith("_synthetic") or n.startswith("demo")} \
        == set(packaged_config_names())
    for name in packaged_config_names():
        cfg = load_config(resolve_config(name))
        assert cfg.model.pretrained == ("imagenet" if name in REAL_IMAGES else None), name
        check_init(load_config(resolve_config(name), ["model.pretrained=none"]))
    with pytest.raises(UserError, match="model.pretrained is unset for dataset sysu_mm01: set model.pretrained=imagenet"):
        check_init(load_config(resolve_config("agw_sysu"), ["model.pretrained=null"]))
    check_init(load_config(resolve_config("demo")))  # synthetic: unset means from scratch


# ---- strict loading ----------------------------------------------------------------------------------

def test_a_resnet18_file_is_refused_by_a_resnet50(published):
    from crossreid.methods import build_method
    from crossreid.modality import Modality

    given = ["model.arch=resnet50", f"model.pretrained={published}"]
    with pytest.raises(UserError, match=r"shape mismatch at layer1.0.conv1.weight \(file \[64, 64, 3, 3\], model "
                                        r"\[64, 64, 1, 1\]\); the file holds a resnet18 and the model is a resnet50"):
        build_method(load_config(None, given), 4, [Modality.RGB])  # strict unless said otherwise
    with recording_loads() as loads:  # model.pretrained_strict=false loads what fits
        method = build_method(load_config(None, [*given, "model.pretrained_strict=false"]), 4, [Modality.RGB])
    net, report = method.net, loads[0]
    assert report is net.weights_report
    assert 0 < len(report.loaded) < len(net.backbone.state_dict()) / 2 and report.mismatched and report.missing


def test_a_deeper_file_and_a_missing_tensor_are_named(tmp_path):
    deep = tmp_path / "r50.pth"
    torch.save(build_resnet("resnet50", base_width=8).state_dict(), deep)
    with pytest.raises(UserError, match="the file holds a resnet50 and the model is a resnet18: pass the resnet18 file"):
        load_weights(build_resnet("resnet18", base_width=8), deep)
    state = build_resnet("resnet18", base_width=8).state_dict()
    del state["layer4.1.bn2.running_var"]
    torch.save(state, tmp_path / "r18.pth")
    with pytest.raises(UserError, match=r"the file lacks the model's layer4.1.bn2.running_var \(1 model tensors"):
        load_weights(build_resnet("resnet18", base_width=8), tmp_path / "r18.pth")
    report = load_weights(build_resnet("resnet18", base_width=8), tmp_path / "r18.pth", strict=False)
    assert report.missing == ["layer4.1.bn2.running_var"]


# ---- a finished run stands alone -----------------------------------------------------------------

def cli_run(*args, cwd):
    proc = subprocess.run([sys.executable, "-m", "crossreid", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)
    return proc.returncode, proc.stdout + proc.stderr


def test_a_finished_run_needs_no_weights_file(published, tmp_path, monkeypatch, capsys):
    from crossreid.data.registry import load_dataset
    from crossreid.engine.runs import load_run
    from crossreid.engine.trainer import Trainer
    from crossreid.experiment import evaluate_run

    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    (work / "weights").mkdir(parents=True)
    elsewhere.mkdir()
    shutil.copy(published, work / "weights" / "r18.pth")
    root = write_tiny_dataset(tmp_path / "tiny", ids=8)
    overrides = ["data.dataset=generic", f"data.root={root}", "model.arch=resnet18", "model.pretrained=weights/r18.pth",
                 "data.height=32", "data.width=16", "train.ids_per_batch=2", "train.images_per_id=2",
                 "train.iterations_per_epoch=2", "train.epochs=1", "train.threads=1", "train.progress=false",
                 "eval.directions=[rgb->depth]"]
    monkeypatch.chdir(work)  # the path is relative to where training starts, as a user types it
    Trainer(load_config(None, overrides), work / "run", load_dataset("generic", root), progress=False).fit()
    line = capsys.readouterr().err.strip().splitlines()[0]
    assert line.startswith("init: model.pretrained=weights/r18.pth -> ") and "0 missing, 0 unexpected" in line
    init = json.loads((work / "run" / INIT_FILE).read_text())
    assert init["summary"] == line and init["loads"][0]["sha256"] == file_sha256(published)
    load = init["loads"][0]
    assert load["path"] == str(work / "weights" / "r18.pth") and load["skipped"] == ["fc.weight", "fc.bias"]

    (work / "weights" / "r18.pth").unlink()  # the file is gone; the run is used from another folder
    run = work / "run"
    monkeypatch.chdir(elsewhere)
    cfg, method = load_run(run)
    assert cfg.model.pretrained == "weights/r18.pth"  # recorded as given, never read again
    assert "rgb->depth" in evaluate_run(run, progress=False).results
    code, out = cli_run("extract", run, "--images", root / "manifest.csv", "--out", "f.npz", "--quiet", cwd=elsewhere)
    assert code == 0, out
    assert cli_run("index", "f.npz", "--out", "g.npz", cwd=elsewhere)[0] == 0
    code, out = cli_run("search", "g.npz", "--query", root / "rgb" / "0008_c1_t0.png", "--modality", "rgb",
                        "--run", run, "--top", "3", "--quiet", "--json", "s.json", cwd=elsewhere)
    assert code == 0 and (elsewhere / "s.json").is_file(), out
    pytest.importorskip("onnxruntime")
    code, out = cli_run("export", run, "--out", "m.onnx", "--modality", "rgb", "--check-images", "4", cwd=elsewhere)
    assert code == 0 and (elsewhere / "m.onnx").is_file(), out
    resumed = yaml.safe_load((run / "config.yaml").read_text())
    code, out = cli_run("train", run / "config.yaml", "--out", run, "--resume", "--quiet", "train.epochs=2",
                        cwd=elsewhere)
    assert code == 0, out
    assert "init:" not in out and json.loads((run / INIT_FILE).read_text()) == init  # kept from the start
    assert resumed["model"]["pretrained"] == "weights/r18.pth"
