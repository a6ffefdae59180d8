"""run --html: one row per event, faults expandable, built from the same report as --json."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from s2mmu.cli.main import cli

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
GOLDEN = SCENARIOS / "readonly_and_holes.toml"
VOID = {"meta", "br", "hr", "img", "input", "link"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    def classes(self) -> list[str]:
        return self.attrs.get("class", "").split()

    def all_text(self) -> str:
        return "".join(self.text) + "".join(c.all_text() for c in self.children)

    def find_all(self, tag: str, cls: str | None = None) -> list[Node]:
        out = []
        for c in self.children:
            if c.tag == tag and (cls is None or cls in c.classes()):
                out.append(c)
            out += c.find_all(tag, cls)
        return out


class Tree(HTMLParser):
    """A small DOM from html.parser (enough to check structure)."""

    def __init__(self) -> None:
        super().__init__()
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack[-1].tag == tag, (self.stack[-1].tag, tag)
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].text.append(data)


def parse(text: str) -> Node:
    t = Tree()
    t.feed(text)
    t.close()
    assert [n.tag for n in t.stack] == ["#document"]
    return t.root


def run_html(tmp_path: Path, scenario: Path, *extra: str) -> tuple[int, Node | None, str]:
    out = tmp_path / "run.html"
    r = CliRunner().invoke(cli, ["run", str(scenario), "--html", str(out), *extra])
    return r.exit_code, parse(out.read_text()) if out.exists() else None, r.stdout


def json_report(scenario: Path) -> dict[str, Any]:
    r = CliRunner().invoke(cli, ["run", str(scenario), "--json"])
    report: dict[str, Any] = json.loads(r.stdout)
    return report


def test_one_row_per_event_with_its_outcome(tmp_path: Path) -> None:
    code, doc, stdout = run_html(tmp_path, GOLDEN)
    assert code == 0 and doc is not None
    report = json_report(GOLDEN)
    rows = doc.find_all("tr", "event")
    assert len(rows) == len(report["steps"]) == 6
    for row, step in zip(rows, report["steps"], strict=True):
        assert row.attrs["data-line"] == str(step["line"])
        assert row.attrs["data-do"] == step["do"]
        assert row.attrs["data-outcome"] == step["outcome"]
        assert row.attrs["data-index"] == str(step["index"]) == row.children[0].all_text()
        assert f"o-{row.attrs['data-outcome']}" in row.classes()
        assert step["summary"] in row.all_text()
    assert "scenario readonly-and-holes" in stdout  # the text timeline is still printed


def test_each_fault_is_expandable_with_abort_steps_and_mapping(tmp_path: Path) -> None:
    _, doc, _ = run_html(tmp_path, GOLDEN)
    assert doc is not None
    report = json_report(GOLDEN)
    faults = [f for s in report["steps"] for f in s["faults"]]
    details = doc.find_all("details", "fault")
    assert len(details) == len(faults) > 0
    for d, f in zip(details, faults, strict=True):
        text = d.all_text()
        assert f["abort"]["esr"] in text and f["abort"]["fsc_name"] in text
        assert [li.all_text() for li in d.find_all("ol", "steps")[0].find_all("li")] == [
            f"{s['step']}: {s['text']}" for s in f["decisions"]]
        assert f"o-{f['result']['outcome']}" in d.classes()
        if f["mapping"]:
            assert f["mapping"]["pa"] in d.find_all("div", "mapping")[0].all_text()


def test_embedded_report_is_the_json_report(tmp_path: Path) -> None:
    _, doc, _ = run_html(tmp_path, GOLDEN)
    assert doc is not None
    script = [s for s in doc.find_all("script") if s.attrs.get("id") == "s2mmu-report"]
    assert json.loads(script[0].all_text()) == json_report(GOLDEN)


def test_summary_and_verdict_are_at_the_top(tmp_path: Path) -> None:
    _, doc, _ = run_html(tmp_path, GOLDEN)
    assert doc is not None
    body = doc.find_all("body")[0]
    ids = [n.attrs.get("id") for n in body.children if n.attrs.get("id")]
    assert ids[:3] == ["status", "summary", "timeline"]
    status = next(n for n in body.children if n.attrs.get("id") == "status")
    assert status.all_text() == "OK: every expectation and invariant holds"
    summary = doc.find_all("table", "summary")[0].all_text()
    assert "faults" in summary and "mmu_invalidate_seq" in summary


def test_failing_expectation_is_listed_linked_and_on_its_row(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(GOLDEN.read_text().replace('expect = "mmio"', 'expect = "nisv"', 1))
    code, doc, _ = run_html(tmp_path, bad)
    assert code == 1  # --html leaves the exit status alone
    assert doc is not None
    want = json_report(bad)["failures"]
    assert [f["message"] for f in want] == ["expected nisv, got mmio"]
    items = doc.find_all("li", "failure")
    # the same step number in the failure list, the row and the JSON index
    assert [li.all_text() for li in items] == [
        f"step #{f['index']} {f['do']} (line {f['line']}): {f['message']}" for f in want]
    target = items[0].find_all("a")[0].attrs["href"].lstrip("#")
    row = next(r for r in doc.find_all("tr", "event") if r.attrs.get("id") == target)
    assert "failed" in row.classes()
    assert row.attrs["data-index"] == str(want[0]["index"])
    assert row.children[0].all_text() == str(want[0]["index"])
    assert "EXPECTATION FAILED: expected nisv, got mmio" in row.all_text()


@pytest.mark.parametrize("where", ["missing-dir/run.html", "dir"])
def test_unwritable_path_is_one_line_exit_2_and_leaves_no_file(tmp_path: Path,
                                                               where: str) -> None:
    (tmp_path / "dir").mkdir()
    r = CliRunner().invoke(cli, ["run", str(GOLDEN), "--html", str(tmp_path / where)])
    assert r.exit_code == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("s2mmu: error: ")
    assert str(tmp_path / where) in lines[0]
    assert os.listdir(tmp_path / "dir") == [] and os.listdir(tmp_path) == ["dir"]


def test_write_failure_message_is_pinned(tmp_path: Path) -> None:
    where = tmp_path / "missing-dir" / "run.html"
    r = CliRunner().invoke(cli, ["run", str(GOLDEN), "--html", str(where)])
    assert r.stderr == (f"s2mmu: error: --html {where}: cannot write: "
                        "No such file or directory\n")


STEPS = Path(__file__).resolve().parent / "data" / "stage2_steps.toml"


def stage2_blocks(page: Node) -> dict[str, Node]:
    return {d.attrs["data-after"]: d for d in page.find_all("details", "stage2")}


def test_steps_that_changed_the_stage2_carry_its_dump_collapsed(tmp_path: Path) -> None:
    code, page, _ = run_html(tmp_path, STEPS)
    assert code == 0 and page is not None
    blocks = stage2_blocks(page)
    # #1 (memslot) and #3 (read of a mapped page) leave the stage 2 as it was
    assert sorted(blocks) == ["2", "4"]
    assert "open" not in blocks["4"].attrs
    (summary,) = blocks["4"].find_all("summary")
    assert summary.all_text() == "stage 2 after #4: 2 ranges (changed)"
    (pre,) = blocks["4"].find_all("pre", "dump")
    assert pre.all_text().splitlines()[1:3] == [
        "0x0000000040003000-0x0000000040004000        4K L3 -> 0x0000001000000000  "
        "R W px  ux   AF         PG  ISH FWB MemAttr=0x6=Normal iWB-RAWA oWB-RAWA",
        "0x0000000040005000-0x0000000040006000        4K L3 -> 0x0000001000001000  "
        "R   px  ux   AF         PG  ISH FWB MemAttr=0x6=Normal iWB-RAWA oWB-RAWA"]
    (row,) = [tr for tr in page.find_all("tr", "event") if tr.attrs["id"] == "step-4"]
    assert row.find_all("details", "stage2") == [blocks["4"]]


def test_the_dump_in_the_page_is_the_dump_after_that_step(tmp_path: Path) -> None:
    code, page, _ = run_html(tmp_path, STEPS)
    assert page is not None
    r = CliRunner().invoke(cli, ["run", str(STEPS), "--dump-after", "2"])
    text = r.stdout.split("stage 2 after #2", 1)[1].splitlines()[1:]
    (pre,) = stage2_blocks(page)["2"].find_all("pre", "dump")
    assert pre.all_text().splitlines() == text


def test_changes_past_the_cap_are_a_note_not_a_dump(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from s2mmu.cli import run_cmd

    monkeypatch.setattr(run_cmd, "HTML_STAGE2_DUMPS", 1)
    code, page, _ = run_html(tmp_path, STEPS)
    assert page is not None
    assert sorted(stage2_blocks(page)) == ["2"]
    (note,) = page.find_all("div", "stage2-dropped")
    assert note.all_text() == ("stage 2 changed (not shown: the page keeps the first 1 "
                               "changes; s2mmu run FILE --dump-after 4)")


def test_bad_dump_after_writes_no_page(tmp_path: Path) -> None:
    code, page, out = run_html(tmp_path, STEPS, "--dump-after", "9")
    assert (code, page, out) == (2, None, "")
