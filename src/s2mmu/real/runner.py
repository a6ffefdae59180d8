"""Run scenarios on real KVM (one boot for several) and compare them with the model.

>>> from s2mmu.real.runner import RealRequest
>>> RealRequest(kernel=None, mode=Mode.NVHE).mode.cmdline
'kvm-arm.mode=nvhe'
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from s2mmu.real.boot import Boot, Mode, boot, build_vmm, cache_dir, resolve_kernel
from s2mmu.real.diff import DiffReport, compare, profile_for_release, run_model
from s2mmu.real.log import ConsoleError, ConsoleLog, RealRun, parse_console
from s2mmu.real.plan import Plan, make_plan, render_plan
from s2mmu.scenario.schema import Scenario, load_scenario


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
    prepare_seconds: float
    """Resolving the kernel and building the VMM (cached after the first time)."""


def load(paths: list[str | Path]) -> list[Scenario]:
    """Load scenario files (ScenarioError for a malformed one)."""
    return [load_scenario(p) for p in paths]


def run_real(scenarios: list[Scenario], req: RealRequest) -> RealResult:
    """Plan every scenario (Unsupported for what cannot run), boot once, run them all."""
    plans = [make_plan(s) for s in scenarios]
    t0 = time.monotonic()
    cache = cache_dir(req.cache)
    kernel = resolve_kernel(req.kernel, cache)
    named = [(f"{i:03d}-{p.name.replace('/', '_')}.plan", render_plan(p))
             for i, p in enumerate(plans)]
    build_vmm(cache)
    prepared = time.monotonic() - t0
    b = boot(kernel, named, req.mode, cache)
    log = parse_console(b.console)
    runs = log.runs
    if len(runs) != len(plans) or not all(r.ended for r in runs):
        done = sum(1 for r in runs if r.ended)
        tail = " / ".join(b.console.strip().splitlines()[-2:])[:300]
        raise ConsoleError(f"real KVM: {done} of {len(plans)} plans finished "
                           f"(console ends: {tail})")
    return RealResult(tuple(zip(plans, runs, strict=True)), log, b, prepared)


def diff_real(scenarios: list[Scenario], req: RealRequest) -> tuple[list[DiffReport],
                                                                    RealResult]:
    """Run the scenarios on real KVM and on the model (under the booted kernel's profile);
    return one comparison per scenario."""
    result = run_real(scenarios, req)
    reports = []
    for scn, (plan, real) in zip(scenarios, result.runs, strict=True):
        profile = profile_for_release(real.release)
        reports.append(compare(run_model(scn, profile), real, plan, profile))
    return reports, result
