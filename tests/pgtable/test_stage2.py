"""Stage-2 operations: each rule of pgtable.c as a test, then random sequences against a
reference map.

Kernel: kvm_pgtable_stage2_map and its walkers, kvm_pgtable_stage2_unmap,
kvm_pgtable_stage2_wrprotect, kvm_pgtable_stage2_mkyoung, kvm_pgtable_stage2_relax_perms,
kvm_pgtable_stage2_test_clear_young, kvm_pgtable_stage2_flush, kvm_pgtable_stage2_split,
kvm_pgtable_stage2_create_unlinked, kvm_pgtable_stage2_set_owner, __kvm_pgtable_stage2_init,
kvm_pgtable_stage2_destroy.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from s2mmu.pgtable.caps import KvmCaps
from s2mmu.pgtable.env import PgtableEnv, new_env, new_stage2, pkvm_guest_mm_ops
from s2mmu.pgtable.errno import EAGAIN, EINVAL, ENOMEM
from s2mmu.pgtable.events import (
    TLBI_TTL_UNKNOWN,
    DcacheCleanInvalPoc,
    IcacheInvalPou,
    PageFree,
    TlbiVmid,
    TlbiVmidIpa,
    TlbiVmidRange,
    Warn,
)
from s2mmu.pgtable.invariants import check_refcounts, scan_tree
from s2mmu.pgtable.mm import KvmMmuMemoryCache, __kvm_mmu_topup_memory_cache
from s2mmu.pgtable.prot import KvmPgtableProt, kvm_pgtable_stage2_pte_prot
from s2mmu.pgtable.pte import (
    KVM_MAX_OWNER_ID,
    KVM_PTE_LEAF_ATTR_LO_S2_AF,
    kvm_pte_to_phys,
    kvm_pte_valid,
)
from s2mmu.pgtable.stage2 import (
    kvm_pgtable_stage2_create_unlinked,
    kvm_pgtable_stage2_destroy,
    kvm_pgtable_stage2_flush,
    kvm_pgtable_stage2_free_unlinked,
    kvm_pgtable_stage2_map,
    kvm_pgtable_stage2_mkyoung,
    kvm_pgtable_stage2_relax_perms,
    kvm_pgtable_stage2_set_owner,
    kvm_pgtable_stage2_split,
    kvm_pgtable_stage2_test_clear_young,
    kvm_pgtable_stage2_unmap,
    kvm_pgtable_stage2_wrprotect,
    stage2_block_get_nr_page_tables,
)
from s2mmu.pgtable.table import KVM_PGTABLE_S2_IDMAP, KvmPgtable
from s2mmu.pgtable.walk import KVM_PGTABLE_WALK_SHARED, kvm_pgtable_get_leaf

from .conftest import SZ_1G, SZ_2M, SZ_4K, memcache

P = KvmPgtableProt
R, RW, RX, RWX = P.R, P.R | P.W, P.R | P.X, P.R | P.W | P.X
PA = 0x1_0000_0000


def leaf(pgt: KvmPgtable, ipa: int) -> tuple[int, int, P] | None:
    """Return (level, output address, prot) of the valid leaf mapping ipa, or None."""
    got = kvm_pgtable_get_leaf(pgt, ipa)
    assert got.ret == 0
    if not kvm_pte_valid(got.pte):
        return None
    return got.level, kvm_pte_to_phys(got.pte, pgt.ops.g), kvm_pgtable_stage2_pte_prot(got.pte)


def raw(pgt: KvmPgtable, ipa: int) -> int:
    return kvm_pgtable_get_leaf(pgt, ipa).pte


def tables_in_use(env: PgtableEnv, mc: KvmMmuMemoryCache) -> int:
    return env.pool.in_use() - mc.nobjs


# ---------------------------------------------------------------------------------------
# init


@pytest.mark.parametrize(("ipa", "start", "pgd_pages"), [(40, 1, 2), (48, 0, 1), (32, 2, 4)])
def test_init_takes_ia_size_and_start_level_from_vtcr(
    env: PgtableEnv, ipa: int, start: int, pgd_pages: int
) -> None:
    pgt = new_stage2(env, ipa)
    assert (pgt.ia_bits, pgt.start_level, env.pool.in_use()) == (ipa, start, pgd_pages)


def test_idmap_table_refuses_a_non_identity_map(env: PgtableEnv, mc: KvmMmuMemoryCache) -> None:
    pgt = new_stage2(env, 40, flags=KVM_PGTABLE_S2_IDMAP)
    assert kvm_pgtable_stage2_map(pgt, SZ_2M, SZ_4K, 2 * SZ_2M, RW, mc) == -EINVAL
    assert env.events.of_type(Warn)[-1].function == "kvm_pgtable_stage2_map"
    assert kvm_pgtable_stage2_map(pgt, SZ_2M, SZ_4K, SZ_2M, RW, mc) == 0


def test_an_invalid_prot_fails_before_touching_the_table(
    pgt: KvmPgtable, mc: KvmMmuMemoryCache
) -> None:
    assert kvm_pgtable_stage2_map(pgt, 0, SZ_4K, PA, R | P.DEVICE | P.X, mc) == -EINVAL
    assert leaf(pgt, 0) is None


# ---------------------------------------------------------------------------------------
# map


@pytest.mark.parametrize(
    ("page_shift", "ipa_bits", "size", "level"),
    [
        (12, 40, SZ_1G, 1),
        (12, 40, SZ_2M, 2),
        (12, 40, SZ_4K, 3),
        (14, 40, 32 << 20, 2),
        (14, 40, 16 << 10, 3),
        (16, 42, 512 << 20, 2),
        (16, 42, 64 << 10, 3),
    ],
)
def test_map_uses_the_largest_block_the_granule_allows(
    page_shift: int, ipa_bits: int, size: int, level: int
) -> None:
    env = new_env(page_shift=page_shift)
    pgt = new_stage2(env, ipa_bits)
    assert kvm_pgtable_stage2_map(pgt, 4 * SZ_1G, size, 8 * SZ_1G, RW, memcache(env)) == 0
    assert leaf(pgt, 4 * SZ_1G + size - 1) == (level, 8 * SZ_1G, RW)


def test_no_level_0_blocks_with_4k_pages(env: PgtableEnv, mc: KvmMmuMemoryCache) -> None:
    pgt = new_stage2(env, 48)
    assert kvm_pgtable_stage2_map(pgt, 0, 1 << 39, 1 << 39, RW, memcache(env, 600)) == 0
    assert leaf(pgt, 0)[0] == 1  # type: ignore[index]


def test_output_address_follows_the_ipa_offset_across_sizes(
    pgt: KvmPgtable, mc: KvmMmuMemoryCache
) -> None:
    start = SZ_2M - 2 * SZ_4K
    assert kvm_pgtable_stage2_map(pgt, start, SZ_2M + 3 * SZ_4K, PA + start, RW, mc) == 0
    for ipa, level in ((start, 3), (SZ_2M - SZ_4K, 3), (SZ_2M, 2), (2 * SZ_2M, 3)):
        assert leaf(pgt, ipa) == (level, PA + (ipa if level == 3 else SZ_2M), RW)


def test_misaligned_output_address_forces_pages(pgt: KvmPgtable, mc: KvmMmuMemoryCache) -> None:
    assert kvm_pgtable_stage2_map(pgt, SZ_2M, SZ_2M, PA + SZ_4K, RW, mc) == 0
    assert leaf(pgt, SZ_2M) == (3, PA + SZ_4K, RW)


def test_force_pte_callback_maps_at_page_granularity(
    env: PgtableEnv, mc: KvmMmuMemoryCache
) -> None:
    calls: list[tuple[int, int, int]] = []
    pgt = new_stage2(env, 40, force_pte_cb=lambda a, e, p: calls.append((a, e, p)) is None)
    assert kvm_pgtable_stage2_map(pgt, SZ_2M, SZ_2M, PA, RW, mc) == 0
    assert calls == [(SZ_2M, 2 * SZ_2M, RW)]
    assert leaf(pgt, 2 * SZ_2M - SZ_4K) == (3, PA + SZ_2M - SZ_4K, RW)


def test_permission_only_change_returns_eagain_and_leaves_the_entry(
    env: PgtableEnv, pgt: KvmPgtable, mc: KvmMmuMemoryCache
) -> None:
    assert kvm_pgtable_stage2_map(pgt, 0, SZ_4K, PA, RW, mc) == 0
    before, events = raw(pgt, 0), len(env.events)
    assert kvm_pgtable_stage2_map(pgt, 0, SZ_4K, PA, R, mc) == -EAGAIN
    assert raw(pgt, 0) == before
    assert not [e for e in env.events.since(events) if isinstance(e, TlbiVmidIpa)]


def test_recreating_the_same_mapping_returns_eagain(pgt: KvmPgtable, mc: KvmMmuMemoryCache) -> None:
    assert kvm_pgtable_stage2_map(pgt, 0, SZ_4K, PA, RW, mc) == 0
    assert kvm_pgtable_stage2_map(pgt, 0, SZ_4K, PA, RW, mc) == -EAGAIN


def test_software_bit_change_is_stored_without_break_before_make(
    env: PgtableEnv, pgt: KvmPgtable, mc: KvmMmuMemoryCache
) -> None:
    assert kvm_pgtable_stage2_map(pgt, 0, SZ_4K, PA, RW, mc) == 0
    events = len(env.events)
    assert kvm_pgtable_stage2_map(pgt, 0, SZ_4K, PA, RW | P.SW0, mc) == 0
    assert kvm_pgtable_stage2_pte_prot(raw(pgt, 0)) == RW | P.SW0
    assert not [e for e in env.events.since(events) if isinstance(e, TlbiVmidIpa)]


def test_software_bit_change_in_a_shared_walk_goes_through_break_before_make(
    env: PgtableEnv, pgt: KvmPgtable, mc: KvmMmuMemoryCache
) -> None:
    assert kvm_pgtable_stage2_map(pgt, 0, SZ_4K, PA, RW, mc) == 0
    events = len(env.events)
    shared = KVM_PGTABLE_WALK_SHARED
    assert kvm_pgtable_stage2_map(pgt, 0, SZ_4K, PA, RW | P.SW0, mc, shared) == 0
    assert TlbiVmidIpa(1, 0, 3) in env.events.since(events)


def test_a_new_output_address_replaces_the_leaf_with_a_tlbi(
    env: PgtableEnv, pgt: KvmPgtable, mc: KvmMmuMemoryCache
) -> None:
    assert kvm_pgtable_stage2_map(pgt, SZ_4K, SZ_4K, PA, RW, mc) == 0
    assert kvm_pgtable_stage2_map(pgt, SZ_4K, SZ_4K, PA + SZ_2M, RW, mc) == 0
    assert leaf(pgt, SZ_4K) == (3, PA + SZ_2M, RW)
    assert TlbiVmidIpa(1, SZ_4K, 3) in env.events


def test_a_block_replaces_a_table_and_frees_it(
    env: PgtableEnv, pgt: KvmPgtable, mc: KvmMmuMemoryCache
) -> None:
    for i in range(3):
        assert kvm_pgtable_stage2_map(pgt, SZ_2M + i * SZ_4K, SZ_4K, PA + i * SZ_4K, R, mc) == 0
    tables = tables_in_use(env, mc)
    assert kvm_pgtable_stage2_map(pgt, SZ_2M, SZ_2M, PA, RW, mc) == 0
    assert leaf(pgt, SZ_2M + SZ_4K) == (2, PA, RW)
    assert tables_in_use(env, mc) == tables - 1
    assert TlbiVmid(1) in env.events  # the table's range flush (no FEAT_TLBIRANGE)


def test_a_block_over_a_table_flushes_the_tables_range_with_feat_tlbirange() -> None:
    env = new_env(caps=KvmCaps(tlb_range=True))
    pgt, mc = new_stage2(env, 40), memcache(env)
    kvm_pgtable_stage2_map(pgt, SZ_2M + SZ_4K, SZ_4K, PA, R, mc)
    kvm_pgtable_stage2_map(pgt, SZ_2M, SZ_2M, PA, RW, mc)
    assert TlbiVmidRange(1, SZ_2M, 512, SZ_4K) in env.events


def test_a_page_inside_a_block_splits_it_and_drops_the_rest(
    env: PgtableEnv, pgt: KvmPgtable, mc: KvmMmuMemoryCache
) -> None:
    assert kvm_pgtable_stage2_map(pgt, SZ_2M, SZ_2M, PA, RW, mc) == 0
    assert kvm_pgtable_stage2_map(pgt, SZ_2M + SZ_4K, SZ_4K, PA + SZ_4K, RWX, mc) == 0
    assert leaf(pgt, SZ_2M + SZ_4K) == (3, PA + SZ_4K, RWX)
    assert leaf(pgt, SZ_2M) is None
    assert TlbiVmidIpa(1, SZ_2M + SZ_4K, 2) in env.events


def test_map_needing_a_table_without_a_memcache_is_enomem(pgt: KvmPgtable) -> None:
    assert kvm_pgtable_stage2_map(pgt, 0, SZ_4K, PA, RW, None) == -ENOMEM
    assert kvm_pgtable_stage2_map(pgt, 0, SZ_1G, 0, RW, None) == 0


def test_pkvm_map_with_an_exhausted_memcache_is_enomem() -> None:
    env = new_env()
    pgt = new_stage2(env, 40, mm_ops=pkvm_guest_mm_ops(env))
    assert kvm_pgtable_stage2_map(pgt, 0, SZ_4K, PA, RW, memcache(env, 1)) == -ENOMEM


def test_map_consumes_one_memcache_page_per_new_table(env: PgtableEnv, pgt: KvmPgtable) -> None:
    mc = memcache(env, 8)
    assert kvm_pgtable_stage2_map(pgt, 0, SZ_4K, PA, RW, mc) == 0
    assert mc.nobjs == 6  # a level-2 and a level-3 table
    assert kvm_pgtable_stage2_map(pgt, SZ_4K, SZ_4K, PA + SZ_4K, RW, mc) == 0
    assert mc.nobjs == 6


def test_map_cleans_cacheable_memory_and_invalidates_the_icache_for_exec(
    env: PgtableEnv, pgt: KvmPgtable, mc: KvmMmuMemoryCache
) -> None:
    kvm_pgtable_stage2_map(pgt, 0, SZ_4K, PA, RWX, mc)
    kvm_pgtable_stage2_map(pgt, SZ_4K, SZ_4K, PA + SZ_4K, RW | P.DEVICE, mc)
    assert env.events.of_type(DcacheCleanInvalPoc) == [DcacheCleanInvalPoc(PA, SZ_4K)]
    assert env.events.of_type(IcacheInvalPou) == [IcacheInvalPou(PA, SZ_4K)]


def test_map_ends_with_a_dsb_ishst(env: PgtableEnv, pgt: KvmPgtable, mc: KvmMmuMemoryCache) -> None:
    kvm_pgtable_stage2_map(pgt, 0, SZ_4K, PA, RW, mc)
    assert env.events.items[-1] == ("ishst",)


# ---------------------------------------------------------------------------------------
# unmap


def test_partial_unmap_of_a_block_removes_the_whole_block(
    env: PgtableEnv, pgt: KvmPgtable, mc: KvmMmuMemoryCache
) -> None:
    kvm_pgtable_stage2_map(pgt, SZ_2M, SZ_2M, PA, RW, mc)
    assert kvm_pgtable_stage2_unmap(pgt, SZ_2M + SZ_4K, SZ_4K) == 0
    assert leaf(pgt, SZ_2M) is None and leaf(pgt, 2 * SZ_2M - SZ_4K) is None
    assert TlbiVmidIpa(1, SZ_2M + SZ_4K, 2) in env.events  # any IPA inside the block


def test_tables_are_freed_only_when_empty(
    env: PgtableEnv, pgt: KvmPgtable, mc: KvmMmuMemoryCache
) -> None:
    kvm_pgtable_stage2_map(pgt, 0, 2 * SZ_4K, PA, RW, mc)
    tables = tables_in_use(env, mc)
    assert kvm_pgtable_stage2_unmap(pgt, 0, SZ_4K) == 0
    assert tables_in_use(env, mc) == tables
    assert kvm_pgtable_stage2_unmap(pgt, SZ_4K, SZ_4K) == 0
    assert tables_in_use(env, mc) == tables - 2
    assert env.events.of_type(TlbiVmidIpa)[-2:] == [TlbiVmidIpa(1, SZ_4K, TLBI_TTL_UNKNOWN)] * 2


def test_unmap_cleans_cacheable_memory_without_fwb_only() -> None:
    for fwb, cleans in ((False, 1), (True, 0)):
        env = new_env(caps=KvmCaps(stage2_fwb=fwb))
        pgt, mc = new_stage2(env, 40), memcache(env)
        kvm_pgtable_stage2_map(pgt, 0, SZ_4K, PA, RW, mc)
        env.events.clear()
        kvm_pgtable_stage2_unmap(pgt, 0, SZ_4K)
        assert len(env.events.of_type(DcacheCleanInvalPoc)) == cleans


def test_unmap_defers_its_tlbis_to_one_range_tlbi_with_fwb_and_tlbirange() -> None:
    env = new_env(caps=KvmCaps(stage2_fwb=True, tlb_range=True))
    pgt, mc = new_stage2(env, 40), memcache(env)
    kvm_pgtable_stage2_map(pgt, SZ_2M, 4 * SZ_4K, PA, RW, mc)
    env.events.clear()
    kvm_pgtable_stage2_unmap(pgt, SZ_2M, 4 * SZ_4K)
    leaf_tlbis = [e for e in env.events.of_type(TlbiVmidIpa) if e.level == 3]
    assert leaf_tlbis == []
    assert env.events.of_type(TlbiVmidRange) == [TlbiVmidRange(1, SZ_2M, 4, SZ_4K)]


def test_unmapping_everything_frees_every_table_page(env: PgtableEnv, pgt: KvmPgtable) -> None:
    mc = memcache(env, 64)
    for ipa in (0, SZ_1G + SZ_4K, 3 * SZ_1G + SZ_2M, 5 * SZ_1G):
        kvm_pgtable_stage2_map(pgt, ipa, SZ_4K, PA, RW, mc)
    assert kvm_pgtable_stage2_unmap(pgt, 0, 1 << 40) == 0
    assert tables_in_use(env, mc) == 2  # the concatenated PGD


# ---------------------------------------------------------------------------------------
# attribute updates


def test_wrprotect_removes_write_from_every_leaf_and_skips_holes(
    pgt: KvmPgtable, mc: KvmMmuMemoryCache
) -> None:
    kvm_pgtable_stage2_map(pgt, 0, SZ_4K, PA, RW, mc)
    kvm_pgtable_stage2_map(pgt, 2 * SZ_4K, SZ_4K, PA, RWX, mc)
    kvm_pgtable_stage2_map(pgt, SZ_2M, SZ_2M, PA, RW, mc)
    assert kvm_pgtable_stage2_wrprotect(pgt, 0, 2 * SZ_2M) == 0
    assert [leaf(pgt, a)[2] for a in (0, 2 * SZ_4K, SZ_2M)] == [R, RX, R]  # type: ignore[index]


def test_mkyoung_sets_the_access_flag_and_test_clear_young_clears_it(
    pgt: KvmPgtable, mc: KvmMmuMemoryCache
) -> None:
    kvm_pgtable_stage2_map(pgt, 0, SZ_4K, PA, RW, mc)
    assert kvm_pgtable_stage2_test_clear_young(pgt, 0, SZ_4K, False)
    assert kvm_pgtable_stage2_test_clear_young(pgt, 0, SZ_4K, True)
    assert not raw(pgt, 0) & KVM_PTE_LEAF_ATTR_LO_S2_AF
    assert not kvm_pgtable_stage2_test_clear_young(pgt, 0, SZ_4K, False)
    kvm_pgtable_stage2_mkyoung(pgt, 0)
    assert raw(pgt, 0) & KVM_PTE_LEAF_ATTR_LO_S2_AF


def test_relax_perms_adds_permissions_and_sets_execute_from_prot(
    env: PgtableEnv, pgt: KvmPgtable, mc: KvmMmuMemoryCache
) -> None:
    kvm_pgtable_stage2_map(pgt, SZ_2M, SZ_2M, PA, R, mc)
    assert kvm_pgtable_stage2_relax_perms(pgt, SZ_2M + SZ_4K, RX) == 0
    assert leaf(pgt, SZ_2M)[2] == RX  # type: ignore[index]
    assert TlbiVmidIpa(1, SZ_2M + SZ_4K, 2, True) in env.events
    assert env.events.of_type(IcacheInvalPou) == [IcacheInvalPou(PA, SZ_2M)]
    assert kvm_pgtable_stage2_relax_perms(pgt, SZ_2M, RW) == 0
    assert leaf(pgt, SZ_2M)[2] == RW  # type: ignore[index]


def test_relax_perms_on_an_unmapped_ipa_is_eagain_with_a_local_tlbi(
    env: PgtableEnv, pgt: KvmPgtable
) -> None:
    assert kvm_pgtable_stage2_relax_perms(pgt, SZ_2M, RW) == -EAGAIN
    assert env.events.of_type(TlbiVmidIpa) == [TlbiVmidIpa(1, SZ_2M, TLBI_TTL_UNKNOWN, True)]


def test_relax_perms_rejects_software_bits(pgt: KvmPgtable) -> None:
    assert kvm_pgtable_stage2_relax_perms(pgt, 0, R | P.SW2) == -EINVAL


def test_flush_cleans_cacheable_leaves_and_does_nothing_with_fwb() -> None:
    for fwb, expected in ((False, [DcacheCleanInvalPoc(PA, SZ_2M)]), (True, [])):
        env = new_env(caps=KvmCaps(stage2_fwb=fwb))
        pgt, mc = new_stage2(env, 40), memcache(env)
        kvm_pgtable_stage2_map(pgt, SZ_2M, SZ_2M, PA, RW, mc)
        kvm_pgtable_stage2_map(pgt, 0, SZ_4K, PA, RW | P.DEVICE, mc)
        env.events.clear()
        assert kvm_pgtable_stage2_flush(pgt, 0, 2 * SZ_2M) == 0
        assert env.events.of_type(DcacheCleanInvalPoc) == expected


# ---------------------------------------------------------------------------------------
# split, unlinked tables, annotations, destroy


def test_split_of_a_2m_block_uses_one_page_and_keeps_every_mapping(
    env: PgtableEnv, pgt: KvmPgtable, mc: KvmMmuMemoryCache
) -> None:
    kvm_pgtable_stage2_map(pgt, SZ_2M, SZ_2M, PA, RW, mc)
    split_mc = memcache(env, 4)
    assert kvm_pgtable_stage2_split(pgt, SZ_2M, SZ_2M, split_mc) == 0
    assert split_mc.nobjs == 3
    for i in (0, 1, 511):
        assert leaf(pgt, SZ_2M + i * SZ_4K) == (3, PA + i * SZ_4K, RW)
    assert TlbiVmidIpa(1, SZ_2M, 2) in env.events


@pytest.mark.parametrize(("level", "pages"), [(1, 513), (2, 1), (3, 0)])
def test_splitting_a_block_to_pages_needs_a_table_per_level_below_it(
    env: PgtableEnv, level: int, pages: int
) -> None:
    assert stage2_block_get_nr_page_tables(level, env.g) == pages


def test_split_with_a_small_cache_builds_one_level_then_runs_dry(
    env: PgtableEnv, pgt: KvmPgtable, mc: KvmMmuMemoryCache
) -> None:
    kvm_pgtable_stage2_map(pgt, SZ_1G, SZ_1G, 4 * SZ_1G, RW, mc)
    split_mc = memcache(env, 3)
    assert kvm_pgtable_stage2_split(pgt, SZ_1G, SZ_1G, split_mc) == -ENOMEM
    assert split_mc.nobjs == 0
    # one page for the level-2 table of 2M blocks, then one per 2M block split to pages
    assert leaf(pgt, SZ_1G)[0] == 3  # type: ignore[index]
    assert leaf(pgt, SZ_1G + SZ_2M)[0] == 3  # type: ignore[index]
    assert leaf(pgt, SZ_1G + 2 * SZ_2M) == (2, 4 * SZ_1G + 2 * SZ_2M, RW)


def test_split_leaves_pages_and_holes_alone(
    env: PgtableEnv, pgt: KvmPgtable, mc: KvmMmuMemoryCache
) -> None:
    kvm_pgtable_stage2_map(pgt, 0, SZ_4K, PA, RW, mc)
    split_mc = memcache(env, 4)
    assert kvm_pgtable_stage2_split(pgt, 0, SZ_1G, split_mc) == 0
    assert split_mc.nobjs == 4


def test_create_unlinked_refuses_a_misaligned_block(pgt: KvmPgtable, mc: KvmMmuMemoryCache) -> None:
    assert kvm_pgtable_stage2_create_unlinked(pgt, SZ_4K, 2, RW, mc, True) == -EINVAL


def test_an_unlinked_table_is_freed_with_everything_below_it(
    env: PgtableEnv, pgt: KvmPgtable
) -> None:
    mc = memcache(env, 2)
    table = kvm_pgtable_stage2_create_unlinked(pgt, 4 * SZ_1G, 1, RW, mc, False)
    assert table >= 0 and mc.nobjs == 1
    assert pgt.ops.mem.read64(table + 8) & 0b11 == 0b01  # 2M blocks, not pages
    before = len(env.events.of_type(PageFree))
    kvm_pgtable_stage2_free_unlinked(pgt.ops, table, 1)
    assert len(env.events.of_type(PageFree)) - before == 1


def test_owner_annotations_are_counted_invalid_entries_cleared_by_unmap(
    env: PgtableEnv, pgt: KvmPgtable, mc: KvmMmuMemoryCache
) -> None:
    assert kvm_pgtable_stage2_set_owner(pgt, SZ_2M, 2 * SZ_4K, mc, 1) == 0
    assert raw(pgt, SZ_2M) == 1 << 2
    assert check_refcounts(scan_tree(pgt)) == []
    assert kvm_pgtable_stage2_set_owner(pgt, 0, SZ_4K, mc, KVM_MAX_OWNER_ID + 1) == -EINVAL
    tables = tables_in_use(env, mc)
    assert kvm_pgtable_stage2_unmap(pgt, SZ_2M, 2 * SZ_4K) == 0
    assert raw(pgt, SZ_2M) == 0 and tables_in_use(env, mc) == tables - 2


def test_destroy_frees_every_page(env: PgtableEnv, pgt: KvmPgtable) -> None:
    mc = memcache(env, 16)
    kvm_pgtable_stage2_map(pgt, 0, 3 * SZ_4K, PA, RW, mc)
    kvm_pgtable_stage2_map(pgt, 7 * SZ_1G, SZ_1G, PA, RW, mc)
    kvm_pgtable_stage2_destroy(pgt)
    assert env.pool.in_use() == mc.nobjs and pgt.pgd is None
    assert pgt.ops.pgtable_pages == 0


# ---------------------------------------------------------------------------------------
# random sequences against a reference map

BASE = SZ_1G
WINDOW = 4 * SZ_2M
PAGES = WINDOW // SZ_4K


class RefEntry:
    """One mapping of the reference: a block or page at ipa, size bytes, to pa."""

    def __init__(self, size: int, pa: int, prot: P, young: bool = True) -> None:
        self.size, self.pa, self.prot, self.young = size, pa, prot, young


class Reference:
    """What KVM's stage 2 should contain, written from the rules, not from pgtable.c."""

    def __init__(self) -> None:
        self.entries: dict[int, RefEntry] = {}

    def overlapping(self, addr: int, size: int) -> list[int]:
        return [a for a, e in self.entries.items() if a < addr + size and addr < a + e.size]

    def containing(self, ipa: int) -> int | None:
        hits = self.overlapping(ipa, 1)
        return hits[0] if hits else None

    @staticmethod
    def pieces(addr: int, size: int, pa: int) -> list[tuple[int, int, int]]:
        """Cut a map into the largest blocks whose IPA and PA are both aligned."""
        out, cur, end = [], addr, addr + size
        while cur < end:
            for s in (SZ_1G, SZ_2M, SZ_4K):
                p = pa + cur - addr
                if cur % s == 0 and p % s == 0 and end - cur >= s:
                    out.append((cur, s, p))
                    cur += s
                    break
        return out

    def map(self, addr: int, size: int, pa: int, prot: P) -> int:
        for a, s, p in self.pieces(addr, size, pa):
            same = self.entries.get(a)
            if same and same.size == s and same.pa == p and same.young:
                return -EAGAIN  # only permissions differ (or nothing): left alone
            for old in self.overlapping(a, s):
                del self.entries[old]
            self.entries[a] = RefEntry(s, p, prot)
        return 0

    def unmap(self, addr: int, size: int) -> None:
        for a in self.overlapping(addr, size):
            del self.entries[a]

    def wrprotect(self, addr: int, size: int) -> None:
        for a in self.overlapping(addr, size):
            self.entries[a].prot &= ~P.W

    def relax(self, ipa: int, prot: P) -> int:
        a = self.containing(ipa)
        if a is None:
            return -EAGAIN
        e = self.entries[a]
        e.prot = (e.prot & ~P.X) | (prot & (P.R | P.W | P.X))
        return 0

    def mkold(self, addr: int, size: int) -> bool:
        young = False
        for a in self.overlapping(addr, size):
            young |= self.entries[a].young
            self.entries[a].young = False
        return young

    def split(self, addr: int, size: int) -> None:
        for a in self.overlapping(addr, size):
            e = self.entries[a]
            if e.size > SZ_4K:
                del self.entries[a]
                for off in range(0, e.size, SZ_4K):
                    self.entries[a + off] = RefEntry(SZ_4K, e.pa + off, e.prot, e.young)


topup = __kvm_mmu_topup_memory_cache  # a plain name: double underscores mangle in classes
pages = st.integers(0, PAGES - 1)
lengths = st.sampled_from([1, 2, 3, 512, 513])
prots = st.sampled_from([R, RW, RX, RWX])
deltas = st.sampled_from([PA, PA + SZ_4K, PA + SZ_2M])


class Stage2AgainstReference(RuleBasedStateMachine):
    """Random map/unmap/wrprotect/relax/mkold/split sequences vs the reference."""

    def __init__(self) -> None:
        super().__init__()
        self.env = new_env()
        self.pgt = new_stage2(self.env, 40)
        self.mc = memcache(self.env, 40)
        self.split_mc = memcache(self.env, 8)
        self.ref = Reference()

    def _range(self, first: int, n: int) -> tuple[int, int]:
        return BASE + first * SZ_4K, min(n, PAGES - first) * SZ_4K

    @rule(first=pages, n=lengths, delta=deltas, prot=prots)
    def map(self, first: int, n: int, delta: int, prot: P) -> None:
        addr, size = self._range(first, n)
        got = kvm_pgtable_stage2_map(self.pgt, addr, size, addr - BASE + delta, prot, self.mc)
        assert got == self.ref.map(addr, size, addr - BASE + delta, prot)

    @rule(first=pages, n=lengths)
    def unmap(self, first: int, n: int) -> None:
        addr, size = self._range(first, n)
        assert kvm_pgtable_stage2_unmap(self.pgt, addr, size) == 0
        self.ref.unmap(addr, size)

    @rule(first=pages, n=lengths)
    def wrprotect(self, first: int, n: int) -> None:
        addr, size = self._range(first, n)
        assert kvm_pgtable_stage2_wrprotect(self.pgt, addr, size) == 0
        self.ref.wrprotect(addr, size)

    @rule(page=pages, prot=prots)
    def relax_perms(self, page: int, prot: P) -> None:
        ipa = BASE + page * SZ_4K
        assert kvm_pgtable_stage2_relax_perms(self.pgt, ipa, prot) == self.ref.relax(ipa, prot)

    @rule(first=pages, n=lengths)
    def mkold(self, first: int, n: int) -> None:
        addr, size = self._range(first, n)
        got = kvm_pgtable_stage2_test_clear_young(self.pgt, addr, size, True)
        assert got == self.ref.mkold(addr, size)

    @rule(first=pages, n=lengths)
    def split(self, first: int, n: int) -> None:
        addr, size = self._range(first, n)
        assert topup(self.split_mc, self.env.pool, 8, 8) == 0
        assert kvm_pgtable_stage2_split(self.pgt, addr, size, self.split_mc) == 0
        self.ref.split(addr, size)

    @rule()
    def topup(self) -> None:
        assert topup(self.mc, self.env.pool, 40, 40) == 0

    @invariant()
    def every_page_matches_the_reference(self) -> None:
        for page in range(0, PAGES, 13):
            ipa = BASE + page * SZ_4K
            got = kvm_pgtable_get_leaf(self.pgt, ipa)
            a = self.ref.containing(ipa)
            if a is None:
                assert not kvm_pte_valid(got.pte), hex(ipa)
                continue
            e = self.ref.entries[a]
            assert kvm_pte_valid(got.pte), hex(ipa)
            assert got.level == {SZ_2M: 2, SZ_4K: 3}[e.size]
            assert kvm_pte_to_phys(got.pte, self.env.g) == e.pa
            assert kvm_pgtable_stage2_pte_prot(got.pte) == e.prot
            assert bool(got.pte & KVM_PTE_LEAF_ATTR_LO_S2_AF) == e.young

    @invariant()
    def refcounts_match_counted_entries(self) -> None:
        assert check_refcounts(scan_tree(self.pgt)) == []

    def teardown(self) -> None:
        assert kvm_pgtable_stage2_unmap(self.pgt, 0, 1 << 40) == 0
        cached = self.mc.nobjs + self.split_mc.nobjs
        assert self.env.pool.in_use() - cached == 2  # only the PGD is left


Stage2AgainstReference.TestCase.settings = settings(
    max_examples=30, stateful_step_count=20, deadline=None
)
TestStage2AgainstReference = Stage2AgainstReference.TestCase


def _default_leaves_uncounted(pte: int, level: int) -> bool:
    """A host-like rule: valid RWX leaves without software bits are not counted."""
    if not pte & 1:
        return pte != 0
    return kvm_pgtable_stage2_pte_prot(pte) != RWX


def test_per_table_counted_rule_governs_every_reference(env: PgtableEnv) -> None:
    pgt = new_stage2(env, 40, pte_is_counted_cb=_default_leaves_uncounted)
    mc = memcache(env)
    assert kvm_pgtable_stage2_map(pgt, 0, 4 * SZ_4K, 0, RWX, mc) == 0
    tree = scan_tree(pgt)
    assert check_refcounts(tree) == []
    (leaf_table,) = [page for page, (_, lvl) in tree.tables.items() if lvl == 3]
    assert pgt.ops.page_count(leaf_table) == 1  # four default leaves, none counted
    # A software-bit change makes the entry counted, and back.
    shared = RWX | P.SW0
    assert kvm_pgtable_stage2_map(pgt, 0, SZ_4K, 0, shared, mc) == 0
    assert pgt.ops.page_count(leaf_table) == 2
    assert check_refcounts(scan_tree(pgt)) == []
    assert kvm_pgtable_stage2_set_owner(pgt, SZ_4K, SZ_4K, mc, 1) == 0
    assert pgt.ops.page_count(leaf_table) == 3
    assert kvm_pgtable_stage2_unmap(pgt, 0, 4 * SZ_4K) == 0
    assert check_refcounts(scan_tree(pgt)) == []
    assert leaf_table not in scan_tree(pgt).tables  # emptied by the table's own rule


def test_block_over_a_table_of_uncounted_leaves_frees_it_by_the_tables_rule(
    env: PgtableEnv,
) -> None:
    pgt = new_stage2(env, 40, pte_is_counted_cb=_default_leaves_uncounted)
    mc = memcache(env)
    assert kvm_pgtable_stage2_map(pgt, 0, SZ_4K, 0, RWX, mc) == 0
    warns = len(env.events.of_type(Warn))
    assert kvm_pgtable_stage2_map(pgt, 0, SZ_2M, 0, RWX, mc) == 0
    assert len(env.events.of_type(Warn)) == warns
    assert check_refcounts(scan_tree(pgt)) == []
