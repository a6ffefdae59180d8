"""`s2mmu race`: the explorer from the command line, failing runs replayable."""

from __future__ import annotations

import re

from click.testing import CliRunner

from s2mmu.cli.main import cli


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["race", *args])
    return result.exit_code, result.stdout, result.stderr


def test_without_a_name_lists_every_race() -> None:
    code, out, _ = run()
    assert code == 0
    assert "same-ipa-faults" in out and "block-and-page-faults" in out


def test_pa_offset_race_breaks_the_v6_2_map_walker_and_prints_a_replay() -> None:
    code, out, _ = run("block-and-page-faults", "--profile", "v6.2")
    assert code == 1
    assert "VIOLATION wrong-mapping" in out
    schedule = re.search(r"replay: schedule = '([0-9 ]+)'", out)
    assert schedule is not None
    code, replayed, _ = run("block-and-page-faults", "--profile", "v6.2",
                            "--replay", schedule.group(1))
    assert code == 1 and "VIOLATION wrong-mapping" in replayed


def test_pa_offset_race_holds_with_the_pa_inferred_from_the_ipa() -> None:
    code, out, _ = run("block-and-page-faults", "--profile", "v6.19")
    assert code == 0
    assert "every invariant held" in out


def test_a_malformed_schedule_is_one_line_exit_2() -> None:
    code, _, err = run("same-ipa-faults", "--replay", "0 x 1")
    assert code == 2
    assert err.strip() == ("s2mmu: error: --replay expects operation indices separated by "
                           "spaces, got '0 x 1'")


def test_a_schedule_naming_a_missing_operation_is_one_line_exit_2() -> None:
    code, _, err = run("same-ipa-faults", "--replay", "0 0 7")
    assert code == 2
    assert err.startswith("s2mmu: error: --replay '0 0 7' is not a schedule of same-ipa-faults")
    assert len(err.strip().splitlines()) == 1


def test_replay_without_a_race_name_is_refused() -> None:
    code, _, err = run("--replay", "0 1")
    assert code == 2
    assert err.strip() == "s2mmu: error: --replay needs the race NAME whose schedule it is"
