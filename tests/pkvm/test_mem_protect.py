"""Host stage 2 and the ownership transitions, with every error value they return."""

from __future__ import annotations

import pytest

import s2mmu.pkvm.mem_protect as mp
from s2mmu.pgtable.errno import E2BIG, EAGAIN, EINVAL, ENOENT, ENOMEM, EPERM
from s2mmu.pgtable.events import Warn
from s2mmu.pgtable.invariants import check_refcounts, scan_tree
from s2mmu.pgtable.profile import V6_3, V6_19
from s2mmu.pgtable.prot import KVM_PGTABLE_PROT_R, KVM_PGTABLE_PROT_RW, KVM_PGTABLE_PROT_RWX
from s2mmu.pgtable.pte import PkvmComponentId, kvm_invalid_pte_owner, kvm_pte_valid
from s2mmu.pgtable.walk import kvm_pgtable_get_leaf
from s2mmu.pkvm.errno import EBUSY
from s2mmu.pkvm.mem_protect import HYP_VA_OFFSET, RAM_BASE, Pkvm, PkvmHypVm, new_hyp_vm, new_pkvm
from s2mmu.pkvm.states import (
    PKVM_NOPAGE,
    PKVM_PAGE_OWNED,
    PKVM_PAGE_SHARED_BORROWED,
    PKVM_PAGE_SHARED_OWNED,
    PkvmPageState,
)

SZ_4K = 0x1000
SZ_2M = 0x20_0000
PFN = RAM_BASE // SZ_4K
MMIO = 0x1000_0000
RWX = KVM_PGTABLE_PROT_RWX


@pytest.fixture
def pkvm() -> Pkvm:
    return new_pkvm()


@pytest.fixture
def vm(pkvm: Pkvm) -> PkvmHypVm:
    return new_hyp_vm(pkvm, 1, protected=False)


@pytest.fixture
def pvm(pkvm: Pkvm) -> PkvmHypVm:
    return new_hyp_vm(pkvm, 2, protected=True)


def host_state(pkvm: Pkvm, pfn: int) -> PkvmPageState:
    return pkvm.vmemmap.hyp_phys_to_page(pfn * SZ_4K).host_state


def hyp_state(pkvm: Pkvm, pfn: int) -> PkvmPageState:
    pte = kvm_pgtable_get_leaf(pkvm.hyp_pgt, pfn * SZ_4K + HYP_VA_OFFSET).pte
    return mp.hyp_get_page_state(pkvm, pte)


def guest_state(vm: PkvmHypVm, gfn: int) -> PkvmPageState:
    return mp.guest_get_page_state(kvm_pgtable_get_leaf(vm.pgt, gfn * SZ_4K).pte)


def host_pte(pkvm: Pkvm, pa: int) -> int:
    return kvm_pgtable_get_leaf(pkvm.host_pgt, pa).pte


def hyp_va(pfn: int) -> int:
    return pfn * SZ_4K + HYP_VA_OFFSET


def no_warnings(pkvm: Pkvm) -> bool:
    return not pkvm.env.events.of_type(Warn)


# ---------------------------------------------------------------------------------------
# Boot and the host stage 2.


def test_boot_gives_ram_to_the_host_and_the_carve_outs_to_the_hypervisor(pkvm: Pkvm) -> None:
    assert host_state(pkvm, PFN) is PKVM_PAGE_OWNED and hyp_state(pkvm, PFN) is PKVM_NOPAGE
    pool = mp.HYP_POOL_BASE // SZ_4K
    assert host_state(pkvm, pool) is PKVM_NOPAGE and hyp_state(pkvm, pool) is PKVM_PAGE_OWNED
    assert kvm_invalid_pte_owner(host_pte(pkvm, mp.HYP_POOL_BASE)) is PkvmComponentId.PKVM_ID_HYP
    assert host_pte(pkvm, RAM_BASE) == 0  # nothing mapped until the host touches it


def test_host_fault_maps_the_largest_block_inside_the_memory_region(pkvm: Pkvm) -> None:
    assert mp.host_stage2_idmap(pkvm, RAM_BASE + 0x5123) == 0
    leaf = kvm_pgtable_get_leaf(pkvm.host_pgt, RAM_BASE)
    assert kvm_pte_valid(leaf.pte) and leaf.level == 2  # RAM is exactly one 2M block
    # Default entries are not counted: the level-2 table holds just its own reference.
    assert check_refcounts(scan_tree(pkvm.host_pgt)) == []


def test_host_fault_next_to_annotations_maps_pages_only(pkvm: Pkvm) -> None:
    assert mp.__pkvm_host_donate_hyp(pkvm, PFN + 1, 1) == 0
    assert mp.host_stage2_idmap(pkvm, RAM_BASE) == 0
    assert kvm_pgtable_get_leaf(pkvm.host_pgt, RAM_BASE).level == 3
    assert mp.host_stage2_idmap(pkvm, RAM_BASE + SZ_4K) == -EPERM
    assert not kvm_pte_valid(host_pte(pkvm, RAM_BASE + SZ_4K))


def test_host_fault_on_a_mapped_page_is_eagain(pkvm: Pkvm) -> None:
    assert mp.host_stage2_idmap(pkvm, RAM_BASE) == 0
    assert mp.host_stage2_idmap(pkvm, RAM_BASE + 8) == -EAGAIN


def test_mmio_faults_map_read_write_blocks_of_the_gap(pkvm: Pkvm) -> None:
    assert mp.host_stage2_idmap(pkvm, MMIO) == 0
    leaf = kvm_pgtable_get_leaf(pkvm.host_pgt, MMIO)
    assert leaf.level == 1  # the gap below RAM holds whole 1G blocks
    from s2mmu.pgtable.prot import kvm_pgtable_stage2_pte_prot

    assert kvm_pgtable_stage2_pte_prot(leaf.pte) == KVM_PGTABLE_PROT_RW


def test_non_default_host_prot_is_mapped_page_by_page(pkvm: Pkvm) -> None:
    assert mp.host_stage2_idmap_locked(pkvm, RAM_BASE, SZ_2M, KVM_PGTABLE_PROT_R) == 0
    assert kvm_pgtable_get_leaf(pkvm.host_pgt, RAM_BASE).level == 3
    assert check_refcounts(scan_tree(pkvm.host_pgt)) == []


def test_enomem_recycles_device_mappings_and_retries() -> None:
    boot = new_pkvm().host_s2_pool.in_use()
    pkvm = new_pkvm(host_s2_pool_pages=boot + 2)
    mmio = RAM_BASE + SZ_2M + 0x2_0000  # in the gap after the no-map region: pages only
    assert mp.host_stage2_idmap(pkvm, mmio) == 0
    assert kvm_pgtable_get_leaf(pkvm.host_pgt, mmio).level == 3
    assert pkvm.host_s2_pool.in_use() == pkvm.host_s2_pool.npages
    assert mp.__host_stage2_idmap(pkvm, RAM_BASE, RAM_BASE + SZ_4K, KVM_PGTABLE_PROT_R) == -ENOMEM
    assert mp.__pkvm_host_donate_hyp(pkvm, PFN, 1) == 0
    assert not kvm_pte_valid(host_pte(pkvm, mmio))  # the device mapping was recycled
    assert kvm_invalid_pte_owner(host_pte(pkvm, RAM_BASE)) is PkvmComponentId.PKVM_ID_HYP
    assert no_warnings(pkvm)


# ---------------------------------------------------------------------------------------
# Transitions: the kernel's ownership selftest sequence, state pair after each step.


def states(pkvm: Pkvm, vm: PkvmHypVm, pfn: int, gfn: int) -> tuple[PkvmPageState, ...]:
    return host_state(pkvm, pfn), hyp_state(pkvm, pfn), guest_state(vm, gfn), guest_state(
        vm, gfn + 1
    )


def test_ownership_sequence_of_the_kernels_selftest(pkvm: Pkvm, vm: PkvmHypVm) -> None:
    OW, SO, SB, NP = PKVM_PAGE_OWNED, PKVM_PAGE_SHARED_OWNED, PKVM_PAGE_SHARED_BORROWED, PKVM_NOPAGE
    pfn, gfn = PFN + 3, 0x80
    va = hyp_va(pfn)
    assert mp.__pkvm_host_donate_hyp(pkvm, pfn, 1) == 0
    assert states(pkvm, vm, pfn, gfn) == (NP, OW, NP, NP)
    for call in (
        lambda: mp.__pkvm_host_donate_hyp(pkvm, pfn, 1),
        lambda: mp.__pkvm_host_share_hyp(pkvm, pfn),
        lambda: mp.__pkvm_host_unshare_hyp(pkvm, pfn),
        lambda: mp.__pkvm_host_share_ffa(pkvm, pfn, 1),
        lambda: mp.__pkvm_host_unshare_ffa(pkvm, pfn, 1),
        lambda: mp.hyp_pin_shared_mem(pkvm, va, va + SZ_4K),
        lambda: mp.__pkvm_host_share_guest(pkvm, pfn, gfn, 1, vm, RWX),
    ):
        assert call() == -EPERM
    assert mp.__pkvm_host_unshare_guest(pkvm, gfn, 1, vm) == -ENOENT
    assert states(pkvm, vm, pfn, gfn) == (NP, OW, NP, NP)

    assert mp.__pkvm_hyp_donate_host(pkvm, pfn, 1) == 0
    assert states(pkvm, vm, pfn, gfn) == (OW, NP, NP, NP)
    assert mp.__pkvm_hyp_donate_host(pkvm, pfn, 1) == -EPERM
    assert mp.__pkvm_host_unshare_hyp(pkvm, pfn) == -EPERM
    assert mp.__pkvm_host_unshare_ffa(pkvm, pfn, 1) == -EPERM
    assert mp.hyp_pin_shared_mem(pkvm, va, va + SZ_4K) == -EPERM

    assert mp.__pkvm_host_share_hyp(pkvm, pfn) == 0
    assert states(pkvm, vm, pfn, gfn) == (SO, SB, NP, NP)
    assert mp.__pkvm_host_share_hyp(pkvm, pfn) == -EPERM
    assert mp.__pkvm_host_donate_hyp(pkvm, pfn, 1) == -EPERM
    assert mp.__pkvm_host_share_guest(pkvm, pfn, gfn, 1, vm, RWX) == -EPERM
    assert mp.hyp_pin_shared_mem(pkvm, va, va + SZ_4K) == 0
    assert mp.hyp_pin_shared_mem(pkvm, va, va + SZ_4K) == 0
    mp.hyp_unpin_shared_mem(pkvm, va, va + SZ_4K)
    assert mp.hyp_page_count(pkvm, pfn * SZ_4K) == 1
    assert mp.__pkvm_host_unshare_hyp(pkvm, pfn) == -EBUSY
    mp.hyp_unpin_shared_mem(pkvm, va, va + SZ_4K)
    assert mp.__pkvm_host_unshare_hyp(pkvm, pfn) == 0
    assert states(pkvm, vm, pfn, gfn) == (OW, NP, NP, NP)

    assert mp.__pkvm_host_share_ffa(pkvm, pfn, 1) == 0
    assert states(pkvm, vm, pfn, gfn) == (SO, NP, NP, NP)
    assert mp.__pkvm_host_share_ffa(pkvm, pfn, 1) == -EPERM
    assert mp.__pkvm_host_share_guest(pkvm, pfn, gfn, 1, vm, RWX) == -EPERM
    assert mp.hyp_pin_shared_mem(pkvm, va, va + SZ_4K) == -EPERM
    assert mp.__pkvm_host_unshare_ffa(pkvm, pfn, 1) == 0
    assert mp.__pkvm_host_unshare_ffa(pkvm, pfn, 1) == -EPERM

    assert mp.__pkvm_host_share_guest(pkvm, pfn, gfn, 1, vm, RWX) == 0
    assert states(pkvm, vm, pfn, gfn) == (SO, NP, SB, NP)
    assert mp.__pkvm_host_share_guest(pkvm, pfn, gfn, 1, vm, RWX) == -EPERM  # IPA in use
    assert mp.__pkvm_host_share_ffa(pkvm, pfn, 1) == -EPERM
    assert mp.__pkvm_host_share_hyp(pkvm, pfn) == -EPERM
    assert mp.__pkvm_host_share_guest(pkvm, pfn, gfn + 1, 1, vm, RWX) == 0
    assert pkvm.vmemmap.hyp_phys_to_page(pfn * SZ_4K).host_share_guest_count == 2
    assert mp.__pkvm_host_unshare_guest(pkvm, gfn, 1, vm) == 0
    assert states(pkvm, vm, pfn, gfn) == (SO, NP, NP, SB)
    assert mp.__pkvm_host_unshare_guest(pkvm, gfn + 1, 1, vm) == 0
    assert states(pkvm, vm, pfn, gfn) == (OW, NP, NP, NP)
    assert no_warnings(pkvm)


def test_donated_pages_come_back_to_the_host_on_its_next_fault(pkvm: Pkvm) -> None:
    assert mp.host_stage2_idmap(pkvm, RAM_BASE) == 0
    assert mp.__pkvm_host_donate_hyp(pkvm, PFN + 4, 4) == 0
    for i in range(4):
        pte = host_pte(pkvm, RAM_BASE + (4 + i) * SZ_4K)
        assert kvm_invalid_pte_owner(pte) is PkvmComponentId.PKVM_ID_HYP
    # The block was replaced by a table: the rest is faulted back lazily, page by page.
    assert host_pte(pkvm, RAM_BASE) == 0
    assert mp.host_stage2_idmap(pkvm, RAM_BASE) == 0
    assert kvm_pgtable_get_leaf(pkvm.host_pgt, RAM_BASE).level == 3
    assert mp.__pkvm_hyp_donate_host(pkvm, PFN + 4, 4) == 0
    assert host_pte(pkvm, RAM_BASE + 4 * SZ_4K) == 0  # annotation gone, not yet mapped
    assert mp.host_stage2_idmap(pkvm, RAM_BASE + 4 * SZ_4K) == 0
    assert check_refcounts(scan_tree(pkvm.host_pgt)) == []


@pytest.mark.parametrize(
    "pa, err",
    [
        (MMIO, -EPERM),  # never memory: the empty host PTE does not make it the host's
        (RAM_BASE + SZ_2M, -EPERM),  # MEMBLOCK_NOMAP
    ],
)
def test_mmio_and_nomap_are_never_taken_as_host_owned(
    pkvm: Pkvm, vm: PkvmHypVm, pa: int, err: int
) -> None:
    pfn = pa // SZ_4K
    assert mp.host_stage2_idmap(pkvm, pa) == 0  # the host may still access it
    assert mp.__pkvm_host_share_hyp(pkvm, pfn) == err
    assert mp.__pkvm_host_donate_hyp(pkvm, pfn, 1) == err
    assert mp.__pkvm_host_share_ffa(pkvm, pfn, 1) == err
    assert mp.__pkvm_host_share_guest(pkvm, pfn, 0x10, 1, vm, RWX) == err
    assert guest_state(vm, 0x10) is PKVM_NOPAGE


def test_a_range_straddling_memory_and_no_map_is_einval(pkvm: Pkvm) -> None:
    last = (RAM_BASE + SZ_2M) // SZ_4K - 1
    assert mp.__pkvm_host_donate_hyp(pkvm, last, 2) == -EINVAL
    assert host_state(pkvm, last) is PKVM_PAGE_OWNED


def test_share_guest_argument_checks(pkvm: Pkvm, vm: PkvmHypVm) -> None:
    from s2mmu.pgtable.prot import KVM_PGTABLE_PROT_DEVICE

    assert mp.__pkvm_host_share_guest(pkvm, PFN, 0x10, 1, vm, RWX | KVM_PGTABLE_PROT_DEVICE) == (
        -EINVAL
    )
    assert mp.__pkvm_host_share_guest(pkvm, PFN, 0x10, 2, vm, RWX) == -EINVAL  # not a block
    assert mp.__pkvm_host_share_guest(pkvm, PFN + 1, 0x200, 512, vm, RWX) == -EINVAL  # unaligned
    assert mp.__pkvm_host_share_guest(pkvm, PFN, 0x200, 512, vm, RWX) == 0  # one 2M block
    assert mp.__pkvm_host_unshare_guest(pkvm, 0x200, 1, vm) == -E2BIG
    assert mp.__pkvm_host_unshare_guest(pkvm, 0x200, 512, vm) == 0
    assert host_state(pkvm, PFN + 511) is PKVM_PAGE_OWNED


def test_share_count_full_is_ebusy(pkvm: Pkvm, vm: PkvmHypVm) -> None:
    assert mp.__pkvm_host_share_guest(pkvm, PFN, 0x10, 1, vm, RWX) == 0
    pkvm.vmemmap.hyp_phys_to_page(RAM_BASE).host_share_guest_count = mp.U32_MAX
    assert mp.__pkvm_host_share_guest(pkvm, PFN, 0x11, 1, vm, RWX) == -EBUSY


def test_unshare_guest_refuses_a_donated_page(pkvm: Pkvm, pvm: PkvmHypVm) -> None:
    assert mp.__pkvm_host_donate_guest(pkvm, PFN, 0x10, pvm) == 0
    assert guest_state(pvm, 0x10) is PKVM_PAGE_OWNED and host_state(pkvm, PFN) is PKVM_NOPAGE
    assert mp.__pkvm_host_unshare_guest(pkvm, 0x10, 1, pvm) == -EPERM
    owner = kvm_invalid_pte_owner(host_pte(pkvm, RAM_BASE))
    assert owner is PkvmComponentId.PKVM_ID_GUEST


def test_donate_guest_checks(pkvm: Pkvm, vm: PkvmHypVm, pvm: PkvmHypVm) -> None:
    assert mp.__pkvm_host_donate_guest(pkvm, PFN, 0x10, vm) == -EPERM  # not protected
    assert mp.__pkvm_host_donate_guest(pkvm, PFN, 0x10, pvm) == 0
    assert mp.__pkvm_host_donate_guest(pkvm, PFN, 0x11, pvm) == -EPERM  # not the host's
    assert mp.__pkvm_host_donate_guest(pkvm, PFN + 1, 0x10, pvm) == -EPERM  # IPA in use
    assert host_state(pkvm, PFN + 1) is PKVM_PAGE_OWNED


def test_protected_guests_refuse_relax_wrprotect_and_young(pkvm: Pkvm, pvm: PkvmHypVm) -> None:
    assert mp.__pkvm_host_donate_guest(pkvm, PFN, 0x10, pvm) == 0
    assert mp.__pkvm_host_relax_perms_guest(pkvm, 0x10, pvm, RWX) == -EPERM
    assert mp.__pkvm_host_wrprotect_guest(pkvm, 0x10, 1, pvm) == -EPERM
    assert mp.__pkvm_host_test_clear_young_guest(pkvm, 0x10, 1, True, pvm) == -EPERM
    assert mp.__pkvm_host_mkyoung_guest(pkvm, 0x10, pvm) == -EPERM


def test_attribute_hypercalls_on_a_shared_page(pkvm: Pkvm, vm: PkvmHypVm) -> None:
    from s2mmu.pgtable.prot import kvm_pgtable_stage2_pte_prot

    assert mp.__pkvm_host_share_guest(pkvm, PFN, 0x10, 1, vm, KVM_PGTABLE_PROT_R) == 0
    assert mp.__pkvm_host_relax_perms_guest(pkvm, 0x10, vm, RWX | (1 << 60)) == -EINVAL
    assert mp.__pkvm_host_relax_perms_guest(pkvm, 0x10, vm, KVM_PGTABLE_PROT_RW) == 0
    prot = kvm_pgtable_stage2_pte_prot(kvm_pgtable_get_leaf(vm.pgt, 0x10 * SZ_4K).pte)
    assert prot & KVM_PGTABLE_PROT_RW == KVM_PGTABLE_PROT_RW
    assert guest_state(vm, 0x10) is PKVM_PAGE_SHARED_BORROWED  # state bits survive
    assert mp.__pkvm_host_wrprotect_guest(pkvm, 0x10, 1, vm) == 0
    prot = kvm_pgtable_stage2_pte_prot(kvm_pgtable_get_leaf(vm.pgt, 0x10 * SZ_4K).pte)
    assert not prot & (KVM_PGTABLE_PROT_RW ^ KVM_PGTABLE_PROT_R)
    assert mp.__pkvm_host_test_clear_young_guest(pkvm, 0x10, 1, True, vm) == 1
    assert mp.__pkvm_host_test_clear_young_guest(pkvm, 0x10, 1, False, vm) == 0
    assert mp.__pkvm_host_mkyoung_guest(pkvm, 0x10, vm) == 0
    assert mp.__pkvm_host_test_clear_young_guest(pkvm, 0x10, 1, False, vm) == 1


@pytest.mark.parametrize("profile, ret", [(V6_3, 0), (V6_19, -EAGAIN)])
def test_relax_perms_on_an_unmapped_gfn_follows_the_eagain_rule(profile, ret) -> None:  # type: ignore[no-untyped-def]
    # Seed 000: pKVM's walks pass no flag; before v6.19 the -EAGAIN of the attribute
    # walker was swallowed and the relax "succeeded" on nothing.
    pkvm = new_pkvm(profile=profile)
    vm = new_hyp_vm(pkvm, 1, protected=False)
    assert mp.__pkvm_host_relax_perms_guest(pkvm, 0x10, vm, RWX) == ret


@pytest.mark.parametrize("profile, ret, rest_mapped", [(V6_3, 0, True), (V6_19, -EAGAIN, False)])
def test_idmap_over_an_existing_leaf_follows_the_eagain_rule(profile, ret, rest_mapped) -> None:  # type: ignore[no-untyped-def]
    # The library underneath host_stage2_idmap_locked: a leaf already there (as
    # another CPU would have installed it) ends a v6.19 walk; the fault path itself
    # never meets one because host_stage2_adjust_range picks an empty block.
    pkvm = new_pkvm(profile=profile)
    assert mp.host_stage2_idmap_locked(pkvm, RAM_BASE, SZ_4K, KVM_PGTABLE_PROT_R) == 0
    got = mp.host_stage2_idmap_locked(pkvm, RAM_BASE, 4 * SZ_4K, KVM_PGTABLE_PROT_R)
    assert got == ret
    assert kvm_pte_valid(host_pte(pkvm, RAM_BASE + 3 * SZ_4K)) is rest_mapped


@pytest.mark.parametrize("profile", [V6_3, V6_19])
def test_host_fault_path_never_stops_at_an_existing_leaf(profile) -> None:  # type: ignore[no-untyped-def]
    pkvm = new_pkvm(profile=profile)
    assert mp.host_stage2_idmap_locked(pkvm, RAM_BASE + 5 * SZ_4K, SZ_4K, KVM_PGTABLE_PROT_R) == 0
    for i in range(16):
        pa = RAM_BASE + i * SZ_4K
        expect = -EAGAIN if i == 5 or kvm_pte_valid(host_pte(pkvm, pa)) else 0
        assert mp.host_stage2_idmap(pkvm, pa) == expect
        assert kvm_pte_valid(host_pte(pkvm, pa))


def test_reclaim_scrubs_donated_pages_and_unshares_shared_ones(pkvm: Pkvm, pvm: PkvmHypVm) -> None:
    pkvm.env.mem.write_bytes(RAM_BASE, b"secret!!")
    assert mp.__pkvm_host_donate_guest(pkvm, PFN, 0x10, pvm) == 0
    assert mp.__pkvm_host_share_guest(pkvm, PFN + 1, 0x11, 1, pvm, RWX) == 0
    assert mp.__pkvm_host_reclaim_page(pkvm, pvm, 0x10) == -EPERM  # not dying
    pvm.dying = True
    assert mp.__pkvm_host_reclaim_page(pkvm, pvm, 0x12) == -ENOENT
    assert mp.__pkvm_host_reclaim_page(pkvm, pvm, 0x10) == 0
    assert pkvm.env.mem.read_bytes(RAM_BASE, 8) == bytes(8)
    assert mp.__pkvm_host_reclaim_page(pkvm, pvm, 0x11) == 0
    assert host_state(pkvm, PFN) is PKVM_PAGE_OWNED and host_state(pkvm, PFN + 1) is PKVM_PAGE_OWNED
    assert host_pte(pkvm, RAM_BASE) == 0  # annotation cleared; the host faults it back
    assert no_warnings(pkvm)
