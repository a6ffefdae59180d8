"""TLB maintenance and barriers, recorded as events.

The stage-2 helpers stand for the hypervisor calls KVM makes (``kvm_call_hyp``); each
records one event naming the VMID and the range invalidated.

Kernel: __kvm_tlb_flush_vmid_ipa, __kvm_tlb_flush_vmid_ipa_nsh, __kvm_tlb_flush_vmid,
__kvm_tlb_flush_vmid_range (arch/arm64/kvm/hyp/nvhe/tlb.c); kvm_tlb_flush_vmid_range
(arch/arm64/kvm/hyp/pgtable.c); MAX_TLBI_RANGE_PAGES, __TLBI_RANGE_PAGES
(asm/tlbflush.h).
"""

from __future__ import annotations

from s2mmu.pgtable.events import Dsb, Isb, TlbiVmid, TlbiVmidIpa, TlbiVmidRange
from s2mmu.pgtable.inject import InjectedBug
from s2mmu.pgtable.mm import KvmPgtableMmOps
from s2mmu.pgtable.table import KvmS2Mmu

# __TLBI_RANGE_PAGES(31, 3): the most pages one range TLBI can cover.
MAX_TLBI_RANGE_PAGES = (31 + 1) << (5 * 3 + 1)


def _mm_ops(mmu: KvmS2Mmu) -> KvmPgtableMmOps:
    if mmu.pgt is None:
        raise ValueError("kvm_s2_mmu has no page table (mmu.pgt is None)")
    return mmu.pgt.ops


def __kvm_tlb_flush_vmid_ipa(mmu: KvmS2Mmu, ipa: int, level: int) -> None:
    """Invalidate the stage-2 entries for ipa (level hint) and all of stage 1, ISH.

    Kernel: __kvm_tlb_flush_vmid_ipa.
    """
    mm_ops = _mm_ops(mmu)
    if InjectedBug.SKIP_TLBI_VMID_IPA in mm_ops.bugs:
        return
    mm_ops.events.record(TlbiVmidIpa(mmu.vmid, ipa, level))


def __kvm_tlb_flush_vmid_ipa_nsh(mmu: KvmS2Mmu, ipa: int, level: int) -> None:
    """Invalidate the stage-2 entries for ipa on this CPU only (NSH).

    Kernel: __kvm_tlb_flush_vmid_ipa_nsh.
    """
    _mm_ops(mmu).events.record(TlbiVmidIpa(mmu.vmid, ipa, level, nsh=True))


def __kvm_tlb_flush_vmid(mmu: KvmS2Mmu) -> None:
    """Invalidate every entry of the VMID.

    Kernel: __kvm_tlb_flush_vmid.
    """
    mm_ops = _mm_ops(mmu)
    if InjectedBug.SKIP_TLBI_VMID in mm_ops.bugs:
        return
    mm_ops.events.record(TlbiVmid(mmu.vmid))


def __kvm_tlb_flush_vmid_range(mmu: KvmS2Mmu, start: int, pages: int) -> None:
    """Invalidate the stage-2 entries for pages starting at start (FEAT_TLBIRANGE).

    Kernel: __kvm_tlb_flush_vmid_range.
    """
    ops = _mm_ops(mmu)
    ops.events.record(TlbiVmidRange(mmu.vmid, start, pages, ops.g.page_size))


def kvm_tlb_flush_vmid_range(mmu: KvmS2Mmu, addr: int, size: int) -> None:
    """Invalidate [addr, addr + size): by range if the CPUs can, else the whole VMID.

    Kernel: kvm_tlb_flush_vmid_range.
    """
    ops = _mm_ops(mmu)
    if not ops.caps.tlb_range:
        __kvm_tlb_flush_vmid(mmu)
        return
    pages = size >> ops.g.page_shift
    while pages > 0:
        inval_pages = min(pages, MAX_TLBI_RANGE_PAGES)
        __kvm_tlb_flush_vmid_range(mmu, addr, inval_pages)
        addr += inval_pages << ops.g.page_shift
        pages -= inval_pages


def dsb(mm_ops: KvmPgtableMmOps, domain: str) -> None:
    """Record a DSB (domain: "ish", "ishst", "nsh", "nshst")."""
    mm_ops.events.record(Dsb(domain))


def isb(mm_ops: KvmPgtableMmOps) -> None:
    """Record an ISB."""
    mm_ops.events.record(Isb())
