"""The `conformance` and `qemu-at` commands: output, exit statuses, pinned messages."""

from __future__ import annotations

import json

from click.testing import CliRunner

from s2mmu.cli.conformance_cmd import conformance, qemu_at
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
    assert lines[0].split() == ["family", "ops", "agree", "mismatch", "diverge", "not", "run",
                                "agreement"]
    assert lines[1].startswith("s1_4k") and lines[2].startswith("el2")
    assert any(line.startswith("agreement ") and line.endswith(" ops)") for line in lines)
