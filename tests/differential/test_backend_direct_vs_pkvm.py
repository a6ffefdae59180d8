"""The same fault sequence through the direct and the pKVM backend of a non-protected VM.

A non-protected guest under pKVM sees what it sees under plain KVM: every access ends
the same way (the same PA, or the same error), and the stage 2 the hardware walks holds
the same leaves (IPA, size, output, R/W/X) with the same dirty bits. The differences
pKVM documents are kept out of the generated sequences and listed here:

- PUD blocks (1G hugetlb): pkvm_pgtable_stage2_map shares page or PMD sizes only;
- device memory (VM_PFNMAP): EL2 shares memory only (check_range_allowed_memory);
- eager splitting: pkvm_pgtable_stage2_split refuses;
- the leaves' software bits: EL2 keeps the page state (SHARED_BORROWED) there.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from s2mmu.arch.memory import PhysMem
from s2mmu.kvm.abort import Resumed
from s2mmu.kvm.cpu import Completed, GuestFault, guest_access, vcpu_regs
from s2mmu.kvm.fault import kvm_handle_guest_abort
from s2mmu.kvm.host import HOST_RAM_BASE, HostFeatures, HostMm, Vma, VmaKind
from s2mmu.kvm.invariants import stage2_leaves
from s2mmu.kvm.memslot import KVM_MEM_LOG_DIRTY_PAGES
from s2mmu.kvm.vm import Kvm, KvmVcpu, kvm_create_vm, kvm_vm_ioctl_create_vcpu, set_slot_flags
from s2mmu.kvm.vm import kvm_set_memory_region as set_region
from s2mmu.pgtable.events import Warn
from s2mmu.pgtable.prot import KVM_PGTABLE_PROT_RWX, kvm_pgtable_stage2_pte_prot
from s2mmu.pgtable.pte import kvm_pte_to_phys
from s2mmu.pkvm.backend import pkvm_backend
from s2mmu.pkvm.mem_protect import new_pkvm
from s2mmu.pkvm.memory import MemblockRegion

GPA = 0x4000_0000
HVA = 0x7F00_0000_0000
SLOT = 64 << 20
"""32 PMD regions: more table pages than one top-up of the EL2 memcache holds."""


@dataclass
class Vm:
    host: HostMm
    kvm: Kvm
    vcpu: KvmVcpu


def build(pkvm_mode: bool, thp: bool) -> Vm:
    host = HostMm(PhysMem(), HostFeatures())
    if pkvm_mode:
        hyp = new_pkvm(mem=host.mem, caps=host.features.kvm_caps(),
                       host_ram=MemblockRegion(HOST_RAM_BASE, 1 << 28))
        kvm = kvm_create_vm(host, 40, env=hyp.env, backend=pkvm_backend(hyp, 1, False))
    else:
        kvm = kvm_create_vm(host, 40)
    host.mmap(Vma(HVA, HVA + SLOT, VmaKind.ANON, thp=thp))
    set_region(kvm, 0, 0, GPA, SLOT, HVA)
    return Vm(host, kvm, kvm_vm_ioctl_create_vcpu(kvm))


Op = tuple[str, int]
OPS = st.one_of(
    st.tuples(st.sampled_from(["read", "write", "exec"]),
              st.integers(0, SLOT // 0x1000 - 1).map(lambda p: p * 0x1000 + 0x10)),
    st.tuples(st.just("munmap"), st.integers(0, SLOT // 0x1000 - 1).map(lambda p: p * 0x1000)),
    st.tuples(st.sampled_from(["log-on", "log-off"]), st.just(0)),
)


def run(vm: Vm, op: Op) -> object:
    kind, off = op
    if kind == "munmap":
        return vm.host.munmap(HVA + off, 0x1000)
    if kind.startswith("log"):
        return set_slot_flags(vm.kvm, 0, KVM_MEM_LOG_DIRTY_PAGES if kind == "log-on" else 0)
    regs = vcpu_regs(vm.kvm)
    for _ in range(4):
        o = guest_access(vm.kvm, regs, GPA + off, kind)
        if isinstance(o, Completed):
            return ("completed", o.out.paddress)
        if isinstance(o, GuestFault):
            return ("guest-fault", o.fault.statuscode)
        out = kvm_handle_guest_abort(o.abort, vm.kvm, vm.vcpu)
        if not isinstance(out.result, Resumed):
            return ("result", out.result)
    return ("retry",)


def leaves(vm: Vm) -> list[tuple[int, int, int, int]]:
    g = vm.kvm.env.g
    return [(lf.ipa, lf.size, kvm_pte_to_phys(lf.pte, g),
             int(kvm_pgtable_stage2_pte_prot(lf.pte) & KVM_PGTABLE_PROT_RWX))
            for lf in stage2_leaves(vm.kvm)]


@settings(max_examples=40, deadline=None)
@given(thp=st.booleans(), ops=st.lists(OPS, min_size=1, max_size=40))
def test_direct_and_pkvm_backends_agree_for_a_non_protected_guest(thp: bool,
                                                                 ops: list[Op]) -> None:
    direct, pkvm = build(False, thp), build(True, thp)
    for op in ops:
        assert run(direct, op) == run(pkvm, op), op
        assert leaves(direct) == leaves(pkvm), op
        assert direct.kvm.dirty_bitmap == pkvm.kvm.dirty_bitmap, op
    assert not [e for e in pkvm.kvm.env.events if isinstance(e, Warn)]
