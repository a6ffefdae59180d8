"""The invariants read at a fault's return and from the event log: dirty => writable,
WARNs, and the page-table library's rules over the VM's own stage 2."""

from __future__ import annotations

import pytest

from s2mmu.kvm.dirty import SlotPage
from s2mmu.kvm.fault import FaultHooks, kvm_handle_guest_abort
from s2mmu.kvm.invariants import (
    DirtyNotWritable,
    PgtableRuleBroken,
    StepChecker,
    WarnFired,
    check_dirty_writable,
)
from s2mmu.kvm.memslot import KVM_MEM_LOG_DIRTY_PAGES
from s2mmu.kvm.vm import kvm_vm_ioctl_create_vcpu
from s2mmu.pgtable import backend as backend_module
from s2mmu.pgtable.inject import InjectedBug
from s2mmu.pgtable.stage2 import kvm_pgtable_stage2_unmap
from s2mmu.pgtable.table import KvmPgtable

from .helpers import NO_FWB, RAM_IPA, add_ram, iabt, new_vm, touch

SZ_4K = 0x1000
SZ_2M = 0x20_0000


def test_a_write_fault_in_a_logging_slot_leaves_its_dirty_page_writable() -> None:
    kvm, vcpu = new_vm()
    add_ram(kvm, flags=KVM_MEM_LOG_DIRTY_PAGES)
    out = touch(kvm, vcpu, RAM_IPA, "write")
    assert out is not None and out.dirtied
    assert check_dirty_writable(kvm, kvm.pgt, out.dirtied) == []


def test_a_relax_that_reports_success_on_a_cleared_entry_is_caught(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The class Will Deacon pointed at (seed 000): a permission relax whose walker does
    not end on -EAGAIN returns 0 for an entry a racer cleared; the page is marked dirty
    and nothing is mapped."""
    kvm, vcpu = new_vm()
    add_ram(kvm, flags=KVM_MEM_LOG_DIRTY_PAGES)
    touch(kvm, vcpu, RAM_IPA, "read")  # logging: mapped read-only

    def relax_on_a_cleared_entry(pgt: KvmPgtable, addr: int, prot: int, flags: int = 0) -> int:
        kvm_pgtable_stage2_unmap(pgt, addr, SZ_4K)  # the racing unmap
        return 0  # -EAGAIN swallowed

    monkeypatch.setattr(backend_module, "kvm_pgtable_stage2_relax_perms",
                        relax_on_a_cleared_entry)
    out = touch(kvm, vcpu, RAM_IPA, "write")
    assert out is not None and out.dirtied
    assert check_dirty_writable(kvm, kvm.pgt, out.dirtied) == [
        DirtyNotWritable(RAM_IPA, 0, 0, 0)]


def test_a_dirty_page_left_read_only_is_caught() -> None:
    kvm, vcpu = new_vm()
    add_ram(kvm, flags=KVM_MEM_LOG_DIRTY_PAGES)
    out = touch(kvm, vcpu, RAM_IPA, "read")
    assert out is not None and not out.dirtied
    broken = check_dirty_writable(kvm, kvm.pgt, (SlotPage(0, 0),))
    assert len(broken) == 1 and broken[0].leaf != 0


def test_a_forged_permission_abort_from_a_fresh_vcpu_warns() -> None:
    kvm, vcpu = new_vm()
    add_ram(kvm)
    checker = StepChecker(kvm)
    kvm_handle_guest_abort(iabt(0x0F, RAM_IPA), kvm, vcpu, FaultHooks())
    warns, rules = checker.after_step(1)
    assert warns == [WarnFired("kvm_mmu_memory_cache_alloc", "!mc->nobjs")]
    assert rules == []
    assert checker.after_step(2) == ([], [])


def test_a_topped_up_vcpu_does_not_warn() -> None:
    kvm, vcpu = new_vm()
    add_ram(kvm)
    checker = StepChecker(kvm)
    touch(kvm, vcpu, RAM_IPA + SZ_2M * 4, "read")
    kvm_handle_guest_abort(iabt(0x0F, RAM_IPA), kvm, vcpu, FaultHooks())
    assert checker.after_step(1) == ([], [])


def test_the_library_rules_are_followed_over_the_vms_stage_2() -> None:
    kvm, vcpu = new_vm(NO_FWB)
    add_ram(kvm, thp=False)
    checker = StepChecker(kvm)
    touch(kvm, vcpu, RAM_IPA, "read")
    assert checker.after_step(1) == ([], [])
    kvm.pgt.ops.bugs = frozenset({InjectedBug.TABLE_TLBI_LEVEL_HINT})
    kvm_pgtable_stage2_unmap(kvm.pgt, RAM_IPA, SZ_2M)
    _, rules = checker.after_step(2)
    assert {r.rule for r in rules} == {"table-tlbi-level"}
    assert all(isinstance(r, PgtableRuleBroken) for r in rules)


def test_a_second_vcpu_has_its_own_memcache() -> None:
    kvm, vcpu = new_vm()
    add_ram(kvm, size=2 << 30)
    touch(kvm, vcpu, RAM_IPA, "read")
    other = kvm_vm_ioctl_create_vcpu(kvm)
    checker = StepChecker(kvm)
    # a THP block in the next 1G needs a level-2 table; a permission fault skips the top-up
    kvm_handle_guest_abort(iabt(0x0F, RAM_IPA + (1 << 30)), kvm, other, FaultHooks())
    assert [w.function for w in checker.after_step(1)[0]] == ["kvm_mmu_memory_cache_alloc"]
