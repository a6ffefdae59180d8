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
                                "message": "expected mmio, got completed"}]


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
