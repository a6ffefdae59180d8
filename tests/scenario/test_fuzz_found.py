"""What the scenario fuzzer found, each as its smallest scenario.

Each test is the minimal reproducer of one failure class the generators of
tests/scenario/strategies.py reach (bench/fuzz_campaign.py lists the classes it sees).
A class whose fix has not landed is marked xfail(strict=True): when the fix lands the
test passes, strict turns that into a failure, and the mark is dropped (and the class
added to test_fuzz.FIXED, so the suite's generators produce its cases again).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from s2mmu.cli.main import cli
from s2mmu.scenario.runner import run_scenario
from s2mmu.scenario.schema import load_scenario

HEAD = """
[host]
features = ["fwb", "dic"]

[vm]
manual_dirty_log_protect = true
"""


def failures(text: str) -> list[str]:
    """Return the failures of a scenario run from its text."""
    return list(run_scenario(load_scenario("found.toml", text))["failures"])


LOGGED_FOLIO = HEAD + """
[[vma]]
start = 0x7f0000000000
size = "2M"
{vma}

[[memslot]]
id = 0
gpa = 0x40000000
size = "2M"
hva = 0x7f0000000000
flags = ["log_dirty_pages"]

[[event]]
do = "write"
ipa = 0x40000000
note = "logging forces a 4K stage-2 page onto the 2M folio"
expect = "completed"

[[event]]
do = "{do}"
hva = 0x7f0000001000
size = "4K"
note = "the next page only: the notifier covers 4K, the host drops the whole folio"
"""


@pytest.mark.xfail(strict=True, reason="known class: partial madvise of a THP folio (host "
                   "model zaps the whole folio, the MMU notifier covers only the range)")
def test_madvise_of_one_page_of_a_thp_folio_leaves_stage_2_equal_to_the_host() -> None:
    assert failures(LOGGED_FOLIO.format(vma="thp = true", do="madvise")) == []


@pytest.mark.xfail(strict=True, reason="known class: partial munmap of a hugetlb folio (host "
                   "model zaps the whole folio, the MMU notifier covers only the range)")
def test_munmap_of_one_page_of_a_hugetlb_folio_holds_or_is_refused(tmp_path: Path) -> None:
    """Linux refuses a munmap that splits a hugetlb page (EINVAL): either answer is right,
    a refusal being one line naming the event."""
    f = tmp_path / "hugetlb.toml"
    f.write_text(LOGGED_FOLIO.format(vma='kind = "hugetlb"\nhugetlb = "2M"', do="munmap"))
    result = CliRunner().invoke(cli, ["run", str(f)])
    refused = result.exit_code == 2 and result.stderr.startswith(f"s2mmu: error: {f}:") \
        and "event[1]" in result.stderr and result.stderr.count("\n") == 1
    assert result.exit_code == 0 or refused, result.output


@pytest.mark.xfail(strict=True, reason="known class: partial madvise of a THP folio, as the "
                   "race between the page pin and mmu_lock")
def test_racing_madvise_of_part_of_a_thp_folio_leaves_stage_2_equal_to_the_host() -> None:
    text = LOGGED_FOLIO.format(vma="thp = true", do="madvise").replace(
        'do = "madvise"\nhva = 0x7f0000001000\nsize = "4K"',
        'do = "read"\nipa = 0x40002000\nrace = { do = "madvise", hva = 0x7f0000001000 }')
    assert failures(text) == []


ODD_SLOT = HEAD + """
[[vma]]
start = 0x7f0000000000
size = "2M"

[[memslot]]
id = 0
gpa = 0x40000000
size = 0x11000                    # 17 pages: not a multiple of 64
hva = 0x7f0000000000
flags = ["log_dirty_pages"]

[[event]]
do = "clear_dirty_log"
slot = 0
note = "num_pages left out: to the end of the slot, 17 pages"
expect_error = "none"
"""


@pytest.mark.xfail(strict=True, reason="known class: clear_dirty_log on a slot whose page "
                   "count is not a multiple of 64 (TypeError in kvm_clear_dirty_log_protect)")
def test_clear_dirty_log_to_the_end_of_a_17_page_slot(tmp_path: Path) -> None:
    f = tmp_path / "odd.toml"
    f.write_text(ODD_SLOT)
    result = CliRunner().invoke(cli, ["run", str(f)])
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.exit_code == 0, result.output



# -- new classes ----------------------------------------------------------------------------------

RAM = HEAD + """
[[vma]]
start = 0x7f0000000000
size = "2M"

[[memslot]]
id = 0
gpa = 0x40000000
size = "2M"
hva = 0x7f0000000000
flags = ["log_dirty_pages"]
"""


def run_cli(tmp_path: Path, text: str) -> tuple[int, str]:
    """Run a scenario through the CLI; fail on a traceback; return exit status and output."""
    f = tmp_path / "found.toml"
    f.write_text(text)
    result = CliRunner().invoke(cli, ["run", str(f)])
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    return result.exit_code, result.output


@pytest.mark.xfail(strict=True, reason="NEW class: the runner builds the CLEAR_DIRTY_LOG bitmap "
                   "before KVM checks the range: first_page beyond the slot with num_pages left "
                   "out gives a negative size (ValueError)")
def test_clear_dirty_log_from_beyond_the_slot_is_kvms_einval(tmp_path: Path) -> None:
    code, out = run_cli(tmp_path, RAM + '\n[[event]]\ndo = "clear_dirty_log"\nslot = 0\n'
                                        'first_page = 1024\nexpect_error = "EINVAL"\n')
    assert code == 0, out


@pytest.mark.xfail(strict=True, reason="NEW class: the runner builds the CLEAR_DIRTY_LOG bitmap "
                   "before KVM checks the range: a page beyond the slot in 'pages' with "
                   "num_pages left out indexes past the bitmap (IndexError)")
def test_clear_dirty_log_of_a_page_beyond_the_slot_is_kvms_einval(tmp_path: Path) -> None:
    code, out = run_cli(tmp_path, RAM + '\n[[event]]\ndo = "clear_dirty_log"\nslot = 0\n'
                                        'pages = [100000]\nexpect_error = "EINVAL"\n')
    assert code == 0, out


@pytest.mark.xfail(strict=True, reason="NEW class: memslot ids are not bounded; "
                   "__kvm_set_memory_region refuses id >= KVM_MEM_SLOTS_NUM with -EINVAL")
def test_a_memslot_id_beyond_kvm_mem_slots_num_is_einval() -> None:
    assert failures(RAM + '\n[[event]]\ndo = "memslot"\nslot = 0x8000\ngpa = 0x80000000\n'
                          'size = "2M"\nhva = 0x7f0000000000\nexpect_error = "EINVAL"\n') == []


@pytest.mark.xfail(strict=True, reason="NEW class: a memslot whose userspace range passes 2^64 "
                   "is accepted; __kvm_set_memory_region refuses it (access_ok) with -EINVAL")
def test_a_memslot_whose_hva_range_wraps_is_einval() -> None:
    assert failures(RAM + '\n[[event]]\ndo = "memslot"\nslot = 1\ngpa = 0x80000000\n'
                          'size = "4M"\nhva = 0xffffffffffe00000\nexpect_error = "EINVAL"\n') == []


PFNMAP_52 = """
[host]
features = ["fwb", "dic"]
pa_bits = 52

[[vma]]
start = 0x7f0000000000
size = "4K"
kind = "pfnmap"
pa = 0x4000020000000              # bit 50 set: inside the 52-bit host PA space

[[memslot]]
id = 0
gpa = 0x40000000
size = "4K"
hva = 0x7f0000000000

[[event]]
do = "read"
ipa = 0x40000000
"""


@pytest.mark.xfail(strict=True, reason="NEW class: on a 52-bit host a PFNMAP PA above 2^48 is "
                   "mapped at stage 2 with OA[51:48] dropped (4K descriptors without FEAT_LPA2 "
                   "hold 48 bits), so stage 2 no longer equals the host mapping")
def test_a_pfnmap_bar_above_2_48_on_a_52_bit_host_maps_its_own_pa(tmp_path: Path) -> None:
    """Either stage 2 maps the BAR's own PA, or the file is refused in one line."""
    code, out = run_cli(tmp_path, PFNMAP_52)
    assert code in (0, 2), out
