"""Scenario -> VMM plan: step numbering, lines, guest code layout, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from s2mmu.real.plan import (
    CODE_SIZE,
    ENTRY,
    UNSUPPORTED,
    GuestStep,
    SlotStep,
    Unsupported,
    make_plan,
    render_plan,
    top_level_span,
)
from s2mmu.scenario.kvm_events import AccessKind
from s2mmu.scenario.schema import load_scenario

DATA = Path(__file__).resolve().parents[2] / "src" / "s2mmu" / "real" / "data"
SCENARIO_DATA = Path(__file__).resolve().parents[2] / "src" / "s2mmu" / "scenario" / "data"

BASE = '''
[[vma]]
start = 0x7f0000000000
size = "2M"
[[memslot]]
id = 0
gpa = 0x40000000
size = "2M"
hva = 0x7f0000000000
'''


def plan_of(events: str, head: str = "") -> str:
    return render_plan(make_plan(load_scenario("t.toml", head + BASE + events)))


def test_dirty_round_plan_keeps_the_model_step_numbers() -> None:
    plan = make_plan(load_scenario(DATA / "dirty_round.toml"))
    assert [s.index for s in plan.steps] == list(range(1, 13))
    assert plan.steps[0] == SlotStep(1, 0, 0x40000000, 0x200000, 0x7f0000000000, 0)
    assert plan.steps[1] == GuestStep(2, AccessKind.WRITE, 0x40000000, None)
    lines = render_plan(plan).splitlines()
    assert lines[:4] == ["scenario dirty-round", "vm 40 0 0 0", "thpzero 0",
                         "vma 0x7f0000000000 0x200000 anon 0 1"]
    assert "step 6 memslot 0 0x40000000 0x200000 0x7f0000000000 1" in lines  # logging on
    assert "step 9 getdirty 0 512" in lines
    assert lines[-1] == "step 12 memslot 0 0x40000000 0x200000 0x7f0000000000 0"


def test_code_slot_sits_in_a_top_level_entry_of_its_own() -> None:
    plan = make_plan(load_scenario(DATA / "dirty_round.toml"))
    assert top_level_span(40) == 1 << 30 and top_level_span(48) == 1 << 39
    assert plan.code_gpa == (1 << 40) - (1 << 30)
    assert plan.mmio_gpa == plan.code_gpa + CODE_SIZE
    assert plan.is_machinery(plan.code_gpa + ENTRY) and plan.is_machinery(plan.mmio_gpa)
    assert not plan.is_machinery(0x40000000)


def test_code_line_holds_vectors_then_the_entry() -> None:
    plan = make_plan(load_scenario(DATA / "dirty_round.toml"))
    assert len(plan.code) > ENTRY // 4
    text = render_plan(plan)
    assert "code 0x800 " in text
    assert f"codeslot {plan.code_gpa:#x} 0x10000 0x800" in text


def test_clear_dirty_log_bitmap_as_the_model_builds_it() -> None:
    text = plan_of('''
[[event]]
do = "clear_dirty_log"
slot = 0
first_page = 64
num_pages = 64
pages = [64, 70]
''', "[vm]\nmanual_dirty_log_protect = true\n")
    assert "vm 40 0 1 0" in text
    assert "step 2 cleardirty 0 64 64 4100000000000000" in text


@pytest.mark.parametrize("events, feature", [
    ('[[event]]\ndo = "read"\nva = 0x1000\n', "va"),
    ('[[event]]\ndo = "dc"\nipa = 0x40000000\n', "dc"),
    ('[[event]]\ndo = "migrate"\nhva = 0x7f0000000000\n', "migrate"),
    ('[[event]]\ndo = "read"\nipa = 0x40000004\n', "alignment"),
    ('[[event]]\ndo = "read"\nipa = 0x40000000\nsyndrome = [8, 27]\n', "syndrome-register"),
    ('[[event]]\ndo = "abort"\nesr = 0x92000007\nfar = 0x40000000\nhpfar = 0x400000\n',
     "abort"),
])
def test_refusals_name_the_feature(events: str, feature: str) -> None:
    with pytest.raises(Unsupported, match=f"real KVM: {feature} unsupported: "):
        plan_of(events)


def test_refusal_is_one_line_with_the_place_and_the_reason() -> None:
    with pytest.raises(Unsupported) as e:
        plan_of('[[event]]\ndo = "read"\nva = 0x1000\n')
    assert str(e.value) == (f"t.toml:10: event[0]: real KVM: va unsupported: "
                            f"{UNSUPPORTED['va']}")


def test_pfnmap_and_pkvm_scenarios_are_refused() -> None:
    with pytest.raises(Unsupported, match="pfnmap unsupported"):
        make_plan(load_scenario(SCENARIO_DATA / "demo.toml"))
    with pytest.raises(Unsupported, match="layer unsupported"):
        make_plan(load_scenario(SCENARIO_DATA / "pkvm_donate_sea.toml"))


def test_a_scenario_without_memslot_is_refused() -> None:
    with pytest.raises(Unsupported, match="no-memslot unsupported"):
        make_plan(load_scenario("t.toml", '[[event]]\ndo = "read"\nipa = 0x1000\n'))
