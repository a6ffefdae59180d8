"""The `conformance` and `qemu-at` commands: parse, call one function, format.

`s2mmu conformance` generates cases (AT instructions and real loads, stores, fetches,
exclusives and atomics)
or replays a file, runs them on QEMU and on the model, and prints agreement per family;
exit status 1 on any unexplained mismatch or harness error, 2 on bad input or a missing
QEMU. `s2mmu qemu-at FILE` prints QEMU's answer to an AT case file in the at-case.md
output format.

`--through nested` runs the EL2 ops of the same cases as a guest hypervisor's AT
instructions through KVM's emulation (s2mmu.conformance.nested) instead of the
architecture model, explaining each difference from QEMU by a listed KVM difference or
QEMU departure; `--profile` picks the kernel release's behaviour.

`--qemu 7.2|10.0|PATH` picks the QEMU (s2mmu.conformance.target): the model runs with the
features its -cpu max reports, the generator draws only those, and only that QEMU series'
departures excuse a difference. Several --qemu (or `all`) run each and add agreement per
family side by side and what became of the first QEMU's departures on the others.

Progress (QEMU, then the model case by case) shows on a terminal only; `--json` prints
one s2mmu.conformance/1 document instead of the table (s2mmu.conformance-versions/1 for
several QEMUs).
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from s2mmu.arch.errors import InputError
from s2mmu.arch.inputs import one_line
from s2mmu.cli.output import print_json, progress
from s2mmu.conformance.casefile import parse_cases
from s2mmu.conformance.compare import (
    AGREE,
    DIVERGENCE,
    MISMATCH,
    NOT_RUN_VERDICT,
    CaseComparison,
    ModelUnavailable,
    OpComparison,
    Report,
    compare_case,
    departures_across,
    load_case_file,
    model_answer,
    model_with,
    write_mismatches,
)
from s2mmu.conformance.cpu_id import skipped_families
from s2mmu.conformance.divergences import divergence_named
from s2mmu.conformance.generator import FAMILIES, family_names, generate_cases
from s2mmu.conformance.nested import (
    THROUGH,
    compare_nested_case,
    divergence_reason,
    el2_case,
    generate_nested_cases,
    path_counts,
)
from s2mmu.conformance.qemu import HarnessUnavailable, QemuAt, QemuConfig, run_case_file
from s2mmu.conformance.target import QemuTarget, expand_specs, qemu_target
from s2mmu.nested.at import CURRENT, PROFILES, AtProfile

SCHEMA = "s2mmu.conformance/1"
VERSIONS_SCHEMA = "s2mmu.conformance-versions/1"


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
@click.option("--through", type=click.Choice(THROUGH), default="architecture",
              show_default=True,
              help="Run the cases through the architecture model, or (nested) as a guest "
                   "hypervisor's AT instructions through KVM's emulation (EL2 ops only).")
@click.option("--profile", "profile_name", type=click.Choice(sorted(PROFILES)),
              default=CURRENT.name, show_default=True,
              help="With --through nested: the kernel release's AT emulation behaviour.")
@click.option("--qemu", "qemu_specs", multiple=True, default=("7.2",), show_default=True,
              metavar="7.2|10.0|all|PATH",
              help="The QEMU to compare with: Debian 12's 7.2, Debian's 10.0 from "
                   "bookworm-backports (fetched into the cache), or a qemu-system-aarch64 "
                   "path. Repeat it, or say all, to run each and compare them side by side.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON document (schema s2mmu.conformance/1; with several "
                   "--qemu, s2mmu.conformance-versions/1).")
def conformance(n_cases: int, seed: int, family: str | None, keep_mismatches: Path | None,
                replay: Path | None, jobs: int, through: str, profile_name: str,
                qemu_specs: tuple[str, ...], as_json: bool) -> None:
    """Compare the model with QEMU executing real AT instructions and accesses.

    The families loads, stores, fetches, exclusives, atomics and alignment hold real
    accesses (LDR, STR, a branch, LDXR/LDAXR/STXR, LDADD/SWP/CAS, misaligned ones) from
    EL0, EL1 and EL2; the others hold AT instructions. All run by default.
    """
    nested = PROFILES[profile_name] if through == "nested" else None
    specs = expand_specs(qemu_specs)
    if nested is not None and keep_mismatches is not None:
        fail("--keep-mismatches: not available with --through nested (replay the case by "
             "name with --family and --seed)")
    if nested is not None and specs != ["7.2"]:
        fail(f"--through nested: compares KVM's AT emulation with QEMU 7.2 only "
             f"(got --qemu {', '.join(specs)})")
    if len(specs) > 1 and keep_mismatches is not None:
        fail(f"--keep-mismatches: give one --qemu (got {', '.join(specs)})")
    try:  # a malformed replay file is refused before anything is created
        replayed = load_case_file(replay) if replay is not None else None
        families = family_names(family)
    except InputError as error:
        fail(str(error))
    if keep_mismatches is not None:
        check_writable_dir(keep_mismatches)
    try:
        targets = [qemu_target(spec) for spec in specs]
        runs = [run_one(target, replayed, n_cases, seed, families, jobs, nested)
                for target in targets]
        written: list[str] = []
        report = runs[0][0]
        if keep_mismatches is not None and report.mismatches():
            target = targets[0]
            written = [str(p) for p in write_mismatches(
                report, keep_mismatches, target.config(jobs),
                model_with(target.model_features()), target.series)]
        run: dict[str, Any] = {"replay": str(replay)} if replay is not None else {
            "cases": n_cases, "seed": seed, "families": families}
        docs = [run_doc(rep, dict(run), written, nested) for rep, _ in runs]
        if as_json:
            print_json(docs[0] if len(docs) == 1 else versions_doc([r for r, _ in runs], docs))
        else:
            click.echo(format_runs(runs))
            for path in written:
                click.echo(f"mismatch written: {path}")
    except (InputError, HarnessUnavailable, ModelUnavailable) as error:
        fail(str(error))
    except OSError as error:
        fail(f"--keep-mismatches {keep_mismatches}: cannot write: {error.strerror}")
    sys.exit(0 if all(rep.ok() for rep, _ in runs) else 1)


def run_one(target: QemuTarget, replayed: list[Mapping[str, Any]] | None, n_cases: int,
            seed: int, families: list[str], jobs: int, nested: AtProfile | None
            ) -> tuple[Report, str]:
    """Run the cases against one QEMU; return the report and its text."""
    config = target.config(jobs)
    features = target.model_features()
    if replayed is not None:
        objs = nested_objects(replayed) if nested is not None else replayed
        report = compare_with_progress(objs, config, nested, target)
        text = format_replay(report, nested is not None)
    else:
        skipped = skipped_families(target.id_registers)
        made = (generate_nested_cases(n_cases, seed, families) if nested is not None
                else generate_cases(n_cases, seed, families, features))
        # the same cases as against any other QEMU, less the families not compared
        cases = made if not skipped else [
            c for c in made if c.get("family") not in skipped]
        report = compare_with_progress(cases, config, nested, target)
        text = format_summary(report, nested is not None)
        left = [f for f in families if f in skipped]
        if left:
            why = sorted({skipped[f] for f in left})
            text += (f"\nnot compared: {', '.join(left)} ({target.binary.label} has "
                     f"{', '.join(why)}, which the model does not implement)")
    if nested is not None:
        text += "\n" + nested_lines(report, nested)
    return report, qemu_heading(target) + "\n" + text


def run_doc(report: Report, run: dict[str, Any], written: list[str],
            nested: AtProfile | None) -> dict[str, Any]:
    """Return one run's s2mmu.conformance/1 document."""
    doc = conformance_doc(report, run, written)
    if nested is not None:
        run["through"] = "nested"
        doc["nested"] = {"profile": nested.name, **path_counts(report)}
    return doc


def check_writable_dir(directory: Path) -> None:
    """Create directory if needed and check it can take files, before anything runs."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        fail(f"--keep-mismatches {directory}: cannot create the directory: {error.strerror}")
    if not os.access(directory, os.W_OK | os.X_OK):
        fail(f"--keep-mismatches {directory}: the directory is not writable")


def compare_with_progress(objs: Any, config: QemuConfig, nested: AtProfile | None = None,
                          target: QemuTarget | None = None) -> Report:
    """Run case objects on QEMU, then the model case by case, showing progress.

    The same steps as s2mmu.conformance.compare.compare_cases (or, with a nested
    profile, compare_nested_cases); progress goes to stderr on a terminal only. With a
    target the model runs with that QEMU's features and its series' departures excuse.
    """
    cases = parse_cases(list(objs))
    label = target.binary.label if target is not None else "QEMU"
    with progress(f"{label}: {len(cases)} cases") as bar:
        answers = QemuAt(config).run(cases)
        bar.advance()
    model = model_with(target.model_features()) if target is not None else model_answer
    series = target.series if target is not None else "7.2"
    compared = []
    with progress("model" if nested is None else "KVM's AT emulation", total=len(cases)) as bar:
        for case, qemu in zip(cases, answers, strict=True):
            compared.append(compare_case(case, qemu, model, series) if nested is None
                            else compare_nested_case(case, qemu, nested))
            bar.advance()
    return Report(tuple(compared), target)


def nested_objects(objs: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Return a replayed file's cases with their EL2 ops only (refused if none has one)."""
    kept = [case for case in (el2_case(obj) for obj in objs) if case is not None]
    if not kept:
        raise InputError("--through nested: no op of the file executes at EL2 (a guest "
                         "hypervisor's AT instructions run at virtual EL2)")
    return kept


def nested_lines(report: Report, profile: AtProfile) -> str:
    """Return the nested run's footer: the profile and the paths the emulation took."""
    paths = path_counts(report)
    return (f"through KVM's AT emulation (profile {profile.name}): "
            f"{paths['fast']} ops on the fast path, {paths['slow']} on the slow path")


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


def format_summary(report: Report, nested: bool = False) -> str:
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
    lines += problem_lines(report, nested)
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
    """Return the intended divergences seen, each with its count and reason.

    Through the nested emulation one op may be explained by several listed differences
    (joined by "+"); each is counted and explained on its own line.
    """
    seen: Counter[str] = Counter()
    for name, count in report.divergences().items():
        for part in name.split("+"):
            seen[part] += count
    if not seen:
        return ["intended divergences: none seen"]
    several = any("+" in name for name in report.divergences())
    lines = ["intended divergences (not counted as agreement"
             + ("; an op may show several):" if several else "):")]
    for name, count in seen.most_common():
        lines.append(f"  {name}: {count} ops{series_note(name)}. {divergence_reason(name)}")
    return lines


def series_note(name: str) -> str:
    """Return " (QEMU 7.2, 10.0)": the QEMU series a departure is measured on ("" for a
    listed KVM difference)."""
    try:
        series = divergence_named(name).series
    except KeyError:
        return ""
    return f" (QEMU {', '.join(sorted(series, key=lambda v: tuple(map(int, v.split('.')))))})"


def problem_lines(report: Report, nested: bool = False) -> list[str]:
    """Return lines about mismatches, harness errors and skipped ops."""
    lines = []
    mismatches = report.mismatches()
    if mismatches:
        hint = ("--family and --seed regenerate the case" if nested
                else "--keep-mismatches DIR writes each as a replayable case")
        lines.append(f"UNEXPLAINED MISMATCHES: {len(mismatches)} ({hint})")
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
        case "load" | "store" | "atomic":
            status = f" status={answer['status']}" if "status" in answer else ""
            return f"{answer['outcome']} {answer['value']}{status}"
        case "fetch":
            return f"fetched insn {answer['insn']}"
        case outcome:
            return f"{outcome}: {answer.get('reason', '')}"


def format_replay(report: Report, nested: bool = False) -> str:
    """Return each case's ops side by side: QEMU, the model (or KVM's emulation), the verdict."""
    lines: list[str] = []
    for case in report.cases:
        lines += replay_lines(case, "KVM" if nested else "model")
    total = report.tally()
    lines.append(f"agreement {percent(total.counts[AGREE], total.compared)} "
                 f"({total.counts[AGREE]}/{total.compared} ops)")
    return "\n".join(lines)


def replay_lines(case: CaseComparison, side: str = "model") -> list[str]:
    """Return one case's side-by-side lines."""
    lines = [f"case {case.case.name} ({case.family})",
             f"  {'#':>3} {'op':<7} {'va':<19} {'el':<3} pan  {'QEMU':<34} {side:<34} verdict"]
    for op, cmp in zip(case.case.ops, case.ops, strict=True):
        verdict = cmp.divergence or cmp.verdict
        lines.append(f"  {cmp.index:>3} {op.op:<7} {op.va:<#19x} EL{op.el} {op.pan:>3}  "
                     f"{answer_text(cmp.qemu):<34} {answer_text(cmp.model):<34} {verdict}")
    lines.append(f"  memory changes: {case.memory_verdict}")
    if case.memory_verdict != AGREE:
        lines.append(f"    QEMU : {json.dumps(case.qemu.get('memory_changes', []))}")
        lines.append(f"    model: {json.dumps(case.model.get('memory_changes', []))}")
    return lines


def qemu_heading(target: QemuTarget) -> str:
    """Return the lines naming the QEMU a run compared with and the features it has."""
    features = target.features()
    has = " ".join(f.feature.removeprefix("FEAT_") for f in features if f.implemented)
    lacks = " ".join(f.feature.removeprefix("FEAT_") for f in features if not f.implemented)
    return (f"{target.binary.label} ({target.binary.source}), -cpu max\n"
            f"  implements: {has}\n  lacks: {lacks}")


def format_runs(runs: list[tuple[Report, str]]) -> str:
    """Return each run's text; with several, then agreement per family side by side and
    what became of the first QEMU's departures on the others."""
    if len(runs) == 1:
        return runs[0][1]
    parts = [text for _, text in runs]
    reports = [report for report, _ in runs]
    parts.append(side_by_side(reports))
    parts.append(departure_lines(reports))
    return "\n\n".join(parts)


def version_label(report: Report) -> str:
    """Return the QEMU version a report ran against ("7.2.22")."""
    return report.target.binary.version if report.target is not None else "7.2"


def side_by_side(reports: list[Report]) -> str:
    """Return agreement per family and QEMU version: agreement % (mismatches/divergences)."""
    head = f"{'family':<15}" + "".join(f" {'QEMU ' + version_label(r):>24}" for r in reports)
    lines = ["agreement per family and QEMU version: agreement (mismatch/diverge/not run)", head]
    families = list(dict.fromkeys(f for r in reports for f in r.families()))
    for name in [*families, None]:
        cells = []
        for report in reports:
            tally = report.tally(name)
            c = tally.counts
            cells.append(f"{percent(c[AGREE], tally.compared)} "
                         f"({c[MISMATCH]}/{c[DIVERGENCE]}/{c[NOT_RUN_VERDICT]})")
        lines.append(f"{name or 'all':<15}" + "".join(f" {cell:>24}" for cell in cells))
    errors = [f"{len(r.harness_errors())}" for r in reports]
    lines.append(f"{'harness errors':<15}" + "".join(f" {e:>24}" for e in errors))
    return "\n".join(lines)


def departure_lines(reports: list[Report]) -> str:
    """Return, for each later QEMU, which of the first one's departures it still has."""
    lines: list[str] = []
    first = version_label(reports[0])
    for other in reports[1:]:
        label = version_label(other)
        lines.append(f"QEMU {first}'s departures on QEMU {label} (same cases, same ops):")
        items = departures_across(reports[0], other)
        if not items:
            lines.append(f"  none: no op departed on QEMU {first}")
        for item in items:
            verdict = ("gone" if item.gone and not item.kept else
                       "kept" if item.kept and not item.gone else "mixed")
            lines.append(f"  {item.name}: {verdict}: of {item.reference_ops} ops, {label} "
                         f"agrees with the model on {item.gone}, still departs on "
                         f"{item.kept}, did not run {item.not_run}, departs otherwise on "
                         f"{item.other}")
            if item.example is not None and item.gone:
                case, ref_op, op = item.example
                lines.append(f"    e.g. {case.case.name} op {ref_op.index} "
                             f"{case.case.ops[ref_op.index].op}: QEMU {first} "
                             f"{answer_text(ref_op.qemu)}; QEMU {label} and the model "
                             f"{answer_text(op.qemu)}")
    return "\n".join(lines)


# --- JSON (s2mmu.conformance/1) -------------------------------------------------------------


def qemu_doc(target: QemuTarget) -> dict[str, Any]:
    """Return the QEMU a run compared with: version, source, ID registers, features."""
    regs = target.id_registers
    return {"version": target.binary.version, "series": target.series,
            "source": target.binary.source, "argv_prefix": list(target.binary.argv_prefix),
            "id_registers": {name: f"{regs.value(name):#018x}" for name in vars(regs)},
            "features": [{"feature": f.feature, "register": f.register, "field": f.field,
                          "value": f.value, "implemented": f.implemented}
                         for f in target.features()]}


def versions_doc(reports: list[Report], docs: list[dict[str, Any]]) -> dict[str, Any]:
    """Return several runs as one s2mmu.conformance-versions/1 document."""
    first = version_label(reports[0])
    return {
        "schema": VERSIONS_SCHEMA,
        "runs": docs,
        "departures": [
            {"reference": first, "qemu": version_label(other), "name": item.name,
             "reference_ops": item.reference_ops, "gone": item.gone, "kept": item.kept,
             "not_run": item.not_run, "other": item.other,
             "example": None if item.example is None else {
                 **op_doc(item.example[0], item.example[1].index),
                 "reference_answer": dict(item.example[1].qemu),
                 "answer": dict(item.example[2].qemu),
                 "model": dict(item.example[2].model)}}
            for other in reports[1:] for item in departures_across(reports[0], other)],
        "ok": all(doc["ok"] for doc in docs),
    }


def tally_doc(counts: Mapping[str, int], compared: int) -> dict[str, Any]:
    """Return op counts by verdict and the agreement (agree over agree + mismatch)."""
    return {"ops": sum(counts.values()), "agree": counts[AGREE],
            "mismatch": counts[MISMATCH], "diverge": counts[DIVERGENCE],
            "not_run": counts[NOT_RUN_VERDICT], "compared": compared,
            "agreement": round(100.0 * counts[AGREE] / compared if compared else 100.0, 2)}


def op_doc(case: CaseComparison, index: int) -> dict[str, Any]:
    """Return one op of a case as the probe ran it: AT op, VA in hex, EL, PAN."""
    op = case.case.ops[index]
    return {"case": case.case.name, "family": case.family, "index": index, "op": op.op,
            "va": f"{op.va:#x}", "el": op.el, "pan": op.pan}


def conformance_doc(report: Report, run: dict[str, Any], written: list[str]) -> dict[str, Any]:
    """Return a conformance report as one s2mmu.conformance/1 document.

    Answers are in the at-case.md output format (PAR_EL1, ESR, FAR, HPFAR_EL2 and
    memory words as hex strings).
    """
    total = report.tally()
    memory = report.memory()
    skipped = [(case, op) for case, op in report.ops() if op.qemu.get("outcome") == "skipped"]
    return {
        "schema": SCHEMA,
        "qemu": qemu_doc(report.target) if report.target is not None else None,
        "run": run,
        "families": [{"family": name, **tally_doc(report.tally(name).counts,
                                                 report.tally(name).compared)}
                     for name in report.families()],
        "total": tally_doc(total.counts, total.compared),
        "divergences": [{"name": name, "ops": count, "reason": divergence_reason(name)}
                        for name, count in report.divergences().most_common()],
        "memory_changes": {"cases": len(report.cases), "agree": memory[AGREE],
                           "mismatch": memory[MISMATCH], "diverge": memory[DIVERGENCE],
                           "not_run": memory[NOT_RUN_VERDICT]},
        "mismatches": [mismatch_doc(case, op) for case, op in report.mismatches()],
        "mismatch_files": written,
        "harness_errors": [{**op_doc(case, op.index), "reason": str(op.qemu.get("reason", ""))}
                           for case, op in report.harness_errors()],
        "skipped_on_qemu": [{**op_doc(case, op.index), "reason": str(op.qemu.get("reason", ""))}
                            for case, op in skipped],
        "cases": [case_doc(case) for case in report.cases] if "replay" in run else None,
        "ok": report.ok(),
    }


def mismatch_doc(case: CaseComparison, op: OpComparison | None) -> dict[str, Any]:
    """Return one unexplained mismatch: an op's two answers, or a case's memory changes."""
    if op is None:
        return {"case": case.case.name, "family": case.family, "what": "memory_changes",
                "qemu": case.qemu.get("memory_changes", []),
                "model": case.model.get("memory_changes", [])}
    return {**op_doc(case, op.index), "what": "op", "qemu": dict(op.qemu),
            "model": dict(op.model)}


def case_doc(case: CaseComparison) -> dict[str, Any]:
    """Return one replayed case side by side: each op's answers and verdict."""
    return {"case": case.case.name, "family": case.family,
            "ops": [{**op_doc(case, cmp.index), "qemu": dict(cmp.qemu), "model": dict(cmp.model),
                     "verdict": cmp.verdict, "divergence": cmp.divergence}
                    for cmp in case.ops],
            "memory_changes": case.memory_verdict}
