"""translate --svg: the nested-walk grid encodes the walk, and the file is written whole."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from s2mmu.arch.builder import BumpAllocator, TableBuilder, s1_attrs, s2_attrs
from s2mmu.arch.params import Granule
from s2mmu.arch.registers import HCR_EL2, SCTLR_EL1, TCR_EL1, VTCR_EL2
from s2mmu.cli.main import cli

NS = {"s": "http://www.w3.org/2000/svg"}
S1_IPA, S1_PA = 0x1000_0000, 0x5000_0000
OUT_IPA, OUT_PA = 0x8000_0000, 0x9000_0000
VA = 0x40_0000_5123


class WordMem:
    """Memory as a dict of 64-bit words, seen at an offset (a guest's stage-1 tables)."""

    def __init__(self, words: dict[int, int], delta: int = 0) -> None:
        self.words, self.delta = words, delta

    def read64(self, pa: int, big_endian: bool = False) -> int:
        return self.words.get(pa + self.delta, 0)

    def write64(self, pa: int, value: int, big_endian: bool = False) -> None:
        self.words[pa + self.delta] = value


def two_stage_case(drop: tuple[int, ...] = (), stage2: bool = True) -> dict[str, Any]:
    """Return an AT case: 4-level 4K stage 1 (tables at IPA 0x1000_0000) behind a 4-level
    4K stage 2 that maps everything with pages; the words at PAs in drop are left out.
    Without stage2, the same stage 1 with its tables at PA 0x1000_0000 and stage 2 off."""
    words: dict[int, int] = {}
    s2 = TableBuilder(WordMem(words), BumpAllocator(0x6000_0000, 0x6100_0000), Granule.G4K, 48, 0)
    s2.map(S1_IPA, S1_PA, 0x10000, s2_attrs())
    s2.map(OUT_IPA, OUT_PA, 0x10000, s2_attrs())
    s1 = TableBuilder(WordMem(words, S1_PA - S1_IPA if stage2 else 0),
                      BumpAllocator(S1_IPA, S1_IPA + 0x10000), Granule.G4K, 48, 0)
    s1.map(VA & ~0xFFF, OUT_IPA + 0x3000, 0x1000, s1_attrs())
    regs = {
        "SCTLR_EL1": SCTLR_EL1.encode(M=1, C=1, I=1) | 0x30D00800,
        "TCR_EL1": TCR_EL1.encode(T0SZ=16, TG0=0, SH0=3, ORGN0=1, IRGN0=1, EPD1=1, IPS=0b101),
        "MAIR_EL1": 0xFF, "TTBR0_EL1": s1.root, "HCR_EL2": HCR_EL2.encode(RW=1, VM=int(stage2)),
        "VTCR_EL2": VTCR_EL2.encode(T0SZ=16, SL0=2, TG0=0, SH0=3, ORGN0=1, IRGN0=1, PS=0b101),
        "VTTBR_EL2": s2.root}
    return {"name": "two_stage_4x4", "el": "EL1", "regs": {k: hex(v) for k, v in regs.items()},
            "memory": [{"pa": hex(pa), "words": [hex(v)]} for pa, v in sorted(words.items())
                       if pa not in drop],
            "ops": [{"op": "S12E1R", "va": hex(VA)}]}


def translate_svg(tmp_path: Path, case: dict[str, Any], *extra: str
                  ) -> tuple[int, ET.Element | None, str]:
    case_file = tmp_path / "case.json"
    case_file.write_text(json.dumps(case))
    out = tmp_path / "walk.svg"
    r = CliRunner().invoke(cli, ["translate", hex(VA), "--case", str(case_file),
                                 "--svg", str(out), *extra])
    root = ET.parse(out).getroot() if out.exists() else None
    return r.exit_code, root, r.stdout


def reads(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.iter(f"{{{NS['s']}}}g") if "read" in g.get("class", "").split()]


def texts(el: ET.Element) -> list[str]:
    return [t.text or "" for t in el.iter(f"{{{NS['s']}}}text")]


def test_two_stage_4_plus_4_walk_has_24_reads_numbered_in_hardware_order(tmp_path: Path) -> None:
    code, root, stdout = translate_svg(tmp_path, two_stage_case())
    assert code == 0 and root is not None and "-> 0x90003123" in stdout
    cells = reads(root)
    assert [int(g.get("data-n", "")) for g in cells] == list(range(1, 25))
    assert [c.get("id") for c in cells] == [f"read-{n}" for n in range(1, 25)]
    # four rows of (S2 L0..L3, S1 Ln), then the stage-2 walk of the output IPA
    want = [(2, lvl) for lvl in range(4)]
    order = [x for s1 in range(4) for x in [*want, (1, s1)]] + want
    assert [(int(g.get("data-stage", "")), int(g.get("data-level", ""))) for g in cells] == order
    assert [texts(g)[0] for g in cells] == [str(n) for n in range(1, 25)]


def test_cells_show_address_descriptor_and_kind(tmp_path: Path) -> None:
    _, root, _ = translate_svg(tmp_path, two_stage_case())
    assert root is not None
    first, s1_leaf = reads(root)[0], reads(root)[19]
    assert "0x60000000[0]" in texts(first) and "0x0000000060001003" in texts(first)
    assert "table" in texts(first) and "kind-table" in first.get("class", "")
    assert "page" in texts(s1_leaf) and "IPA 0x10003000[5]" in texts(s1_leaf)
    assert "PA 0x50003028" in texts(s1_leaf)
    assert not [g for g in reads(root) if "fault" in g.get("class", "").split()]


def test_leaf_pa_and_permissions_are_in_the_side_note(tmp_path: Path) -> None:
    _, root, _ = translate_svg(tmp_path, two_stage_case())
    assert root is not None
    note = next(g for g in root.iter(f"{{{NS['s']}}}g") if g.get("class") == "note")
    lines = texts(note)
    assert lines[0] == "-> PA 0x90003123"
    assert any(x.startswith("S1 L3 leaf: page -> 0x80003000") for x in lines)
    assert any(x.startswith("S2 L3 leaf: page -> 0x90003000") for x in lines)
    assert any(x.startswith("permissions: privileged RWX") for x in lines)
    assert "output IPA" in texts(root) and "0x80003123" in texts(root)


def test_stage1_fault_marks_the_stage1_leaf_cell(tmp_path: Path) -> None:
    code, root, _ = translate_svg(tmp_path, two_stage_case(drop=(S1_PA + 0x3028,)))
    assert code == 0 and root is not None
    faulted = [g for g in reads(root) if "fault" in g.get("class", "").split()]
    assert [(g.get("data-n"), g.get("data-stage")) for g in faulted] == [("20", "1")]
    assert "S1 Translation fault, level 3" in texts(faulted[0])


def test_stage2_fault_on_the_stage1_walk_marks_the_stage2_cell(tmp_path: Path) -> None:
    # the stage-2 level-3 entry for the stage-1 level-2 table's IPA 0x1000_2000
    code, root, _ = translate_svg(tmp_path, two_stage_case(drop=(0x6000_3010,)))
    assert code == 0 and root is not None
    cells = reads(root)
    assert len(cells) == 14
    faulted = [g for g in cells if "fault" in g.get("class", "").split()]
    assert [g.get("data-n") for g in faulted] == ["14"]
    assert (faulted[0].get("data-stage"), faulted[0].get("data-level")) == ("2", "3")
    assert "invalid" in texts(faulted[0])
    assert "S2 Translation fault, level 3" in texts(faulted[0])
    assert "next S1 table" in texts(root)


def test_stage1_only_walk_is_one_row(tmp_path: Path) -> None:
    code, root, stdout = translate_svg(tmp_path, two_stage_case(stage2=False))
    assert code == 0 and root is not None and "-> 0x80003123" in stdout
    cells = reads(root)
    assert [(g.get("data-stage"), g.get("data-level")) for g in cells] == [
        ("1", "0"), ("1", "1"), ("1", "2"), ("1", "3")]
    ys = {g.find("s:rect", NS).get("y") for g in cells}  # type: ignore[union-attr]
    assert len(ys) == 1
    assert "PA 0x10003028" in texts(cells[-1])


@pytest.mark.parametrize("where", ["missing-dir/walk.svg", "dir"])
def test_unwritable_path_is_one_line_exit_2_and_leaves_no_file(tmp_path: Path,
                                                               where: str) -> None:
    (tmp_path / "dir").mkdir()
    case_file = tmp_path / "case.json"
    case_file.write_text(json.dumps(two_stage_case()))
    before = sorted(os.listdir(tmp_path / "dir"))
    r = CliRunner().invoke(cli, ["translate", hex(VA), "--case", str(case_file),
                                 "--svg", str(tmp_path / where)])
    assert r.exit_code == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("s2mmu: error: ")
    assert str(tmp_path / where) in lines[0]
    assert sorted(os.listdir(tmp_path / "dir")) == before
    assert sorted(os.listdir(tmp_path)) == ["case.json", "dir"]


def test_rewrite_replaces_the_file_whole(tmp_path: Path) -> None:
    out = tmp_path / "walk.svg"
    out.write_text("old")
    translate_svg(tmp_path, two_stage_case())
    assert out.read_text().startswith("<?xml") and sorted(os.listdir(tmp_path)) == [
        "case.json", "walk.svg"]


def test_write_failure_message_is_pinned(tmp_path: Path) -> None:
    case_file = tmp_path / "case.json"
    case_file.write_text(json.dumps(two_stage_case()))
    where = tmp_path / "missing-dir" / "walk.svg"
    r = CliRunner().invoke(cli, ["translate", hex(VA), "--case", str(case_file),
                                 "--svg", str(where)])
    assert r.stderr == (f"s2mmu: error: --svg {where}: cannot write: "
                        "No such file or directory\n")


def test_stage2_fault_note_shows_esr_far_and_hpfar(tmp_path: Path) -> None:
    code, root, stdout = translate_svg(tmp_path, two_stage_case(drop=(0x6000_3010,)))
    assert code == 0 and root is not None
    note = next(g for g in root.iter(f"{{{NS['s']}}}g") if g.get("class") == "note")
    assert "taken to EL2: ESR_EL2=0x92000087 FAR_EL2=0x4000005123 HPFAR_EL2=0x100020" in \
        " ".join(texts(note))
    assert "taken to EL2: ESR_EL2=0x92000087 FAR_EL2=0x4000005123 HPFAR_EL2=0x100020" in stdout
