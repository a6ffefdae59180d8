"""The `conformance` and `qemu-at` commands: parse, call one function, format.

`s2mmu conformance` generates cases (or replays a file), runs them on QEMU and on the
model, and prints agreement per family; exit status 1 on any unexplained mismatch or
harness error, 2 on bad input or a missing QEMU. `s2mmu qemu-at FILE` prints QEMU's
answer to an AT case file in the at-case.md output format.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from s2mmu.arch.errors import InputError
from s2mmu.arch.inputs import one_line
from s2mmu.conformance.compare import (
    AGREE,
    DIVERGENCE,
    MISMATCH,
    NOT_RUN_VERDICT,
    CaseComparison,
    ModelUnavailable,
    Report,
    compare_cases,
    load_case_file,
    write_mismatches,
)
from s2mmu.conformance.divergences import divergence_named
from s2mmu.conformance.generator import FAMILIES, family_names, generate_cases
from s2mmu.conformance.qemu import HarnessUnavailable, QemuConfig, run_case_file


def fail(message: str) -> None:
    """Print one line naming the problem, then exit with status 2."""
    click.echo(f"s2mmu: error: {one_line(message)}", err=True)
    sys.exit(2)


def default_jobs() -> int:
    """Return how many QEMU instances to run at once (CPUs, at most 4)."""
    return max(1, min(os.cpu_count() or 1, 4))


@click.command("conformance")
@click.option("--cases", "n_cases", default=200, show_default=True, type=click.IntRange(1),
              help="Number of generated cases.")
@click.option("--seed", default=1, show_default=True, type=int, help="Generator seed.")
@click.option("--family", default=None,
              help=f"Comma-separated families (default all): {', '.join(FAMILIES)}.")
@click.option("--keep-mismatches", type=click.Path(file_okay=False, path_type=Path),
              help="Write each mismatch as a minimal replayable case file here.")
@click.option("--replay", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Run one case file on both sides and show them side by side.")
@click.option("--jobs", default=default_jobs, type=click.IntRange(1),
              help="QEMU instances run in parallel.")
def conformance(n_cases: int, seed: int, family: str | None, keep_mismatches: Path | None,
                replay: Path | None, jobs: int) -> None:
    """Compare the model with QEMU executing real AT instructions."""
    config = QemuConfig(jobs=jobs)
    try:  # a malformed replay file is refused before anything is created
        replayed = load_case_file(replay) if replay is not None else None
    except InputError as error:
        fail(str(error))
    if keep_mismatches is not None:
        check_writable_dir(keep_mismatches)
    try:
        if replayed is not None:
            report = compare_cases(replayed, config)
            click.echo(format_replay(report))
        else:
            cases = generate_cases(n_cases, seed, family_names(family))
            report = compare_cases(cases, config)
            click.echo(format_summary(report))
        if keep_mismatches is not None and report.mismatches():
            for path in write_mismatches(report, keep_mismatches, config):
                click.echo(f"mismatch written: {path}")
    except (InputError, HarnessUnavailable, ModelUnavailable) as error:
        fail(str(error))
    except OSError as error:
        fail(f"--keep-mismatches {keep_mismatches}: cannot write: {error.strerror}")
    sys.exit(0 if report.ok() else 1)


def check_writable_dir(directory: Path) -> None:
    """Create directory if needed and check it can take files, before anything runs."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        fail(f"--keep-mismatches {directory}: cannot create the directory: {error.strerror}")
    if not os.access(directory, os.W_OK | os.X_OK):
        fail(f"--keep-mismatches {directory}: the directory is not writable")


@click.command("qemu-at")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(1),
              help="QEMU instances run in parallel.")
def qemu_at(file: Path, jobs: int) -> None:
    """Print QEMU's answer to an AT case file (at-case.md output, JSON)."""
    try:
        objs = load_case_file(file)
        answer = run_case_file(objs, QemuConfig(jobs=jobs))
    except (InputError, HarnessUnavailable) as error:
        fail(str(error))
    click.echo(json.dumps(answer, indent=1))


# --- Formatting ---------------------------------------------------------------------------


def percent(agree: int, compared: int) -> str:
    """Return an agreement percentage with two decimals."""
    return f"{100.0 * agree / compared if compared else 100.0:.2f}%"


def format_summary(report: Report) -> str:
    """Return the per-family table, the overall agreement and the divergences."""
    lines = [f"{'family':<15} {'ops':>6} {'agree':>6} {'mismatch':>8} {'diverge':>7} "
             f"{'not run':>7}  agreement"]
    for name in report.families():
        lines.append(family_line(name, report))
    total = report.tally()
    lines.append(f"agreement {percent(total.counts[AGREE], total.compared)} "
                 f"({total.counts[AGREE]}/{total.compared} ops)")
    lines += divergence_lines(report)
    memory = report.memory()
    lines.append(f"memory changes: {memory[AGREE]}/{memory[AGREE] + memory[MISMATCH]} cases agree"
                 f", {memory[DIVERGENCE]} explained by divergences")
    lines += problem_lines(report)
    return "\n".join(lines)


def family_line(name: str, report: Report) -> str:
    """Return one family's row."""
    tally = report.tally(name)
    counts = tally.counts
    ops = sum(counts.values())
    return (f"{name:<15} {ops:>6} {counts[AGREE]:>6} {counts[MISMATCH]:>8} "
            f"{counts[DIVERGENCE]:>7} {counts[NOT_RUN_VERDICT]:>7}  "
            f"{percent(counts[AGREE], tally.compared)}")


def divergence_lines(report: Report) -> list[str]:
    """Return the intended divergences seen, each with its count and reason."""
    seen = report.divergences()
    if not seen:
        return ["intended divergences: none seen"]
    lines = ["intended divergences (not counted as agreement):"]
    for name, count in seen.most_common():
        lines.append(f"  {name}: {count} ops. {divergence_named(name).reason}")
    return lines


def problem_lines(report: Report) -> list[str]:
    """Return lines about mismatches, harness errors and skipped ops."""
    lines = []
    mismatches = report.mismatches()
    if mismatches:
        lines.append(f"UNEXPLAINED MISMATCHES: {len(mismatches)} "
                     "(--keep-mismatches DIR writes each as a replayable case)")
    errors = report.harness_errors()
    if errors:
        lines.append(f"HARNESS ERRORS: {len(errors)} ops, first: {errors[0][1].qemu.get('reason')}")
    skipped = [op for _, op in report.ops() if op.qemu.get("outcome") == "skipped"]
    if skipped:
        lines.append(f"skipped on QEMU: {len(skipped)} ops, first: {skipped[0].qemu.get('reason')}")
    return lines


def answer_text(answer: Mapping[str, Any]) -> str:
    """Return one op answer as a short string."""
    match answer.get("outcome"):
        case "par":
            return f"PAR {answer['PAR_EL1']}"
        case "exception":
            extra = "".join(f" {key}={answer[key]}" for key in ("FAR", "HPFAR_EL2")
                            if key in answer)
            return f"exc->{answer['taken_to']} ESR={answer['ESR']}{extra}"
        case outcome:
            return f"{outcome}: {answer.get('reason', '')}"


def format_replay(report: Report) -> str:
    """Return each case's ops side by side: QEMU, the model, the verdict."""
    lines: list[str] = []
    for case in report.cases:
        lines += replay_lines(case)
    total = report.tally()
    lines.append(f"agreement {percent(total.counts[AGREE], total.compared)} "
                 f"({total.counts[AGREE]}/{total.compared} ops)")
    return "\n".join(lines)


def replay_lines(case: CaseComparison) -> list[str]:
    """Return one case's side-by-side lines."""
    lines = [f"case {case.case.name} ({case.family})",
             f"  {'#':>3} {'op':<7} {'va':<19} {'el':<3} pan  {'QEMU':<34} {'model':<34} verdict"]
    for op, cmp in zip(case.case.ops, case.ops, strict=True):
        verdict = cmp.divergence or cmp.verdict
        lines.append(f"  {cmp.index:>3} {op.op:<7} {op.va:<#19x} EL{op.el} {op.pan:>3}  "
                     f"{answer_text(cmp.qemu):<34} {answer_text(cmp.model):<34} {verdict}")
    lines.append(f"  memory changes: {case.memory_verdict}")
    if case.memory_verdict != AGREE:
        lines.append(f"    QEMU : {json.dumps(case.qemu.get('memory_changes', []))}")
        lines.append(f"    model: {json.dumps(case.model.get('memory_changes', []))}")
    return lines
