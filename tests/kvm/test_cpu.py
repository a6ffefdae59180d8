"""The CPU running a guest access: sized accesses that cross a page boundary."""

from __future__ import annotations

from s2mmu.kvm.cpu import Completed, Stage2Abort, guest_access, vcpu_regs
from s2mmu.kvm.fault import kvm_handle_guest_abort
from tests.kvm.helpers import RAM_IPA, add_ram, new_vm


def test_a_load_crossing_into_an_unmapped_page_faults_on_that_page() -> None:
    kvm, vcpu = new_vm()
    add_ram(kvm, thp=False)
    regs = vcpu_regs(kvm)
    first = guest_access(kvm, regs, RAM_IPA, "read")
    assert isinstance(first, Stage2Abort)
    kvm_handle_guest_abort(first.abort, kvm, vcpu)
    o = guest_access(kvm, regs, RAM_IPA + 0xFFC, "read", size=8)
    assert isinstance(o, Stage2Abort)
    assert (o.abort.far, o.abort.hpfar) == (RAM_IPA + 0x1000, (RAM_IPA + 0x1000) >> 8)
    assert isinstance(guest_access(kvm, regs, RAM_IPA + 0xFF8, "read", size=8), Completed)
    kvm_handle_guest_abort(o.abort, kvm, vcpu)
    done = guest_access(kvm, regs, RAM_IPA + 0xFFC, "read", size=8)
    assert isinstance(done, Completed)


def test_a_crossing_access_whose_first_page_faults_reports_its_own_address() -> None:
    kvm, _ = new_vm()
    add_ram(kvm, thp=False)
    o = guest_access(kvm, vcpu_regs(kvm), RAM_IPA + 0xFFC, "write", size=8)
    assert isinstance(o, Stage2Abort) and o.abort.far == RAM_IPA + 0xFFC
