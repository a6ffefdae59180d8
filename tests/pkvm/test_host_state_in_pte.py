"""Where pKVM keeps the host's page state: its stage-2 PTEs (to v6.13) or the vmemmap."""

from __future__ import annotations

from s2mmu.pgtable.page_state import PKVM_PAGE_SHARED_OWNED, pkvm_sw_state
from s2mmu.pgtable.profile import PROFILES
from s2mmu.pgtable.walk import kvm_pgtable_get_leaf
from s2mmu.pkvm.mem_protect import RAM_BASE, __pkvm_host_share_hyp, host_stage2_idmap, new_pkvm

PAGE = 1 << 12


def shared_leaf(release: str) -> tuple[int, int]:
    """Share a page of a host-mapped 2M block with EL2; return (level, SW bits) there."""
    pkvm = new_pkvm(1024, profile=PROFILES[release])
    page = RAM_BASE + 0x5000
    assert host_stage2_idmap(pkvm, RAM_BASE) == 0
    assert kvm_pgtable_get_leaf(pkvm.host_pgt, page).level == 2
    assert __pkvm_host_share_hyp(pkvm, page // PAGE) == 0
    assert pkvm.vmemmap.hyp_phys_to_page(page).host_state == PKVM_PAGE_SHARED_OWNED
    leaf = kvm_pgtable_get_leaf(pkvm.host_pgt, page)
    return leaf.level, leaf.pte >> 55 & 0xF


def test_6_1_and_6_12_write_the_state_into_the_host_pte() -> None:
    """6.1's and 6.12's __host_set_page_state_range identity-map the page with
    pkvm_mkstate(PKVM_HOST_MEM_PROT, state): the block goes, a page with SW0 (SHARED_OWNED)
    comes (real 6.1 under pKVM shows such pages: s2mmu real diff --mode protected)."""
    for release in ("v6.1", "v6.12"):
        level, sw = shared_leaf(release)
        assert (level, pkvm_sw_state(sw)) == (3, PKVM_PAGE_SHARED_OWNED), release


def test_later_releases_keep_it_in_the_vmemmap_and_the_block_whole() -> None:
    for release in ("v6.18", "v7.1"):
        assert shared_leaf(release) == (2, 0), release
