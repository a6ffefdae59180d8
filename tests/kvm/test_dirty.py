"""Dirty logging: enable, faults, GET/CLEAR_DIRTY_LOG, initially-all-set, disable."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from s2mmu.kvm.dirty import (
    SlotPage,
    dirty_gfns,
    kvm_clear_dirty_log_protect,
    kvm_get_dirty_log_protect,
)
from s2mmu.kvm.fault import PgtableOp
from s2mmu.kvm.invariants import check_invariants, leaf_writable, stage2_leaves
from s2mmu.kvm.memslot import KVM_MEM_LOG_DIRTY_PAGES
from s2mmu.kvm.vm import (
    KVM_DIRTY_LOG_INITIALLY_SET,
    KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE,
    set_slot_flags,
)
from tests.kvm.helpers import RAM_IPA, add_ram, new_vm, touch

MB2 = 2 << 20


def populated(chunk: int = 0):  # type: ignore[no-untyped-def]
    kvm, vcpu = new_vm()
    kvm.pgt.s2_mmu.split_page_chunk_size = chunk
    add_ram(kvm, size=4 << 20)
    touch(kvm, vcpu, RAM_IPA, "write")
    touch(kvm, vcpu, RAM_IPA + MB2, "write")
    assert [lf.size for lf in stage2_leaves(kvm)] == [MB2, MB2]
    return kvm, vcpu


def test_enable_write_protects_and_keeps_blocks_without_a_chunk_size() -> None:
    kvm, _ = populated()
    set_slot_flags(kvm, 0, KVM_MEM_LOG_DIRTY_PAGES)
    leaves = stage2_leaves(kvm)
    assert [lf.size for lf in leaves] == [MB2, MB2]
    assert not any(leaf_writable(lf) for lf in leaves)


def test_enable_eager_splits_with_a_chunk_size() -> None:
    kvm, _ = populated(chunk=MB2)
    set_slot_flags(kvm, 0, KVM_MEM_LOG_DIRTY_PAGES)
    leaves = stage2_leaves(kvm)
    assert len(leaves) == 1024 and {lf.size for lf in leaves} == {4096}
    assert not any(leaf_writable(lf) for lf in leaves)


def test_read_fault_in_a_logging_slot_maps_readonly_and_is_not_dirty() -> None:
    kvm, vcpu = new_vm()
    add_ram(kvm, size=4 << 20, flags=KVM_MEM_LOG_DIRTY_PAGES)
    out = touch(kvm, vcpu, RAM_IPA + 0x5000)
    assert out is not None and out.mapping is not None and out.mapping.size == 4096
    assert not leaf_writable(stage2_leaves(kvm)[0])
    assert dirty_gfns(kvm, 0) == []
    touch(kvm, vcpu, RAM_IPA + 0x5000, "write")
    assert dirty_gfns(kvm, 0) == [5]
    assert check_invariants(kvm) == []


def test_get_dirty_log_clears_and_write_protects_again() -> None:
    kvm, vcpu = new_vm()
    add_ram(kvm, size=4 << 20, flags=KVM_MEM_LOG_DIRTY_PAGES)
    touch(kvm, vcpu, RAM_IPA + 0x3000, "write")
    bitmap = kvm_get_dirty_log_protect(kvm, 0)
    assert bitmap[0] == 1 << 3
    assert dirty_gfns(kvm, 0) == []
    assert not leaf_writable(stage2_leaves(kvm)[0])
    out = touch(kvm, vcpu, RAM_IPA + 0x3000, "write")
    assert out is not None and out.mapping is not None and out.mapping.op is PgtableOp.RELAX_PERMS
    assert dirty_gfns(kvm, 0) == [3]


def test_manual_protect_get_does_not_clear_but_clear_does() -> None:
    kvm, vcpu = new_vm()
    kvm.manual_dirty_log_protect = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE
    add_ram(kvm, size=4 << 20, flags=KVM_MEM_LOG_DIRTY_PAGES)
    touch(kvm, vcpu, RAM_IPA + 0x3000, "write")
    kvm_get_dirty_log_protect(kvm, 0)
    assert dirty_gfns(kvm, 0) == [3]
    assert leaf_writable(stage2_leaves(kvm)[0])
    kvm_clear_dirty_log_protect(kvm, 0, 0, 1024, b"\xff" * 128)
    assert dirty_gfns(kvm, 0) == []
    assert not leaf_writable(stage2_leaves(kvm)[0])


def test_initially_set_starts_all_dirty_and_leaves_blocks_until_clear() -> None:
    kvm, vcpu = populated(chunk=MB2)
    kvm.manual_dirty_log_protect = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET
    set_slot_flags(kvm, 0, KVM_MEM_LOG_DIRTY_PAGES)
    assert len(dirty_gfns(kvm, 0)) == 1024
    assert [lf.size for lf in stage2_leaves(kvm)] == [MB2, MB2]  # nothing done at enable
    assert check_invariants(kvm) == []
    mask = bytearray(128)
    mask[0] = 1  # clear page 0 only: its 64-page word's range is protected and split
    kvm_clear_dirty_log_protect(kvm, 0, 0, 1024, bytes(mask))
    sizes = [lf.size for lf in stage2_leaves(kvm)]
    assert sizes.count(MB2) == 1 and sizes.count(4096) == 512
    assert check_invariants(kvm) == []


def test_disable_lets_a_write_collapse_pages_into_a_block() -> None:
    kvm, vcpu = populated(chunk=MB2)
    set_slot_flags(kvm, 0, KVM_MEM_LOG_DIRTY_PAGES)
    set_slot_flags(kvm, 0, 0)
    assert 0 not in kvm.dirty_bitmap
    out = touch(kvm, vcpu, RAM_IPA + 0x7000, "write")
    assert out is not None and out.mapping is not None
    assert (out.mapping.op, out.mapping.size) == (PgtableOp.MAP, MB2)
    assert sorted({lf.size for lf in stage2_leaves(kvm)}) == [4096, MB2]


def test_clear_dirty_log_works_without_manual_protect() -> None:
    # KVM_CLEAR_DIRTY_LOG does not check KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2.
    kvm, vcpu = new_vm()
    add_ram(kvm, size=4 << 20, flags=KVM_MEM_LOG_DIRTY_PAGES)
    touch(kvm, vcpu, RAM_IPA + 0x3000, "write")
    kvm_clear_dirty_log_protect(kvm, 0, 0, 1024, b"\xff" * 128)
    assert dirty_gfns(kvm, 0) == []
    assert not leaf_writable(stage2_leaves(kvm)[0])


def test_clear_dirty_log_checks_in_the_kernel_order() -> None:
    import pytest

    from s2mmu.kvm.vm import KvmError

    kvm, _ = new_vm()
    add_ram(kvm, size=4 << 20, flags=KVM_MEM_LOG_DIRTY_PAGES)
    cases = [((7, 1, 64), -22),      # first_page & 63 before the slot lookup
             ((7, 0, 64), -2),       # then no slot / no bitmap
             ((0, 0, 2048), -22),    # then the range
             ((0, 0, 65), -22),      # and num_pages not ending the slot
             ((0, 960, 64), None)]   # the slot's last 64 pages
    for (slot, first, num), errno in cases:
        if errno is None:
            kvm_clear_dirty_log_protect(kvm, slot, first, num, b"\xff" * 8)
            continue
        with pytest.raises(KvmError) as e:
            kvm_clear_dirty_log_protect(kvm, slot, first, num, b"\xff" * 16)
        assert e.value.errno == errno


def test_dirty_bit_without_a_handled_write_is_reported() -> None:
    from s2mmu.kvm.invariants import UnexplainedDirtyBit, check_dirty_bits

    kvm, vcpu = new_vm()
    add_ram(kvm, size=4 << 20, flags=KVM_MEM_LOG_DIRTY_PAGES)
    out = touch(kvm, vcpu, RAM_IPA + 0x3000, "write")
    assert out is not None and out.dirtied == (SlotPage(0, 3),)
    assert check_dirty_bits(kvm, {0: {3}}) == []
    kvm.dirty_bitmap[0][1] |= 1  # page 8, never written
    assert check_dirty_bits(kvm, {0: {3}}) == [UnexplainedDirtyBit(0, 8, 0x4000_8000)]


def _logging_slot(npages: int, manual: bool = True):  # type: ignore[no-untyped-def]
    kvm, vcpu = new_vm()
    if manual:
        kvm.manual_dirty_log_protect = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE
    add_ram(kvm, size=npages << 12, flags=KVM_MEM_LOG_DIRTY_PAGES, thp=False)
    return kvm, vcpu


def test_clear_dirty_log_of_a_65_page_slot_clears_the_partial_last_word() -> None:
    # Slot of 0x41000 bytes: its bitmap's last 64-bit word holds one page (64).
    kvm, vcpu = _logging_slot(0x41)
    for page in (0, 63, 64):
        touch(kvm, vcpu, RAM_IPA + (page << 12), "write")
    assert dirty_gfns(kvm, 0) == [0, 63, 64]
    kvm_clear_dirty_log_protect(kvm, 0, 0, 0x41, bytes(16))
    assert dirty_gfns(kvm, 0) == [0, 63, 64]
    kvm_clear_dirty_log_protect(kvm, 0, 64, 1, b"\x01" + bytes(7))
    assert dirty_gfns(kvm, 0) == [0, 63]
    kvm_clear_dirty_log_protect(kvm, 0, 0, 0x41, b"\xff" * 16)
    assert dirty_gfns(kvm, 0) == []
    assert not any(leaf_writable(lf) for lf in stage2_leaves(kvm))


def test_clear_dirty_log_reads_align_64_pages_of_user_bitmap_or_fails_efault() -> None:
    import pytest

    from s2mmu.kvm.dirty import kvm_clear_dirty_log_bytes
    from s2mmu.kvm.vm import KvmError

    assert [kvm_clear_dirty_log_bytes(n) for n in (0, 1, 64, 65, 200)] == [0, 8, 8, 16, 32]
    kvm, vcpu = _logging_slot(0x41)
    touch(kvm, vcpu, RAM_IPA + (64 << 12), "write")
    with pytest.raises(KvmError) as e:
        kvm_clear_dirty_log_protect(kvm, 0, 0, 0x41, b"\xff" * 9)
    assert (e.value.errno, e.value.why) == (-14, "the user bitmap holds 9 bytes, 65 pages need 16")
    assert dirty_gfns(kvm, 0) == [64]


def _clear_errno(npages: int, first: int, num: int) -> int | None:
    """The kernel's refusals of kvm_clear_dirty_log_protect, for an existing logging slot."""
    if first & 63 or first > npages or num > npages - first:
        return -22
    if num < npages - first and num & 63:
        return -22
    return None


@settings(max_examples=150, deadline=None)
@given(npages=st.integers(1, 200), data=st.data())
def test_get_and_clear_dirty_log_over_any_slot_size(npages: int, data: st.DataObject) -> None:
    from s2mmu.kvm.dirty import kvm_clear_dirty_log_bytes, mark_page_dirty_in_slot
    from s2mmu.kvm.vm import KvmError

    kvm, _ = _logging_slot(npages, manual=data.draw(st.booleans(), "manual"))
    slot = kvm.memslots[0]
    dirty = data.draw(st.sets(st.integers(0, npages - 1)), "dirty")
    for page in dirty:
        mark_page_dirty_in_slot(kvm, slot, slot.base_gfn + page)
    manual = bool(kvm.manual_dirty_log_protect)
    bitmap = kvm_get_dirty_log_protect(kvm, 0)
    assert len(bitmap) == kvm_clear_dirty_log_bytes(npages)
    assert [p for p in range(len(bitmap) * 8) if bitmap[p >> 3] >> (p & 7) & 1] == sorted(dirty)
    left = set(dirty) if manual else set()
    assert set(dirty_gfns(kvm, 0)) == left
    first = data.draw(st.integers(0, npages + 64), "first_page")
    num = data.draw(st.integers(0, npages + 64), "num_pages")
    user = data.draw(st.binary(min_size=kvm_clear_dirty_log_bytes(num),
                               max_size=kvm_clear_dirty_log_bytes(num) + 8), "user")
    want = _clear_errno(npages, first, num)
    try:
        kvm_clear_dirty_log_protect(kvm, 0, first, num, user)
    except KvmError as e:
        assert e.errno == want
        assert set(dirty_gfns(kvm, 0)) == left
        return
    assert want is None
    cleared = {first + i for i in range(num) if user[i >> 3] >> (i & 7) & 1}
    assert set(dirty_gfns(kvm, 0)) == left - cleared
    assert check_invariants(kvm) == []
