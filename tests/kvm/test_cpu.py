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


def test_an_8_byte_access_with_a_syndrome_reports_a_64_bit_register() -> None:
    """ISS.SF: STR Xt (8 bytes) sets it, STR Wt (4 bytes) does not. Real KVM 6.1 under
    QEMU 7.2 reported ESR_EL2 0x93c3804f for `write ipa=0x100000 syndrome=[8, 3]` (the
    host-events scenario's step 11, `s2mmu real diff`), where the model gave SF=0."""
    kvm, _ = new_vm()
    add_ram(kvm, thp=False)
    regs = vcpu_regs(kvm)
    wide = guest_access(kvm, regs, RAM_IPA, "write", (8, 3), size=8)
    narrow = guest_access(kvm, regs, RAM_IPA, "write", (4, 3), size=4)
    assert isinstance(wide, Stage2Abort) and isinstance(narrow, Stage2Abort)
    assert wide.abort.esr >> 15 & 1 == 1 and wide.abort.esr >> 16 & 0x1F == 3
    assert narrow.abort.esr >> 15 & 1 == 0
    assert wide.abort.esr >> 22 & 3 == 3 and narrow.abort.esr >> 22 & 3 == 2
