"""run and demo: one JSON document, exit statuses, progress only for big runs on a terminal."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from s2mmu.cli import run_cmd
from s2mmu.cli.main import cli
from s2mmu.cli.schemas import validate

BIG = """
[[vma]]
start = 0x7f0000000000
size = "4M"

[[memslot]]
id = 0
gpa = 0x40000000
size = "4M"
hva = 0x7f0000000000
""" + "".join(f'\n[[event]]\ndo = "read"\nipa = {0x4000_0000 + i * 0x1000:#x}\n'
              for i in range(run_cmd.PROGRESS_STEPS))


def test_demo_json_is_one_document_with_every_run() -> None:
    r = CliRunner().invoke(cli, ["demo", "--json"])
    assert r.exit_code == 0
    doc = json.loads(r.stdout)  # one document: no "Extra data"
    validate(doc)
    assert doc["schema"] == "s2mmu.demo/1"
    assert [run["scenario"] for run in doc["runs"]] == ["<built-in demo.toml>",
                                                       "<built-in demo_nofwb.toml>"]


def test_run_json_validates_and_keeps_the_exit_status(tmp_path: Path) -> None:
    f = tmp_path / "big.toml"
    f.write_text(BIG.replace('ipa = 0x40000000\n', 'ipa = 0x40000000\nexpect = "mmio"\n', 1))
    r = CliRunner().invoke(cli, ["run", str(f), "--json"])
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    validate(doc)
    assert doc["failures"] == [{"index": 2, "do": "read", "line": 12, "kind": "expectation",
                                "invariant": None, "message": "expected mmio, got completed"}]


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int | None]] = []
        self.advanced = 0

    @contextmanager
    def progress(self, description: str, total: int | None = None) -> Iterator[Recorder]:
        self.calls.append((description, total))
        yield self

    def advance(self, n: int = 1) -> None:
        self.advanced += n


def test_a_big_scenario_advances_a_progress_bar_per_step(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "big.toml"
    f.write_text(BIG)
    rec = Recorder()
    monkeypatch.setattr(run_cmd, "progress", rec.progress)
    run = run_cmd.run_quietly(str(f), trace=False)
    assert rec.calls == [("run big", run_cmd.PROGRESS_STEPS + 1)]
    assert rec.advanced == len(run.steps) == run_cmd.PROGRESS_STEPS + 1


def test_a_small_scenario_shows_no_progress(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "small.toml"
    f.write_text(BIG.split("\n[[event]]")[0])
    rec = Recorder()
    monkeypatch.setattr(run_cmd, "progress", rec.progress)
    run_cmd.run_quietly(str(f), trace=False)
    assert rec.calls == []


def test_progress_is_silent_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    f = tmp_path / "big.toml"
    f.write_text(BIG)
    r = CliRunner().invoke(cli, ["run", str(f)])
    assert r.exit_code == 0 and r.stderr == ""
    assert r.stdout.splitlines()[-1] == "OK: every expectation and invariant holds"


STEPS = Path(__file__).resolve().parent / "data" / "stage2_steps.toml"
LINE_W = ("0x0000000040003000-0x0000000040004000        4K L3 -> 0x0000001000000000  "
          "R W px  ux   AF         PG  ISH FWB MemAttr=0x6=Normal iWB-RAWA oWB-RAWA")
LINE_X = ("0x0000000040005000-0x0000000040006000        4K L3 -> 0x0000001000001000  "
          "R   px  ux   AF         PG  ISH FWB MemAttr=0x6=Normal iWB-RAWA oWB-RAWA")
REGION = ("---[ VTTBR_EL2: IPA 0x0-0x10000000000, 4K granule, start level 1, "
          "table at 0x8000000000 ]---")


def dumps_text(stdout: str) -> str:
    """Return what run prints after the timeline's verdict."""
    return stdout.split("OK: every expectation and invariant holds\n", 1)[1]


def test_dump_after_prints_the_stage2_each_step_left_after_the_timeline() -> None:
    r = CliRunner().invoke(cli, ["run", str(STEPS), "--dump-after", "#4", "--dump-after", "2"])
    assert r.exit_code == 0
    assert dumps_text(r.stdout) == "\n".join([
        "",
        "stage 2 after #2 [line 17] vCPU0 write IPA 0x40003000 -> completed",
        REGION, LINE_W, "---[ VTTBR_EL2 end ]---",
        "",
        "stage 2 after #4 [line 27] vCPU0 exec IPA 0x40005000 -> completed",
        REGION, LINE_W, LINE_X, "---[ VTTBR_EL2 end ]---",
    ]) + "\n"


def test_dump_after_last_with_a_range_filter_shows_only_that_range() -> None:
    r = CliRunner().invoke(cli, ["run", str(STEPS), "--dump-after", "last",
                                 "--range", "0x40004000-0x40010000"])
    assert r.exit_code == 0
    assert dumps_text(r.stdout).splitlines()[1:] == [
        "stage 2 after #4 [line 27] vCPU0 exec IPA 0x40005000 -> completed",
        REGION, LINE_X, "---[ VTTBR_EL2 end ]---"]


def test_dump_after_in_json_is_a_documented_field_holding_dump_documents() -> None:
    r = CliRunner().invoke(cli, ["run", str(STEPS), "--json", "--dump-after", "3",
                                 "--dump-after", "1", "--perm", "w"])
    assert r.exit_code == 0
    doc = json.loads(r.stdout)
    validate(doc)
    for entry in doc["stage2_after"]:
        validate(entry["dump"])
    got = [(e["index"], e["line"], e["do"], e["dump"]["source"], e["dump"]["filter"]["perm"],
            [x["start"] for x in e["dump"]["regions"][0]["ranges"]])
           for e in doc["stage2_after"]]
    assert got == [(1, 11, "memslot", {"scenario": str(STEPS), "after": 1}, "w", []),
                   (3, 22, "read", {"scenario": str(STEPS), "after": 3}, "w", ["0x40003000"])]


def test_run_json_without_dump_after_has_no_stage2_field() -> None:
    doc = json.loads(CliRunner().invoke(cli, ["run", str(STEPS), "--json"]).stdout)
    assert "stage2_after" not in doc


@pytest.mark.parametrize(("args", "message"), [
    (["--dump-after", "5"], "--dump-after 5: no such step (the run has steps #1-#4, or 'last')"),
    (["--dump-after", "0"], "--dump-after 0: no such step (the run has steps #1-#4, or 'last')"),
    (["--dump-after", "2", "--dump-after", "#x"],
     "--dump-after #x: no such step (the run has steps #1-#4, or 'last')"),
    (["--range", "0x0-0x1000"], "--range and --perm filter a stage-2 dump: give --dump-after "
                                "N too"),
    (["--dump-after", "2", "--perm", "q"],
     "--perm: unknown permission letter 'q' in 'q' (use r, w and x, e.g. 'wx' for W+X "
     "mappings)"),
    (["--dump-after", "2", "--range", "0x0-0x20000000000"],
     "--range 0x0-0x20000000000 is outside the 40-bit IPA space (0x0-0x10000000000)"),
])
def test_bad_dump_after_is_one_line_exit_2_and_nothing_printed(args: list[str],
                                                               message: str) -> None:
    for extra in ([], ["--json"]):
        r = CliRunner().invoke(cli, ["run", str(STEPS), *extra, *args])
        assert (r.exit_code, r.stdout) == (2, "")
        assert r.stderr == f"s2mmu: error: {message}\n"
