"""Dirty logging: marking pages, GET_DIRTY_LOG and CLEAR_DIRTY_LOG.

Kernel: mark_page_dirty_in_slot, kvm_get_dirty_log_protect, kvm_clear_dirty_log_protect
(virt/kvm/kvm_main.c); kvm_arch_mmu_enable_log_dirty_pt_masked (arch/arm64/kvm/mmu.c).
"""

from __future__ import annotations

import re

from s2mmu.kvm.host import PAGE_SHIFT
from s2mmu.kvm.memslot import Memslot, memslot_is_logging
from s2mmu.kvm.vm import (
    KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE,
    Kvm,
    KvmError,
    kvm_dirty_log_manual_protect_and_init_set,
    kvm_mmu_split_huge_pages,
    stage2_wp_range,
)
from s2mmu.pgtable.errno import EINVAL, ENOENT
from s2mmu.pgtable.tlb import kvm_tlb_flush_vmid_range

_NONZERO = re.compile(b"[^\\x00]")


def mark_page_dirty_in_slot(kvm: Kvm, slot: Memslot, gfn: int) -> None:
    """Set gfn's bit in the slot's dirty bitmap, if the slot is logging.

    Kernel: mark_page_dirty_in_slot.
    """
    bitmap = kvm.dirty_bitmap.get(slot.id)
    if bitmap is None or not memslot_is_logging(slot):
        return
    rel = gfn - slot.base_gfn
    bitmap[rel >> 3] |= 1 << (rel & 7)


def dirty_gfns(kvm: Kvm, slot_id: int) -> list[int]:
    """Return the slot-relative page numbers whose dirty bit is set."""
    bitmap = kvm.dirty_bitmap.get(slot_id, bytearray())
    out = []
    for m in _NONZERO.finditer(bitmap):  # cost follows the set bits, not the slot size
        i, byte = m.start(), bitmap[m.start()]
        out += [i * 8 + b for b in range(8) if byte >> b & 1]
    return out


def kvm_arch_mmu_enable_log_dirty_pt_masked(kvm: Kvm, slot: Memslot, gfn_offset: int,
                                            mask: int) -> None:
    """Write-protect the pages of a 64-page mask again (and split them, if initially-set).

    Kernel: kvm_arch_mmu_enable_log_dirty_pt_masked.
    """
    base = slot.base_gfn + gfn_offset
    start = (base + (mask & -mask).bit_length() - 1) << PAGE_SHIFT
    end = (base + mask.bit_length()) << PAGE_SHIFT
    stage2_wp_range(kvm, start, end)
    if kvm_dirty_log_manual_protect_and_init_set(kvm):
        kvm_mmu_split_huge_pages(kvm, start, end)


def _words(bitmap: bytearray) -> list[int]:
    return list(memoryview(bitmap).cast("Q"))


def kvm_get_dirty_log_protect(kvm: Kvm, slot_id: int) -> bytes:
    """Return the slot's dirty bitmap; without manual protect, clear and re-protect it.

    Kernel: kvm_get_dirty_log_protect (then kvm_flush_remote_tlbs_memslot).
    """
    slot = kvm.memslots.get(slot_id)
    bitmap = kvm.dirty_bitmap.get(slot_id)
    if slot is None or bitmap is None:
        raise KvmError(-ENOENT, f"slot {slot_id} has no dirty bitmap")
    snapshot = bytes(bitmap)
    if kvm.manual_dirty_log_protect & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE:
        return snapshot
    flush = False
    view = memoryview(bitmap).cast("Q")
    for i, mask in enumerate(view):
        if mask:
            view[i] = 0
            kvm_arch_mmu_enable_log_dirty_pt_masked(kvm, slot, i * 64, mask)
            flush = True
    if flush:
        _flush_slot(kvm, slot)
    return snapshot


def kvm_clear_dirty_log_protect(kvm: Kvm, slot_id: int, first_page: int, num_pages: int,
                                user_bitmap: bytes) -> None:
    """Clear the given bits and re-protect those pages.

    The ioctl does not require manual protect (it is useful only with it).

    Kernel: kvm_clear_dirty_log_protect (its checks, in its order: first_page alignment
    -EINVAL, no slot or bitmap -ENOENT, range and num_pages alignment -EINVAL).
    """
    if first_page & 63:
        raise KvmError(-EINVAL, "first_page must be a multiple of 64")
    slot = kvm.memslots.get(slot_id)
    bitmap = kvm.dirty_bitmap.get(slot_id)
    if slot is None or bitmap is None:
        raise KvmError(-ENOENT, f"slot {slot_id} has no dirty bitmap")
    if first_page > slot.npages or num_pages > slot.npages - first_page:
        raise KvmError(-EINVAL, "range beyond the slot")
    if num_pages < slot.npages - first_page and num_pages & 63:
        raise KvmError(-EINVAL, "num_pages must be a multiple of 64 unless it ends the slot")
    view = memoryview(bitmap).cast("Q")
    user = memoryview(bytes(user_bitmap).ljust(((num_pages + 63) // 64) * 8, b"\0")).cast("Q")
    flush = False
    for j in range((num_pages + 63) // 64):
        i = first_page // 64 + j
        mask = view[i] & user[j]
        if mask:
            view[i] = view[i] & ~mask & 0xFFFF_FFFF_FFFF_FFFF
            kvm_arch_mmu_enable_log_dirty_pt_masked(kvm, slot, i * 64, mask)
            flush = True
    if flush:
        _flush_slot(kvm, slot)


def _flush_slot(kvm: Kvm, slot: Memslot) -> None:
    start = slot.base_gfn << PAGE_SHIFT
    kvm_tlb_flush_vmid_range(kvm.pgt.s2_mmu, start, slot.npages << PAGE_SHIFT)
