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


VA_CONSOLE = (HERE / "data" / "console-6.1-vhe-va.txt").read_text()


def diff_va(console: str):  # type: ignore[no-untyped-def]
    scn = load_scenario(DATA / "guest_va.toml")
    real = parse_console(console).runs[0]
    profile = profile_for_release(real.release)
    model, _ = run_model(scn, profile)
    return compare(model, real, make_plan(scn), profile)


def test_recorded_va_run_agrees_but_for_qemu_s_s1ptw_level() -> None:
    """Linux 6.1 VHE under QEMU 7.2, the guest's stage 1 on: every step agrees, ESR_EL2,
    FAR_EL2 and HPFAR_EL2 of each abort included; the first fetch's S1PTW fault on the
    level-2 table page is reported at level 2 (QEMU 7.2 gives the stage-1 level; the
    model, as the architecture, the stage-2 level 3), a listed departure."""
    report = diff_va(VA_CONSOLE)
    assert report.differences == []
    steps = {s.index: s for s in report.steps}
    assert steps[2].departures == ("s2_walk_fault_level",)
    assert [s.index for s in report.steps if s.departures] == [2]
    assert [str(f) for f in steps[2].model_faults] == [
        "fetch Translation L1 @0x40000000 s1ptw FAR=0x200000",
        "fetch Translation L3 @0x40001000 s1ptw FAR=0x200000",
        "fetch Translation L2 @0x40200000 FAR=0x200000"]
    assert str(steps[5].real_answer) == "guest-fault ESR_EL1=0x9600004f FAR_EL1=0x600000"
    assert steps[5].model_answer == steps[5].real_answer
    assert steps[12].dirty == (256, 513)


def test_an_s1ptw_level_that_is_not_the_table_s_is_a_difference() -> None:
    changed = VA_CONSOLE.replace("ipa 0x40001000, hsr 0x82000086", "ipa 0x40001000, hsr "
                                 "0x82000085", 1)
    (d,) = diff_va(changed).differences
    assert d.step == 2 and d.aspect is Aspect.FAULTS
    assert "fetch Translation L1 @0x40001000 s1ptw" in d.real


def test_a_guest_fault_address_difference_is_found() -> None:
    changed = VA_CONSOLE.replace("0xffffff8000000868 0x600000", "0xffffff8000000868 0x600008")
    (d,) = diff_va(changed).differences
    assert (d.step, d.aspect) == (5, Aspect.ANSWER)
    assert d.real == "guest-fault ESR_EL1=0x9600004f FAR_EL1=0x600008"


def test_an_esr_only_difference_shows_both_esrs() -> None:
    """A syndrome field the decoded view does not show (ISS.SF here) still differs."""
    changed = CONSOLE.replace("hsr 0x93c3804f", "hsr 0x93c3004f")
    (d,) = diff(changed, 1).differences
    assert d.aspect is Aspect.FAULTS
    assert d.model.endswith("ESR=0x93c3804f") and d.real.endswith("ESR=0x93c3004f")
