"""Scenario files checked at load time: addresses that must fit a configured size, fields
an ioctl holds in a __u32, and the input layer's limits (one line, file:line: field: why)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from s2mmu.cli.main import cli
from s2mmu.scenario.schema import ScenarioError, load_scenario

BAR = """[host]
features = ["fwb", "dic"]
pa_bits = 40

[[vma]]
name = "bar"
start = 0x7f2000000000
size = "2M"
kind = "pfnmap"
mem_type = "device"
pa = {pa}
"""

RAM = """[[vma]]
start = 0x7f0000000000
size = "4M"

[[memslot]]
id = {id}
gpa = 0x40000000
size = "4M"
hva = 0x7f0000000000
flags = ["log_dirty_pages"]
"""


def refusal(text: str) -> str:
    with pytest.raises(ScenarioError) as e:
        load_scenario("s.toml", text)
    return str(e.value)


def test_pfnmap_pa_at_the_host_pa_size_is_a_malformed_file() -> None:
    assert refusal(BAR.format(pa="0x10000000000000")) == (
        "s.toml:11: vma[0].pa: 0x10000000000000+0x200000 ends beyond the host's 40-bit PA "
        "space ([host] pa_bits)")
    assert refusal(BAR.format(pa="0xffffff0000")) == (
        "s.toml:11: vma[0].pa: 0xffffff0000+0x200000 ends beyond the host's 40-bit PA space "
        "([host] pa_bits)")


def test_pfnmap_bar_ending_at_the_host_pa_size_is_accepted() -> None:
    from s2mmu.scenario.kvm_events import KvmConfig

    ok = load_scenario("s.toml", BAR.format(pa="0xffffe00000"))
    config = ok.configs["kvm"]
    assert isinstance(config, KvmConfig)
    assert config.vmas[0].pa + config.vmas[0].size == 1 << 40


def test_pfnmap_pa_is_checked_against_the_default_48_bit_host() -> None:
    text = BAR.format(pa="0x1000000000000").replace("pa_bits = 40\n", "")
    assert refusal(text) == ("s.toml:10: vma[0].pa: 0x1000000000000+0x200000 ends beyond the "
                             "host's 48-bit PA space ([host] pa_bits)")


def test_mmap_event_of_a_pfnmap_beyond_the_host_pa_size_is_a_malformed_file() -> None:
    text = BAR.format(pa="0x40000000") + """
[[event]]
do = "mmap"
start = 0x7f3000000000
size = "2M"
kind = "pfnmap"
pa = 0x20000000000
"""
    assert refusal(text) == ("s.toml:18: event[0].pa: 0x20000000000+0x200000 ends beyond the "
                             "host's 40-bit PA space ([host] pa_bits)")


@pytest.mark.parametrize(("event", "message"), [
    ('do = "clear_dirty_log"\nslot = 0\nnum_pages = 0x1_0000_0000',
     "s.toml:15: event[0].num_pages: 0x100000000 does not fit the ioctl's __u32 field"),
    ('do = "get_dirty_log"\nslot = 0x1_0000_0000',
     "s.toml:14: event[0].slot: 0x100000000 does not fit the ioctl's __u32 field"),
])
def test_event_fields_an_ioctl_holds_in_a_u32_are_refused_beyond_it(event: str,
                                                                    message: str) -> None:
    assert refusal(RAM.format(id=0) + "\n[[event]]\n" + event + "\n") == message


def test_memslot_id_beyond_u32_is_refused() -> None:
    assert refusal(RAM.format(id="0x1_0000_0000")) == (
        "s.toml:6: memslot[0].id: 0x100000000 does not fit the ioctl's __u32 slot field")


def test_clear_dirty_log_beyond_u32_pages_in_range_runs_and_gets_einval(tmp_path: Path) -> None:
    # num_pages 0xffffffff is a valid __u32: KVM refuses it (-EINVAL) before reading the
    # bitmap, and the runner builds no 512 MiB bitmap for it.
    f = tmp_path / "s.toml"
    f.write_text(RAM.format(id=0) + '\n[[event]]\ndo = "clear_dirty_log"\nslot = 0\n'
                 'num_pages = 0xffff_ffff\nexpect_error = "EINVAL"\n')
    result = CliRunner().invoke(cli, ["run", str(f)])
    assert result.exit_code == 0, result.output
    assert "clear_dirty_log: refused -EINVAL (range beyond the slot)" in result.output


def test_scenario_limits_apply_to_text_given_directly() -> None:
    assert refusal("[vm]\nipa_bits = " + "9" * 100 + "\n") == (
        "s.toml:2: vm.ipa_bits: the number 9999...9999 (100 digits) has more than 64 digits "
        "(MAX_INT_DIGITS)")
    assert refusal("name = 'a'\nx = " + "{a = " * 40 + "1" + "}" * 40 + "\n") == (
        "s.toml:2: x: nested deeper than 32 levels of arrays and tables (MAX_DEPTH)")
