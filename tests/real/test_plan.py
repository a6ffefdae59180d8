"""Scenario -> VMM plan: step numbering, lines, guest code layout, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from s2mmu.arch.access import acc_gpr, acc_ifetch
from s2mmu.arch.features import PRESETS
from s2mmu.arch.memory import PhysMem
from s2mmu.arch.state import Regime, SysRegs
from s2mmu.arch.translate import AddressDescriptor, Env, full_translate
from s2mmu.kvm.cpu import write_guest_stage1
from s2mmu.real.plan import (
    CODE_SIZE,
    ENTRY,
    HIGH_BASE,
    PC_CORE_ID,
    SCTLR_EL1_ID,
    UNSUPPORTED,
    GuestStep,
    RecordingMemory,
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
    ('[[vcpu]]\nid = 0\nstage1_tables = 0x40000000\nmap = []\n'
     '[[event]]\ndo = "read"\nipa = 0x40001000\n', "ipa-with-stage1"),
    ('[[vcpu]]\nid = 0\n[[vcpu]]\nid = 1\n[[event]]\ndo = "read"\nipa = 0x40001000\n',
     "vcpu"),
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


VA = DATA / "guest_va.toml"


def test_a_stage1_plan_writes_the_model_s_tables_at_their_hvas() -> None:
    """Every word the model's write_guest_stage1 writes at an IPA is poked at the HVA the
    memslot gives that IPA, after the set-up step, before the first access."""
    scn = load_scenario(VA)
    plan = make_plan(scn)
    assert plan.stage1 is not None and plan.pokes_after == 1
    mem = RecordingMemory()
    (spec,) = scn.config("kvm").vcpus
    root = write_guest_stage1(mem, 0x40000000, list(spec.maps))
    assert plan.stage1.ttbr0 == root == 0x40000000
    expect = {0x7F0000000000 + a - 0x40000000: v for a, v in mem.words.items() if v}
    assert dict(plan.stage1.pokes) == expect
    lines = render_plan(plan).splitlines()
    pokes = [i for i, line in enumerate(lines) if line.startswith("poke ")]
    assert lines[pokes[0] - 1].startswith("step 1 memslot")
    assert lines[pokes[-1] + 1] == "step 2 guest"
    assert f"reg {PC_CORE_ID:#x} {HIGH_BASE + ENTRY:#x}" in lines
    assert f"reg {SCTLR_EL1_ID:#x} {0x30D00801:#x}" in lines


def test_the_stage1_tables_levels_are_known_for_s1ptw_faults() -> None:
    plan = make_plan(load_scenario(VA))
    assert plan.stage1 is not None
    assert [plan.stage1.table_level(a) for a in (0x40000000, 0x40001000, 0x40002008,
                                                 0x40003000, 0x40005000, 0x40006000)] == [
        1, 2, 3, 3, 3, None]


def test_ttbr1_maps_the_vmm_s_code_and_marker_page() -> None:
    """The architecture's own walk of the plan's TTBR1 tables (written as code words into
    the code slot) finds the entry point executable at EL1 and the marker page Device."""
    plan = make_plan(load_scenario(VA))
    assert plan.stage1 is not None
    mem = PhysMem()
    for off, words in plan.stage1.machinery:
        for i, w in enumerate(words):
            mem.write_bytes(plan.code_gpa + off + 4 * i, w.to_bytes(4, "little"))
    regs = SysRegs(SCTLR_EL1=plan.stage1.sctlr, TCR_EL1=plan.stage1.tcr,
                   MAIR_EL1=plan.stage1.mair, TTBR0_EL1=plan.stage1.ttbr0,
                   TTBR1_EL1=plan.stage1.ttbr1)
    env = Env(mem, PRESETS["qemu-max"]())
    fetch = full_translate(regs, Regime.EL10, HIGH_BASE + ENTRY, acc_ifetch(1), env)
    assert isinstance(fetch, AddressDescriptor)
    assert fetch.paddress == plan.code_gpa + ENTRY
    store = full_translate(regs, Regime.EL10, HIGH_BASE + CODE_SIZE + 8, acc_gpr(1, True), env)
    assert isinstance(store, AddressDescriptor) and store.paddress == plan.mmio_gpa + 8
    assert store.memattrs.memtype.name == "DEVICE"
    assert plan.is_machinery(plan.code_gpa + 0xF000)


def test_stage1_maps_outside_the_code_limit_are_refused() -> None:
    events = "".join(f'[[event]]\ndo = "read"\nva = {0x1000 * i:#x}\n' for i in range(2600))
    head = '[[vcpu]]\nid = 0\nstage1_tables = 0x40000000\nmap = []\n'
    with pytest.raises(Unsupported, match="code-size unsupported"):
        plan_of(events, head)

