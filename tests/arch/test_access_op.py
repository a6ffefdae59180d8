"""Real accesses (LDR, STR, FETCH) through the one translation engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s2mmu.arch.access_op import (
    AccessException,
    AccessOp,
    Atomic,
    Fetched,
    Loaded,
    Stored,
    branch_addr,
    execute_access,
    instruction_syndrome,
)
from s2mmu.arch.atcase import load_memory, parse_case, run_case, run_cases
from s2mmu.arch.errors import InputError
from s2mmu.arch.features import qemu_7_2_max
from s2mmu.arch.state import Regime
from s2mmu.arch.translate import Env

CASES = Path(__file__).parents[1] / "conformance" / "cases"


def example(index: int) -> dict[str, Any]:
    """Return one of the accesses examples QEMU answered (shared/formats/examples)."""
    return dict(json.loads((CASES / "accesses.cases.json").read_text())["cases"][index])


def run(case: dict[str, Any], op: str, va: int, el: int = 1, pan: bool = False,
        value: int = 0) -> Any:
    """Execute one access on a fresh copy of a case's memory."""
    parsed = parse_case(case)
    env = Env(load_memory(parsed), qemu_7_2_max())
    return execute_access(AccessOp.parse(op), va, el, pan, value, parsed.regs, env)


def test_model_answers_the_examples_as_qemu_did() -> None:
    cases = json.loads((CASES / "accesses.cases.json").read_text())
    qemu = json.loads((CASES / "accesses.qemu.json").read_text())
    got = run_cases(cases)
    assert [c["ops"] for c in got["cases"]] == [c["ops"] for c in qemu["cases"]]
    assert [c["memory_changes"] for c in got["cases"]] == [
        c["memory_changes"] for c in qemu["cases"]]


def test_load_reads_the_word_little_endian() -> None:
    got = run(example(0), "LDR", 0x8040201010)
    assert isinstance(got, Loaded) and got.value == 0x1122334455667788


def test_store_to_a_read_only_page_is_a_stage1_permission_fault_with_wnr() -> None:
    got = run(example(0), "STR", 0x8040202010, value=1)
    assert isinstance(got, AccessException)
    assert (got.taken_to, got.esr, got.far) == (1, 0x9600004F, 0x8040202010)


def test_store_then_load_reads_the_value_back() -> None:
    out = run_case(parse_case(example(0)))
    assert out["ops"][2] == {"op": "STR", "va": "0x8040201018", "el": "EL1", "pan": 0,
                             "outcome": "store", "value": "0x0000000000000abc"}
    assert out["ops"][3]["value"] == "0x0000000000000abc"


def test_stage2_fault_of_a_load_reports_the_instruction_syndrome() -> None:
    got = run(example(1), "LDR", 0x8040202008)
    assert isinstance(got, AccessException) and got.taken_to == 2
    assert got.esr >> 24 & 1 and got.esr >> 22 & 3 == 0b11 and got.esr >> 16 & 0x1F == 1
    assert got.hpfar == 0x900010


def test_stage1_fault_has_no_instruction_syndrome() -> None:
    got = run(example(0), "LDR", 0x8040205000)
    assert isinstance(got, AccessException) and got.fault is not None
    assert instruction_syndrome(AccessOp.LDR, got.fault) == 0 and not got.esr >> 24 & 1


def test_store_through_stage2_dbm_sets_s2ap1_once() -> None:
    out = run_case(parse_case(example(1)))
    assert out["memory_changes"] == [{"pa": "0x61002000", "before": "0x800009000077f",
                                      "after": "0x80000900007ff", "op": 1}]


def test_permitted_fetch_of_zero_is_undefined_at_the_fetching_el() -> None:
    got = run(example(0), "FETCH", 0x8040201100)
    assert isinstance(got, AccessException) and (got.taken_to, got.esr) == (1, 0x02000000)


def test_permitted_fetch_of_a_non_zero_word_reports_it() -> None:
    got = run(example(0), "FETCH", 0x8040201010)
    assert isinstance(got, Fetched) and got.insn == 0x55667788


def test_wxn_makes_a_dbm_page_non_executable() -> None:
    # ASL AArch64.S1ApplyOutputPerms: with HA=HD=1 a DBM leaf's effective AP[2] is 0, so
    # the read-only-looking page is writable and WXN removes execute.
    case = example(0)
    case["regs"] = dict(case["regs"], SCTLR_EL1=hex(0x30d00801 | 1 << 19),
                        TCR_EL1=hex(0x580903510 | 3 << 39))
    case["memory"] = case["memory"] + [{"pa": "0x60003010", "words": ["0x8000090001783"]}]
    got = run(case, "FETCH", 0x8040202100)
    assert isinstance(got, AccessException) and got.esr & 0x3F == 0x0F
    case["memory"][-1] = {"pa": "0x60003010", "words": ["0x90001783"]}
    got = run(case, "FETCH", 0x8040202100)
    assert isinstance(got, AccessException) and got.esr == 0x02000000


@given(st.integers(0, 0xFF), st.integers(0, (1 << 56) - 1))
def test_branch_to_a_tagged_address_drops_the_tag(tag: int, low: int) -> None:
    case = parse_case({"regs": {"TCR_EL1": hex(1 << 37 | 1 << 38)}})
    env = Env(load_memory(case), qemu_7_2_max())
    target = tag << 56 | low
    pc = branch_addr(target, 1, case.regs, Regime.EL10, env)
    assert pc & (1 << 56) - 1 == low
    assert pc >> 56 == (0xFF if low >> 55 else 0)


def test_branch_at_el2_zero_extends() -> None:
    case = parse_case({"regs": {"TCR_EL2": hex(0x80800000 | 1 << 20)}})
    env = Env(load_memory(case), qemu_7_2_max())
    assert branch_addr(0xAB80_0000_0000_1000, 2, case.regs, Regime.EL2, env) == \
        0x0080_0000_0000_1000


def test_unaligned_fetch_is_refused() -> None:
    with pytest.raises(InputError, match="must be 4-byte aligned"):
        run(example(0), "FETCH", 0x8040201102)


def test_store_writes_the_value_as_given() -> None:
    got = run(example(0), "STR", 0x8040201030, value=0xFEDC)
    assert isinstance(got, Stored) and got.value == 0xFEDC


def test_el0_accesses_check_ap_uxn_and_pan_at_el1() -> None:
    out = run_case(parse_case(example(2)))
    assert [op["outcome"] for op in out["ops"]] == ["store", "load", "exception", "exception",
                                                    "exception"]
    assert out["ops"][1]["value"] == "0x0000000000001234"
    # EL0 on a privileged page, EL0 fetch of a UXN page, EL1 load of it under PAN.
    assert [op.get("ESR") for op in out["ops"][2:]] == ["0x9200000f", "0x8200000f", "0x9600000f"]


# --- Alignment, exclusives and atomics -------------------------------------------------

DEVICE_PAGE = 0x8040203000     # stage-1 leaf at 0x60003018: MAIR Attr1 (Device-nGnRE)
DBM_RO_PAGE = 0x8040204000     # stage-1 leaf at 0x60003020: AP[2]=1 with DBM


def with_words(case: dict[str, Any], *words: tuple[int, int], **regs: int) -> dict[str, Any]:
    """Return case with more memory words and registers."""
    out = dict(case)
    out["memory"] = list(case["memory"]) + [{"pa": hex(pa), "words": [hex(w)]}
                                            for pa, w in words]
    out["regs"] = dict(case["regs"]) | {k: hex(v) for k, v in regs.items()}
    return out


def device_case(**regs: int) -> dict[str, Any]:
    return with_words(example(0), (0x60003018, 0x90002707), **regs)


def esr_fsc(got: Any) -> int:
    assert isinstance(got, AccessException), got
    return got.esr & 0x3F


def test_unaligned_load_of_normal_memory_reads_across_the_word() -> None:
    got = run(example(0), "LDR", 0x8040201014)
    assert isinstance(got, Loaded) and got.value == 0x11223344


def test_unaligned_load_across_a_page_faults_on_the_second_page_at_its_first_byte() -> None:
    got = run(example(0), "LDR", 0x8040202FFC)    # read-only page, then an unmapped one
    assert isinstance(got, AccessException) and got.far == 0x8040203000 and esr_fsc(got) == 7


def test_sctlr_a_alignment_fault_comes_before_any_translation_fault() -> None:
    case = with_words(example(0), SCTLR_EL1=0x30D00803)
    got = run(case, "LDR", 0x8040205004)           # unmapped: a Translation fault otherwise
    assert isinstance(got, AccessException)
    assert (got.taken_to, got.esr, got.far) == (1, 0x96000021, 0x8040205004)


def test_sctlr_a_store_alignment_fault_reports_wnr() -> None:
    got = run(with_words(example(0), SCTLR_EL1=0x30D00803), "STR", 0x8040201012)
    assert isinstance(got, AccessException) and got.esr == 0x96000061


def test_unaligned_access_to_device_memory_faults_after_the_walk() -> None:
    got = run(device_case(), "LDR", 0x8040203004)
    assert isinstance(got, AccessException) and got.esr == 0x96000021
    assert isinstance(run(device_case(), "LDR", 0x8040203008), Loaded)


def test_device_alignment_fault_has_priority_over_the_permission_fault() -> None:
    ro_device = with_words(example(0), (0x60003018, 0x90002787))   # AP[2]=1, Device
    assert esr_fsc(run(ro_device, "STR", 0x8040203008)) == 0x0F       # aligned: Permission
    assert esr_fsc(run(ro_device, "STR", 0x8040203004)) == 0x21       # unaligned: Alignment


def test_translation_fault_has_priority_over_the_device_alignment_fault() -> None:
    case = with_words(device_case(), (0x60003018, 0x90002307))  # AF=0, Device
    assert esr_fsc(run(case, "LDR", 0x8040203004)) == 0x0B             # Access flag, level 3


def test_stage1_off_data_is_device_so_unaligned_accesses_fault() -> None:
    got = run({"regs": {}}, "LDR", 0x40001004)
    assert esr_fsc(got) == 0x21


def test_unaligned_exclusive_and_atomic_fault_without_sctlr_a() -> None:
    for op in ("LDXR", "LDAXR", "STXR", "LDADD", "SWP", "CAS"):
        got = run(example(0), op, 0x8040201014)
        assert esr_fsc(got) == 0x21, op
        wnr = got.esr >> 6 & 1      # ASL NoFaultForAccess: write = !read && write
        assert wnr == 0, op          # (STXR: its LDXR faults first)


def test_stage2_device_alignment_fault_goes_to_el2_with_the_instruction_syndrome() -> None:
    case = with_words(example(1), (0x61002000, 0x8000090000743))    # stage-2 Device-nGnRE
    got = run(case, "LDR", 0x8040201014)
    assert isinstance(got, AccessException) and got.taken_to == 2
    assert got.esr == 0x93C18021 and got.hpfar is None


def test_exclusive_load_and_store_pair() -> None:
    out = run_case(parse_case({**example(0), "ops": [
        {"op": "STXR", "va": "0x8040201030", "value": "0x77"},
        {"op": "LDXR", "va": "0x8040201030"}, {"op": "LDAXR", "va": "0x8040201010"}]}))
    assert [(o["outcome"], o["value"], o.get("status")) for o in out["ops"]] == [
        ("store", "0x0000000000000077", "0x0"), ("load", "0x0000000000000077", None),
        ("load", "0x1122334455667788", None)]


def test_store_exclusive_to_a_read_only_page_faults_on_its_store() -> None:
    got = run(example(0), "STXR", 0x8040202010, value=1)
    assert isinstance(got, AccessException) and got.esr == 0x9600004F


def test_atomics_read_modify_write() -> None:
    va = 0x8040201010
    ldadd = run(example(0), "LDADD", va, value=0x10)
    assert isinstance(ldadd, Atomic) and ldadd.value == 0x1122334455667788
    out = run_case(parse_case({**example(0), "ops": [
        {"op": "LDADD", "va": hex(va), "value": "0x10"}, {"op": "LDR", "va": hex(va)},
        {"op": "SWP", "va": hex(va), "value": "0x5"}, {"op": "CAS", "va": hex(va),
                                                       "value": "0x9"},
        {"op": "CAS", "va": "0x8040201038", "value": "0x9"},
        {"op": "LDR", "va": "0x8040201038"}]}))
    assert [o["value"] for o in out["ops"]] == [
        "0x1122334455667788", "0x1122334455667798", "0x1122334455667798",
        "0x0000000000000005", "0x0000000000000000", "0x0000000000000009"]


def test_atomic_to_a_read_only_page_is_a_write_permission_fault() -> None:
    got = run(example(0), "LDADD", 0x8040202010, value=1)
    assert isinstance(got, AccessException) and got.esr == 0x9600004F
    assert got.fault is not None and got.fault.atomic_write


def test_atomic_with_neither_read_nor_write_reports_the_read() -> None:
    got = run(example(0), "SWP", 0x8040201010, el=0)       # EL0: no access at all
    assert isinstance(got, AccessException) and got.esr == 0x9200000F
    assert got.fault is not None and not got.fault.atomic_write


def test_atomic_translation_fault_reports_a_read() -> None:
    got = run(example(0), "LDADD", 0x8040205000, value=1)
    assert isinstance(got, AccessException) and got.esr == 0x96000007


def test_atomic_to_a_stage2_write_only_page_is_a_read_fault_without_syndrome() -> None:
    case = with_words(example(1), (0x61002000, 0x80000900006BF))    # S2AP=0b10 (write-only)
    got = run(case, "SWP", 0x8040201010, value=1)
    assert isinstance(got, AccessException) and got.taken_to == 2
    assert got.esr == 0x9200000F and got.hpfar is None              # WnR=0, ISV=0
    assert got.fault is not None and not got.fault.atomic_write
    store = run(case, "STR", 0x8040201010, value=1)
    assert isinstance(store, Stored)


def test_atomic_sets_the_dirty_state_through_dbm_at_both_stages() -> None:
    hahd = 0x580903510 | 3 << 39
    s1 = with_words(example(0), (0x60003020, 0x0008000090003783), TCR_EL1=hahd)
    out = run_case(parse_case({**s1, "ops": [{"op": "LDADD", "va": hex(DBM_RO_PAGE)}]}))
    assert out["ops"][0]["outcome"] == "atomic"
    assert out["memory_changes"] == [{"pa": "0x60003020", "before": "0x8000090003783",
                                      "after": "0x8000090003703", "op": 0}]
    s2 = with_words(example(1), VTCR_EL2=0x80623558 | 3 << 21)
    out = run_case(parse_case({**s2, "ops": [{"op": "CAS", "va": "0x8040201040"}]}))
    assert out["ops"][0]["outcome"] == "atomic"
    assert {"pa": "0x61002000", "before": "0x800009000077f", "after": "0x80000900007ff",
            "op": 0} in out["memory_changes"]


class LosingPort:
    """A table port whose first compare-and-swap finds the descriptor changed: it writes
    `changed` at the descriptor and reports the swap failed (another agent won)."""

    def __init__(self, mem: Any, changed: int) -> None:
        self.mem, self.changed, self.lost = mem, changed, 0

    def read64(self, pa: int, big_endian: bool = False) -> int:
        return int(self.mem.read64(pa, big_endian))

    def cas64(self, pa: int, expected: int, new: int, big_endian: bool = False) -> bool:
        if not self.lost:
            self.lost += 1
            self.mem.write64(pa, self.changed, big_endian)
            return False
        return bool(self.mem.cas64(pa, expected, new, big_endian))


def test_stage1_update_that_loses_its_swap_walks_again_and_sees_the_new_descriptor() -> None:
    hahd = 0x580903510 | 3 << 39
    parsed = parse_case(with_words(example(0), (0x60003020, 0x0008000090003783),
                                   TCR_EL1=hahd))
    mem = load_memory(parsed)
    # Another agent maps the page somewhere else, still read-only with DBM.
    port = LosingPort(mem, 0x0008000090005783)
    env = Env(mem, qemu_7_2_max(), tables=port)
    got = execute_access(AccessOp.STR, DBM_RO_PAGE, 1, False, 0x99, parsed.regs, env)
    assert isinstance(got, Stored) and got.result.paddress == 0x90005000
    assert port.lost == 1 and mem.read64(0x60003020) == 0x0008000090005703
    assert mem.read64(0x90005000) == 0x99


def test_stage2_update_that_loses_its_swap_walks_again() -> None:
    parsed = parse_case(with_words(example(1), VTCR_EL2=0x80623558 | 3 << 21))
    mem = load_memory(parsed)
    port = LosingPort(mem, 0x90000077F)     # now read-only without DBM
    env = Env(mem, qemu_7_2_max(), tables=port)
    got = execute_access(AccessOp.STR, 0x8040201040, 1, False, 1, parsed.regs, env)
    assert isinstance(got, AccessException) and got.taken_to == 2
    assert got.esr & 0x3F == 0x0F and port.lost == 1


def test_a_port_that_never_wins_its_swap_is_an_error_not_a_hang() -> None:
    class Never(LosingPort):
        def cas64(self, pa: int, expected: int, new: int, big_endian: bool = False) -> bool:
            return False

    parsed = parse_case(with_words(example(0), (0x60003020, 0x0008000090003783),
                                   TCR_EL1=0x580903510 | 3 << 39))
    mem = load_memory(parsed)
    env = Env(mem, qemu_7_2_max(), tables=Never(mem, 0))
    with pytest.raises(RuntimeError, match="cas64 never succeeds"):
        execute_access(AccessOp.STR, DBM_RO_PAGE, 1, False, 1, parsed.regs, env)


def test_model_answers_the_exclusives_and_atomics_examples_as_qemu_did() -> None:
    cases = json.loads((CASES / "atomics.cases.json").read_text())
    qemu = json.loads((CASES / "atomics.qemu.json").read_text())
    got = run_cases(cases)
    assert [c["ops"] for c in got["cases"]] == [c["ops"] for c in qemu["cases"]]
    assert [c["memory_changes"] for c in got["cases"]] == [
        c["memory_changes"] for c in qemu["cases"]]
