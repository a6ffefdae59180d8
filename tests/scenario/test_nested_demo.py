"""The built-in nested example: its steps as typed records."""

from __future__ import annotations

from s2mmu.kvm.abort import InjectedS2Fault, Resumed, ResumeReason
from s2mmu.nested.mmu import ShadowUnmap
from s2mmu.scenario.nested_demo import L1Tlbi, L2Access, nested_demo_ok, run_nested_demo


def test_the_example_maps_forwards_injects_invalidates_and_remaps() -> None:
    demo = run_nested_demo()
    assert nested_demo_ok(demo)
    results = [s.handled.result for s in demo.steps if isinstance(s, L2Access)]
    assert results[0] == Resumed(ResumeReason.MAPPED) == results[1] == results[4]
    assert isinstance(results[2], InjectedS2Fault) and results[2].esr & 0x3F == 0x0F
    assert isinstance(results[3], InjectedS2Fault) and results[3].esr & 0x3F == 0x06
    tlbi = next(s for s in demo.steps if isinstance(s, L1Tlbi))
    assert tlbi.unmapped == (ShadowUnmap(5, 0x8000_0000, 2 << 20),)
