"""Intended divergences: QEMU behaves as each entry says, and each explains only its shape."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from s2mmu.conformance.casefile import parse_cases
from s2mmu.conformance.compare import changes_by_op, model_answer, normal_changes, normal_op
from s2mmu.conformance.divergences import (
    DIVERGENCES,
    OpEvidence,
    S2Setup,
    architecture_accepts,
    classify,
    explain_memory,
    qemu_rejects,
)
from s2mmu.conformance.generator import TG0, s2_ia_range, s2_sl_fields
from s2mmu.conformance.qemu import QemuConfig, run_case_file
from s2mmu.conformance.qemu72 import (
    combined_attrs_fwb,
    combined_attrs_nofwb,
    convert_stage2_attrs,
    walk_facts,
)
from s2mmu.conformance.tables import Image, Shape, TableTree
from tests.conformance.conftest import requires_qemu

PS_BITS = (32, 36, 40, 42, 44, 48, 52)


def allocator(start: int = 0x5000_0000) -> Any:
    """Return a bump allocator from `start`."""
    state = [start]

    def alloc(size: int, align: int) -> int:
        state[0] = -(-state[0] // align) * align + size
        return state[0] - size
    return alloc


def s1_case(leaf_level: int, output: int, attrs: int, granule: int = 12, ips: int = 5,
            mair: int = 0xFF, **extra: Any) -> dict[str, Any]:
    """Return a 48-bit stage-1 case mapping VA 0 at `leaf_level`, translated with S1E1R."""
    image = Image()
    start = {12: 0, 14: 0, 16: 1}[granule]
    tree = TableTree(Shape(stage=1, granule=granule, ia_bits=48, start_level=start), image,
                     allocator())
    tree.map(0, leaf_level, output, attrs | 1 << 10)
    tcr = 16 | 1 << 23 | TG0[granule] << 14 | 2 << 30 | ips << 32
    return {"name": "d", "memory": image.memory_entries(), "ops": [["S1E1R", "0x0"]],
            "regs": {"SCTLR_EL1": "0x30d00801", "TCR_EL1": hex(tcr), "MAIR_EL1": hex(mair),
                     "TTBR0_EL1": hex(tree.root)}} | extra


def qemu_par(case: dict[str, Any], config: QemuConfig) -> int:
    """Return QEMU's PAR_EL1 for the case's single op."""
    return int(run_case_file(case, config)["cases"][0]["ops"][0]["PAR_EL1"], 16)


@requires_qemu
def test_qemu_reports_descriptor_sh_for_stage1_device(qemu_config: QemuConfig) -> None:
    par = qemu_par(s1_case(3, 0x9000_0000, 0b11 << 8, mair=0x00), qemu_config)
    assert par >> 56 == 0x00 and par >> 7 & 3 == 0b11


@requires_qemu
def test_qemu_copies_reserved_sh_into_par(qemu_config: QemuConfig) -> None:
    par = qemu_par(s1_case(3, 0x9000_0000, 0b01 << 8), qemu_config)
    assert par >> 7 & 3 == 0b01


@requires_qemu
def test_qemu_takes_a_4k_level0_block(qemu_config: QemuConfig) -> None:
    par = qemu_par(s1_case(0, 0x80_0000_0000, 0), qemu_config)
    assert not par & 1 and par & 0xF_FFFF_FFFF_F000 == 0x80_0000_0000


@requires_qemu
def test_qemu_ignores_64k_oa_51_48_below_52_bit_ps(qemu_config: QemuConfig) -> None:
    par = qemu_par(s1_case(3, 0xA_0000_9000_0000, 0, granule=16, ips=5), qemu_config)
    assert not par & 1 and par & 0xF_FFFF_FFFF_F000 == 0x9000_0000


@requires_qemu
def test_qemu_drops_the_transient_hint_under_stage2_write_through(qemu_config: QemuConfig) -> None:
    image = Image()
    s2 = TableTree(Shape(stage=2, granule=12, ia_bits=40, start_level=1, concat=2), image,
                   allocator(0x6000_0000))
    s2.map(0x1000_0000, 2, 0x9000_0000, 0b1010 << 2 | 0b11 << 6 | 1 << 10)
    s2.map(0x5000_0000, 2, 0x5000_0000, 0b1111 << 2 | 0b11 << 6 | 1 << 10)
    case = s1_case(3, 0x1000_0000, 0, mair=0x77)
    case["memory"] += image.memory_entries()
    case["regs"] |= {"HCR_EL2": "0x80000001", "VTCR_EL2": hex(0x80000000 | 24 | 1 << 6 | 5 << 16),
                     "VTTBR_EL2": hex(s2.root)}
    case["ops"] = [["S12E1R", "0x0"]]
    assert qemu_par(case, qemu_config) >> 56 == 0xBB


@requires_qemu
def test_qemu_walks_the_el1_stage1_under_tge(qemu_config: QemuConfig) -> None:
    case = s1_case(3, 0x9000_0000, 0b11 << 8)
    case["regs"]["HCR_EL2"] = hex(1 << 31 | 1 << 27)
    par = qemu_par(case, qemu_config)
    assert not par & 1 and par & 0xF_FFFF_FFFF_F000 == 0x9000_0000


def s2_grid() -> list[tuple[tuple[int, bool, int, int, int], dict[str, Any]]]:
    """Return stage-2 setups the architecture accepts, each as a one-op case."""
    grid = []
    for granule, ds in ((12, False), (12, True), (14, False), (14, True), (16, False)):
        levels = [-1, 0, 1, 2, 3] if granule == 12 else [0, 1, 2, 3]
        for level in levels:
            if level == -1 and not ds:
                continue
            low, high = s2_ia_range(granule, level)
            for ia_bits in range(max(low, 25), min(high, 52) + 1, 3):
                for ps in range(7):
                    grid.append(((granule, ds, level, ia_bits, ps),
                                 s2_case(granule, ds, level, ia_bits, ps)))
    return grid


def s2_case(granule: int, ds: bool, level: int, ia_bits: int, ps: int) -> dict[str, Any]:
    """Return an S12E1R case through a stage 2 with this setup, stage 1 off."""
    image = Image()
    tree = TableTree(Shape(stage=2, granule=granule, ia_bits=ia_bits, start_level=level, ds=ds),
                     image, allocator())
    ipa = 1 << granule
    tree.map(ipa, 3, 0x8000_0000, 0xF << 2 | 1 << 6 | 1 << 10)
    sl0, sl2 = s2_sl_fields(granule, level)
    vtcr = (64 - ia_bits) | sl0 << 6 | TG0[granule] << 14 | ps << 16 | 1 << 31
    vtcr |= ds << 32 | sl2 << 33
    return {"name": "s2", "memory": image.memory_entries(), "ops": [["S12E1R", hex(ipa)]],
            "regs": {"HCR_EL2": "0x80000001", "VTCR_EL2": hex(vtcr), "VTTBR_EL2": hex(tree.root)}}


@requires_qemu
def test_qemu_rejects_stage2_setups_exactly_where_divergences_says(qemu_config: QemuConfig) -> None:
    def accepted(case: dict[str, Any]) -> bool:
        setup = S2Setup.from_vtcr(int(case["regs"]["VTCR_EL2"], 16))
        return setup is not None and architecture_accepts(setup)

    grid = [(key, case) for key, case in s2_grid() if accepted(case)]
    answers = run_case_file([case for _, case in grid], qemu_config)["cases"]
    wrong = []
    for (key, case), answer in zip(grid, answers, strict=True):
        setup = S2Setup.from_vtcr(int(case["regs"]["VTCR_EL2"], 16))
        assert setup is not None
        faulted = int(answer["ops"][0]["PAR_EL1"], 16) & 1
        if bool(faulted) != qemu_rejects(setup):
            wrong.append(key)
    assert len(grid) > 300
    assert wrong == []


# --- Classification, without QEMU ------------------------------------------------------------


def evidence(qemu: dict[str, Any], model: dict[str, Any], **source: Any) -> OpEvidence:
    """Return evidence for one S1E1R op of a minimal case."""
    (case,) = parse_cases({"ops": [["S1E1R", 0]]} | source)
    return OpEvidence(case, case.ops[0], qemu, model)


def par(value: int) -> dict[str, Any]:
    """Return a PAR answer."""
    return {"outcome": "par", "PAR_EL1": f"{value:#018x}"}


def test_sh_divergence_needs_device_or_nc_and_only_sh_differing() -> None:
    assert classify(evidence(par(0x0000_0000_9000_0B80), par(0x0000_0000_9000_0B00))) is not None
    assert classify(evidence(par(0xFF00_0000_9000_0B80), par(0xFF00_0000_9000_0B00))) is None
    assert classify(evidence(par(0x0000_0000_9000_1B80), par(0x0000_0000_9000_0B00))) is None


def test_illegal_block_is_read_from_the_walk_not_from_generator_tags() -> None:
    qemu, model = par(0xFF00_0080_0000_0B80), par(0x809)
    block_l0 = s1_case(0, 0x80_0000_0000, 0)      # 4K level 0: no block without DS
    found = classify(evidence(qemu, model, **block_l0))
    assert found is not None and found.name == "block_at_illegal_level"
    # The same answers for a walk that read no such block explain nothing, tags or not.
    assert classify(evidence(qemu, model, divergence_tags=["illegal_block"])) is None
    assert classify(evidence(qemu, model, **s1_case(1, 0x8000_0000, 0))) is None
    # Only a Translation fault at the block's own level.
    assert classify(evidence(qemu, par(0x80B), **block_l0)) is None
    assert classify(evidence(qemu, par(0x81B), **block_l0)) is None


def test_transient_divergence_matches_only_wt_transient_against_wt() -> None:
    assert classify(evidence(par(0xBB00_0000_9000_0B80), par(0x3300_0000_9000_0B80))) is not None
    assert classify(evidence(par(0xFF00_0000_9000_0B80), par(0x3300_0000_9000_0B80))) is None


def test_tge_divergence_needs_tge_without_e2h_and_qemu_equal_to_the_walk_without_tge() -> None:
    case = s1_case(3, 0x9000_0000, 0b11 << 8)
    walked, flat = par(0xFF00_0000_9000_0B80), par(0x0000_0000_0000_0B00)
    assert classify(evidence(walked, flat, **case)) is None
    case["regs"]["HCR_EL2"] = hex(1 << 31 | 1 << 27)
    found = classify(evidence(walked, flat, **case))
    assert found is not None and found.name == "tge_keeps_el1_stage1"
    assert classify(evidence(par(0xFF00_0000_9000_1B80), flat, **case)) is None
    case["regs"]["HCR_EL2"] = hex(1 << 31 | 1 << 27 | 1 << 34)
    assert classify(evidence(walked, flat, **case)) is None


@pytest.mark.parametrize("divergence", DIVERGENCES, ids=lambda d: d.name)
def test_every_divergence_has_a_reason(divergence: Any) -> None:
    assert len(divergence.reason) > 60
    assert any(f"QEMU {series}" in divergence.reason for series in divergence.series)


# --- Departures found by the random cases: recorded QEMU answers, and QEMU itself ------------

DIVERGENCE_EXAMPLES = Path(__file__).parent / "cases" / "divergence_examples.json"


def divergence_examples() -> list[dict[str, Any]]:
    """Return the recorded cases, one per departure (QEMU's answer in 'qemu_answer')."""
    return list(json.loads(DIVERGENCE_EXAMPLES.read_text())["cases"])


def expected_name(example: dict[str, Any]) -> str:
    """Return the divergence an example stands for (its name, less any __variant)."""
    return str(example["name"]).split("__")[0]


def memory_explanations(case: Any, qemu_changes: list[dict[str, Any]],
                        model: Mapping[str, Any]) -> set[str | None]:
    """Return, over the ops whose changes differ, the divergence explaining each (or None)."""
    q, m = changes_by_op({"memory_changes": qemu_changes}), changes_by_op(model)
    found: set[str | None] = set()
    for index in set(q) | set(m):
        if q.get(index, []) != m.get(index, []):
            assert index is not None
            ev = OpEvidence(case, case.ops[index], {}, model["ops"][index], index)
            divergence = explain_memory(ev, q.get(index, []), m.get(index, []))
            found.add(divergence.name if divergence else None)
    return found


@pytest.mark.parametrize("example", divergence_examples(), ids=lambda e: e["name"])
def test_recorded_qemu_answer_is_explained_by_its_divergence(example: dict[str, Any]) -> None:
    (case,) = parse_cases(example)
    model = model_answer(example)
    if expected_name(example) == "at_sets_dirty":
        assert memory_explanations(case, example["qemu_answer"], model) == {"at_sets_dirty"}
        return
    ev = OpEvidence(case, case.ops[0], example["qemu_answer"], model["ops"][0], 0)
    assert normal_op(ev.qemu) != normal_op(ev.model)
    found = classify(ev)
    assert found is not None and found.name == expected_name(example)


@pytest.mark.parametrize("example", divergence_examples(), ids=lambda e: e["name"])
def test_a_changed_qemu_answer_is_not_explained(example: dict[str, Any]) -> None:
    (case,) = parse_cases(example)
    model = model_answer(example)
    if expected_name(example) == "at_sets_dirty":
        bent = [dict(c, after=hex(int(c["after"], 16) ^ 1 << 20)) for c in example["qemu_answer"]]
        assert None in memory_explanations(case, bent, model)
        return
    answer = dict(example["qemu_answer"])
    key = next(k for k in ("PAR_EL1", "ESR", "value") if k in answer)
    answer[key] = hex(int(answer[key], 16) ^ 1 << 12)
    assert classify(OpEvidence(case, case.ops[0], answer, model["ops"][0], 0)) is None


@requires_qemu
@pytest.mark.parametrize("example", divergence_examples(), ids=lambda e: e["name"])
def test_qemu_still_answers_as_recorded(example: dict[str, Any], qemu_config: QemuConfig) -> None:
    got = run_case_file(example, qemu_config)["cases"][0]
    if expected_name(example) == "at_sets_dirty":
        assert normal_changes(got) == normal_changes({"memory_changes": example["qemu_answer"]})
    else:
        assert normal_op(got["ops"][0]) == normal_op(example["qemu_answer"])


def test_qemu_attr_combination_rules() -> None:
    # Without FWB: Device over Normal inner-NC reads the NC nibble (0b0100) as nGnRE.
    assert combined_attrs_nofwb(0x08, convert_stage2_attrs(0b1101, cd=False)) == 0x04
    # Normal both: Non-cacheable wins per nibble; stage-1 Write-Through wins over WB.
    assert combined_attrs_nofwb(0xFF, convert_stage2_attrs(0b1101, cd=False)) == 0xF4
    assert combined_attrs_nofwb(0xAA, convert_stage2_attrs(0b1111, cd=False)) == 0xAA
    # HCR_EL2.CD makes stage 2 Normal memory Non-cacheable.
    assert convert_stage2_attrs(0b1111, cd=True) == 0x44
    # FWB: 0b111 keeps stage 1, 0b110 forces WB keeping cacheable hints, 0b101 NC.
    assert combined_attrs_fwb(0x0C, 0b111) == 0x0C
    assert combined_attrs_fwb(0xAA, 0b110) == 0xEE
    assert combined_attrs_fwb(0x44, 0b110) == 0xFF
    assert combined_attrs_fwb(0xFF, 0b101) == 0x44
    # FWB Device types are stage 2's; reserved encodings are Device-nGnRnE.
    assert combined_attrs_fwb(0x00, 0b0011) == 0x0C
    assert combined_attrs_fwb(0xFF, 0b1110) == 0x00
    assert combined_attrs_fwb(0xFF, 0b0100) == 0x00


def test_walk_facts_take_sh_from_tcr_when_ds_is_set() -> None:
    # The descriptor's bits [9:8] are OA[51:50] with DS=1; SH is TCR_EL1.SH0 (0b00 here).
    (example,) = [e for e in divergence_examples() if e["name"] == "reserved_mair_as_is__ds"]
    f = walk_facts(example, 0)
    assert f is not None and f.s1_attr == 0x01 and f.s1_sh == 0b00
