"""Ready-made hosts: physical memory, page pool, events, and the kernel's mm_ops flavours.

Each flavour matches one set of mm_ops the kernel installs:

- ``kvm_s2_mm_ops``: host KVM guest stage 2 (arch/arm64/kvm/mmu.c): table pages from the
  caller's memcache (an empty cache WARNs and falls back to an atomic allocation),
  detached tables freed after an RCU grace period, cache maintenance.
- ``pkvm_guest_mm_ops``: a protected guest's stage 2 at EL2 (nvhe/mem_protect.c): pages
  from the guest's hyp memcache (NULL when empty), detached tables freed at once, shared
  walks refused, cache maintenance.
- ``pkvm_host_mm_ops``: the host's identity stage 2 at EL2: pages from the hyp pool,
  freed at once, no cache maintenance.
- ``kvm_hyp_mm_ops``: the hypervisor's stage 1: pages from the hyp pool.

Kernel: kvm_s2_mm_ops, kvm_init_stage2_mmu (arch/arm64/kvm/mmu.c); the pKVM mm_ops in
arch/arm64/kvm/hyp/nvhe/mem_protect.c and setup.c, as summarised above.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from s2mmu.arch.memory import PhysMem
from s2mmu.pgtable.caps import KvmCaps
from s2mmu.pgtable.events import EventLog
from s2mmu.pgtable.hyp import kvm_pgtable_hyp_init
from s2mmu.pgtable.mm import (
    KvmMmuMemoryCache,
    KvmPgtableMmOps,
    PagePool,
    Rcu,
    kvm_mmu_free_memory_cache,
    kvm_mmu_topup_memory_cache,
)
from s2mmu.pgtable.profile import CURRENT, BehaviourProfile
from s2mmu.pgtable.pte import (
    KVM_PGTABLE_LAST_LEVEL,
    Granule,
    granule,
    kvm_granule_size,
    kvm_level_supports_block_mapping,
)
from s2mmu.pgtable.stage2 import (
    kvm_pgtable_stage2_free_unlinked,
    kvm_pgtable_stage2_init,
    kvm_pgtable_stage2_map,
)
from s2mmu.pgtable.table import ForcePteCb, KvmPgtable, KvmS2Mmu, PteIsCountedCb
from s2mmu.pgtable.vtcr import ID_AA64MMFR0_EL1_PARANGE_48, kvm_get_vtcr, kvm_get_vttbr

POOL_BASE = 0x80_0000_0000
"""Where table pages come from by default (512 GiB), clear of typical guest RAM PAs."""

POOL_PAGES = 1 << 22


@dataclass
class PgtableEnv:
    """The injected host: memory, page pool, events, RCU, capabilities, profile."""

    mem: PhysMem
    pool: PagePool
    events: EventLog
    caps: KvmCaps
    profile: BehaviourProfile
    g: Granule
    rcu: Rcu = field(default_factory=Rcu)


def new_env(
    page_shift: int = 12,
    caps: KvmCaps | None = None,
    profile: BehaviourProfile = CURRENT,
    events: EventLog | None = None,
    mem: PhysMem | None = None,
    pool_base: int = POOL_BASE,
    pool_pages: int = POOL_PAGES,
) -> PgtableEnv:
    """Return a fresh host with an empty page pool."""
    g = granule(page_shift)
    mem = mem if mem is not None else PhysMem()
    return PgtableEnv(
        mem=mem,
        pool=PagePool(mem, g, pool_base, pool_pages),
        events=events if events is not None else EventLog(),
        caps=caps or KvmCaps(),
        profile=profile,
        g=g,
    )


def _mm_ops(env: PgtableEnv, **kw: object) -> KvmPgtableMmOps:
    return KvmPgtableMmOps(
        mem=env.mem,
        pool=env.pool,
        events=env.events,
        caps=env.caps,
        profile=env.profile,
        free_unlinked=kvm_pgtable_stage2_free_unlinked.steps,
        **kw,  # type: ignore[arg-type]
    )


def kvm_s2_mm_ops(env: PgtableEnv) -> KvmPgtableMmOps:
    """Return the host KVM stage-2 mm_ops (memcache, RCU, CMOs)."""
    return _mm_ops(env, rcu=env.rcu, zalloc_from="memcache", memcache_fallback=True)


def pkvm_guest_mm_ops(env: PgtableEnv) -> KvmPgtableMmOps:
    """Return pKVM's guest stage-2 mm_ops at EL2 (hyp memcache, immediate free, CMOs)."""
    return _mm_ops(env, zalloc_from="memcache", memcache_fallback=False, hyp_context=True)


def pkvm_host_mm_ops(env: PgtableEnv) -> KvmPgtableMmOps:
    """Return pKVM's host stage-2 mm_ops at EL2 (hyp pool, immediate free, no CMOs)."""
    return _mm_ops(env, zalloc_from="pool", hyp_context=True, cmo=False)


def kvm_hyp_mm_ops(env: PgtableEnv) -> KvmPgtableMmOps:
    """Return the hypervisor stage-1 mm_ops (hyp pool)."""
    return _mm_ops(env, zalloc_from="pool", hyp_context=True, cmo=False)


def new_stage2(
    env: PgtableEnv,
    ipa_bits: int = 40,
    *,
    vmid: int = 1,
    flags: int = 0,
    force_pte_cb: ForcePteCb | None = None,
    mm_ops: KvmPgtableMmOps | None = None,
    pte_is_counted_cb: PteIsCountedCb | None = None,
    mmfr0: int = ID_AA64MMFR0_EL1_PARANGE_48,
    mmfr1: int = 0b0010 << 4,
) -> KvmPgtable:
    """Return an initialised stage 2 for an IPA space of ipa_bits (host KVM by default).

    Kernel: kvm_init_stage2_mmu (the VTCR from the IPA size, then kvm_pgtable_stage2_init).
    """
    vtcr = kvm_get_vtcr(mmfr0, mmfr1, ipa_bits, env.g, env.caps)
    mmu = KvmS2Mmu(vmid=vmid, vtcr=vtcr)
    pgt = KvmPgtable()
    ops = mm_ops or kvm_s2_mm_ops(env)
    ret = kvm_pgtable_stage2_init(pgt, mmu, ops, flags, force_pte_cb, pte_is_counted_cb)
    if ret:
        raise MemoryError(f"kvm_pgtable_stage2_init failed: {ret}")
    return pgt


def new_hyp(
    env: PgtableEnv, va_bits: int = 48, mm_ops: KvmPgtableMmOps | None = None
) -> KvmPgtable:
    """Return an initialised hypervisor stage-1 table.

    Kernel: kvm_pgtable_hyp_init.
    """
    pgt = KvmPgtable()
    ret = kvm_pgtable_hyp_init(pgt, va_bits, mm_ops or kvm_hyp_mm_ops(env))
    if ret:
        raise MemoryError(f"kvm_pgtable_hyp_init failed: {ret}")
    return pgt


def stage2_cache_min_pages(pgt: KvmPgtable) -> int:
    """Return the table pages one leaf mapping of pgt can need: one per level below the start.

    Kernel: kvm_mmu_cache_min_pages (kvm_stage2_levels(mmu) - 1).
    """
    return KVM_PGTABLE_LAST_LEVEL - pgt.start_level


def stage2_map_chunk(pgt: KvmPgtable, addr: int, end: int, phys: int, prot: int) -> int:
    """Return the size of the next piece of [addr, end) one leaf can map (see stage2_map_topup).

    The largest block kvm_pgtable_stage2_map may use where addr and phys are aligned to
    it and it fits (a page when force_pte_cb asks for pages).
    """
    g = pgt.ops.g
    for level in range(max(pgt.start_level, g.min_block_level), KVM_PGTABLE_LAST_LEVEL):
        size = kvm_granule_size(level, g)
        fits = not (addr | phys) & (size - 1) and addr + size <= end
        forced = pgt.force_pte_cb is not None and pgt.force_pte_cb(addr, addr + size, prot)
        if kvm_level_supports_block_mapping(level, g) and fits and not forced:
            return size
    return g.page_size


def stage2_map_topup(pgt: KvmPgtable, addr: int, size: int, phys: int, prot: int,
                     mc: KvmMmuMemoryCache | None = None, flags: int = 0) -> int:
    """Map [addr, addr + size) to phys as KVM's callers do: top the memcache up, then map.

    A convenience for building a stage 2 by hand (tests, notebooks): the range is mapped
    one leaf at a time, the largest block that fits first; before each,
    the memcache is topped up from the pool with the pages one leaf mapping can need,
    as kvm_phys_addr_ioremap does before each page and user_mem_abort before each fault.
    mc: the memcache to use; by default a fresh one whose unused pages go back to the pool
    at the end (kvm_mmu_free_memory_cache), as KVM frees a vCPU's cache.
    Returns 0, or the first negative errno (-ENOMEM when the pool runs dry).

    Kernel: kvm_phys_addr_ioremap, user_mem_abort (kvm_mmu_topup_memory_cache with
    kvm_mmu_cache_min_pages, then kvm_pgtable_stage2_map).
    """
    cache = mc if mc is not None else KvmMmuMemoryCache()
    end, ret = addr + size, 0
    while addr < end and not ret:
        chunk = stage2_map_chunk(pgt, addr, end, phys, prot)
        ret = kvm_mmu_topup_memory_cache(cache, pgt.ops.pool, stage2_cache_min_pages(pgt))
        if not ret:
            ret = kvm_pgtable_stage2_map(pgt, addr, chunk, phys, prot, cache, flags)
        addr, phys = addr + chunk, phys + chunk
    if mc is None:
        kvm_mmu_free_memory_cache(cache, pgt.ops.pool)
    return ret


def stage2_vttbr(pgt: KvmPgtable) -> int:
    """Return the VTTBR_EL2 value for pgt: its PGD and its MMU's VMID.

    Kernel: kvm_get_vttbr.
    """
    if pgt.pgd is None:
        raise ValueError("stage 2 is not initialised (no PGD)")
    return kvm_get_vttbr(pgt.pgd, pgt.s2_mmu.vmid, pgt.ops.g)
