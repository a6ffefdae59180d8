"""The model against a recorded real run, and the differences a changed record shows."""

from __future__ import annotations

from pathlib import Path

from s2mmu.pgtable.profile import CURRENT, V6_1, V6_12, V7_1
from s2mmu.real.diff import Aspect, compare, host_differences, profile_for_release, run_model
from s2mmu.real.log import parse_console
from s2mmu.real.plan import make_plan
from s2mmu.scenario.schema import load_scenario

HERE = Path(__file__).parent
DATA = HERE.parents[1] / "src" / "s2mmu" / "real" / "data"
CONSOLE = (HERE / "data" / "console-6.1-nvhe.txt").read_text()
SCENARIOS = {0: DATA / "dirty_round.toml", 1: DATA / "host_events.toml"}


def diff(console: str, which: int = 0):  # type: ignore[no-untyped-def]
    scn = load_scenario(SCENARIOS[which])
    real = parse_console(console).runs[which]
    profile = profile_for_release(real.release)
    model, _ = run_model(scn, profile)
    return compare(model, real, make_plan(scn), profile)


def test_recorded_runs_agree_with_the_model_step_by_step() -> None:
    for which in SCENARIOS:
        report = diff(CONSOLE, which)
        assert report.differences == [], report.differences
        assert report.agreed == len(report.steps)


def test_fault_streams_drop_the_vmm_s_own_aborts() -> None:
    report = diff(CONSOLE)
    write = report.steps[1]
    assert [str(f) for f in write.real_faults] == ["write Translation L1 @0x40000000"]
    assert write.real_faults == write.model_faults


def test_a_dirty_page_difference_names_the_step_and_both_answers() -> None:
    changed = CONSOLE.replace("S2R step 9 dirty 0 2 0,3", "S2R step 9 dirty 0 1 0")
    (d,) = diff(changed).differences
    assert (d.step, d.aspect, d.model, d.real) == (9, Aspect.DIRTY, "[0, 3]", "[0]")


def test_a_fault_level_difference_is_found() -> None:
    changed = CONSOLE.replace("hsr 0x92000045, hxfar 0x40000000", "hsr 0x92000046, hxfar "
                              "0x40000000", 1)
    (d,) = diff(changed).differences
    assert d.step == 2 and d.aspect is Aspect.FAULTS
    assert (d.model, d.real) == ("write Translation L1 @0x40000000",
                                 "write Translation L2 @0x40000000")


def test_an_outcome_difference_is_found() -> None:
    changed = CONSOLE.replace("S2R step 5 exit mmio 0x9000000 4 0\n", "")
    (d,) = diff(changed).differences
    assert (d.step, d.aspect, d.model, d.real) == (5, Aspect.ANSWER, "mmio read 4 @0x9000000",
                                                   "completed")


def test_a_step_the_vmm_never_reached() -> None:
    first = CONSOLE[:CONSOLE.index("S2R plan 001")]
    kept = [line for line in first.splitlines()
            if not line.startswith(("S2R step 10 ", "S2R step 11 ", "S2R step 12 "))]
    at = kept.index("S2R end")
    report = diff("\n".join([*kept[:at], "S2R step 10 exit timeout", *kept[at:]]))
    assert [(d.step, d.aspect) for d in report.differences] == [
        (10, Aspect.MISSING), (11, Aspect.MISSING), (12, Aspect.MISSING)]


def test_profiles_per_release() -> None:
    assert profile_for_release("6.1.0-57-arm64") is V6_1
    assert profile_for_release("6.12.95+deb12-arm64") is V6_12
    assert profile_for_release("7.3.4+deb13-arm64") is V7_1
    assert profile_for_release("unknown") is CURRENT


def test_host_features_are_checked_against_ctr_el0() -> None:
    scn = load_scenario(SCENARIOS[0])  # features fwb, idc
    real = parse_console(CONSOLE.replace("S2R boot 6.1.0-57-arm64",
                                         "S2R boot 6.1.0-57-arm64\nS2R host ctr_el0 0x8444c004",
                                         1)).runs[0]
    assert real.ctr_el0 == 0x8444C004
    (d,) = host_differences(scn, real)
    assert (d.step, d.aspect, d.model, d.real) == (0, Aspect.SETUP, "host feature idc: yes",
                                                   "CTR_EL0=0x8444c004: IDC=0")
    agreeing = parse_console(CONSOLE.replace("S2R boot 6.1.0-57-arm64",
                                             "S2R boot 6.1.0-57-arm64\n"
                                             "S2R host ctr_el0 0x9444c004", 1)).runs[0]
    assert host_differences(scn, agreeing) == []
