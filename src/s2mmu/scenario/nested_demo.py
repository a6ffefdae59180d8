"""The built-in nested example: an L1 guest hypervisor, its L2 guest, KVM's shadow stage 2.

L1's stage-2 tables sit in guest memory (a 4KB-granule, 40-bit IPA stage 2 built with
the architecture's table builder); KVM walks them with kvm_walk_nested_s2 when L2
faults on its shadow stage 2. Each step is a typed record: an L2 access handled by
kvm_handle_guest_abort's nested branch (its decisions and result), or an L1 TLBI with
the shadow ranges it emptied; after every step the shadow stage-2 invariant is checked.
Wording: s2mmu.scenario.render_text (decision_text, result_text).

Kernel: arch/arm64/kvm/mmu.c (kvm_handle_guest_abort, user_mem_abort),
arch/arm64/kvm/nested.c (get_s2_mmu_nested, kvm_walk_nested_s2), sys_regs.c
(handle_ipas2e1is).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from s2mmu.arch.builder import BumpAllocator, TableBuilder, s2_attrs
from s2mmu.arch.features import qemu_7_2_max
from s2mmu.arch.memory import PhysMem
from s2mmu.arch.params import Granule
from s2mmu.arch.registers import VTCR_EL2
from s2mmu.arch.state import SysRegs
from s2mmu.kvm.abort import GuestAbort
from s2mmu.kvm.fault import AbortOutcome
from s2mmu.kvm.host import HostFeatures, HostMm, Vma, VmaKind
from s2mmu.kvm.vm import kvm_create_vm, kvm_set_memory_region, kvm_vm_ioctl_create_vcpu
from s2mmu.nested.guest import GuestMemory, GuestRegion
from s2mmu.nested.invariants import NestedViolation, check_nested_invariants
from s2mmu.nested.mmu import (
    HCR_VM,
    NestedKvm,
    ShadowUnmap,
    handle_ipas2e1is,
    kvm_nested_handle_guest_abort,
    kvm_vcpu_init_nested,
    kvm_vcpu_load_hw_mmu,
)
from s2mmu.nested.nested import NestedVm, kvm_start_level

RAM_IPA, RAM_HVA, RAM_SIZE = 0x4000_0000, 0x7F00_0000_0000, 64 << 20
L1_TABLES, L1_VMID = 0x1000_0000, 5
L2_BLOCK, L2_RO_PAGE, L2_HOLE = 0x8000_0000, 0x8020_0000, 0x8040_0000
FSC_TRANS_L3, FSC_PERM_L3 = 0x07, 0x0F


@dataclass(frozen=True)
class L2Access:
    """An L2 data access that faulted on the shadow stage 2, and how KVM handled it."""

    title: str
    abort: GuestAbort
    handled: AbortOutcome
    violations: tuple[NestedViolation, ...]


@dataclass(frozen=True)
class L1Tlbi:
    """L1's TLBI IPAS2E1IS (Xt without a TTL) and the shadow ranges KVM emptied."""

    title: str
    xt: int
    unmapped: tuple[ShadowUnmap, ...]
    violations: tuple[NestedViolation, ...]


NestedDemoStep = L2Access | L1Tlbi


@dataclass(frozen=True)
class NestedDemo:
    """The example's setup (L1's registers) and its steps."""

    vtcr: int
    vttbr: int
    steps: tuple[NestedDemoStep, ...]


def dabt(fsc: int, ipa: int, write: bool) -> GuestAbort:
    """Return L2's data abort as the hardware reports it (ISV clear, HPFAR from ipa)."""
    return GuestAbort((0x24 << 26) | (1 << 25) | fsc | int(write) << 6, ipa, (ipa >> 12) << 4)


def run_nested_demo() -> NestedDemo:
    """Build the VM, L1's stage 2 and the shadow pool; run the example's steps."""
    host = HostMm(PhysMem(), HostFeatures(fwb=True, dic=True, idc=True, tlb_range=True))
    kvm = kvm_create_vm(host, 40)
    vcpu = kvm_vm_ioctl_create_vcpu(kvm)
    host.mmap(Vma(RAM_HVA, RAM_HVA + RAM_SIZE, VmaKind.ANON, thp=True))
    kvm_set_memory_region(kvm, 0, 0, RAM_IPA, RAM_SIZE, RAM_HVA)
    l1_mem = PhysMem()
    guest = GuestMemory(l1_mem, (GuestRegion(0, 1 << 32, 0x2_0000_0000),))
    t0sz, sl0 = 24, 1
    b = TableBuilder(guest, BumpAllocator(L1_TABLES, L1_TABLES + (16 << 20), 4096),
                     Granule.G4K, 64 - t0sz, kvm_start_level(Granule.G4K, sl0))
    b.map(L2_BLOCK, RAM_IPA, 2 << 20, s2_attrs(), level=2)
    b.map(L2_RO_PAGE, RAM_IPA + (4 << 20), 0x1000, s2_attrs(s2ap=0b01))
    regs = replace(SysRegs(), VTCR_EL2=VTCR_EL2.encode(T0SZ=t0sz, SL0=sl0, TG0=0, PS=0b010,
                                                       SH0=3, ORGN0=1, IRGN0=1),
                   VTTBR_EL2=b.root | L1_VMID << 48, HCR_EL2=SysRegs().HCR_EL2 | HCR_VM)
    nk = NestedKvm(kvm, NestedVm(qemu_7_2_max(), 48, l1_mem, guest))
    kvm_vcpu_init_nested(nk)
    kvm_vcpu_load_hw_mmu(nk, vcpu, regs)
    steps: list[NestedDemoStep] = []

    def access(title: str, ipa: int, write: bool, fsc: int) -> None:
        abort = dabt(fsc, ipa, write)
        out = kvm_nested_handle_guest_abort(nk, vcpu, regs, abort)
        steps.append(L2Access(title, abort, out,
                              tuple(check_nested_invariants(nk, regs))))

    access("L2 reads inside L1's 2M block", L2_BLOCK + 0x1000, False, FSC_TRANS_L3)
    access("L2 writes L1's read-only page", L2_RO_PAGE, True, FSC_TRANS_L3)
    access("L2 writes it again (permission fault)", L2_RO_PAGE, True, FSC_PERM_L3)
    access("L2 reads what L1 does not map", L2_HOLE, False, FSC_TRANS_L3)
    xt = (L2_BLOCK + 0x1000) >> 12
    unmapped = tuple(handle_ipas2e1is(nk, regs, xt))
    steps.append(L1Tlbi("L1: TLBI IPAS2E1IS without a level hint", xt, unmapped,
                        tuple(check_nested_invariants(nk, regs))))
    access("L2 reads the block again", L2_BLOCK + 0x1000, False, FSC_TRANS_L3)
    return NestedDemo(regs.VTCR_EL2, regs.VTTBR_EL2, tuple(steps))


def nested_demo_ok(demo: NestedDemo) -> bool:
    """Return whether the invariant held after every step."""
    return all(not s.violations for s in demo.steps)
