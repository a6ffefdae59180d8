"""`s2mmu real run` and `s2mmu real diff`: scenarios on real KVM/arm64 (s2mmu.real).

run boots Debian's arm64 kernel under QEMU TCG with the project's VMM as /init and prints
what KVM did in each step (stage-2 aborts from the kvm_guest_fault tracepoint, exits,
errnos, dirty bitmaps); diff also runs the model under the booted kernel's profile and
compares step by step (exit status 0 only when every step agrees).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from s2mmu.cli import output
from s2mmu.cli.dump_cmd import dump_json, render_text
from s2mmu.cli.kernel_cmd import input_errors
from s2mmu.real.boot import Mode
from s2mmu.real.campaign import CampaignReport, CampaignRequest, campaign, write_reproducers
from s2mmu.real.diff import (
    Answer,
    DiffReport,
    FaultView,
    RealStepView,
    dirty_text,
    fault_text,
    guest_text,
    profile_for_release,
    real_steps,
)
from s2mmu.real.plan import UNSUPPORTED
from s2mmu.real.runner import RealRequest, RealResult, diff_real, load, run_real

KERNEL_HELP = ("An arm64 kernel image package (.deb) or a raw Image (default: Debian's "
               "current arm64 image, the dependency of linux-image-arm64:arm64, downloaded "
               "into the cache).")
CACHE_HELP = "Where the kernel, the VMM and boot files are kept (default: ~/.cache/s2mmu/real)."


def options(fn: Any) -> Any:
    """Add the options both commands take."""
    for opt in reversed([
            click.argument("scenarios", nargs=-1, required=True, metavar="SCENARIO..."),
            click.option("--kernel", metavar="DEB_OR_IMAGE", help=KERNEL_HELP),
            click.option("--mode", type=click.Choice([m.value for m in Mode]), default="vhe",
                         show_default=True,
                         help="KVM at EL2: VHE, nVHE, or protected (pKVM), via kvm-arm.mode."),
            click.option("--cache", metavar="DIR", help=CACHE_HELP),
            click.option("--dump-after", "dump_after", multiple=True, metavar="STEP",
                         help="Also read the real stage 2 after this step (N, #N or last; "
                              "repeatable; each scenario), through QEMU's gdbstub."),
            click.option("--json", "as_json", is_flag=True, help="One JSON document.")]):
        fn = opt(fn)
    return fn


@click.group()
def real() -> None:
    """Run scenarios on real KVM/arm64 under QEMU and compare them with the model.

    Supported: the kvm layer's guest accesses by IPA (MMU off) or, with vCPU 0's stage 1
    ([[vcpu]] stage1_tables, map), by VA (read, write, exec, with or without a syndrome),
    anonymous and hugetlb VMAs (THP on or off), memslots and their
    flags, moves and deletes, munmap, madvise, mmap, the dirty log (enable, get, clear,
    disable), checks; the stage 2 after chosen steps (--dump-after, through QEMU's
    gdbstub). Anything else is refused with one line naming the feature (`real features`).
    """


def fault_json(f: FaultView) -> dict[str, Any]:
    """Return one compared abort as JSON."""
    return {"ipa": f"{f.ipa:#x}", "kind": f.kind.value if f.kind else None, "level": f.level,
            "write": f.write, "exec": f.exec, "cm": f.cm, "s1ptw": f.s1ptw,
            "far": f"{f.far:#x}", "esr": f"{f.esr:#x}"}


def answer_json(a: Answer) -> dict[str, Any]:
    """Return a step's answer as JSON."""
    doc: dict[str, Any] = {"outcome": a.outcome.value}
    if a.mmio is not None:
        doc["mmio"] = {"ipa": f"{a.mmio[0]:#x}", "length": a.mmio[1], "write": a.mmio[2]}
    if a.errno is not None:
        doc["errno"] = a.errno
    if a.esr is not None:
        doc["esr"] = f"{a.esr:#x}"
    if a.far is not None:
        doc["far"] = f"{a.far:#x}"
    return doc


def boot_json(result: RealResult, release: str) -> dict[str, Any]:
    """Return the booted kernel and the timings as JSON."""
    return {"release": release, "source": result.boot.kernel.source,
            "mode": result.boot.mode.value, "kvm_says": result.console.kvm_mode,
            "boot_seconds": round(result.boot.seconds, 2),
            "prepare_seconds": round(result.prepare_seconds, 2)}


def mode_text(result: RealResult) -> str:
    """Return the mode asked for and what KVM said it initialised."""
    said = result.console.kvm_mode
    return f"--mode {result.boot.mode.value} (KVM: {said or 'no mode message'})"


def step_text(v: RealStepView) -> str:
    """Return one real step as a line."""
    line = f"#{v.index:<3} {v.do:<17} {v.answer}"
    if v.faults:
        line += f"  faults: {fault_text(v.faults)}"
    if v.dirty is not None:
        line += f"  dirty {dirty_text(v.dirty)}"
    if v.exits:
        line += f"  exits: {'; '.join(v.exits)}"
    return line


def run_json(result: RealResult) -> dict[str, Any]:
    """Return the s2mmu.real-run/1 document."""
    release = result.console.release
    return {
        "schema": "s2mmu.real-run/1", "kernel": boot_json(result, release),
        "scenarios": [{
            "name": plan.name, "setup_errors": list(real.setup),
            "steps": [{"step": v.index, "do": v.do, "answer": answer_json(v.answer),
                       "faults": [fault_json(f) for f in v.faults],
                       "machinery_faults": v.machinery_faults,
                       "dirty": list(v.dirty) if v.dirty is not None else None,
                       "exits": list(v.exits),
                       "stage2": stage2_json(result, i, v.index)}
                      for v in real_steps(plan, real)]}
            for i, (plan, real) in enumerate(result.runs)]}


def stage2_json(result: RealResult, scenario: int, step: int) -> dict[str, Any] | None:
    """Return the real stage 2 read after a step (an s2mmu.dump/1 document), or None."""
    s2 = result.stage2.get((scenario, step))
    if s2 is None:
        return None
    return dump_json(s2.dump, source={"kind": "real-kvm", "VTTBR_EL2": f"{s2.vttbr:#x}",
                                      "VTCR_EL2": f"{s2.vtcr:#x}"})


@real.command("run")
@options
@input_errors
def run_cmd(scenarios: tuple[str, ...], kernel: str | None, mode: str, cache: str | None,
            dump_after: tuple[str, ...], as_json: bool) -> None:
    """Run scenarios on real KVM (one boot) and print what KVM did in each step."""
    scns = load(list(scenarios))
    with output.progress("booting"):
        result = run_real(scns, RealRequest(kernel, Mode(mode), cache), dump_after)
    release = result.runs[0][1].release
    if as_json:
        output.print_json(run_json(result))
        return
    con = output.console()
    con.print(f"real KVM: Linux {release} ({result.boot.kernel.source}), {mode_text(result)}; "
              f"boot and run {result.boot.seconds:.1f} s", highlight=False, markup=False)
    for i, (plan, real) in enumerate(result.runs):
        steps = real_steps(plan, real)
        con.print(f"scenario {plan.name}: {len(steps)} steps", highlight=False, markup=False)
        for err in real.setup:
            con.print(f"  set-up failed: {err}", highlight=False, markup=False)
        for v in steps:
            con.print(step_text(v), highlight=False, markup=False)
            s2 = result.stage2.get((i, v.index))
            if s2 is not None:
                con.print(f"  stage 2 after #{v.index} (VTTBR_EL2={s2.vttbr:#x} "
                          f"VTCR_EL2={s2.vtcr:#x}, {s2.pages_read} table pages read):",
                          highlight=False, markup=False)
                for line in render_text(s2.dump):
                    con.print("  " + line, highlight=False, markup=False)


def diff_json(reports: list[DiffReport], result: RealResult) -> dict[str, Any]:
    """Return the s2mmu.real-diff/1 document."""
    release = reports[0].release
    return {
        "schema": "s2mmu.real-diff/1", "kernel": boot_json(result, release),
        "profile": profile_for_release(release).name,
        "scenarios": [{
            "name": r.scenario, "steps": len(r.steps), "agreed": r.agreed,
            "differences": [{"step": d.step, "aspect": d.aspect.value, "model": d.model,
                             "real": d.real} for d in r.differences],
            "compared": [{"step": s.index, "do": s.do,
                          "model": {"answer": answer_json(s.model_answer),
                                    "faults": [fault_json(f) for f in s.model_faults]},
                          "real": {"answer": answer_json(s.real_answer),
                                   "faults": [fault_json(f) for f in s.real_faults]},
                          "agree": not s.differences, "departures": list(s.departures),
                          "relations": [{"ipa": f"{v.ipa:#x}", "size": v.size,
                                         "backing": rel.backing.value, "folio": rel.folio,
                                         "offset": rel.offset, "contiguous": rel.contiguous}
                                        for v, rel in s.relations],
                          **({"host_stage2": {
                              "real": s.host.real.summary(), "model": s.host.model.summary(),
                              "only_real": [str(e) for e in s.host.only_real],
                              "only_model": [str(e) for e in s.host.only_model],
                              "guest_memory": {"real": dict(s.host.guest_real),
                                               "model": dict(s.host.guest_model)}}}
                             if s.host is not None else {})}
                         for s in r.steps]}
            for r in reports]}


RELATIONS_SHOWN = 8


@real.command("diff")
@options
@input_errors
def diff_cmd(scenarios: tuple[str, ...], kernel: str | None, mode: str, cache: str | None,
             dump_after: tuple[str, ...], as_json: bool) -> None:
    """Run scenarios on real KVM and on the model; compare step by step (exit 0 only when
    every step of every scenario agrees)."""
    scns = load(list(scenarios))
    with output.progress("booting"):
        reports, result = diff_real(scns, RealRequest(kernel, Mode(mode), cache), dump_after)
    bad = any(r.differences for r in reports)
    if as_json:
        output.print_json(diff_json(reports, result))
        sys.exit(1 if bad else 0)
    con = output.console()
    release = reports[0].release
    con.print(f"real KVM: Linux {release} ({result.boot.kernel.source}), {mode_text(result)}; "
              f"model profile {reports[0].profile}; boot and run {result.boot.seconds:.1f} s",
              highlight=False, markup=False)
    for r in reports:
        for s in r.steps:
            mark = "=" if not s.differences else "!"
            con.print(f"{mark} #{s.index:<3} {s.do:<17} {s.real_answer}"
                      + (f"  faults: {fault_text(s.real_faults)}" if s.real_faults else "")
                      + (f"  dirty {dirty_text(s.dirty)}" if s.dirty is not None else "")
                      + "".join(f"  (QEMU 7.2 {d})" for d in s.departures),
                      highlight=False, markup=False)
            if s.host is not None:
                con.print(f"    host stage 2 (VMID 0) after #{s.index}: real  "
                          f"{s.host.real.summary()}", highlight=False, markup=False)
                con.print(f"    {'':>31} model {s.host.model.summary()}"
                          + ("  (agree range by range)" if not s.host.only_real
                             and not s.host.only_model else ""),
                          highlight=False, markup=False)
                if s.host.guest_real:
                    con.print(f"    {'':>31} the VMM's memory (guest RAM) there: real "
                              f"{guest_text(s.host.guest_real)}; model "
                              f"{guest_text(s.host.guest_model)}",
                              highlight=False, markup=False)
            if s.relations:
                con.print(f"    stage 2 after #{s.index}, PA relation to the VMM's memory "
                          "(real; the model's agrees unless a difference says so):",
                          highlight=False, markup=False)
                for v, rel in s.relations[:RELATIONS_SHOWN]:
                    con.print(f"      {v}  -> {rel}", highlight=False, markup=False)
                if len(s.relations) > RELATIONS_SHOWN:
                    con.print(f"      ... {len(s.relations) - RELATIONS_SHOWN} more leaves",
                              highlight=False, markup=False)
        for d in r.differences:
            where = f"step {d.step} {d.aspect.value}" if d.step else d.aspect.value
            con.print(f"difference: {r.scenario} {where}: model {d.model}; real {d.real}",
                      highlight=False, markup=False)
        con.print(f"{r.scenario}: {r.agreed}/{len(r.steps)} steps agree", highlight=False,
                  markup=False)
    sys.exit(1 if bad else 0)


@real.command("features")
def features_cmd() -> None:
    """List the scenario features real KVM runs refuse, with the reason."""
    con = output.console()
    for name, why in UNSUPPORTED.items():
        con.print(f"{name}: {why}", highlight=False, markup=False)


def campaign_json(report: CampaignReport, paths: dict[str, Path]) -> dict[str, Any]:
    """Return the s2mmu.real-campaign/1 document."""
    req = report.request
    said = report.boots[0].kvm_mode if report.boots else None
    classes = []
    for c in report.classes:
        row: dict[str, Any] = {"aspect": c.aspect.value, "key": c.key, "count": c.count,
                               "first_seed": c.first_seed,
                               "example": {"step": c.example.step, "model": c.example.model,
                                           "real": c.example.real}}
        if c.key in paths:
            row["reproducer"] = str(paths[c.key])
        classes.append(row)
    return {"schema": "s2mmu.real-campaign/1", "release": report.release,
            "mode": req.mode.value, "kvm_says": said, "profile": report.profile,
            "seed": req.seed, "count": req.count, "per_boot": req.per_boot,
            "dump_last": req.dump_last,
            "scenarios": len(report.verdicts), "agreeing": report.agreeing,
            "steps": report.steps, "agreed_steps": report.agreed_steps,
            "boots": len(report.boots), "seconds": round(report.seconds, 2),
            "boot_seconds": round(sum(b.seconds for b in report.boots), 2),
            "classes": classes,
            "disagreeing_seeds": [v.seed for v in report.verdicts if not v.agrees]}


def campaign_text(report: CampaignReport, paths: dict[str, Path]) -> list[str]:
    """Return the campaign's figures as lines."""
    req, n = report.request, len(report.verdicts)
    boot_s = sum(b.seconds for b in report.boots)
    said = report.boots[0].kvm_mode if report.boots else None
    pct = 100 * report.agreeing / n if n else 0.0
    step_pct = 100 * report.agreed_steps / report.steps if report.steps else 0.0
    lines = [f"real KVM campaign: Linux {report.release}, --mode {req.mode.value} (KVM: "
             f"{said or 'no mode message'}), model profile {report.profile}; seeds "
             f"{req.seed}..{req.seed + n - 1}"
             + ("; stage 2 read after each last step" if req.dump_last else ""),
             f"{n} scenarios in {len(report.boots)} boots ({report.seconds:.1f} s, "
             f"{boot_s:.1f} s in QEMU): {n / report.seconds:.2f} scenarios/s, "
             f"{len(report.boots) / report.seconds:.3f} boots/s",
             f"scenarios agreeing at every step: {report.agreeing}/{n} ({pct:.1f}%); steps "
             f"agreeing: {report.agreed_steps}/{report.steps} ({step_pct:.2f}%)"]
    for c in report.classes:
        lines.append(f"x{c.count} (first seed {c.first_seed}, step {c.example.step}) "
                     f"{c.aspect.value}: model {c.example.model}; real {c.example.real}")
        if c.key in paths:
            lines.append(f"    reproducer: {paths[c.key]}")
    return lines


@real.command("campaign")
@click.option("--count", type=int, default=100, show_default=True,
              help="How many generated scenarios.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Scenario i is drawn from random.Random(SEED + i).")
@click.option("--mode", type=click.Choice([m.value for m in Mode]), default="vhe",
              show_default=True, help="KVM at EL2: VHE, nVHE, or protected (pKVM).")
@click.option("--per-boot", type=int, default=20, show_default=True,
              help="Scenarios run in one boot.")
@click.option("--max-events", type=int, default=12, show_default=True,
              help="At most this many timeline events per scenario.")
@click.option("--budget", type=float, default=float("inf"), metavar="SECONDS",
              help="Start no new boot after this long.")
@click.option("--dump-last", is_flag=True,
              help="Also read each scenario's real stage 2 after its last step (gdbstub; "
                   "vhe and nvhe) and compare leaves and shared frames.")
@click.option("--out", type=click.Path(file_okay=False), metavar="DIR",
              help="Write the first scenario of each difference class here.")
@click.option("--kernel", metavar="DEB_OR_IMAGE", help=KERNEL_HELP)
@click.option("--cache", metavar="DIR", help=CACHE_HELP)
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@input_errors
def campaign_cmd(count: int, seed: int, mode: str, per_boot: int, max_events: int,
                 budget: float, dump_last: bool, out: str | None, kernel: str | None,
                 cache: str | None, as_json: bool) -> None:
    """Run generated scenarios (what the VMM expresses) on real KVM and on the model; print
    the agreement (exit 0 only when every scenario agrees at every step)."""
    req = CampaignRequest(count, seed, Mode(mode), per_boot, kernel, cache, max_events,
                          budget, dump_last)
    with output.progress("real KVM campaign", total=count) as bar:
        report = campaign(req, bar.advance)
    paths = write_reproducers(report, Path(out)) if out else {}
    if as_json:
        output.print_json(campaign_json(report, paths))
    else:
        con = output.console()
        for line in campaign_text(report, paths):
            con.print(line, highlight=False, markup=False, soft_wrap=True)
    sys.exit(0 if report.agreeing == len(report.verdicts) else 1)
