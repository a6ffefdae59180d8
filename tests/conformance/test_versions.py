"""QEMU 10.0 beside 7.2: departures per series, with evidence from QEMU itself.

Every declared departure has a recorded QEMU 7.2 case (cases/divergence_examples.json) and
the ones only 10.0 has a recorded 10.0 case (cases/divergence_examples_10_0.json). Run on
QEMU 10.0, a departure tagged as 10.0's must still show there, and one that is not must be
gone: 10.0 then answers as the model does, and the departure excuses nothing under 10.0.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from s2mmu.cli.main import cli
from s2mmu.cli.schemas import validate
from s2mmu.conformance.casefile import parse_cases
from s2mmu.conformance.compare import model_answer, normal_changes, normal_op
from s2mmu.conformance.divergences import (
    DIVERGENCES,
    MEMORY_AT_DIRTY,
    OpEvidence,
    classify,
    divergence_named,
    has_departure,
    measured_series,
)
from s2mmu.conformance.generator import generate_case
from s2mmu.conformance.qemu import run_case_file
from s2mmu.conformance.target import QemuTarget
from tests.conformance.test_cpu_id import QEMU_7_2_MAX, QEMU_10_0_MAX
from tests.conformance.test_divergences import divergence_examples, expected_name

EXAMPLES_10_0 = Path(__file__).parent / "cases" / "divergence_examples_10_0.json"


def examples_10_0() -> list[dict[str, Any]]:
    """Return the recorded QEMU 10.0 cases of the departures only 10.0 has."""
    return list(json.loads(EXAMPLES_10_0.read_text())["cases"])


def evidence(example: Mapping[str, Any], answer: Mapping[str, Any], series: str,
             model: Mapping[str, Any] | None = None) -> OpEvidence:
    """Return the evidence of an example's op 0 with a QEMU answer, as `series` gave it."""
    (case,) = parse_cases(dict(example))
    model = model or model_answer(example)
    return OpEvidence(case, case.ops[0], answer, model["ops"][0], 0, series)


def test_every_departure_names_the_series_that_have_it() -> None:
    for divergence in (*DIVERGENCES, MEMORY_AT_DIRTY):
        assert divergence.series and divergence.series <= {"7.2", "10.0"}, divergence.name


def test_a_series_is_judged_by_the_latest_measured_one_before_it() -> None:
    assert [measured_series(s) for s in ("6.2", "7.2", "8.2", "9.2", "10.0", "10.1", "11.0")] \
        == ["7.2", "7.2", "7.2", "7.2", "10.0", "10.0", "10.0"]


GONE_IN_10_0 = [e for e in divergence_examples()
                if "10.0" not in divergence_named(expected_name(e)).series]


def test_the_departures_10_0_no_longer_has() -> None:
    assert {expected_name(e) for e in GONE_IN_10_0} == {
        "s2_walk_fault_level", "s1_off_shareability", "isv_on_stage1_abort",
        "block_at_illegal_level"}
    assert {d.name for d in DIVERGENCES if "10.0" not in d.series} == {
        "par_sh_stage1", "block_at_illegal_level", "s2_start_level_vs_ps",
        "s2_walk_fault_level", "s1_off_shareability", "isv_on_stage1_abort"}
    assert has_departure(MEMORY_AT_DIRTY, "10.0")


@pytest.mark.parametrize("example", GONE_IN_10_0, ids=lambda e: e["name"])
def test_a_departure_10_0_lacks_excuses_nothing_under_10_0(example: dict[str, Any]) -> None:
    ev = evidence(example, example["qemu_answer"], "7.2")
    found = classify(ev, "7.2")
    assert found is not None and found.name == expected_name(example)
    assert classify(evidence(example, example["qemu_answer"], "10.0"), "10.0") is None


@pytest.mark.parametrize("example", examples_10_0(), ids=lambda e: e["name"])
def test_a_10_0_departure_is_explained_under_10_0_only(example: dict[str, Any]) -> None:
    from s2mmu.conformance.cpu_id import model_features

    model = model_answer(example, model_features(QEMU_10_0_MAX))
    ev = evidence(example, example["qemu_answer"], "10.0", model)
    assert normal_op(ev.qemu) != normal_op(ev.model)
    found = classify(ev, "10.0")
    assert found is not None and found.name == example["name"]
    assert classify(evidence(example, example["qemu_answer"], "7.2", model), "7.2") is None
    bent = dict(example["qemu_answer"])
    key = "PAR_EL1" if "PAR_EL1" in bent else "ESR"
    bent[key] = hex(int(bent[key], 16) ^ 1 << 12)
    assert classify(evidence(example, bent, "10.0", model), "10.0") is None


@pytest.mark.parametrize("example", divergence_examples(), ids=lambda e: e["name"])
def test_qemu_10_keeps_exactly_the_departures_tagged_with_it(
        example: dict[str, Any], qemu10: QemuTarget) -> None:
    got = run_case_file(example, qemu10.config())["cases"][0]
    model = model_answer(example, qemu10.model_features())
    name = expected_name(example)
    if name == "at_sets_dirty":
        assert normal_changes(got) == normal_changes({"memory_changes": example["qemu_answer"]})
        return
    kept = "10.0" in divergence_named(name).series
    if kept:  # still departs (for reserved_mair_as_is__ds with 10.0's SH: stage1_par_sh)
        assert normal_op(got["ops"][0]) != normal_op(model["ops"][0])
        found = classify(evidence(example, got["ops"][0], "10.0", model), "10.0")
        assert found is not None and found.name == name
    else:  # gone: QEMU 10.0 answers as the architecture does
        assert normal_op(got["ops"][0]) == normal_op(model["ops"][0])


@pytest.mark.parametrize("example", examples_10_0(), ids=lambda e: e["name"])
def test_qemu_10_still_answers_as_recorded(example: dict[str, Any], qemu10: QemuTarget) -> None:
    got = run_case_file(example, qemu10.config())["cases"][0]
    assert normal_op(got["ops"][0]) == normal_op(example["qemu_answer"])


def test_qemu_7_2_answers_the_10_0_departures_as_the_model(qemu72: QemuTarget) -> None:
    from s2mmu.conformance.cpu_id import model_features

    for example in examples_10_0():
        case = dict(example, regs={**example["regs"], "SCTLR_EL1": hex(
            int(example["regs"]["SCTLR_EL1"], 16) & ~(1 << 57))})  # 7.2 has no EPAN
        got = run_case_file(case, qemu72.config())["cases"][0]["ops"][0]
        model = model_answer(case, model_features(QEMU_7_2_MAX))["ops"][0]
        assert normal_op(got) == normal_op(model), example["name"]


def test_the_generator_draws_epan_only_for_a_qemu_with_pan3() -> None:
    from s2mmu.conformance.cpu_id import model_features

    with_pan3, without = model_features(QEMU_10_0_MAX), model_features(QEMU_7_2_MAX)
    epan = 0
    for index in range(40):
        a = generate_case("perms", 5, index, with_pan3)
        b = generate_case("perms", 5, index, without)
        assert not int(b["regs"]["SCTLR_EL1"], 16) >> 57 & 1
        epan += int(a["regs"]["SCTLR_EL1"], 16) >> 57 & 1
        a["regs"]["SCTLR_EL1"] = hex(int(a["regs"]["SCTLR_EL1"], 16) & ~(1 << 57))
        assert a == b  # otherwise the same case: EPAN has its own random stream
    assert 5 < epan < 35


def conformance_json(*args: str) -> tuple[int, dict[str, Any]]:
    """Run `s2mmu conformance ... --json` and return its exit code and document."""
    result = CliRunner().invoke(cli, ["conformance", *args, "--json"])
    doc = json.loads(result.stdout)
    validate(doc)
    return result.exit_code, doc


def test_a_small_run_against_qemu_10_agrees(qemu10: QemuTarget) -> None:
    code, doc = conformance_json("--cases", "42", "--seed", "3", "--qemu", "10.0", "--jobs", "2")
    assert doc["qemu"]["version"] == "10.0.2" and doc["qemu"]["series"] == "10.0"
    features = {f["feature"]: f["implemented"] for f in doc["qemu"]["features"]}
    assert features["FEAT_PAN3"] and not features["FEAT_S1PIE"]
    assert doc["mismatches"] == [] and doc["harness_errors"] == []
    assert code == 0 and doc["ok"]
    assert doc["total"]["agree"] > 400


def test_all_runs_each_version_and_reports_the_departures_gone(qemu10: QemuTarget) -> None:
    code, doc = conformance_json("--cases", "42", "--seed", "7", "--qemu", "all", "--jobs", "2")
    assert [run["qemu"]["series"] for run in doc["runs"]] == ["7.2", "10.0"]
    for run in doc["runs"]:
        validate(run)
    gone = {d["name"] for d in doc["departures"] if d["gone"] and not d["kept"]}
    assert "par_sh_stage1" in gone
    for name in gone:
        assert "10.0" not in divergence_named(name).series
    assert code == 0 and doc["ok"]


def test_an_unknown_qemu_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["conformance", "--qemu", "8.2", "--cases", "1"])
    assert result.exit_code == 2
    assert "--qemu '8.2': neither a QEMU series the project fetches (7.2, 10.0) nor the " \
           "path of a file" in result.stderr
    assert "Traceback" not in result.output
