"""Pages, refcounts, memcaches, RCU and the mm_ops flavours."""

import pytest

from s2mmu.arch.memory import PhysMem
from s2mmu.pgtable.env import kvm_s2_mm_ops, new_env, pkvm_guest_mm_ops
from s2mmu.pgtable.errno import EIO, ENOMEM
from s2mmu.pgtable.events import PageFree, UseAfterFree, Warn
from s2mmu.pgtable.mm import (
    KVM_ARCH_NR_OBJS_PER_MEMORY_CACHE,
    KernelBug,
    KvmMmuMemoryCache,
    PagePool,
    Rcu,
    __kvm_mmu_topup_memory_cache,
    kvm_mmu_free_memory_cache,
    kvm_mmu_topup_memory_cache,
)
from s2mmu.pgtable.pte import granule


def pool(npages: int = 8) -> PagePool:
    return PagePool(PhysMem(), granule(12), 0x10_0000, npages)


def test_a_new_page_reads_zero_and_has_refcount_one() -> None:
    p = pool()
    pa = p.alloc_page()
    assert pa is not None
    assert p.mem.read64(pa + 8) == 0
    assert p.refcount[pa] == 1


def test_a_freed_page_is_handed_out_again_zeroed() -> None:
    p = pool()
    pa = p.alloc_page()
    assert pa is not None
    p.mem.write64(pa, 0xDEAD)
    p.free(pa)
    assert p.alloc_page() == pa
    assert p.mem.read64(pa) == 0


def test_an_exhausted_pool_returns_none() -> None:
    p = pool(1)
    assert p.alloc_page() is not None
    assert p.alloc_page() is None
    assert p.alloc_pages_exact(1) is None


def test_topup_fills_to_capacity_and_is_a_no_op_when_min_is_met() -> None:
    p = pool(100)
    mc = KvmMmuMemoryCache()
    assert kvm_mmu_topup_memory_cache(mc, p, 4) == 0
    assert mc.nobjs == KVM_ARCH_NR_OBJS_PER_MEMORY_CACHE
    mc.objects.pop()
    assert kvm_mmu_topup_memory_cache(mc, p, 4) == 0
    assert mc.nobjs == KVM_ARCH_NR_OBJS_PER_MEMORY_CACHE - 1


def test_topup_fails_with_enomem_only_if_min_cannot_be_met() -> None:
    mc = KvmMmuMemoryCache()
    assert __kvm_mmu_topup_memory_cache(mc, pool(3), 10, 2) == 0
    assert mc.nobjs == 3
    mc2 = KvmMmuMemoryCache()
    assert __kvm_mmu_topup_memory_cache(mc2, pool(3), 10, 5) == -ENOMEM


def test_topup_with_a_different_capacity_is_eio() -> None:
    p = pool(100)
    mc = KvmMmuMemoryCache()
    __kvm_mmu_topup_memory_cache(mc, p, 4, 1)
    mc.objects.clear()
    assert __kvm_mmu_topup_memory_cache(mc, p, 5, 1) == -EIO


def test_freeing_a_memcache_returns_its_pages() -> None:
    p = pool(10)
    mc = KvmMmuMemoryCache()
    __kvm_mmu_topup_memory_cache(mc, p, 10, 10)
    kvm_mmu_free_memory_cache(mc, p)
    assert p.in_use() == 0 and mc.nobjs == 0


def test_host_zalloc_from_an_empty_memcache_warns_and_falls_back() -> None:
    env = new_env()
    ops = kvm_s2_mm_ops(env)
    assert ops.zalloc_page(KvmMmuMemoryCache()) is not None
    assert env.events.of_type(Warn) == [Warn("kvm_mmu_memory_cache_alloc", "!mc->nobjs")]


def test_host_zalloc_bugs_when_the_fallback_allocation_fails() -> None:
    env = new_env(pool_pages=0)
    with pytest.raises(KernelBug, match="BUG_ON"):
        kvm_s2_mm_ops(env).zalloc_page(None)


def test_pkvm_zalloc_from_an_empty_memcache_returns_none() -> None:
    env = new_env()
    assert pkvm_guest_mm_ops(env).zalloc_page(KvmMmuMemoryCache()) is None
    assert env.events.of_type(Warn) == []


def test_put_page_frees_at_zero_and_accounts_the_pgtable_page() -> None:
    env = new_env()
    ops = kvm_s2_mm_ops(env)
    mc = KvmMmuMemoryCache()
    __kvm_mmu_topup_memory_cache(mc, env.pool, 1, 1)
    pa = ops.zalloc_page(mc)
    assert pa is not None and ops.pgtable_pages == 1
    ops.get_page(pa + 16)
    assert ops.page_count(pa) == 2
    ops.put_page(pa)
    ops.put_page(pa + 8)
    assert ops.page_count(pa) == 0 and ops.pgtable_pages == 0
    assert env.events.of_type(PageFree) == [PageFree(pa)]


def test_touching_a_freed_page_is_recorded_as_use_after_free() -> None:
    env = new_env()
    ops = kvm_s2_mm_ops(env)
    pa = env.pool.alloc_page()
    assert pa is not None
    ops.put_page(pa)
    ops.read_pte(pa + 8)
    ops.get_page(pa)
    assert env.events.of_type(UseAfterFree) == [
        UseAfterFree(pa + 8, "read"),
        UseAfterFree(pa, "get_page"),
    ]


def test_cas_succeeds_only_against_the_expected_value() -> None:
    env = new_env()
    ops = kvm_s2_mm_ops(env)
    pa = env.pool.alloc_page()
    assert pa is not None
    assert not ops.cas_pte(pa, 5, 7)
    assert ops.cas_pte(pa, 0, 7)
    assert ops.read_pte(pa) == 7


def test_rcu_callback_waits_for_every_reader_present_when_queued() -> None:
    rcu = Rcu()
    ran: list[str] = []
    a = rcu.read_lock()
    rcu.call_rcu(lambda: ran.append("cb"))
    b = rcu.read_lock()
    rcu.read_unlock(b)
    assert ran == [] and rcu.pending() == 1
    rcu.read_unlock(a)
    assert ran == ["cb"]


def test_rcu_callback_with_no_readers_runs_at_once() -> None:
    rcu = Rcu()
    ran: list[int] = []
    rcu.call_rcu(lambda: ran.append(1))
    assert ran == [1]


def test_cache_maintenance_is_skipped_with_fwb() -> None:
    from s2mmu.pgtable.caps import KvmCaps
    from s2mmu.pgtable.events import DcacheCleanInvalPoc, IcacheInvalPou

    env = new_env(caps=KvmCaps(stage2_fwb=True))
    ops = kvm_s2_mm_ops(env)
    assert ops.dcache_clean_inval_poc is not None and ops.icache_inval_pou is not None
    ops.dcache_clean_inval_poc(0x1000, 0x1000)
    ops.icache_inval_pou(0x1000, 0x1000)
    assert env.events.of_type(DcacheCleanInvalPoc) == []
    assert env.events.of_type(IcacheInvalPou) == [IcacheInvalPou(0x1000, 0x1000)]


def test_exact_allocation_reuses_a_freed_run_once_the_pool_end_is_reached() -> None:
    from s2mmu.arch.memory import PhysMem
    from s2mmu.pgtable.mm import PagePool
    from s2mmu.pgtable.pte import granule

    pool = PagePool(PhysMem(), granule(12), 0x10_0000, 4)
    a = pool.alloc_pages_exact(2)
    b = pool.alloc_pages_exact(2)
    assert (a, b) == (0x10_0000, 0x10_2000)
    assert pool.alloc_pages_exact(2) is None
    pool.free(0x10_0000)
    assert pool.alloc_pages_exact(2) is None  # one freed page is not a run of two
    pool.free(0x10_1000)
    assert pool.alloc_pages_exact(2) == 0x10_0000
    assert pool.in_use() == 4
