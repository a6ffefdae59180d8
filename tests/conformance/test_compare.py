"""The comparison itself, checked with stand-in models: verdicts, divergences, mismatch files."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from s2mmu.conformance.compare import (
    AGREE,
    DIVERGENCE,
    MISMATCH,
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
