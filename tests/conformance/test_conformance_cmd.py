"""The `conformance` and `qemu-at` commands: output, exit statuses, pinned messages."""

from __future__ import annotations

import json

from click.testing import CliRunner

from s2mmu.cli.conformance_cmd import conformance, qemu_at
from s2mmu.cli.schemas import validate
from s2mmu.conformance.generator import FAMILIES
from tests.conformance.conftest import CASES, load, requires_qemu


@requires_qemu
def test_qemu_at_prints_the_recorded_answers() -> None:
    result = CliRunner().invoke(qemu_at, [str(CASES / "validation.cases.json")])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == load("validation.qemu.json")


@requires_qemu
def test_replay_shows_both_sides_and_agreement() -> None:
    result = CliRunner().invoke(conformance, ["--replay", str(CASES / "validation.cases.json")])
    assert result.exit_code == 0, result.stdout
    assert "case pan_from_EL2 (file)" in result.stdout
    assert result.stdout.rstrip().endswith("agreement 100.00% (25/25 ops)")


def test_unknown_family_is_exit_2_with_one_line() -> None:
    result = CliRunner().invoke(conformance, ["--family", "nope", "--cases", "1"])
    assert result.exit_code == 2
    assert result.stderr.startswith("s2mmu: error: unknown case family 'nope' (known: ")
    assert result.stderr.count("\n") == 1


def test_bad_json_is_exit_2_naming_the_file(tmp_path: object) -> None:
    path = CASES.parent / "cases" / "validation.qemu.json"
    bad = __import__("pathlib").Path(str(tmp_path)) / "bad.json"
    bad.write_text("{")
    result = CliRunner().invoke(qemu_at, [str(bad)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"s2mmu: error: {bad}:1: not valid JSON")
    assert path.exists()


@requires_qemu
def test_summary_prints_families_and_overall_agreement() -> None:
    result = CliRunner().invoke(conformance, ["--cases", "4", "--family", "s1_4k,el2"])
    lines = result.stdout.splitlines()
    assert lines[0].startswith("QEMU 7.2.") and lines[0].endswith(", -cpu max")
    assert lines[1].startswith("  implements: ") and lines[2].startswith("  lacks: ")
    lines = lines[3:]
    assert lines[0].split() == ["family", "ops", "agree", "mismatch", "diverge", "not", "run",
                                "agreement"]
    assert lines[1].startswith("s1_4k") and lines[2].startswith("el2")
    assert any(line.startswith("agreement ") and line.endswith(" ops)") for line in lines)


@requires_qemu
def test_json_is_one_document_that_validates_with_every_family_and_figure() -> None:
    result = CliRunner().invoke(conformance, ["--cases", "40", "--json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    validate(doc)
    assert doc["schema"] == "s2mmu.conformance/1"
    assert doc["run"] == {"cases": 40, "seed": 1, "families": list(FAMILIES)}
    assert [f["family"] for f in doc["families"]] == list(FAMILIES)
    total = doc["total"]
    assert total["ops"] == sum(f["ops"] for f in doc["families"])
    assert total["agree"] + total["mismatch"] == total["compared"]
    assert total["agreement"] == 100.0 and doc["ok"] is True
    assert sum(d["ops"] for d in doc["divergences"]) == total["diverge"]
    assert all(d["reason"] for d in doc["divergences"])
    assert doc["memory_changes"]["cases"] == 40
    assert doc["cases"] is None


@requires_qemu
def test_json_replay_shows_each_op_side_by_side_in_hex() -> None:
    path = CASES / "validation.cases.json"
    result = CliRunner().invoke(conformance, ["--replay", str(path), "--json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    validate(doc)
    assert doc["run"] == {"replay": str(path)}
    first = doc["cases"][0]["ops"][0]
    assert first["va"].startswith("0x") and first["qemu"]["PAR_EL1"].startswith("0x")
    assert first["verdict"] in ("agree", "divergence")
    assert doc["total"]["compared"] == 25


@requires_qemu
def test_nothing_goes_to_stderr_when_it_is_not_a_terminal() -> None:
    result = CliRunner().invoke(conformance, ["--cases", "2", "--family", "s1_4k"])
    assert result.exit_code == 0
    assert result.stderr == ""


@requires_qemu
def test_replay_of_accesses_is_json_of_the_schema_and_agrees() -> None:
    result = CliRunner().invoke(conformance, ["--replay", str(CASES / "accesses.cases.json"),
                                              "--json"])
    assert result.exit_code == 0, result.stdout
    doc = json.loads(result.stdout)
    validate(doc)
    outcomes = {op["qemu"]["outcome"] for case in doc["cases"] for op in case["ops"]}
    assert outcomes == {"load", "store", "exception"} and doc["ok"]


def test_help_lists_the_access_families() -> None:
    result = CliRunner().invoke(conformance, ["--help"])
    assert "loads, stores," in result.stdout and "fetches" in result.stdout
    assert all(name in result.stdout for name in ("exclusives", "atomics", "alignment"))


@requires_qemu
def test_replay_of_exclusives_and_atomics_is_json_of_the_schema_and_agrees() -> None:
    result = CliRunner().invoke(conformance, ["--replay", str(CASES / "atomics.cases.json"),
                                              "--json"])
    assert result.exit_code == 0, result.stdout
    doc = json.loads(result.stdout)
    validate(doc)
    outcomes = {op["qemu"]["outcome"] for case in doc["cases"] for op in case["ops"]}
    assert outcomes == {"load", "store", "atomic", "exception"} and doc["ok"]
