"""The QEMU side: blob and result formats, skips with reasons, exceptions, lost cases."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest

from s2mmu.arch.errors import InputError
from s2mmu.conformance.casefile import AtOp, parse_cases
from s2mmu.conformance.qemu import (
    PROBE_LAYOUT,
    RESULT_MAGIC,
    QemuConfig,
    access_answer,
    build_probe,
    check_probe_symbols,
    parse_results,
    run_case_file,
)
from s2mmu.conformance.tables import Image, Shape, TableTree
from tests.conformance.conftest import CASES, requires_qemu


def ops_of(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the ops of the first case of an answer."""
    return answer["cases"][0]["ops"]


def test_results_parse_only_complete_records() -> None:
    record = struct.pack("<10Q", RESULT_MAGIC, 4, 1, 1, 0, 0, 0, 0, 0, 0)
    record += struct.pack("<6Q", 1, 0x80F, 0, 0, 0, 0)
    record += struct.pack("<4Q", 0, 0x5000_0000, 0x403, 0x403 | 1 << 7)
    (result,) = parse_results(record + record[:40])
    assert result.index == 4
    assert result.ops[0][:2] == (1, 0x80F)
    assert result.changes == ((0, 0x5000_0000, 0x403, 0x483),)


def test_memory_outside_ram_is_a_skip_with_the_reason() -> None:
    answer = run_case_file({"memory": [{"pa": "0x1000", "words": [3]}], "ops": [["S1E1R", 0]]})
    op = ops_of(answer)[0]
    assert op["outcome"] == "skipped"
    assert op["reason"] == ("memory at PA 0x1000 is outside QEMU virt RAM "
                            "[0x40000000, 0x140000000)")


def test_memory_in_the_probe_region_is_a_skip() -> None:
    answer = run_case_file({"memory": [{"pa": "0x41000000", "words": [3]}], "ops": [["S1E1R", 0]]})
    assert "overlaps the probe's reserved region" in ops_of(answer)[0]["reason"]


def test_el1_with_tge_cannot_run_and_says_why() -> None:
    answer = run_case_file({"el": "EL1", "regs": {"HCR_EL2": "0x88000000"},
                            "ops": [["S1E1R", 0]]})
    assert ops_of(answer)[0]["reason"].startswith("EL1 cannot execute with HCR_EL2.TGE=1")


@requires_qemu
def test_built_probe_matches_the_layout() -> None:
    check_probe_symbols(build_probe())


@requires_qemu
def test_el2_only_operations_at_el1_are_undefined_to_el1(qemu_config: QemuConfig) -> None:
    ops = ops_of(run_case_file({"el": "EL1", "ops": [["S12E1R", "0x1000"], ["S1E2W", 0],
                                                       ["S1E1R", "0x1000"]]}, qemu_config))
    assert ops[0] | {} == {"op": "S12E1R", "va": "0x1000", "el": "EL1", "pan": 0,
                           "outcome": "exception", "taken_to": "EL1", "ESR": "0x2000000"}
    assert ops[1]["ESR"] == "0x2000000"
    assert ops[2]["PAR_EL1"] == "0x0000000000001a00"


def stage1_case(name: str, stub_pxn: bool) -> dict[str, Any]:
    """Return an EL1 case whose stage 1 maps the stub page (identity), maybe PXN."""
    image = Image()
    state = [0x5000_0000]

    def alloc(size: int, align: int) -> int:
        state[0] = -(-state[0] // align) * align + size
        return state[0] - size
    tree = TableTree(Shape(stage=1, granule=12, ia_bits=39, start_level=1), image, alloc)
    stub = PROBE_LAYOUT.stub_pa
    tree.map(stub, 3, stub, 7 << 2 | 0b11 << 6 | 1 << 10 | int(stub_pxn) << 53)
    tree.map(0x1000, 3, 0x9000_0000, 7 << 2 | 1 << 10)
    tcr = 25 | 1 << 23 | 2 << 30 | 5 << 32
    return {"name": name, "el": "EL1", "memory": image.memory_entries(),
            "regs": {"SCTLR_EL1": "0x30d00801", "TCR_EL1": hex(tcr), "MAIR_EL1": hex(0xFF << 56),
                     "TTBR0_EL1": hex(tree.root)},
            "ops": [["S1E1R", "0x1000"], ["S1E1W", "0x1000"]]}


@requires_qemu
def test_el1_runs_with_its_mmu_on_when_the_stub_is_mapped(qemu_config: QemuConfig) -> None:
    ops = ops_of(run_case_file(stage1_case("mapped", stub_pxn=False), qemu_config))
    assert [op["PAR_EL1"] for op in ops] == ["0xff00000090000a00"] * 2


@requires_qemu
def test_unmapped_stub_is_a_harness_error_not_a_hang(qemu_config: QemuConfig) -> None:
    case = stage1_case("unmapped", stub_pxn=False)
    case["regs"]["TTBR0_EL1"] = hex(int(case["regs"]["TTBR0_EL1"], 16) + 0x1000)
    (op, _) = ops_of(run_case_file(case, qemu_config))
    assert op["outcome"] == "harness_error"
    assert op["reason"].startswith("the probe's stub page (PA 0x40010000) is not mapped")


@requires_qemu
def test_a_hung_guest_costs_one_case_and_the_run_resumes() -> None:
    config = QemuConfig(case_timeout=1.0)
    good = {"name": "good", "ops": [["S1E1R", "0x1000"]]}
    cases = [good, stage1_case("hangs", stub_pxn=True), good]
    answers = run_case_file(cases, config)["cases"]
    assert [a["ops"][0]["outcome"] for a in answers] == ["par", "harness_error", "par"]
    assert "made no progress" in answers[1]["ops"][0]["reason"]


@requires_qemu
def test_harness_memory_reports_what_prechecks_changed(qemu_config: QemuConfig) -> None:
    case = stage1_case("af", stub_pxn=False)
    (parsed,) = parse_cases(case)
    assert parsed.ops
    tcr = int(case["regs"]["TCR_EL1"], 16) | 1 << 39
    case["regs"]["TCR_EL1"] = hex(tcr)
    for entry in case["memory"]:
        entry["words"] = [hex(int(w, 16) & ~(1 << 10)) if int(w, 16) >> 12 == 0x40010 else w
                          for w in entry["words"]]
    answer = run_case_file(case, qemu_config)["cases"][0]
    (word,) = answer["harness_memory"]
    assert int(word["words"][0], 16) == PROBE_LAYOUT.stub_pa | 7 << 2 | 0b11 << 6 | 1 << 10 | 3
    assert answer["memory_changes"] == []


def test_more_ops_than_the_result_buffer_holds_is_a_skip() -> None:
    answer = run_case_file({"ops": [["S1E1R", "0x0"]] * 100_001})
    assert ops_of(answer)[0]["reason"] == ("a case may hold at most 100,000 ops (the probe's "
                                           "result buffer), this one has 100,001")


@requires_qemu
def test_walk_outside_ram_from_el3_is_not_run_not_a_harness_error(
        qemu_config: QemuConfig) -> None:
    # TTBR0_EL1 points beyond QEMU virt's RAM: the level-0 read is an external abort,
    # which QEMU takes at EL3 from the AT itself; at-case.md memory would read zero.
    case = {"name": "outside", "el": "EL3",
            "regs": {"SCTLR_EL1": "0x30d00801", "TCR_EL1": "0x580803510",
                     "TTBR0_EL1": "0x400000000000"},
            "ops": [["S1E1R", "0x1000"], ["S1E1W", "0x1000"]]}
    ops = ops_of(run_case_file(case, qemu_config))
    assert [op["outcome"] for op in ops] == ["skipped", "skipped"]
    assert ops[0]["reason"].startswith("the walk read a PA outside QEMU virt RAM (ESR_EL3 0x96")


@requires_qemu
def test_accesses_answer_as_recorded_in_the_format_examples(qemu_config: QemuConfig) -> None:
    cases = json.loads((CASES / "accesses.cases.json").read_text())
    recorded = json.loads((CASES / "accesses.qemu.json").read_text())
    assert run_case_file(cases, qemu_config) == recorded


@requires_qemu
def test_a_store_is_undone_before_the_next_case(qemu_config: QemuConfig) -> None:
    # Two copies of the first accesses example in one QEMU run: the second one's load of
    # the word the first one stored must read zero again (memory not given reads zero).
    case = json.loads((CASES / "accesses.cases.json").read_text())["cases"][0]
    second = dict(case, name="again", ops=[{"op": "LDR", "va": "0x8040201018"}])
    answers = run_case_file([case, second], QemuConfig(jobs=1))["cases"]
    assert answers[0]["ops"][3]["value"] == "0x0000000000000abc"
    assert answers[1]["ops"][0]["value"] == "0x0000000000000000"


def test_accesses_at_el3_are_refused_with_the_rule() -> None:
    with pytest.raises(InputError, match="executes LDR at EL0, EL1 or EL2, not EL3"):
        parse_cases({"ops": [{"op": "LDR", "va": "0x0", "el": "EL3"}]})


def test_completed_accesses_decode_by_kind() -> None:
    def op(name: str) -> AtOp:
        return AtOp(name, 0x1000, 1, 0, value=0x55)

    assert access_answer(op("LDXR"), 0x12, 0) == {"outcome": "load",
                                                  "value": "0x0000000000000012"}
    assert access_answer(op("LDADD"), 0x12, 0) == {"outcome": "atomic",
                                                   "value": "0x0000000000000012"}
    assert access_answer(op("STXR"), 0x12, 0xFFFF_FFFF_0000_0001) == {
        "outcome": "store", "value": "0x0000000000000055", "status": "0x1"}
    assert access_answer(op("STR"), 0x12, 7) == {"outcome": "store",
                                                 "value": "0x0000000000000055"}
