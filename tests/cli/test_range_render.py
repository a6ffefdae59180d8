"""`s2mmu translate VA --to END`: runs from the batch engine, text and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from s2mmu.arch.access import acc_gpr
from s2mmu.arch.atcase import load_memory, parse_case
from s2mmu.arch.errors import InputError
from s2mmu.arch.features import qemu_7_2_max
from s2mmu.arch.state import Regime
from s2mmu.arch.translate import AddressDescriptor, Env, full_translate
from s2mmu.cli.main import cli
from s2mmu.cli.range_render import range_addresses, translate_range
from s2mmu.cli.schemas import validate

PAGE_ATTRS = 0b11 << 8 | 1 << 10 | 0b11


def case_file(tmp_path: Path) -> Path:
    """A 4KB stage 1 mapping 8 pages at 0x80000000 to 0x90000000, page 3 unmapped."""
    from s2mmu.arch.builder import BumpAllocator, TableBuilder, s1_attrs
    from s2mmu.arch.memory import PhysMem
    from s2mmu.arch.params import Granule
    mem = PhysMem()
    tb = TableBuilder(mem, BumpAllocator(0x4000_0000, 0x4100_0000), Granule.G4K, 48, 0)
    for i in (0, 1, 2, 4, 5, 6, 7):
        tb.map(0x8000_0000 + i * 4096, 0x9000_0000 + i * 4096, 4096, s1_attrs())
    chunks = [{"pa": hex(page << 12), "bytes": mem.page_bytes(page).hex()}  # type: ignore
              for page in range(0x40000, 0x40010) if mem.page_bytes(page) is not None]
    case = {"name": "eight", "el": "EL1", "memory": chunks,
            "regs": {"SCTLR_EL1": "0x30d00805", "TCR_EL1": hex(16 | 1 << 23 | 5 << 32),
                     "MAIR_EL1": "0xff", "TTBR0_EL1": hex(tb.root)},
            "ops": [["S1E1R", "0x80000000"]]}
    path = tmp_path / "case.json"
    path.write_text(json.dumps(case))
    return path


def test_runs_split_at_the_hole_and_join_across_it(tmp_path: Path) -> None:
    path = case_file(tmp_path)
    got = CliRunner().invoke(cli, ["translate", "0x80000000", "--to", "0x80009000",
                                   "--case", str(path)])
    assert got.exit_code == 0, got.output
    lines = got.output.splitlines()
    assert lines[0].startswith("0x80000000..0x80009000 step 0x1000: 9 addresses, EL1 read")
    assert "0x80000000..0x80002000" in lines[2] and "-> 0x90000000" in lines[2]
    assert "0x80003000" in lines[3] and "Translation fault, level 3 (stage 1)" in lines[3]
    assert "0x80004000..0x80007000" in lines[4] and "-> 0x90004000" in lines[4]
    assert "Translation fault" in lines[5]
    assert lines[-1] == "9 addresses in 4 runs"


def test_json_validates_and_counts_every_address(tmp_path: Path) -> None:
    path = case_file(tmp_path)
    got = CliRunner().invoke(cli, ["translate", "0x80000000", "--to", "0x80008000", "--step",
                                   "0x800", "--case", str(path), "--json"])
    assert got.exit_code == 0, got.output
    doc = json.loads(got.output)
    validate(doc)
    assert doc["count"] == 16 and sum(r["count"] for r in doc["runs"]) == 16
    assert doc["runs"][0]["pa_first"] == "0x90000000"
    assert doc["runs"][1]["fault"]["statuscode"] == "Translation"


def test_every_run_agrees_with_the_scalar_path(tmp_path: Path) -> None:
    case = parse_case(json.loads(case_file(tmp_path).read_text()))
    env = Env(load_memory(case), qemu_7_2_max())
    vas = range_addresses(0x7FFF_F000, 0x8000_A000, 0x400)
    _, runs = translate_range(case.regs, Regime.EL10, vas, acc_gpr(1, False), env, False)
    for run in runs:
        for va in (run.va_first, run.va_last):
            want = full_translate(case.regs, Regime.EL10, va, acc_gpr(1, False), env)
            if run.fault is None:
                assert isinstance(want, AddressDescriptor)
                assert want.paddress == run.pa_first + (va - run.va_first)  # type: ignore
            else:
                assert not isinstance(want, AddressDescriptor)
                assert want.statuscode is run.fault and want.level == run.level


@pytest.mark.parametrize(("args", "message"), [
    (["--to", "0x1000", "--step", "0"], "--step 0x0: the step is 1..2^64-1 bytes"),
    (["--to", "0x80000000"], "--to 0x80000000: the range end must be above the start"),
    (["--to", "0x90000000", "--step", "1"], "a range translates at most 4194304"),
    (["--to", "0x80001000", "--explain"], "--to translates a range: --explain and --svg"),
])
def test_bad_ranges_are_refused_in_one_line(args: list[str], message: str) -> None:
    got = CliRunner().invoke(cli, ["translate", "0x80000000", *args])
    assert got.exit_code == 2
    assert message in got.output and "Traceback" not in got.output


def test_range_addresses_refuses_an_end_beyond_2_64() -> None:
    with pytest.raises(InputError, match="at most 2\\^64"):
        range_addresses(0, (1 << 64) + 1, 1 << 40)
