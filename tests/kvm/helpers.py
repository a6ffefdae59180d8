"""Small VMs for the kvm tests: a host, a VM, slots over VMAs, and raw aborts."""

from __future__ import annotations

from s2mmu.arch.memory import PhysMem
from s2mmu.kvm.abort import GuestAbort
from s2mmu.kvm.cpu import Stage2Abort, guest_access, vcpu_regs
from s2mmu.kvm.fault import AbortOutcome, FaultHooks, kvm_handle_guest_abort
from s2mmu.kvm.host import HostFeatures, HostMm, MemType, Vma, VmaKind
from s2mmu.kvm.vm import (
    Kvm,
    KvmVcpu,
    kvm_create_vm,
    kvm_set_memory_region,
    kvm_vm_ioctl_create_vcpu,
)

RAM_HVA = 0x7F00_0000_0000
RAM_IPA = 0x4000_0000
BAR_HVA = 0x7F20_0000_0000
BAR_PA = 0x6000_0000_0000
BAR_IPA = 0x1_0000_0000

FWB_DIC = HostFeatures(fwb=True, dic=True, idc=True, tlb_range=True)
NO_FWB = HostFeatures(dic=True, idc=True)


def new_vm(features: HostFeatures = FWB_DIC, ipa_bits: int = 40,
           mte: bool = False) -> tuple[Kvm, KvmVcpu]:
    """Return an empty VM on a fresh host, with one vCPU."""
    host = HostMm(PhysMem(), features)
    kvm = kvm_create_vm(host, ipa_bits, has_mte=mte)
    return kvm, kvm_vm_ioctl_create_vcpu(kvm)


def add_ram(kvm: Kvm, slot: int = 0, ipa: int = RAM_IPA, size: int = 64 << 20,
            hva: int = RAM_HVA, flags: int = 0, **vma: object) -> None:
    """Map an anonymous VMA (THP unless told) and a memslot over it."""
    opts: dict[str, object] = {"thp": True, **vma}
    kind = opts.pop("kind", VmaKind.ANON)
    kvm.host.mmap(Vma(hva, hva + size, kind, **opts))  # type: ignore[arg-type]
    kvm_set_memory_region(kvm, slot, flags, ipa, size, hva)


def add_bar(kvm: Kvm, mem_type: MemType, slot: int = 5, any_uc: bool = False,
            flags: int = 0) -> None:
    """Map a 2M VM_PFNMAP BAR and a memslot over it (may raise KvmError)."""
    kvm.host.mmap(Vma(BAR_HVA, BAR_HVA + (2 << 20), VmaKind.PFNMAP, mem_type=mem_type,
                      allow_any_uncached=any_uc, pfn_base=BAR_PA, name="bar"))
    kvm_set_memory_region(kvm, slot, flags, BAR_IPA, 2 << 20, BAR_HVA)


def touch(kvm: Kvm, vcpu: KvmVcpu, ipa: int, kind: str = "read",
          hooks: FaultHooks | None = None,
          syndrome: tuple[int, int] | None = None) -> AbortOutcome | None:
    """Access ipa with the guest MMU off; return KVM's outcome for the first stage-2 fault."""
    o = guest_access(kvm, vcpu_regs(kvm), ipa, kind, syndrome)
    if not isinstance(o, Stage2Abort):
        return None
    return kvm_handle_guest_abort(o.abort, kvm, vcpu, hooks)


def dabt(fsc: int, ipa: int, write: bool = False, s1ptw: bool = False, cm: bool = False,
         far: int | None = None) -> GuestAbort:
    """Return a data abort from a lower EL as hardware encodes it."""
    esr = (0x24 << 26) | (1 << 25) | fsc | int(write or cm) << 6 | int(s1ptw) << 7 | int(cm) << 8
    return GuestAbort(esr, ipa if far is None else far, (ipa >> 12) << 4)


def iabt(fsc: int, ipa: int, s1ptw: bool = False) -> GuestAbort:
    """Return an instruction abort from a lower EL."""
    esr = (0x20 << 26) | (1 << 25) | fsc | int(s1ptw) << 7
    return GuestAbort(esr, ipa, (ipa >> 12) << 4)
