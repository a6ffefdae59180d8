"""The scenario runner and the run/demo commands: golden scenarios, exit codes, messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from s2mmu.cli.main import cli
from s2mmu.cli.schemas import validate
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
    run = run_scenario(load_scenario(path))
    assert run.failures == [] and run.ok


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
    validate(report)
    assert report["schema"] == "s2mmu.run/2" and report["ok"] is True
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
    assert result.exit_code == 0
    assert "    . table page allocated at PA 0x" in result.output
    assert "PageAlloc(" not in result.output


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
    # wrong types, shapes and ranges
    (('features = ["fwb", "dic"]', 'features = "fwb"'),
     "bad.toml:3: host.features: must be a list like [\"FEAT_ATS1A\"], not 'fwb'"),
    (('do = "write"', 'do = ["write"]'), "bad.toml:16: event[0].do: must be one of"),
    (('size = "4M"\n\n[[memslot]]', 'size = 4097\n\n[[memslot]]'),
     "bad.toml:7: vma[0].size: 0x1001 is not a multiple of 0x1000"),
    (('ipa = 0x40000000', 'ipa = 0x1_0000_0000_0000_0000'),
     "bad.toml:17: event[0].ipa: 0x10000000000000000 does not fit in 64 bits"),
    (('expect = "completed"', 'expect = "completed"\nslot = 0'),
     "bad.toml:19: event[0].slot: not a field of a write event"),
    (('expect = "completed"', 'expect = "completed"\nvcpu = 1'),
     "bad.toml:19: event[0].vcpu: no vCPU 1 (1 defined)"),
    (('expect = "completed"', 'race = { do = "munmap", hva = 0x7f0000000000, sz = 1 }'),
     "bad.toml:18: event[0].race: must be {do = munmap|madvise|migrate|hwpoison"),
    (('expect = "completed"', 'syndrome = [true, 1]'),
     "bad.toml:18: event[0].syndrome: must be [size in bytes 1/2/4/8, register 0-31]"),
    (('expect = "completed"', 'size = 3'),
     "bad.toml:18: event[0].size: must be one of 1, 2, 4, 8, 16 (bytes), not 3"),
    (('expect = "completed"', 'syndrome = [4, 1]\nsize = 8'),
     "bad.toml:19: event[0].size: 8 bytes, but the syndrome says 4"),
    (('expect = "completed"', 'expect_leaves = { "3M" = 1 }'),
     "bad.toml:18: event[0].expect_leaves: must be one of 1G, 2M, 4K, not '3M'"),
    (('[host]', '[vm]\neager_split_chunk = "3M"\n\n[host]'),
     "bad.toml:3: vm.eager_split_chunk: must be 0, \"4K\", \"2M\" or \"1G\""),
    # found while building the world or playing the timeline: still one line, exit 2
    (('[host]', '[vm]\nipa_bits = 60\n\n[host]'),
     "bad.toml:3: vm.ipa_bits: KVM_CREATE_VM fails -EINVAL: IPA size 60 outside [32, 48]"),
    (('[[event]]', '[[vcpu]]\nstage1_tables = 0x90000000\n'
                   'map = [{ va = 0x200000, ipa = 0x40000000, size = "4K" }]\n\n[[event]]'),
     "bad.toml:16: vcpu[0].stage1_tables: guest stage-1 table at IPA 0x90000000 is outside"),
    (('do = "write"\nipa = 0x40000000\nexpect = "completed"',
      'do = "mmap"\nstart = 0x7f0000000000\nsize = "4K"'),
     "bad.toml:17: event[0].start: VMA 0x7f0000000000-0x7f0000001000 overlaps an existing VMA"),
    (('do = "write"\nipa = 0x40000000\nexpect = "completed"', 'do = "hwpoison"\nhva = 0x1000'),
     "bad.toml:17: event[0].hva: no VMA at HVA 0x1000"),
    (('do = "write"\nipa = 0x40000000\nexpect = "completed"',
      'do = "abort"\nesr = 0x5a000000\nfar = 0x1000\nhpfar = 0x10'),
     "bad.toml:17: event[0].esr: ESR_EL2.EC=0x16 is not an Instruction or Data Abort"),
    (('do = "write"\nipa = 0x40000000\nexpect = "completed"',
      'do = "dirty_log_enable"\nslot = 3'),
     "bad.toml:17: event[0].slot: no memslot 3 at this point of the timeline"),
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


def test_non_utf8_scenario_is_one_message(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_bytes(b"\xff\xfe" + GOOD.encode())
    result = CliRunner().invoke(cli, ["run", str(f)])
    assert result.exit_code == 2
    assert result.output.strip().endswith("bad.toml: not UTF-8 text (byte 0: 0xff)")
    assert len(result.output.strip().splitlines()) == 1


def test_a_dirty_bit_no_write_explains_fails_the_run(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # The invariant "dirty bits only for handled writes" is checked on every step.
    from s2mmu.kvm import fault

    real = fault.mark_page_dirty_in_slot

    def also_next(kvm, slot, gfn):  # type: ignore[no-untyped-def]
        real(kvm, slot, gfn)
        real(kvm, slot, gfn + 1)

    monkeypatch.setattr(fault, "mark_page_dirty_in_slot", also_next)
    f = tmp_path / "log.toml"
    f.write_text(GOOD.replace('hva = 0x7f0000000000\n', 'hva = 0x7f0000000000\n'
                              'flags = ["log_dirty_pages"]\n'))
    result = CliRunner().invoke(cli, ["run", str(f)])
    assert result.exit_code == 1
    assert ("INVARIANT BROKEN: dirty-bits: slot 0 page 0x1 (IPA 0x40001000) is dirty but no "
            "handled write dirtied it") in result.output


def test_clear_dirty_log_of_a_slot_not_a_multiple_of_64_pages_runs(tmp_path: Path) -> None:
    # 0x41000 bytes = 65 pages: the user bitmap is two 64-bit words, the last one partial.
    f = tmp_path / "dirty65.toml"
    f.write_text("""[vm]
manual_dirty_log_protect = true
[[vma]]
start = 0x7f0000000000
size = 0x41000
[[memslot]]
id = 0
gpa = 0x40000000
size = 0x41000
hva = 0x7f0000000000
flags = ["log_dirty_pages"]
[[event]]
do = "write"
ipa = 0x40040000
[[event]]
do = "get_dirty_log"
expect_dirty = [64]
[[event]]
do = "clear_dirty_log"
slot = 0
[[event]]
do = "get_dirty_log"
expect_dirty = []
[[event]]
do = "clear_dirty_log"
first_page = 64
pages = [64]
""")
    result = CliRunner().invoke(cli, ["run", str(f)])
    assert result.exit_code == 0, result.output
    assert "KVM_CLEAR_DIRTY_LOG pages 0x0..0x40" in result.output
    assert "KVM_CLEAR_DIRTY_LOG pages 0x40..0x40" in result.output
