"""The scenario runner and the run/demo commands: golden scenarios, exit codes, messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from s2mmu.cli.main import cli
from s2mmu.scenario.runner import run_scenario
from s2mmu.scenario.schema import ScenarioError, load_scenario

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
GOOD = """
[host]
features = ["fwb", "dic"]

[[vma]]
start = 0x7f0000000000
size = "4M"

[[memslot]]
id = 0
gpa = 0x40000000
size = "4M"
hva = 0x7f0000000000

[[event]]
do = "write"
ipa = 0x40000000
expect = "completed"
"""


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.toml")), ids=lambda p: p.stem)
def test_golden_scenarios_hold(path: Path) -> None:
    report = run_scenario(load_scenario(path))
    assert report["failures"] == []


def test_demo_output_matches_the_checked_golden_file() -> None:
    result = CliRunner().invoke(cli, ["demo"])
    assert result.exit_code == 0
    assert result.output == (SCENARIOS / "demo.golden.txt").read_text()


def test_demo_arch_tour_is_still_reachable() -> None:
    result = CliRunner().invoke(cli, ["demo", "--arch"])
    assert result.exit_code == 0 and "AT instructions" in result.output


def test_run_ok_and_json_schema(tmp_path: Path) -> None:
    f = tmp_path / "good.toml"
    f.write_text(GOOD)
    result = CliRunner().invoke(cli, ["run", str(f), "--json"])
    assert result.exit_code == 0
    report = json.loads(result.output)
    assert report["schema"] == "s2mmu.run/1" and report["ok"] is True
    step = report["steps"][-1]
    assert step["outcome"] == "completed"
    assert step["faults"][0]["abort"]["fsc_name"].startswith("Translation fault")
    assert step["faults"][0]["mapping"]["size"] == "4K"


def test_failed_expectation_exits_1(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(GOOD.replace('expect = "completed"', 'expect = "mmio"'))
    result = CliRunner().invoke(cli, ["run", str(f)])
    assert result.exit_code == 1
    assert "EXPECTATION FAILED: expected mmio, got completed" in result.output


def test_trace_shows_the_event_stream(tmp_path: Path) -> None:
    f = tmp_path / "good.toml"
    f.write_text(GOOD)
    result = CliRunner().invoke(cli, ["run", str(f), "--trace"])
    assert result.exit_code == 0 and "PageAlloc(" in result.output


@pytest.mark.parametrize("edit, message", [
    (('ipa = 0x40000000', 'ipa = 0x40000000\nipaa = 1'),
     "bad.toml:18: event[0].ipaa: unknown field"),
    (('size = "4M"\nhva', 'size = "4Q"\nhva'),
     "bad.toml:12: memslot[0].size: must be an integer or a size like \"2M\", not '4Q'"),
    (('do = "write"', 'do = "writ"'),
     "bad.toml:16: event[0].do: must be one of"),
    (('features = ["fwb", "dic"]', 'features = ["fwb", "dic"'),
     "bad.toml:5: not valid TOML: Unclosed array"),
    (('expect = "completed"', 'expect = "completed"\nva = 0x1000'),
     "bad.toml:16: event[0].do: a guest access needs exactly one of va, ipa"),
])
def test_malformed_scenario_exits_2_with_file_line_field(tmp_path: Path, edit: tuple[str, str],
                                                         message: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(GOOD.replace(*edit, 1))
    result = CliRunner().invoke(cli, ["run", str(f)])
    assert result.exit_code == 2
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1  # one message, nothing ran


def test_schema_error_is_an_input_error() -> None:
    with pytest.raises(ScenarioError, match=r"x.toml:1: frobnicate: unknown table"):
        load_scenario("x.toml", "[frobnicate]\n")
