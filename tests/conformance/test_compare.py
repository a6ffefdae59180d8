"""The comparison itself, checked with stand-in models: verdicts, divergences, mismatch files."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from s2mmu.conformance.casefile import parse_cases
from s2mmu.conformance.compare import (
    AGREE,
    DIVERGENCE,
    MISMATCH,
    changes_by_op,
    compare_case,
    compare_cases,
    normal_changes,
    write_mismatches,
)
from s2mmu.conformance.qemu import QemuConfig, run_case_file
from tests.conformance.conftest import load, requires_qemu


def recorded_model(case: Mapping[str, Any]) -> Mapping[str, Any]:
    """Answer like QEMU did when the examples were recorded."""
    for answer in load("validation.qemu.json")["cases"]:
        if answer["name"] == case["name"]:
            return answer
    raise KeyError(case["name"])


def flipping_model(case: Mapping[str, Any]) -> Mapping[str, Any]:
    """Answer like QEMU, except op 1 of each case gets a different PAR."""
    answer = json.loads(json.dumps(recorded_model(case)))
    answer["ops"][1]["PAR_EL1"] = "0x0000000000000809"
    return answer


def test_memory_changes_compare_as_a_multiset_of_words() -> None:
    a = {"memory_changes": [{"pa": "0x10", "before": "0x1", "after": "0x401"},
                            {"pa": "0x8", "before": "0x3", "after": "0x403"}]}
    b = {"memory_changes": list(reversed(a["memory_changes"]))}
    assert normal_changes(a) == normal_changes(b)


@requires_qemu
def test_identical_answers_agree_everywhere(qemu_config: QemuConfig) -> None:
    report = compare_cases(load("validation.cases.json")["cases"], qemu_config, recorded_model)
    assert report.ok()
    assert report.tally().counts[AGREE] == 25


@requires_qemu
def test_a_different_par_is_a_mismatch_and_gets_a_minimal_file(qemu_config: QemuConfig,
                                                                tmp_path: Path) -> None:
    report = compare_cases(load("validation.cases.json")["cases"], qemu_config, flipping_model)
    assert report.tally().counts[MISMATCH] == 3 and not report.ok()
    files = write_mismatches(report, tmp_path, qemu_config, flipping_model)
    assert len(files) == 3
    replay = json.loads(files[0].read_text())
    assert [op["va"] for op in replay["ops"]] == ["0x8040201000"]
    assert replay["expect"]["model"]["PAR_EL1"] == "0x0000000000000809"
    assert run_case_file(replay, qemu_config)["cases"][0]["ops"][0]["outcome"] == "par"


@requires_qemu
def test_sh_only_difference_on_device_memory_is_the_listed_divergence(
        qemu_config: QemuConfig) -> None:
    def strict_sh(case: Mapping[str, Any]) -> Mapping[str, Any]:
        answer = json.loads(json.dumps(recorded_model(case)))
        for op in answer["ops"]:
            if op["PAR_EL1"] == "0x0400000090004b00":
                op["PAR_EL1"] = "0x0400000090004b00"
            if op["PAR_EL1"] == "0x0400000090004b80":
                op["PAR_EL1"] = "0x0400000090004b00"
        return answer

    cases = load("validation.cases.json")["cases"][:1]
    report = compare_cases(cases, qemu_config, strict_sh)
    assert report.ok()
    device = [op for _, op in report.ops() if op.qemu.get("PAR_EL1") == "0x0400000090004b00"]
    assert device and all(op.verdict in (AGREE, DIVERGENCE) for op in device)


def answers_with_changes(changes: list[dict[str, Any]], par0: str) -> dict[str, Any]:
    """Return a two-op answer (op 0's PAR given) with these memory changes."""
    ops = [{"op": "S1E1R", "va": "0x0", "el": "EL2", "pan": 0, "outcome": "par",
            "PAR_EL1": par0},
           {"op": "S1E1W", "va": "0x0", "el": "EL2", "pan": 0, "outcome": "par",
            "PAR_EL1": "0x000000000000080f"}]
    return {"name": "c", "ops": ops, "memory_changes": changes}


def test_a_divergent_op_does_not_excuse_another_ops_memory_changes() -> None:
    case_obj = {"name": "c", "regs": {"SCTLR_EL1": "0x30d00801"},
                "ops": [["S1E1R", "0x0"], ["S1E1W", "0x0"]]}
    (case,) = parse_cases(case_obj)
    extra = {"pa": "0x60003008", "before": "0x90000303", "after": "0x90000703", "op": 1}
    # Tables empty: both ops fault at level 0, so op 1 reaches no leaf whose dirty-state
    # update QEMU could have made; its extra write is unexplained.
    qemu = answers_with_changes([extra], "0x0000000000000809")
    model = answers_with_changes([], "0x0000000000000809")
    compared = compare_case(case, qemu, lambda _: model)
    assert compared.memory_verdict == MISMATCH


def test_memory_changes_group_by_the_op_that_made_them() -> None:
    answer = {"memory_changes": [{"pa": "0x8", "before": "0x1", "after": "0x401", "op": 2},
                                 {"pa": "0x10", "before": "0x1", "after": "0x401", "op": 0}]}
    assert changes_by_op(answer) == {2: [(8, 1, 0x401)], 0: [(16, 1, 0x401)]}
