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


def test_successive_writes_of_one_word_by_one_op_compare_as_its_net_change() -> None:
    two = {"memory_changes": [{"pa": "0x8", "before": "0x1", "after": "0x401", "op": 3},
                              {"pa": "0x8", "before": "0x401", "after": "0x481", "op": 3}]}
    assert normal_changes(two) == [(8, 1, 0x481)]
    assert changes_by_op(two) == {3: [(8, 1, 0x481)]}
    apart = {"memory_changes": [{"pa": "0x8", "before": "0x1", "after": "0x401", "op": 3},
                                {"pa": "0x8", "before": "0x401", "after": "0x481", "op": 4}]}
    assert changes_by_op(apart) == {3: [(8, 1, 0x401)], 4: [(8, 0x401, 0x481)]}


def atomic_then_load_case() -> dict[str, Any]:
    """LDADDs that stage 1 refuses to write, to two read-only pages whose stage-2 leaves
    have AF=0 (VTCR_EL2.HA=1), and between them a load of the first page: in the model the
    load sets the first leaf's access flag; on QEMU 7.2 each atomic's own load does."""
    base = load("accesses.cases.json")["cases"][1]
    regs = dict(base["regs"], VTCR_EL2=hex(int(base["regs"]["VTCR_EL2"], 16) | 1 << 21))
    memory = list(base["memory"]) + [
        {"pa": "0x60003018", "words": ["0x90002783"]},
        {"pa": "0x61002008", "words": ["0x9000137f", "0x9000237f"]}]
    return {"name": "atomic_then_load", "el": "EL1", "regs": regs, "memory": memory,
            "ops": [{"op": "LDADD", "va": "0x8040202010", "value": "0x1"},
                    {"op": "LDR", "va": "0x8040202010"},
                    {"op": "LDADD", "va": "0x8040203010", "value": "0x1"}]}


def test_a_write_qemu_made_early_at_an_explained_op_excuses_the_models_later_one() -> None:
    from s2mmu.arch import atcase

    case_obj = atomic_then_load_case()
    (case,) = parse_cases(case_obj)
    model = atcase.run_case(atcase.parse_cases(case_obj)[0])
    assert [c["op"] for c in model["memory_changes"]] == [1]
    first = dict(model["memory_changes"][0], op=0)
    third = {"pa": "0x61002010", "before": "0x9000237f", "after": "0x9000277f", "op": 2}
    qemu = {**model, "memory_changes": [first, third]}
    assert compare_case(case, qemu, lambda _: model).memory_verdict == DIVERGENCE
    # The model's later write must be exactly the one QEMU made early.
    bent = dict(first, after=hex(int(first["after"], 16) | 1 << 40))
    qemu = {**model, "memory_changes": [bent, third]}
    assert compare_case(case, qemu, lambda _: model).memory_verdict == MISMATCH
