"""ONNX export: each modality's embedder matches PyTorch in ONNX Runtime on real images."""

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from retrieval_helpers import train_tiny_run  # noqa: E402


def test_export_parity_and_dynamic_batch(tmp_path):
    import onnxruntime as ort

    import crossreid

    run, root = train_tiny_run(tmp_path)
    out = tmp_path / "model.onnx"
    proc = subprocess.run([sys.executable, "-m", "crossreid", "export", str(run), "--out", str(out),
                           "--modality", "depth", "--modality", "ir"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "max abs diff" in proc.stdout and "min cosine" in proc.stdout
    record = json.loads((tmp_path / "model.json").read_text())["models"]
    assert set(record) == {"depth", "ir"} and record["depth"]["opset"] == 17
    assert record["depth"]["versions"]["onnxruntime"] == ort.__version__
    embedder = crossreid.load_run(run)
    files = sorted((root / "depth").glob("*.png"))[:5]  # a batch size the export never saw
    session = ort.InferenceSession(str(tmp_path / "model-depth.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["features"], {"images": embedder.preprocess(files, "depth").numpy()})[0]
    np.testing.assert_allclose(got, embedder.embed(files, "depth"), atol=1e-4)
    meta = {p.key: p.value for p in __import__("onnx").load(str(tmp_path / "model-depth.onnx")).metadata_props}
    assert json.loads(meta["crossreid"])["parity"]["min_cosine"] > 0.9999


def test_failed_parity_check_is_an_error_and_leaves_nothing(tmp_path, monkeypatch):
    from crossreid.errors import UserError
    from crossreid.retrieval import export

    run, _ = train_tiny_run(tmp_path)
    real = export.ModalityEmbedder.forward
    # The first call computes the PyTorch reference: shift it, so ONNX (traced later) disagrees.
    calls = {"n": 0}

    def once_perturbed(self, x):
        calls["n"] += 1
        return real(self, x) + (1.0 if calls["n"] == 1 else 0.0)

    monkeypatch.setattr(export.ModalityEmbedder, "forward", once_perturbed)
    with pytest.raises(UserError, match="differs from PyTorch"):
        export.export_onnx(run, tmp_path / "bad.onnx", ["rgb"], log=lambda *_: None)
    assert not (tmp_path / "bad.onnx").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bad")]
