"""What the per-step invariants cost: the demo scenario run with and without them, printed
(the fastest of RUNS interleaved runs each: the machine is shared).

"without" keeps the two invariants the kvm layer had before (stage2, dirty-bits) and
turns off the event-log checker (descriptor and walk tracing, the library's rules, WARN)
and the per-vCPU TLBs; "with" is what `s2mmu run` does. Also the unmap-without-TLBI
scenario, whose vCPU looks in its TLB.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from s2mmu.scenario import kvm_events
from s2mmu.scenario.runner import run_scenario
from s2mmu.scenario.schema import REGISTRY, load_layers, load_scenario

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src" / "s2mmu" / "scenario" / "data" / "demo.toml"
STALE = ROOT / "tests" / "scenarios" / "broken" / "unmap_without_tlbi.toml"
RUNS = 20
BEFORE = ("stage2", "dirty-bits", "pkvm-ownership")


class _NoChecker:
    def __init__(self, kvm: Any) -> None:
        pass

    def after_step(self, step: int) -> tuple[list[Any], list[Any]]:
        return [], []


class _NoTlbs:
    consult: frozenset[int] = frozenset()

    def __init__(self, *args: Any) -> None:
        pass

    def sync(self, running: int | None) -> None:
        pass

    def fill(self, *args: Any) -> None:
        pass

    def stale(self) -> list[Any]:
        return []


def one_run(path: Path) -> float:
    """Return the seconds of one run of the scenario."""
    scn = load_scenario(path)
    t = time.perf_counter()
    run_scenario(scn)
    return time.perf_counter() - t


def without_new_invariants(path: Path) -> float:
    """Return one_run with the new invariants, the checker and the TLBs switched off."""
    saved = dict(REGISTRY.invariants)
    checker, tlbs = kvm_events.StepChecker, kvm_events.VcpuTlbs
    try:
        for name in [n for n in REGISTRY.invariants if n not in BEFORE]:
            del REGISTRY.invariants[name]
        kvm_events.StepChecker = _NoChecker  # type: ignore[misc,assignment]
        kvm_events.VcpuTlbs = _NoTlbs  # type: ignore[misc,assignment]
        return one_run(path)
    finally:
        REGISTRY.invariants.clear()
        REGISTRY.invariants.update(saved)
        kvm_events.StepChecker, kvm_events.VcpuTlbs = checker, tlbs  # type: ignore[misc]


def main() -> None:
    load_layers()
    for path in (DEMO, STALE):
        steps = len(run_scenario(path).steps)
        pairs = [(without_new_invariants(path), one_run(path)) for _ in range(RUNS)]
        off, on = min(p[0] for p in pairs), min(p[1] for p in pairs)  # the least disturbed
        print(f"{path.name}: {steps} steps; without the new invariants {off * 1e3:.1f} ms/run, "
              f"with them {on * 1e3:.1f} ms/run (+{(on / off - 1) * 100:.0f}%, "
              f"{(on - off) / steps * 1e3:.2f} ms/step)")


if __name__ == "__main__":
    main()
