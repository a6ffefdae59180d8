"""Run scenarios on real KVM (one boot for several) and compare them with the model.

run_real plans every scenario (refusing what the VMM cannot express before anything is
booted), boots once, and reads the runs from the console; diff_real also runs the model
under the profile of the booted release and compares (s2mmu.real.diff).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from s2mmu.real.backing import HostPage
from s2mmu.real.boot import Boot, Mode, boot, build_vmm, cache_dir, resolve_kernel
from s2mmu.real.diff import DiffReport, compare, profile_for_release, run_model
from s2mmu.real.gdb import GdbStub, RealStage2, read_host_stage2, read_stage2
from s2mmu.real.log import ConsoleError, ConsoleLog, RealRun, parse_console
from s2mmu.real.plan import Plan, make_plan, render_plan
from s2mmu.scenario.runner import step_count
from s2mmu.scenario.schema import Scenario, load_scenario
from s2mmu.scenario.stage2 import parse_step_number


@dataclass(frozen=True)
class RealRequest:
    """What to boot: a kernel (None: Debian's current arm64 image), a mode, a cache."""

    kernel: str | None = None
    mode: Mode = Mode.VHE
    cache: str | None = None


@dataclass(frozen=True)
class RealResult:
    """Scenarios run in one boot: each plan with what real KVM did, and the timings."""

    runs: tuple[tuple[Plan, RealRun], ...]
    console: ConsoleLog
    boot: Boot
    stage2: Mapping[tuple[int, int], RealStage2]
    """The real stage 2 after each step asked for, by (scenario number, step): the
    guest's, or under protected mode the host's (VMID 0; pKVM's halts rarely find the
    guest running, and the host stage 2 is what pKVM's ownership lives in)."""
    prepare_seconds: float
    """Resolving the kernel and building the VMM (cached after the first time)."""


def load(paths: list[str | Path]) -> list[Scenario]:
    """Load scenario files (ScenarioError for a malformed one)."""
    return [load_scenario(p) for p in paths]


def check_dumps(scn: Scenario, dump_after: tuple[str, ...]) -> tuple[int, ...]:
    """Return the steps --dump-after names ('N', '#N' or 'last'; InputError otherwise)."""
    total = step_count(scn)
    return tuple(sorted({parse_step_number(t, total) for t in dump_after}))


def run_real(scenarios: list[Scenario], req: RealRequest,
             dump_after: tuple[str, ...] = ()) -> RealResult:
    """Plan every scenario (Unsupported for what cannot run), boot once, run them all;
    read the real stage 2 after the steps dump_after names, in each scenario."""
    plans = [make_plan(s, check_dumps(s, dump_after), req.mode is Mode.PROTECTED)
             for s in scenarios]
    t0 = time.monotonic()
    cache = cache_dir(req.cache)
    kernel = resolve_kernel(req.kernel, cache)
    named = [(f"{i:03d}-{p.name.replace('/', '_')}.plan", render_plan(p))
             for i, p in enumerate(plans)]
    build_vmm(cache)
    prepared = time.monotonic() - t0
    files = {name: i for i, (name, _) in enumerate(named)}
    stage2: dict[tuple[int, int], RealStage2] = {}

    def on_dump(plan: str, step: int, stub: GdbStub) -> None:
        if req.mode is Mode.PROTECTED:
            stage2[(files[plan], step)] = read_host_stage2(stub)
            return
        known = next((s2 for (i, _), s2 in stage2.items() if i == files[plan]), None)
        stage2[(files[plan], step)] = read_stage2(stub, known)

    b = boot(kernel, named, req.mode, cache,
             on_dump if any(p.dumps for p in plans) else None)
    log = parse_console(b.console)
    runs = log.runs
    if len(runs) != len(plans) or not all(r.ended for r in runs):
        done = sum(1 for r in runs if r.ended)
        tail = " / ".join(b.console.strip().splitlines()[-2:])[:300]
        raise ConsoleError(f"real KVM: {done} of {len(plans)} plans finished "
                           f"(console ends: {tail})")
    return RealResult(tuple(zip(plans, runs, strict=True)), log, b, stage2, prepared)


def diff_real(scenarios: list[Scenario], req: RealRequest,
              dump_after: tuple[str, ...] = ()) -> tuple[list[DiffReport], RealResult]:
    """Run the scenarios on real KVM and on the model (under the booted kernel's profile);
    return one comparison per scenario (with the stage 2 after the dump_after steps)."""
    result = run_real(scenarios, req, dump_after)
    reports = []
    for i, (scn, (plan, real)) in enumerate(zip(scenarios, result.runs, strict=True)):
        profile = profile_for_release(real.release)
        pages: dict[int, dict[int, HostPage]] = {}
        model, model_s2 = run_model(scn, profile, plan.dumps, pages)
        real_s2 = {step: s2.dump for (j, step), s2 in result.stage2.items() if j == i}
        if plan.host_dumps:
            reports.append(compare(model, real, plan, profile, host_s2=real_s2))
        else:
            reports.append(compare(model, real, plan, profile, model_s2, real_s2, pages))
    return reports, result
