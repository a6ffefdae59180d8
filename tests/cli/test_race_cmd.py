"""`s2mmu race`: the explorer from the command line, failing runs replayable, the bound
said up front, --replay refusing every kind of bad schedule, and --json."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from s2mmu.cli.main import cli
from s2mmu.cli.schemas import validate


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
    assert out.rstrip().endswith("every invariant held")


def test_the_bound_and_the_size_of_the_race_come_before_the_result() -> None:
    _, out, _ = run("same-ipa-faults")
    lines = out.splitlines()
    assert lines[0] == ("race same-ipa-faults, profile v6.19: 2 operations (0=vcpu0-fault-rw, "
                        "1=vcpu1-fault-r), 18 steps in the default order")
    assert lines[1] == ("bound: every schedule with at most 2 preemptions, sleep-set "
                        "reduction; stops after 2000 schedules (--max-runs) and then says "
                        "INCOMPLETE")


def test_a_run_stopped_by_max_runs_says_so_first_and_last_and_what_it_covered() -> None:
    code, out, _ = run("same-ipa-faults", "--max-runs", "3")
    assert code == 0
    result = out.splitlines()[2:]
    expected = ("INCOMPLETE: stopped at --max-runs 3; every schedule with at most 0 "
                "preemptions was explored; schedules with 1..2 preemptions were not all "
                "explored (26 queued)")
    assert result[0] == expected and result[-1] == expected
    assert "no invariant broken in the schedules explored" in result
    assert "every invariant held" not in out


def test_the_reduction_and_the_full_exploration_agree_from_the_command_line() -> None:
    reduced = json.loads(run("hw-access-flag-vs-kvm", "--preemptions", "1", "--json")[1])
    full = json.loads(run("hw-access-flag-vs-kvm", "--preemptions", "1", "--json",
                          "--no-reduction")[1])
    assert reduced["outcomes"] == full["outcomes"] and reduced["ok"] and full["ok"]
    assert (reduced["reduction"], full["reduction"]) == ("sleep-sets", "none")
    assert full["cut_short_as_equivalent"] == 0


def test_nothing_goes_to_stderr_when_it_is_not_a_terminal() -> None:
    _, _, err = run("same-ipa-faults", "--preemptions", "1")
    assert err == ""


def test_exploration_json_is_one_document_that_validates() -> None:
    code, out, _ = run("block-and-page-faults", "--profile", "v6.2", "--json")
    assert code == 1
    doc = json.loads(out)
    validate(doc)
    assert doc["schema"] == "s2mmu.race/1" and doc["mode"] == "explore"
    assert doc["bound"] == {"preemptions": 2, "max_runs": 2000}
    assert doc["complete"] is False and doc["stopped_at"] == "violation"
    [violation] = doc["violations"]
    assert violation["invariant"] == "wrong-mapping"
    assert violation["message"] == ("IPA 0x40000000 (level 3) maps PA 0x200200000, "
                                    "expected 0x200000000")
    assert violation["step"] == 20
    assert violation["schedule"] == "0 0 0 0 0 1 1 1 1 1 1 1 1 1 1 1 0 0 0 0 0"


def test_exploration_json_stopped_by_max_runs_says_what_it_covered() -> None:
    doc = json.loads(run("same-ipa-faults", "--max-runs", "3", "--json")[1])
    validate(doc)
    assert (doc["complete"], doc["stopped_at"], doc["covered_preemptions"]) == (
        False, "max-runs", 0)
    assert doc["outcomes"] == [["-EAGAIN", "0"], ["0", "-EAGAIN"]]


def test_replay_json_carries_the_explored_trace() -> None:
    schedule = "0 0 0 0 0 1 1 1 1 1 1 1 1 1 1 1 0 0 0 0 0"
    code, out, _ = run("block-and-page-faults", "--profile", "v6.2", "--replay", schedule,
                       "--json")
    assert code == 1
    doc = json.loads(out)
    validate(doc)
    assert doc["mode"] == "replay" and doc["schedule"] == schedule
    assert doc["steps"][0] == {"step": 0, "operation": 0, "access": "read",
                               "pa": "0x8000000008"}
    assert len(doc["steps"]) == 21
    assert doc["results"] == ["did not return (the run stopped at the violation)", "0"]
    assert [v["invariant"] for v in doc["violations"]] == ["wrong-mapping"]


# --replay: every kind of bad schedule is one line, exit 2.

FULL = "0 0 0 0 0 0 0 0 0 0 0 0 1 1 1 1 1 1"  # same-ipa-faults in the default order


def refused(schedule: str) -> str:
    code, out, err = run("same-ipa-faults", "--replay", schedule)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1
    return err.strip()


def test_the_whole_default_schedule_replays() -> None:
    code, out, _ = run("same-ipa-faults", "--replay", FULL)
    assert code == 0
    assert out.rstrip().endswith(f"replay: schedule = '{FULL}'")


@pytest.mark.parametrize("schedule", ["", "   ", "\t\n"])
def test_an_empty_schedule_is_refused(schedule: str) -> None:
    assert refused(schedule) == (f"s2mmu: error: --replay {schedule!r} is empty: give the "
                                 "schedule a failing run prints (operation indices separated "
                                 "by spaces)")


@pytest.mark.parametrize("schedule", ["0 x 1", "0,1", "-1 0", "0 1.0", "0 0x1", "0 ١"])
def test_a_schedule_with_something_other_than_indices_is_refused(schedule: str) -> None:
    assert refused(schedule) == ("s2mmu: error: --replay expects operation indices separated "
                                 f"by spaces, got {schedule!r}")


def test_an_operation_index_out_of_range_is_refused() -> None:
    assert refused("0 0 7") == ("s2mmu: error: --replay '0 0 7' is not a schedule of "
                                "same-ipa-faults: entry 2 names operation 7, but its "
                                "operations are 0..1")


def test_a_huge_number_is_out_of_range_and_not_echoed_whole() -> None:
    err = refused("0 " + "9" * 5000)
    assert err == ("s2mmu: error: --replay '0 " + "9" * 55 + "...' is not a schedule of "
                   "same-ipa-faults: entry 1 names operation 99999999999999999..., but its "
                   "operations are 0..1")


def test_an_operation_that_cannot_run_there_is_refused() -> None:
    err = refused("0 " * 12 + "0")
    assert err == ("s2mmu: error: --replay '0 0 0 0 0 0 0 0 0 0 0 0 0' is not a schedule of "
                   "same-ipa-faults: entry 12 names operation 0, which cannot run there "
                   "(runnable: 1)")


def test_a_schedule_that_ends_before_the_run_does_is_refused() -> None:
    assert refused("0 0 1") == ("s2mmu: error: --replay '0 0 1' is not a schedule of "
                                "same-ipa-faults: it ends after 3 entries with operations "
                                "0=vcpu0-fault-rw, 1=vcpu1-fault-r unfinished and no "
                                "violation; give the whole schedule a failing run prints")


def test_a_schedule_longer_than_the_run_is_refused() -> None:
    code, _, err = run("block-and-page-faults", "--profile", "v6.2", "--replay",
                       "0 0 0 0 0 1 1 1 1 1 1 1 1 1 1 1 0 0 0 0 0 0 0")
    assert code == 2
    assert err.strip() == ("s2mmu: error: --replay '0 0 0 0 0 1 1 1 1 1 1 1 1 1 1 1 0 0 0 0 "
                           "0 0 0' is not a schedule of block-and-page-faults: it has 23 "
                           "entries but the run ends after 21 (a violation stopped it)")
    assert refused(FULL + " 1").endswith("it has 19 entries but the run ends after 18 "
                                         "(every operation returned)")


def test_replay_without_a_race_name_is_refused() -> None:
    code, _, err = run("--replay", "0 1")
    assert code == 2
    assert err.strip() == "s2mmu: error: --replay needs the race NAME whose schedule it is"


def test_an_unknown_profile_is_one_line_listing_the_releases() -> None:
    code, out, err = run("same-ipa-faults", "--profile", "v6.3..v6.19-rc4")
    assert (code, out) == (2, "")
    assert err == ("s2mmu: error: unknown kernel profile 'v6.3..v6.19-rc4' (known: v6.1, v6.2, "
                   "v6.6, v6.12, v6.18, v6.19)\n")


def test_v6_1_faults_are_serialised_by_the_write_lock() -> None:
    code, out, _ = run("same-ipa-faults", "--profile", "v6.1")
    assert code == 0 and "every invariant held" in out
    assert "\n2 schedules explored (0 cut short" in out  # one fault after the other
    _, parallel, _ = run("same-ipa-faults", "--profile", "v6.2")
    assert "\n2 schedules explored" not in parallel


def test_an_injected_bug_is_caught_by_the_explorer_and_named_in_json() -> None:
    r = CliRunner().invoke(cli, ["race", "fault-vs-unmap", "--inject", "table-tlbi-level-hint",
                                 "--json"])
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    validate(doc)
    assert doc["inject"] == ["table-tlbi-level-hint"]
    assert {v["invariant"] for v in doc["violations"]} == {"table-tlbi-level"}
    ok = CliRunner().invoke(cli, ["race", "fault-vs-unmap", "--json"])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["inject"] == []


def test_an_unknown_bug_is_a_usage_error() -> None:
    r = CliRunner().invoke(cli, ["race", "fault-vs-unmap", "--inject", "nope"])
    assert r.exit_code == 2
