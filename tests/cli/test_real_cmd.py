"""`s2mmu real`: refusals before any boot, and the features list."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from s2mmu.cli.main import cli
from s2mmu.real.plan import UNSUPPORTED

DEMO = Path(__file__).resolve().parents[2] / "src" / "s2mmu" / "scenario" / "data" / "demo.toml"


def test_an_unsupported_feature_is_one_line_and_exit_2() -> None:
    r = CliRunner().invoke(cli, ["real", "diff", str(DEMO)])
    assert r.exit_code == 2
    assert r.output.count("\n") == 1
    assert "real KVM: pfnmap unsupported: a PFNMAP VMA needs a device" in r.output


def test_a_missing_scenario_file(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["real", "run", str(tmp_path / "none.toml")])
    assert r.exit_code == 2 and r.output.startswith("s2mmu: error: ")


def test_features_lists_every_refusal_with_its_reason() -> None:
    r = CliRunner().invoke(cli, ["real", "features"])
    assert r.exit_code == 0
    assert r.output.splitlines() == [f"{k}: {v}" for k, v in UNSUPPORTED.items()]


def test_dump_after_a_step_the_scenario_lacks() -> None:
    data = Path(__file__).resolve().parents[2] / "src" / "s2mmu" / "real" / "data"
    r = CliRunner().invoke(cli, ["real", "run", str(data / "dirty_round.toml"),
                                 "--dump-after", "99"])
    assert r.exit_code == 2
    assert "--dump-after 99: no such step (the run has steps #1-#12, or 'last')" in r.output
