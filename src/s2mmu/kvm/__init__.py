"""The stage-2 fault path as KVM/arm64 runs it (arch/arm64/kvm/mmu.c, virt/kvm/kvm_main.c).

A VM over a host address space: memslots map guest-physical ranges to host VMAs;
kvm_handle_guest_abort takes the abort as the hardware reported it (ESR_EL2, FAR_EL2,
HPFAR_EL2) and returns what the guest sees (a GuestResult), the typed decision of each
step of user_mem_abort, and the mapping it made. Ioctls that fail raise KvmError with
the errno and a Refusal; what the guest sees after an abort is always a value.

>>> from s2mmu.arch.memory import PhysMem
>>> from s2mmu.kvm import (GuestAbort, HostFeatures, HostMm, Vma, VmaKind, kvm_create_vm,
...     kvm_handle_guest_abort, kvm_set_memory_region, kvm_vm_ioctl_create_vcpu)
>>> host = HostMm(PhysMem(), HostFeatures(fwb=True, dic=True))
>>> host.mmap(Vma(0x7f0000000000, 0x7f0000400000, VmaKind.ANON, thp=True))
>>> kvm = kvm_create_vm(host, 40)
>>> kvm_set_memory_region(kvm, 0, 0, 0x40000000, 0x400000, 0x7f0000000000)
<MemoryChange.CREATE: 'create'>
>>> vcpu = kvm_vm_ioctl_create_vcpu(kvm)

A data abort on a write, translation fault at level 2, IPA 0x40201000:

>>> out = kvm_handle_guest_abort(GuestAbort(esr=0x92000046, far=0x201000, hpfar=0x402010),
...                              kvm, vcpu)
>>> out.result
Resumed(reason=<ResumeReason.MAPPED: 'mapped'>)
>>> [d.step for d in out.decisions]  # doctest: +NORMALIZE_WHITESPACE
['gfn_to_memslot', 'vma_lookup', 'kvm_s2_resolve_vma_size', '__kvm_faultin_pfn',
 'compute_prot', 'transparent_hugepage_adjust', 'kvm_pgtable_stage2_map']
>>> out.decisions[1]  # doctest: +NORMALIZE_WHITESPACE
VmaInfo(name='anon', kind=<VmaKind.ANON: 'anon'>, mem_type=<MemType.NORMAL: 'normal'>,
        vma_shift=12, pfnmap=False, cacheable=True, allow_any_uncached=False,
        mte_allowed=False)
>>> hex(out.mapping.ipa), hex(out.mapping.size)
('0x40200000', '0x200000')
"""

from s2mmu.kvm.abort import (
    Error,
    ErrorReason,
    GuestAbort,
    GuestResult,
    HwpoisonSignal,
    InjectedAbort,
    InjectKind,
    MmioExit,
    NisvExit,
    Resumed,
    ResumeReason,
)
from s2mmu.kvm.dirty import SlotPage, kvm_clear_dirty_log_protect, kvm_get_dirty_log_protect
from s2mmu.kvm.fault import AbortOutcome, Decision, FaultHooks, Mapping, kvm_handle_guest_abort
from s2mmu.kvm.host import HostFeatures, HostMm, MemType, Vma, VmaKind, host_id_regs
from s2mmu.kvm.memslot import KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY, Memslot
from s2mmu.kvm.vm import (
    Kvm,
    KvmError,
    KvmVcpu,
    MemoryChange,
    Refusal,
    kvm_create_vm,
    kvm_set_id_regs,
    kvm_set_memory_region,
    kvm_vm_ioctl_create_vcpu,
)

__all__ = [
    "KVM_MEM_LOG_DIRTY_PAGES", "KVM_MEM_READONLY", "AbortOutcome", "Decision", "Error",
    "ErrorReason", "FaultHooks", "GuestAbort", "GuestResult", "HostFeatures", "HostMm",
    "HwpoisonSignal", "InjectKind", "InjectedAbort", "Kvm", "KvmError", "KvmVcpu", "Mapping",
    "MemType", "MemoryChange", "Memslot", "MmioExit", "NisvExit", "Refusal", "ResumeReason",
    "Resumed", "SlotPage", "Vma", "VmaKind", "kvm_clear_dirty_log_protect", "kvm_create_vm",
    "host_id_regs", "kvm_get_dirty_log_protect", "kvm_handle_guest_abort", "kvm_set_id_regs",
    "kvm_set_memory_region", "kvm_vm_ioctl_create_vcpu",
]
