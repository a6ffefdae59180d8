"""Reading the console of a real boot (recorded: Linux 6.1.0-57-arm64, nVHE, QEMU 7.2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from s2mmu.real.log import (
    ConsoleError,
    GuestException,
    MmioSeen,
    RunFailed,
    TraceFault,
    pages_of,
    parse_console,
)

CONSOLE = (Path(__file__).parent / "data" / "console-6.1-nvhe.txt").read_text()


def test_boot_facts() -> None:
    log = parse_console(CONSOLE)
    assert log.release == "6.1.0-57-arm64"
    assert log.kvm_mode == "Hyp mode"
    assert [r.plan for r in log.runs] == ["000-dirty-round.plan", "001-host-events.plan"]
    assert all(r.ended and not r.setup for r in log.runs)


def test_steps_of_the_dirty_round() -> None:
    run = parse_console(CONSOLE).runs[0]
    assert sorted(run.steps) == list(range(1, 13))
    assert run.steps[9].dirty == (0, 3) and run.steps[11].dirty == (3,)
    assert run.steps[5].exits == (MmioSeen(0x9000000, 4, False),)
    fetch = run.steps[4]
    assert isinstance(fetch.exits[0], GuestException)
    assert fetch.exits[0].esr >> 26 == 0  # the zero page holds UDF #0
    assert TraceFault(0x40002000, 0x82000007, 0x40002000, 0x40002000) in fetch.faults


def test_efault_and_errno_records() -> None:
    run = parse_console(CONSOLE).runs[1]
    assert run.steps[16].exits == (RunFailed("EFAULT"),)
    assert run.steps[12].exits == (RunFailed("ENOSYS"),)


def test_a_failed_dirty_log_ioctl_names_its_errno() -> None:
    """get_dirty/clear_dirty print "step N ioctl err ERRNO" (the campaign's first find:
    the errno was read as "err")."""
    text = "S2R boot 6.1.0-57-arm64\nS2R plan p\nS2R step 3 ioctl err ENOENT\n" \
           "S2R step 4 ioctl EINVAL\nS2R step 5 ioctl ok\nS2R end\n"
    steps = parse_console(text).runs[0].steps
    assert [(steps[n].done, steps[n].errno) for n in (3, 4, 5)] == [
        (True, "ENOENT"), (True, "EINVAL"), (True, None)]


def test_fault_abort_carries_hpfar() -> None:
    f = TraceFault(0x40003000, 0x9200004F, 0x40003008, 0)
    assert f.abort.hpfar == 0x400030


def test_pages_of_ranges() -> None:
    assert pages_of("0-2,7") == (0, 1, 2, 7)
    assert pages_of("-") == ()


def test_a_console_without_the_vmm_is_an_error() -> None:
    with pytest.raises(ConsoleError, match="the VMM never ran"):
        parse_console("[    0.1] Kernel panic - not syncing: no init found\n")
