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


def test_loads_and_stores_need_alignment() -> None:
    with pytest.raises(InputError, match="must be 8-byte aligned"):
        run(example(0), "LDR", 0x8040201014)


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
