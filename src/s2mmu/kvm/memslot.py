"""Memslots: the guest-physical ranges userspace backs with host virtual memory.

A memslot is a hypervisor-context fact: frozen, replaced (never edited) by the
memory-region ioctl. Derived facts (is it logging, is it read-only, the HVA of a gfn)
are functions.

Kernel: struct kvm_memory_slot, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY
(include/linux/kvm_host.h, uapi/linux/kvm.h); memslot_is_logging (arch/arm64/kvm/mmu.c);
gfn_to_memslot, __gfn_to_hva_memslot, gfn_to_hva_memslot_prot (virt/kvm/kvm_main.c).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from s2mmu.kvm.host import PAGE_SHIFT

KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
KVM_MEM_READONLY = 1 << 1
KVM_MEM_VALID_FLAGS = KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY


@dataclass(frozen=True)
class Memslot:
    """One memslot: gfns [base_gfn, base_gfn + npages) backed from userspace_addr."""

    id: int
    base_gfn: int
    npages: int
    userspace_addr: int
    flags: int = 0

    @property
    def end_gfn(self) -> int:
        """Return the first gfn after the slot."""
        return self.base_gfn + self.npages


def memslot_is_logging(slot: Memslot) -> bool:
    """Return whether dirty logging is on (never for a read-only slot).

    Kernel: memslot_is_logging.
    """
    return bool(slot.flags & KVM_MEM_LOG_DIRTY_PAGES) and not slot.flags & KVM_MEM_READONLY


def memslot_is_readonly(slot: Memslot) -> bool:
    """Return whether the guest may not write the slot. Kernel: memslot_is_readonly."""
    return bool(slot.flags & KVM_MEM_READONLY)


def gfn_to_memslot(slots: Iterable[Memslot], gfn: int) -> Memslot | None:
    """Return the slot holding gfn, or None for a hole. Kernel: gfn_to_memslot."""
    for slot in slots:
        if slot.base_gfn <= gfn < slot.end_gfn:
            return slot
    return None


def gfn_to_hva_memslot(slot: Memslot, gfn: int) -> int:
    """Return the HVA backing gfn. Kernel: __gfn_to_hva_memslot."""
    return slot.userspace_addr + ((gfn - slot.base_gfn) << PAGE_SHIFT)


def hva_to_gfn_memslot(slot: Memslot, hva: int) -> int:
    """Return the gfn an HVA of the slot backs. Kernel: hva_to_gfn_memslot."""
    return slot.base_gfn + ((hva - slot.userspace_addr) >> PAGE_SHIFT)


def gfn_to_hva_memslot_prot(slot: Memslot | None, gfn: int) -> tuple[int | None, bool]:
    """Return (HVA or None for a hole, whether the guest may write it).

    Kernel: gfn_to_hva_memslot_prot (KVM_HVA_ERR_BAD is None here).
    """
    if slot is None:
        return None, False
    return gfn_to_hva_memslot(slot, gfn), not memslot_is_readonly(slot)
