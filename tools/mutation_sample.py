"""Sample mutmut's mutants per module, and report a sample's kill score (docs/testing.md).

A full mutmut run over every scored module takes more CPU-hours than a 2-core machine has in a
day; a uniform random sample per module estimates each module's kill score with a known error
(the Wilson interval printed by ``report``), and every sampled survivor can be read.

    mutmut run 'crossreid.engine.schedule.*'              # once: generates every mutant
    python3 tools/mutation_sample.py pick --per-module 40 --seed 0 'crossreid.evaluation.*' > sample.txt
    mutmut run --max-children 2 $(cat sample.txt)
    python3 tools/mutation_sample.py report sample.txt --judged docs/mutation_survivors.tsv

Reads ``mutants/**/*.py.meta`` (mutmut 3.8's result files) from the current folder.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import random
import sys
from collections import defaultdict
from pathlib import Path

from mutmut.stats import status_by_exit_code


def results(root: Path) -> dict[str, dict[str, int | None]]:
    """Module path -> {mutant name: exit code or None (not run)}."""
    out = {}
    for meta in sorted(root.glob("mutants/**/*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if codes:
            out[str(meta.relative_to(root / "mutants")).removesuffix(".meta")] = codes
    return out


def pick(args) -> None:
    rng = random.Random(args.seed)
    for codes in results(Path(".")).values():
        names = sorted(n for n in codes if any(fnmatch.fnmatchcase(n, p) for p in args.patterns)
                       and not (args.untested and codes[n] is not None))
        for name in sorted(rng.sample(names, min(args.per_module, len(names)))):
            print(name)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def judged(path: str | None) -> dict[str, str]:
    """Mutant name -> "equivalent" or "accepted", from a file of ``NAME<TAB>KIND<TAB>REASON`` lines."""
    if not path:
        return {}
    rows = (line.split("\t") for line in Path(path).read_text().splitlines() if line.strip() and not line.startswith("#"))
    return {row[0]: row[1] for row in rows}


def report(args) -> None:
    wanted = {line.strip() for line in Path(args.names).read_text().splitlines() if line.strip()}
    verdicts = judged(args.judged)
    tally, unexplained = defaultdict(lambda: defaultdict(int)), []
    for module, codes in results(Path(".")).items():
        for name in wanted & codes.keys():
            status = status_by_exit_code[codes[name]]
            if codes[name] == -9:  # stopped by hand or by a watchdog for running too long: a timeout, unless judged
                status = "survived" if name in verdicts else "timeout"
            # a mutant no selected test reaches ("no tests") is a gap like a survivor
            kind = ("not run" if status == "not checked" else status if status in ("killed", "timeout") else
                    verdicts.get(name, "unexplained") if status in ("survived", "no tests") else status)
            tally[module][kind] += 1
            if kind == "unexplained":
                unexplained.append(name)
    print("| module | sampled | killed | timeout | equivalent | accepted | unexplained | not run | kill score | 95 % interval |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for module, t in sorted(tally.items()):
        caught = t["killed"] + t["timeout"]
        decided = caught + t["accepted"] + t["unexplained"]   # equivalent mutants are not counted
        low, high = wilson(caught, decided)
        score = f"{100 * caught / decided:.1f} %" if decided else "-"
        print(f"| `{module}` | {sum(t.values())} | {t['killed']} | {t['timeout']} | {t['equivalent']} | "
              f"{t['accepted']} | {t['unexplained']} | {t['not run']} | {score} | {100 * low:.0f}-{100 * high:.0f} % |")
        for kind in t.keys() - {"killed", "timeout", "equivalent", "accepted", "unexplained", "not run"}:
            print(f"warning: {module}: {t[kind]} mutants ended with {kind}", file=sys.stderr)
    if unexplained:
        print("\nsurvivors not yet judged (add them to the --judged file):")
        print("\n".join(sorted(unexplained)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(required=True)
    p = sub.add_parser("pick", help="print a uniform random sample of mutant names per module")
    p.add_argument("patterns", nargs="+", help="mutant name patterns (fnmatch), e.g. 'crossreid.losses.*'")
    p.add_argument("--per-module", type=int, default=40, help="mutants per module (all if fewer)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--untested", action="store_true",
                   help="draw only mutants not run yet (a further sample; the union stays uniform)")
    p.set_defaults(run=pick)
    r = sub.add_parser("report", help="kill score per module over the names in a file")
    r.add_argument("names", help="file of mutant names, one per line (as `pick` prints them)")
    r.add_argument("--judged", help="survivors read and judged: NAME<TAB>equivalent|accepted<TAB>REASON lines "
                   "(docs/mutation_survivors.tsv); equivalent ones leave the score")
    r.set_defaults(run=report)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
