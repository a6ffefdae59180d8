"""What the scenario fuzzer found, each as its smallest scenario.

Each test is the minimal reproducer of one failure class the generators of
tests/scenario/strategies.py reach (bench/fuzz_campaign.py lists the classes it sees).
Every class here is fixed: each test pins the behaviour the fix gave (the kernel's answer,
or a one-line refusal of the file) with its exact text, and its class is in
test_fuzz.FIXED so the suite's generators produce its cases again. A new class gets an
xfail(strict=True) test here until its fix lands.
"""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from s2mmu.cli.main import cli

HEAD = """
[host]
features = ["fwb", "dic"]

[vm]
manual_dirty_log_protect = true
"""


def run_cli(tmp_path: Path, text: str) -> tuple[int, str]:
    """Run a scenario through the CLI; fail on a traceback; return exit status and output."""
    f = tmp_path / "found.toml"
    f.write_text(text)
    result = CliRunner().invoke(cli, ["run", str(f)])
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    return result.exit_code, result.output


def step(out: str, number: int) -> str:
    """Return the text timeline's line of step #number, without its line reference."""
    line = next(x for x in out.splitlines() if x.startswith(f"#{number} "))
    return line.split("] ", 1)[1]


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


def test_madvise_of_one_page_of_a_thp_folio_leaves_stage_2_equal_to_the_host(
        tmp_path: Path) -> None:
    """Fixed (PARTIAL_FOLIO): the host splits the THP and zaps the one page only."""
    code, out = run_cli(tmp_path, LOGGED_FOLIO.format(vma="thp = true", do="madvise"))
    assert code == 0, out
    assert step(out, 3) == "madvise HVA 0x7f0000001000+4K"


def test_munmap_of_one_page_of_a_hugetlb_folio_is_einval(tmp_path: Path) -> None:
    """Fixed (PARTIAL_FOLIO): Linux refuses a munmap that splits a hugetlb page (-EINVAL
    from the VMA split); the step says so and the mapping stays whole."""
    code, out = run_cli(tmp_path, LOGGED_FOLIO.format(vma='kind = "hugetlb"\nhugetlb = "2M"',
                                                      do="munmap"))
    assert code == 0, out
    assert step(out, 3) == "munmap HVA 0x7f0000001000+4K: -EINVAL"


def test_racing_madvise_of_part_of_a_thp_folio_leaves_stage_2_equal_to_the_host(
        tmp_path: Path) -> None:
    text = LOGGED_FOLIO.format(vma="thp = true", do="madvise").replace(
        'do = "madvise"\nhva = 0x7f0000001000\nsize = "4K"',
        'do = "read"\nipa = 0x40002000\nrace = { do = "madvise", hva = 0x7f0000001000 }')
    code, out = run_cli(tmp_path, text)
    assert code == 0, out
    assert step(out, 3) == "vCPU0 read IPA 0x40002000 -> completed (PA 0x1000002000)"


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


def test_clear_dirty_log_to_the_end_of_a_17_page_slot(tmp_path: Path) -> None:
    """Fixed (ODD_SLOT_CLEAR): the bitmap is ALIGN(17, 64) / 8 bytes, as KVM sizes it."""
    code, out = run_cli(tmp_path, ODD_SLOT)
    assert code == 0, out
    assert step(out, 2) == "slot 0: KVM_CLEAR_DIRTY_LOG pages 0x0..0x10"


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


def test_clear_dirty_log_from_beyond_the_slot_is_kvms_einval(tmp_path: Path) -> None:
    code, out = run_cli(tmp_path, RAM + '\n[[event]]\ndo = "clear_dirty_log"\nslot = 0\n'
                                        'first_page = 1024\nexpect_error = "EINVAL"\n')
    assert code == 0, out
    assert step(out, 2) == "clear_dirty_log: refused -EINVAL (range beyond the slot)"


def test_clear_dirty_log_of_a_page_beyond_the_slot_clears_the_slot_as_kvm_does(
        tmp_path: Path) -> None:
    """With num_pages left out the ioctl covers the slot (512 pages): a page beyond it is
    not in the bitmap KVM reads, and KVM clears the range without an error."""
    code, out = run_cli(tmp_path, RAM + '\n[[event]]\ndo = "clear_dirty_log"\nslot = 0\n'
                                        'pages = [100000]\nexpect_error = "none"\n')
    assert code == 0, out
    assert step(out, 2) == "slot 0: KVM_CLEAR_DIRTY_LOG pages 0x0..0x1ff"


def test_a_memslot_id_beyond_kvm_user_mem_slots_is_einval(tmp_path: Path) -> None:
    code, out = run_cli(tmp_path, RAM + '\n[[event]]\ndo = "memslot"\nslot = 0x8000\n'
                        'gpa = 0x80000000\nsize = "2M"\nhva = 0x7f0000000000\n'
                        'expect_error = "EINVAL"\n')
    assert code == 0, out
    assert step(out, 2) == ("slot 32768: refused -EINVAL (slot 0x8000: id 32768 is not below "
                            "KVM_USER_MEM_SLOTS (32767))")


def test_a_memslot_whose_hva_range_wraps_is_einval(tmp_path: Path) -> None:
    code, out = run_cli(tmp_path, RAM + '\n[[event]]\ndo = "memslot"\nslot = 1\n'
                        'gpa = 0x80000000\nsize = "4M"\nhva = 0xffffffffffe00000\n'
                        'expect_error = "EINVAL"\n')
    assert code == 0, out
    assert step(out, 2) == ("slot 1: refused -EINVAL (userspace_addr 0xffffffffffe00000 + "
                            "memory_size 0x400000 is not a user address range)")


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


def test_a_pfnmap_bar_above_2_48_on_a_52_bit_host_is_refused(tmp_path: Path) -> None:
    """Fixed (PFNMAP_ABOVE_48): 4K pages without FEAT_LPA2 cannot map OA[51:48], so the
    usable PA size is 48 bits (kvm_set_ipa_limit); the file is refused in one line."""
    f = tmp_path / "found.toml"
    f.write_text(PFNMAP_52)
    result = CliRunner().invoke(cli, ["run", str(f)])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == (
        f"s2mmu: error: {f}:10: vma[0].pa: 0x4000020000000+0x1000 ends beyond the host's "
        "usable 48-bit PA space ([host] pa_bits = 52, but 4K pages without FEAT_LPA2 map at "
        "most 48 bits)\n")


def test_a_pfnmap_bar_just_below_2_48_on_a_52_bit_host_maps_its_own_pa(tmp_path: Path) -> None:
    code, out = run_cli(tmp_path, PFNMAP_52.replace("pa = 0x4000020000000", "pa = 0xfffffffff000"))
    assert code == 0, out
    assert step(out, 2) == "vCPU0 read IPA 0x40000000 -> completed (PA 0xfffffffff000)"
