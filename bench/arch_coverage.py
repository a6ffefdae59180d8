"""Coverage of s2mmu.arch reached by QEMU-compared ops: line and branch figures per module.

Runs `s2mmu conformance` (the model side of every op QEMU also answers) under coverage.py
with branch measurement, restricted to the s2mmu.arch package, and prints per module the
statements and branches reached. Renderers and tools that no conformance op calls (dump,
explain, regdecode, ...) are listed too, so the whole-package figure is honest.

    python3 bench/arch_coverage.py [--cases N] [--seed S] [--family a,b] [--json]
                                   [--missing translate,attrs,...]

Needs QEMU 7.2 (as `s2mmu conformance` does). A figure, not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import coverage
import numpy  # noqa: F401 - imported before measuring: numpy's C core cannot be traced in


def measure(cases: int, seed: int, family: str | None) -> coverage.Coverage:
    """Run the conformance comparison under coverage; return the measurement."""
    cov = coverage.Coverage(branch=True, source_pkgs=["s2mmu.arch"], data_file=None)
    cov.start()
    from s2mmu.cli.main import cli
    args = ["conformance", "--cases", str(cases), "--seed", str(seed), "--json"]
    if family:
        args += ["--family", family]
    saved = sys.stdout
    sys.stdout = open("/dev/null", "w")  # noqa: SIM115 - the report is not wanted here
    try:
        cli(args)
    except SystemExit:
        pass
    finally:
        sys.stdout.close()
        sys.stdout = saved
        cov.stop()
    return cov


def figures(cov: coverage.Coverage) -> list[dict[str, Any]]:
    """Return per-module statements, branches and what was reached of each."""
    rows = []
    data = cov.get_data()
    for path in sorted(data.measured_files()):
        numbers = cov._analyze(path).numbers  # noqa: SLF001 - per-file line/branch counts
        rows.append({"module": Path(path).stem, "statements": numbers.n_statements,
                     "statements_hit": numbers.n_executed, "branches": numbers.n_branches,
                     "branches_hit": numbers.n_branches - numbers.n_missing_branches})
    return rows


def missing(cov: coverage.Coverage, modules: list[str]) -> dict[str, dict[str, Any]]:
    """Return, per named module, the lines and branch arcs never reached."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(cov.get_data().measured_files()):
        name = Path(path).stem
        if name not in modules:
            continue
        analysis = cov._analyze(path)  # noqa: SLF001 - missing lines and arcs of one file
        out[name] = {"lines": sorted(analysis.missing),
                     "branches": sorted(f"{a}->{b}" for a, bs in
                                        analysis.missing_branch_arcs().items() for b in bs)}
    return out


def pct(hit: int, total: int) -> str:
    return f"{100 * hit / total:5.1f}%" if total else "    -"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--family", default=None)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--missing", default="",
                        help="comma-separated modules whose unreached lines and arcs to list")
    args = parser.parse_args()
    cov = measure(args.cases, args.seed, args.family)
    rows = figures(cov)
    if args.missing:
        print(json.dumps(missing(cov, args.missing.split(",")), indent=1))
        return
    total = {key: sum(r[key] for r in rows)
             for key in ("statements", "statements_hit", "branches", "branches_hit")}
    if args.json:
        print(json.dumps({"modules": rows, "total": total}, indent=1))
        return
    print(f"{'module':<12} {'lines':>13} {'branches':>13}")
    for r in rows + [{"module": "TOTAL", **total}]:
        print(f"{r['module']:<12} {pct(r['statements_hit'], r['statements'])} "
              f"{r['statements_hit']:>4}/{r['statements']:<4} "
              f"{pct(r['branches_hit'], r['branches'])} {r['branches_hit']:>4}/{r['branches']:<4}")


if __name__ == "__main__":
    main()
