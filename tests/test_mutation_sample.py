"""tools/mutation_sample.py: the per-module sample and the kill score it reports (docs/testing.md)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mutmut")  # the `mutation` extra

TOOL = Path(__file__).resolve().parents[1] / "tools" / "mutation_sample.py"


def run(cwd, *args):
    out = subprocess.run([sys.executable, str(TOOL), *args], cwd=cwd, capture_output=True, text=True, check=True)
    return out.stdout


def test_pick_per_module_and_report_the_score_without_equivalent_mutants(tmp_path):
    a = {f"pkg.a.x_f__mutmut_{i}": None for i in range(1, 11)}
    b = {f"pkg.b.x_g__mutmut_{i}": None for i in range(1, 4)}
    for name, codes in (("a", a), ("b", b)):
        meta = tmp_path / "mutants" / "src" / "pkg" / f"{name}.py.meta"
        meta.parent.mkdir(parents=True, exist_ok=True)
        meta.write_text(json.dumps({"exit_code_by_key": codes}))
    picked = run(tmp_path, "pick", "--per-module", "4", "--seed", "3", "pkg.*").split()
    assert sum(n.startswith("pkg.a.") for n in picked) == 4 and sum(n.startswith("pkg.b.") for n in picked) == 3
    assert picked == run(tmp_path, "pick", "--per-module", "4", "--seed", "3", "pkg.*").split()  # seeded

    # module a, 10 run: 6 killed, 1 timeout, 1 equivalent, 1 accepted, 1 unexplained survivor
    a.update({f"pkg.a.x_f__mutmut_{i}": 1 for i in range(1, 7)})
    a.update({"pkg.a.x_f__mutmut_7": 24, "pkg.a.x_f__mutmut_8": 0, "pkg.a.x_f__mutmut_9": 0, "pkg.a.x_f__mutmut_10": 0})
    (tmp_path / "mutants/src/pkg/a.py.meta").write_text(json.dumps({"exit_code_by_key": a}))
    # the untested draw leaves decided mutants out
    assert all(n.startswith("pkg.b.") for n in run(tmp_path, "pick", "--untested", "pkg.*").split())
    (tmp_path / "names.txt").write_text("\n".join(a))
    (tmp_path / "judged.tsv").write_text("# header\npkg.a.x_f__mutmut_8\tequivalent\twhy\npkg.a.x_f__mutmut_9\taccepted\twhy\n")
    table = run(tmp_path, "report", "names.txt", "--judged", "judged.tsv")
    row = next(line for line in table.splitlines() if "pkg/a.py" in line)
    # (6 + 1) / (10 - 1) = 77.8 %; Wilson 95 % interval of 7 in 9: 45-94 %
    assert [c.strip() for c in row.split("|")[2:-1]] == ["10", "6", "1", "1", "1", "1", "0", "77.8 %", "45-94 %"]
    assert table.rstrip().endswith("pkg.a.x_f__mutmut_10")
