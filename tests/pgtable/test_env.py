"""The mm_ops flavours and the ready-made constructors."""

import pytest

from s2mmu.pgtable.env import (
    kvm_hyp_mm_ops,
    kvm_s2_mm_ops,
    new_env,
    new_stage2,
    pkvm_guest_mm_ops,
    pkvm_host_mm_ops,
)


def test_host_stage2_ops_defer_frees_to_rcu_and_do_cache_maintenance() -> None:
    ops = kvm_s2_mm_ops(new_env())
    assert ops.rcu is not None and not ops.hyp_context
    assert ops.zalloc_from == "memcache" and ops.memcache_fallback
    assert ops.dcache_clean_inval_poc is not None


def test_pkvm_guest_ops_run_at_el2_without_rcu() -> None:
    ops = pkvm_guest_mm_ops(new_env())
    assert ops.rcu is None and ops.hyp_context and not ops.memcache_fallback
    assert ops.icache_inval_pou is not None


@pytest.mark.parametrize("flavour", [pkvm_host_mm_ops, kvm_hyp_mm_ops])
def test_el2_owned_tables_take_pages_from_the_pool_without_cmos(flavour) -> None:  # type: ignore[no-untyped-def]
    ops = flavour(new_env())
    assert ops.zalloc_from == "pool" and ops.dcache_clean_inval_poc is None


def test_new_stage2_fails_when_the_pgd_cannot_be_allocated() -> None:
    with pytest.raises(MemoryError, match="kvm_pgtable_stage2_init"):
        new_stage2(new_env(pool_pages=1), 40)


def test_zalloc_from_is_checked() -> None:
    from s2mmu.pgtable.env import _mm_ops

    with pytest.raises(ValueError, match="zalloc_from"):
        _mm_ops(new_env(), zalloc_from="heap")


# --- stage2_map_topup: mapping as KVM's callers do ---------------------------------------

def test_map_topup_maps_blocks_and_pages_without_a_hand_made_memcache() -> None:
    from s2mmu.pgtable.env import new_env, new_stage2, stage2_map_topup
    from s2mmu.pgtable.prot import KVM_PGTABLE_PROT_RW
    from s2mmu.pgtable.walk import kvm_pgtable_get_leaf

    env = new_env()
    pgt = new_stage2(env, 40)
    assert stage2_map_topup(pgt, 0x4000_0000, 0x20_1000, 0x8000_0000, KVM_PGTABLE_PROT_RW) == 0
    assert kvm_pgtable_get_leaf(pgt, 0x4000_0000).level == 2
    assert kvm_pgtable_get_leaf(pgt, 0x4020_0000).level == 3


def test_map_topup_returns_unused_memcache_pages_to_the_pool() -> None:
    from s2mmu.pgtable.env import new_env, new_stage2, stage2_map_topup
    from s2mmu.pgtable.events import PageAlloc
    from s2mmu.pgtable.prot import KVM_PGTABLE_PROT_RW

    env = new_env()
    pgt = new_stage2(env, 40)
    stage2_map_topup(pgt, 0x4000_0000, 0x1000, 0x8000_0000, KVM_PGTABLE_PROT_RW)
    # the PGD (2 concatenated pages) and the level-2 and level-3 tables, nothing cached
    assert env.pool.in_use() == 4
    assert len(env.events.of_type(PageAlloc)) == 4


def test_map_topup_with_an_empty_pool_is_enomem() -> None:
    from s2mmu.pgtable.env import new_env, new_stage2, stage2_map_topup
    from s2mmu.pgtable.errno import ENOMEM
    from s2mmu.pgtable.prot import KVM_PGTABLE_PROT_RW

    env = new_env(pool_pages=2)
    pgt = new_stage2(env, 40)
    assert stage2_map_topup(pgt, 0x4000_0000, 0x1000, 0x8000_0000,
                            KVM_PGTABLE_PROT_RW) == -ENOMEM


def test_map_topup_honours_force_pte() -> None:
    from s2mmu.pgtable.env import new_env, new_stage2, stage2_map_topup
    from s2mmu.pgtable.prot import KVM_PGTABLE_PROT_RW
    from s2mmu.pgtable.walk import kvm_pgtable_get_leaf

    env = new_env()
    pgt = new_stage2(env, 40, force_pte_cb=lambda a, e, p: True)
    assert stage2_map_topup(pgt, 0x4000_0000, 0x20_0000, 0x8000_0000, KVM_PGTABLE_PROT_RW) == 0
    assert kvm_pgtable_get_leaf(pgt, 0x401F_F000).level == 3


def test_stage2_vttbr_has_the_pgd_and_vmid() -> None:
    from s2mmu.pgtable.env import new_env, new_stage2, stage2_vttbr

    env = new_env()
    pgt = new_stage2(env, 40, vmid=5)
    assert stage2_vttbr(pgt) == (5 << 48) | (pgt.pgd or 0)
