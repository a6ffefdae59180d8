"""Shared fixtures: a fresh host, a 40-bit 4K stage 2, and a well-stocked memcache."""

from __future__ import annotations

import pytest

from s2mmu.pgtable.env import PgtableEnv, new_env, new_stage2
from s2mmu.pgtable.mm import KvmMmuMemoryCache, __kvm_mmu_topup_memory_cache
from s2mmu.pgtable.table import KvmPgtable

SZ_4K = 0x1000
SZ_2M = 0x20_0000
SZ_1G = 0x4000_0000


def memcache(env: PgtableEnv, pages: int = 64) -> KvmMmuMemoryCache:
    """Return a memcache holding `pages` pages from env's pool."""
    mc = KvmMmuMemoryCache()
    assert __kvm_mmu_topup_memory_cache(mc, env.pool, pages, pages) == 0
    return mc


@pytest.fixture
def env() -> PgtableEnv:
    return new_env()


@pytest.fixture
def pgt(env: PgtableEnv) -> KvmPgtable:
    return new_stage2(env, 40)


@pytest.fixture
def mc(env: PgtableEnv) -> KvmMmuMemoryCache:
    return memcache(env)
