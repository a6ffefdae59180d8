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
