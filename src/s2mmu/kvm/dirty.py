"""Dirty logging: marking pages, GET_DIRTY_LOG and CLEAR_DIRTY_LOG.

Kernel: mark_page_dirty_in_slot, kvm_get_dirty_log_protect, kvm_clear_dirty_log_protect
(virt/kvm/kvm_main.c); kvm_arch_mmu_enable_log_dirty_pt_masked (arch/arm64/kvm/mmu.c).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from s2mmu.kvm.errno import EFAULT
from s2mmu.kvm.host import PAGE_SHIFT
from s2mmu.kvm.memslot import Memslot, memslot_is_logging
from s2mmu.kvm.vm import (
    KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE,
    Kvm,
    KvmError,
    Refusal,
    kvm_dirty_log_manual_protect_and_init_set,
    kvm_mmu_split_huge_pages,
    stage2_wp_range,
)
from s2mmu.pgtable.errno import EINVAL, ENOENT
from s2mmu.pgtable.tlb import kvm_tlb_flush_vmid_range

_NONZERO = re.compile(b"[^\\x00]")


@dataclass(frozen=True)
class SlotPage:
    """A page of a memslot: the slot's id and the page's offset in the slot (its bit in
    the slot's dirty bitmap, as KVM_GET_DIRTY_LOG and KVM_CLEAR_DIRTY_LOG number it)."""

    slot: int
    page: int


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


def kvm_get_dirty_log_protect(kvm: Kvm, slot_id: int) -> bytes:
    """Return the slot's dirty bitmap; without manual protect, clear and re-protect it.

    Kernel: kvm_get_dirty_log_protect (then kvm_flush_remote_tlbs_memslot).
    """
    slot = kvm.memslots.get(slot_id)
    bitmap = kvm.dirty_bitmap.get(slot_id)
    if slot is None or bitmap is None:
        raise KvmError(-ENOENT, Refusal.NO_DIRTY_BITMAP, f"slot {slot_id} has no dirty bitmap")
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


def kvm_clear_dirty_log_bytes(num_pages: int) -> int:
    """Return how many bytes of the user's bitmap KVM_CLEAR_DIRTY_LOG reads for num_pages.

    Kernel: kvm_clear_dirty_log_protect, n = ALIGN(log->num_pages, BITS_PER_LONG) / 8.
    """
    return (num_pages + 63) // 64 * 8


def kvm_clear_dirty_log_protect(kvm: Kvm, slot_id: int, first_page: int, num_pages: int,
                                user_bitmap: bytes) -> None:
    """Clear the given bits and re-protect those pages.

    The ioctl does not require manual protect (it is useful only with it). The user's
    bitmap is read as DIV_ROUND_UP(num_pages, 64) 64-bit words; the last one may be
    partial only where the range ends the slot, and its bits past the slot's end clear
    nothing (they are never set in the slot's bitmap). A user buffer shorter than those
    words is -EFAULT, as copy_from_user would fail on it.

    Kernel: kvm_clear_dirty_log_protect (its checks, in its order: first_page not a
    multiple of 64 -EINVAL; no slot or no bitmap -ENOENT; first_page beyond the slot,
    num_pages beyond it, or num_pages not a multiple of 64 unless it reaches the slot's
    end -EINVAL; copy_from_user of ALIGN(num_pages, 64) / 8 bytes -EFAULT).
    """
    if first_page & 63:
        raise KvmError(-EINVAL, Refusal.DIRTY_LOG_RANGE, "first_page must be a multiple of 64")
    slot = kvm.memslots.get(slot_id)
    bitmap = kvm.dirty_bitmap.get(slot_id)
    if slot is None or bitmap is None:
        raise KvmError(-ENOENT, Refusal.NO_DIRTY_BITMAP, f"slot {slot_id} has no dirty bitmap")
    if first_page > slot.npages or num_pages > slot.npages - first_page:
        raise KvmError(-EINVAL, Refusal.DIRTY_LOG_RANGE, "range beyond the slot")
    if num_pages < slot.npages - first_page and num_pages & 63:
        raise KvmError(-EINVAL, Refusal.DIRTY_LOG_RANGE,
                       "num_pages must be a multiple of 64 unless it ends the slot")
    n = kvm_clear_dirty_log_bytes(num_pages)
    if len(user_bitmap) < n:
        raise KvmError(-EFAULT, Refusal.USER_BITMAP_TOO_SHORT,
                       f"the user bitmap holds {len(user_bitmap)} bytes, {num_pages} pages "
                       f"need {n}")
    view = memoryview(bitmap).cast("Q")
    flush = False
    for j in range(n // 8):
        i = first_page // 64 + j
        mask = view[i] & int.from_bytes(user_bitmap[j * 8:j * 8 + 8], "little")
        if mask:
            view[i] &= ~mask & 0xFFFF_FFFF_FFFF_FFFF
            kvm_arch_mmu_enable_log_dirty_pt_masked(kvm, slot, i * 64, mask)
            flush = True
    if flush:
        _flush_slot(kvm, slot)


def _flush_slot(kvm: Kvm, slot: Memslot) -> None:
    start = slot.base_gfn << PAGE_SHIFT
    kvm_tlb_flush_vmid_range(kvm.pgt.s2_mmu, start, slot.npages << PAGE_SHIFT)
