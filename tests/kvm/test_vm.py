"""Memslot ioctls and the prepare-time checks (kvm_arch_prepare_memory_region, kvm_main.c)."""

from __future__ import annotations

import pytest

from s2mmu.kvm.host import HostFeatures, MemType, Vma, VmaKind
from s2mmu.kvm.invariants import leaf_writable, stage2_leaves
from s2mmu.kvm.memslot import KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY
from s2mmu.kvm.vm import (
    Kvm,
    KvmError,
    KvmVcpu,
    MemoryChange,
    Refusal,
    kvm_create_vm,
    kvm_set_memory_region,
)
from s2mmu.pgtable.profile import V6_1, V6_12, BehaviourProfile
from tests.kvm.helpers import FWB_DIC, RAM_HVA, RAM_IPA, add_bar, add_ram, new_vm, touch


def errno_of(fn) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(KvmError) as e:
        fn()
    return e.value.errno


@pytest.mark.parametrize("features, ok", [
    (HostFeatures(fwb=True, dic=True), True),
    (HostFeatures(fwb=True, dic=False), False),
    (HostFeatures(fwb=False, dic=True), False),
])
def test_cacheable_pfnmap_slot_needs_fwb_and_dic(features: HostFeatures, ok: bool) -> None:
    kvm, _ = new_vm(features)
    if ok:
        add_bar(kvm, MemType.NORMAL)
    else:
        assert errno_of(lambda: add_bar(kvm, MemType.NORMAL)) == -22


def test_noncacheable_pfnmap_slot_is_fine_without_fwb() -> None:
    kvm, _ = new_vm(HostFeatures())
    add_bar(kvm, MemType.DEVICE)


def test_pfnmap_slot_with_dirty_logging_is_refused() -> None:
    kvm, _ = new_vm()
    assert errno_of(lambda: add_bar(kvm, MemType.DEVICE, flags=KVM_MEM_LOG_DIRTY_PAGES)) == -22


def test_slot_beyond_the_ipa_space_is_efault() -> None:
    kvm, _ = new_vm(ipa_bits=32)
    assert errno_of(lambda: add_ram(kvm, ipa=0xFFE0_0000, size=4 << 20)) == -14


def test_mte_vm_needs_mte_allowed_vmas() -> None:
    kvm, _ = new_vm(HostFeatures(fwb=True, dic=True, mte=True), mte=True)
    assert errno_of(lambda: add_ram(kvm)) == -22
    kvm2, _ = new_vm(HostFeatures(fwb=True, dic=True, mte=True), mte=True)
    add_ram(kvm2, mte_allowed=True)


def test_ipa_size_is_bounded_by_the_host() -> None:
    from s2mmu.arch.memory import PhysMem
    from s2mmu.kvm.host import HostMm

    host = HostMm(PhysMem(), HostFeatures(pa_bits=40))
    assert errno_of(lambda: kvm_create_vm(host, 44)) == -22
    assert kvm_create_vm(host, 0).ipa_bits == 40


def test_overlap_is_eexist_and_unaligned_is_einval() -> None:
    kvm, _ = new_vm()
    add_ram(kvm)
    kvm.host.mmap(Vma(0x7F10_0000_0000, 0x7F10_0040_0000, VmaKind.ANON))
    assert errno_of(lambda: kvm_set_memory_region(kvm, 1, 0, RAM_IPA, 4 << 20,
                                                  0x7F10_0000_0000)) == -17
    assert errno_of(lambda: kvm_set_memory_region(kvm, 1, 0, 0x123, 4 << 20,
                                                  0x7F10_0000_0000)) == -22


def test_readonly_flag_cannot_change_on_a_live_slot() -> None:
    kvm, _ = new_vm()
    add_ram(kvm)
    assert errno_of(lambda: kvm_set_memory_region(kvm, 0, KVM_MEM_READONLY, RAM_IPA,
                                                  64 << 20, RAM_HVA)) == -22


def test_move_and_delete_unmap_the_old_range() -> None:
    kvm, vcpu = new_vm()
    add_ram(kvm)
    touch(kvm, vcpu, RAM_IPA)
    assert stage2_leaves(kvm)
    assert kvm_set_memory_region(kvm, 0, 0, 0x8000_0000, 64 << 20, RAM_HVA) is MemoryChange.MOVE
    assert stage2_leaves(kvm) == []
    touch(kvm, vcpu, 0x8000_0000)
    assert kvm_set_memory_region(kvm, 0, 0, 0, 0, 0) is MemoryChange.DELETE
    assert stage2_leaves(kvm) == []


def test_munmap_bumps_the_sequence_and_unmaps() -> None:
    kvm, vcpu = new_vm()
    add_ram(kvm)
    touch(kvm, vcpu, RAM_IPA)
    seq = kvm.mmu_invalidate_seq
    kvm.host.munmap(RAM_HVA, 2 << 20)
    assert kvm.mmu_invalidate_seq == seq + 1 and kvm.mmu_invalidate_in_progress == 0
    assert stage2_leaves(kvm) == []


def test_migration_moves_the_page_and_stage2_refaults_to_the_new_pa() -> None:
    kvm, vcpu = new_vm(FWB_DIC)
    add_ram(kvm, thp=False)
    first = touch(kvm, vcpu, RAM_IPA, "write")  # a read would map the zero page
    assert first is not None and first.mapping is not None
    assert kvm.host.migrate(RAM_HVA)
    assert stage2_leaves(kvm) == []
    again = touch(kvm, vcpu, RAM_IPA)
    assert again is not None and again.mapping is not None
    assert again.mapping.pa != first.mapping.pa
    assert again.mapping.pa == kvm.host.hva_to_pa(RAM_HVA)


def test_invalidation_outside_every_memslot_leaves_mmu_seq_alone() -> None:
    # __kvm_handle_hva_range calls kvm_mmu_invalidate_begin/end only once a memslot is found.
    kvm, vcpu = new_vm()
    add_ram(kvm)
    touch(kvm, vcpu, RAM_IPA)
    kvm.host.mmap(Vma(0x7F30_0000_0000, 0x7F30_0020_0000, VmaKind.ANON, name="not-guest"))
    kvm.host.populate(0x7F30_0000_0000)
    kvm.host.munmap(0x7F30_0000_0000, 2 << 20)
    assert (kvm.mmu_invalidate_seq, kvm.mmu_invalidate_in_progress) == (0, 0)
    assert stage2_leaves(kvm)


@pytest.mark.parametrize(("gpa", "hva", "why"), [
    (0xFFFF_FFFF_FFFF_F000, 0x7F00_0000_0000,
     "guest_phys_addr 0xfffffffffffff000 + memory_size 0x2000 wraps"),
    (0x4000_0000, 0xFFFF_FFFF_FFFF_F000,
     "userspace_addr 0xfffffffffffff000 + memory_size 0x2000 is not a user address range"),
])
def test_a_region_that_wraps_is_einval(gpa: int, hva: int, why: str) -> None:
    kvm, _ = new_vm()
    with pytest.raises(KvmError) as e:
        kvm_set_memory_region(kvm, 1, 0, gpa, 0x2000, hva)
    assert (e.value.errno, e.value.why) == (-22, why)
    assert kvm.memslots == {}


@pytest.mark.parametrize(("slot", "why"), [
    (0x7FFF, "slot 0x7fff: id 32767 is not below KVM_USER_MEM_SLOTS (32767)"),
    (0x1_0000, "slot 0x10000: address space 1 is not below 1 (arm64 has one)"),
    (0xFFFF_FFFF, "slot 0xffffffff: id 65535 is not below KVM_USER_MEM_SLOTS (32767)"),
])
def test_a_slot_number_beyond_the_ids_or_address_spaces_is_einval(slot: int, why: str) -> None:
    kvm, _ = new_vm()
    with pytest.raises(KvmError) as e:
        kvm_set_memory_region(kvm, slot, 0, RAM_IPA, 0x2000, RAM_HVA)
    assert (e.value.errno, e.value.reason, e.value.why) == (-22, Refusal.SLOT_ID, why)
    assert kvm.memslots == {}


def test_the_last_slot_id_is_accepted() -> None:
    kvm, _ = new_vm()
    assert kvm_set_memory_region(kvm, 0x7FFE, 0, RAM_IPA, 0x2000, RAM_HVA) is \
        MemoryChange.CREATE


def cow_vm(profile: BehaviourProfile, pages: tuple[int, ...]) -> tuple[Kvm, KvmVcpu]:
    """A VM over small anonymous pages whose given pages were read (the zero page)."""
    kvm, vcpu = new_vm()
    kvm.env.profile = profile
    add_ram(kvm, size=4 << 20, thp=False)
    for page in pages:
        touch(kvm, vcpu, RAM_IPA + page * 0x1000)
    return kvm, vcpu


def test_change_pte_maps_the_copy_of_a_cow_read_only_under_6_1() -> None:
    """6.1's kvm_set_spte_gfn (change_pte, inside wp_page_copy's invalidation) maps the new
    page PROT_R where the unmap kept the L3 table: the retried write is a permission fault
    that finds the copy mapped (real 6.1, zero-page-cow step 4)."""
    kvm, vcpu = cow_vm(V6_1, (1, 2))
    first = touch(kvm, vcpu, RAM_IPA + 0x1000, "write")
    assert first is not None and first.mapping is None  # invalidated: retried
    (leaf, _) = [lf for lf in stage2_leaves(kvm) if lf.ipa in (RAM_IPA + 0x1000,
                                                                RAM_IPA + 0x2000)]
    assert leaf.ipa == RAM_IPA + 0x1000 and not leaf_writable(leaf)
    assert leaf.pa == kvm.host.hva_to_pa(RAM_HVA + 0x1000)
    again = touch(kvm, vcpu, RAM_IPA + 0x1000, "write")
    assert again is not None and again.mapping is not None
    assert leaf_writable(next(lf for lf in stage2_leaves(kvm) if lf.ipa == RAM_IPA + 0x1000))


def test_without_change_pte_the_copy_is_left_unmapped() -> None:
    kvm, vcpu = cow_vm(V6_12, (1, 2))
    touch(kvm, vcpu, RAM_IPA + 0x1000, "write")
    assert [lf.ipa for lf in stage2_leaves(kvm)] == [RAM_IPA + 0x2000]


def test_change_pte_without_a_last_level_table_maps_nothing() -> None:
    """The unmap of the only page of an L3 table frees the table; change_pte has no
    memcache (-ENOMEM, ignored), so the retried write is a translation fault."""
    kvm, vcpu = cow_vm(V6_1, (1,))
    touch(kvm, vcpu, RAM_IPA + 0x1000, "write")
    assert stage2_leaves(kvm) == []


def test_munmap_of_one_page_unmaps_the_stage_2_of_its_whole_pmd_range() -> None:
    """The VMA split runs split_huge_pmd_address, which invalidates the 2M range whatever
    the PMD holds (real 6.1: a neighbour in the same 2M is unmapped, one 2M away is kept)."""
    kvm, vcpu = new_vm()
    add_ram(kvm, size=4 << 20, thp=False)
    for off in (0x49000, 0x149000, 0x249000):
        touch(kvm, vcpu, RAM_IPA + off, "write")
    assert kvm.host.munmap(RAM_HVA + 0x100000, 0x1000) == 0
    assert [lf.ipa for lf in stage2_leaves(kvm)] == [RAM_IPA + 0x249000]


def test_a_read_of_hugetlb_maps_a_read_only_block_a_write_relaxes_it_in_place() -> None:
    """Real 6.1 (host-events, after MADV_DONTNEED): the read maps the 2M block R--; the
    write's permission fault makes the host entry writable in place (hugetlb_wp reuse)
    and relaxes the block to RW at the same PA."""
    kvm, vcpu = new_vm()
    add_ram(kvm, size=4 << 20, kind=VmaKind.HUGETLB, thp=False, hugetlb_shift=21)
    touch(kvm, vcpu, RAM_IPA + 0x1000)
    (ro,) = stage2_leaves(kvm)
    assert ro.size == 2 << 20 and not leaf_writable(ro)
    out = touch(kvm, vcpu, RAM_IPA + 0x3000, "write")
    assert out is not None and out.mapping is not None
    (rw,) = stage2_leaves(kvm)
    assert rw.size == 2 << 20 and leaf_writable(rw) and rw.pa == ro.pa
