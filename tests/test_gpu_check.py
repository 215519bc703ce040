"""benchmarks/gpu_check.py on the CPU at its tiny size, so the GPU check keeps working until a GPU runs it."""

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_gpu_check_runs_on_the_cpu_at_a_tiny_size(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setenv("CROSSREID_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--tiny"])
    import gpu_check

    doc = (BENCHMARKS.parent / "docs/benchmarks.md").read_text()
    assert gpu_check.main() == 0
    out = capsys.readouterr().out
    assert "| losses and features against the CPU | loss gap 0.0e+00, feature gap 0.0e+00 (pass) |" in out
    assert "| torchrun, 1 process, gloo | loss gap" in out and "(pass) |" in out
    assert (BENCHMARKS.parent / "docs/benchmarks.md").read_text() == doc   # a CPU run never writes the GPU section


def test_gpu_check_refuses_to_run_full_size_without_a_gpu(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--device", "cpu"])
    import gpu_check

    assert gpu_check.main() == 2
    assert capsys.readouterr().err.strip() == ("error: no GPU here; gpu_check.py is for a GPU (--tiny runs the checks "
                                               "on the CPU at a tiny size)")
