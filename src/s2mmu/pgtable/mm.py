"""Memory management for page tables: pages, refcounts, memcaches, RCU, and mm_ops.

Table pages live in the model's :class:`~s2mmu.arch.memory.PhysMem`, so the architecture
walker can walk what the library builds. A :class:`PagePool` hands out zeroed host pages
and keeps the ``struct page`` refcount the kernel uses for table pages (1 for the page
itself, plus one per counted entry). :class:`KvmPgtableMmOps` is the kernel's
``struct kvm_pgtable_mm_ops``; since the model has no globals, it also carries the
injected host state pgtable.c would read globally (granule, capabilities, behaviour
profile, event log) and performs the descriptor accesses (READ_ONCE, WRITE_ONCE /
smp_store_release, cmpxchg) so that use-after-free and descriptor writes are observable.

Addresses are physical: the model's phys_to_virt/virt_to_phys are the identity.

Kernel: struct kvm_pgtable_mm_ops (asm/kvm_pgtable.h); stage2_memcache_zalloc_page,
kvm_s2_zalloc_pages_exact, kvm_s2_free_pages_exact, stage2_free_unlinked_table,
stage2_free_unlinked_table_rcu_cb, kvm_host_get_page, kvm_s2_put_page,
kvm_host_page_count (arch/arm64/kvm/mmu.c); __kvm_mmu_topup_memory_cache,
kvm_mmu_topup_memory_cache, kvm_mmu_memory_cache_alloc (virt/kvm/kvm_main.c);
KVM_ARCH_NR_OBJS_PER_MEMORY_CACHE (asm/kvm_types.h).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from s2mmu.arch.memory import PAGE_SIZE as PHYS_PAGE_SIZE
from s2mmu.arch.memory import PhysMem
from s2mmu.pgtable.caps import KvmCaps
from s2mmu.pgtable.errno import EIO, ENOMEM
from s2mmu.pgtable.events import (
    DcacheCleanInvalPoc,
    EventLog,
    IcacheInvalPou,
    Isb,
    PageAlloc,
    PageFree,
    PteWrite,
    UseAfterFree,
    Warn,
)
from s2mmu.pgtable.inject import InjectedBug
from s2mmu.pgtable.profile import CURRENT, BehaviourProfile
from s2mmu.pgtable.pte import Granule
from s2mmu.pgtable.steps import Gen

if TYPE_CHECKING:
    from s2mmu.pgtable.table import KvmPgtable

KVM_ARCH_NR_OBJS_PER_MEMORY_CACHE = 40


class KernelBug(RuntimeError):
    """The kernel would have hit BUG() here (for example an empty atomic allocation)."""


class PagePool:
    """Host pages for page tables, with their refcounts.

    Pages come from [base, base + npages * page_size); freed pages are reused last-freed
    first, so reuse after free happens in small scenarios. A freshly handed-out page
    reads as zero.
    """

    def __init__(self, mem: PhysMem, g: Granule, base: int, npages: int) -> None:
        if base % g.page_size:
            raise ValueError(f"pool base {base:#x} is not {g.page_size:#x}-aligned")
        self.mem = mem
        self.g = g
        self.base = base
        self.npages = npages
        self._next = base
        self._free: list[int] = []
        self.refcount: dict[int, int] = {}
        self.freed: set[int] = set()

    def page_of(self, addr: int) -> int:
        """Return the address of the page holding addr."""
        return addr & ~(self.g.page_size - 1)

    def in_use(self) -> int:
        """Return how many pages are allocated (including those sitting in memcaches)."""
        return len(self.refcount)

    def _zero(self, pa: int) -> None:
        for off in range(0, self.g.page_size, PHYS_PAGE_SIZE):
            self.mem.free_page(pa + off)

    def _take(self, pa: int) -> int:
        self.freed.discard(pa)
        self._zero(pa)
        self.refcount[pa] = 1
        return pa

    def alloc_page(self) -> int | None:
        """Return a zeroed page with refcount 1, or None when the pool is exhausted."""
        if self._free:
            return self._take(self._free.pop())
        if self._next >= self.base + self.npages * self.g.page_size:
            return None
        pa, self._next = self._next, self._next + self.g.page_size
        return self._take(pa)

    def next_pages(self, n: int) -> list[int]:
        """Return the pages the next n alloc_page calls would return (fewer when the
        pool runs out), allocating nothing."""
        free = list(self._free)
        out: list[int] = []
        nxt = self._next
        end = self.base + self.npages * self.g.page_size
        while len(out) < n and (free or nxt < end):
            if free:
                out.append(free.pop())
            else:
                out.append(nxt)
                nxt += self.g.page_size
        return out

    def alloc_pages_exact(self, n: int) -> int | None:
        """Return n physically contiguous zeroed pages (each with refcount 1), or None.

        Fresh pages first; once the pool's end is reached, a run of n freed pages.
        """
        size = n * self.g.page_size
        if self._next + size > self.base + self.npages * self.g.page_size:
            return self._alloc_freed_run(n)
        pa, self._next = self._next, self._next + size
        for i in range(n):
            self._take(pa + i * self.g.page_size)
        return pa

    def _alloc_freed_run(self, n: int) -> int | None:
        """Take n contiguous pages from the freed ones, lowest run first, or None."""
        page = self.g.page_size
        free = set(self._free)
        for pa in sorted(free):
            if all(pa + i * page in free for i in range(n)):
                run = {pa + i * page for i in range(n)}
                self._free = [f for f in self._free if f not in run]
                for i in range(n):
                    self._take(pa + i * page)
                return pa
        return None

    def free(self, pa: int) -> None:
        """Return a page to the pool (its contents are gone)."""
        del self.refcount[pa]
        self._zero(pa)
        self.freed.add(pa)
        self._free.append(pa)


@dataclass
class KvmMmuMemoryCache:
    """Pages set aside before taking a lock, so table allocation cannot sleep or fail.

    Kernel: struct kvm_mmu_memory_cache; kvm_mmu_memory_cache_nr_free_objects.
    """

    capacity: int = 0
    objects: list[int] = field(default_factory=list)

    @property
    def nobjs(self) -> int:
        """Return how many pages the cache holds."""
        return len(self.objects)


def __kvm_mmu_topup_memory_cache(
    mc: KvmMmuMemoryCache, pool: PagePool, capacity: int, min_objs: int
) -> int:
    """Fill the cache to capacity from the pool; fail only if fewer than min_objs fit.

    Kernel: __kvm_mmu_topup_memory_cache.
    """
    if mc.nobjs >= min_objs:
        return 0
    if mc.capacity == 0:
        mc.capacity = capacity
    if mc.capacity != capacity:
        return -EIO
    while mc.nobjs < mc.capacity:
        pa = pool.alloc_page()
        if pa is None:
            return 0 if mc.nobjs >= min_objs else -ENOMEM
        mc.objects.append(pa)
    return 0


def kvm_mmu_topup_memory_cache(mc: KvmMmuMemoryCache, pool: PagePool, min_objs: int) -> int:
    """Top the cache up to KVM_ARCH_NR_OBJS_PER_MEMORY_CACHE, needing at least min_objs.

    Kernel: kvm_mmu_topup_memory_cache.
    """
    return __kvm_mmu_topup_memory_cache(mc, pool, KVM_ARCH_NR_OBJS_PER_MEMORY_CACHE, min_objs)


def kvm_mmu_free_memory_cache(mc: KvmMmuMemoryCache, pool: PagePool) -> None:
    """Give every cached page back to the pool.

    Kernel: kvm_mmu_free_memory_cache.
    """
    while mc.objects:
        pool.free(mc.objects.pop())
    mc.capacity = 0


class Rcu:
    """Deferred freeing for the host's table pages (call_rcu).

    Every page-table walk counts as a reader from its start to its end: the walker runs
    with the mmu_lock held and preemption disabled, so no grace period can end under it.
    A callback runs once every walk that was in progress when it was queued has ended.
    Callbacks run atomically (they are not interleaved by the concurrency explorer).
    """

    def __init__(self) -> None:
        self._active: set[int] = set()
        self._next_id = 0
        self._pending: list[tuple[frozenset[int], Callable[[], None]]] = []

    def read_lock(self) -> int:
        """Enter a read-side section; return its token."""
        self._next_id += 1
        self._active.add(self._next_id)
        return self._next_id

    def read_unlock(self, token: int) -> None:
        """Leave a read-side section and run the callbacks whose grace period ended."""
        self._active.discard(token)
        self._run_due()

    def call_rcu(self, fn: Callable[[], None]) -> None:
        """Queue fn to run after the current readers have finished."""
        self._pending.append((frozenset(self._active), fn))
        self._run_due()

    def pending(self) -> int:
        """Return how many callbacks are waiting for a grace period."""
        return len(self._pending)

    def _run_due(self) -> None:
        while True:
            due = [p for p in self._pending if not p[0] & self._active]
            if not due:
                return
            for item in due:
                self._pending.remove(item)
                item[1]()


FreeUnlinked = Callable[["KvmPgtableMmOps", int, int, "KvmPgtable | None"], Gen[None]]
CacheOp = Callable[[int, int], None]


class KvmPgtableMmOps:
    """The kernel's mm_ops plus the host state the model injects instead of globals.

    zalloc_from selects where zalloc_page takes pages: "memcache" (the caller's
    kvm_mmu_memory_cache; on the host an empty cache WARNs and falls back to an atomic
    allocation, as kvm_mmu_memory_cache_alloc does; at EL2 it returns NULL) or "pool"
    (the hypervisor's own page allocator, which ignores the argument).
    rcu, when given, defers free_unlinked_table to a grace period (host KVM); without it
    the unlinked table is freed at once (pKVM at EL2 has no RCU).
    hyp_context marks code running at EL2 (nVHE/pKVM), where shared walks are refused.
    cmo gives the mm_ops dcache_clean_inval_poc and icache_inval_pou.

    Kernel: struct kvm_pgtable_mm_ops; kvm_s2_mm_ops (mmu.c).
    """

    def __init__(
        self,
        *,
        mem: PhysMem,
        pool: PagePool,
        events: EventLog,
        caps: KvmCaps,
        free_unlinked: FreeUnlinked,
        profile: BehaviourProfile = CURRENT,
        rcu: Rcu | None = None,
        zalloc_from: str = "memcache",
        memcache_fallback: bool = True,
        hyp_context: bool = False,
        cmo: bool = True,
    ) -> None:
        if zalloc_from not in ("memcache", "pool"):
            raise ValueError(f"zalloc_from must be 'memcache' or 'pool', not {zalloc_from!r}")
        self.mem = mem
        self.pool = pool
        self.g = pool.g
        self.events = events
        self.caps = caps
        self.profile = profile
        self.rcu = rcu
        self.zalloc_from = zalloc_from
        self.memcache_fallback = memcache_fallback
        self.hyp_context = hyp_context
        self._free_unlinked = free_unlinked
        self.bugs: frozenset[InjectedBug] = frozenset()
        """Bugs to have on purpose (s2mmu.pgtable.inject); none by default."""
        self.pgtable_pages = 0
        self.dcache_clean_inval_poc: CacheOp | None = self._dcache if cmo else None
        self.icache_inval_pou: CacheOp | None = self._icache if cmo else None

    # Descriptor accesses (READ_ONCE, WRITE_ONCE / smp_store_release, cmpxchg).

    def _check_live(self, ptep: int, access: str) -> None:
        page = ptep & ~(self.g.page_size - 1)
        if page in self.pool.freed:
            self.events.record(UseAfterFree(ptep, access))

    def read_pte(self, ptep: int) -> int:
        """Return the descriptor at ptep."""
        if self.pool.freed:
            self._check_live(ptep, "read")
        return self.mem.read64(ptep)

    def write_pte(self, ptep: int, new: int) -> None:
        """Store new at ptep."""
        if self.pool.freed:
            self._check_live(ptep, "write")
        if self.events.trace_ptes:
            self.events.record(PteWrite(ptep, self.mem.read64(ptep), new))
        self.mem.write64(ptep, new)

    def cas_pte(self, ptep: int, old: int, new: int) -> bool:
        """Replace old by new at ptep atomically; return whether it was still old."""
        if self.pool.freed:
            self._check_live(ptep, "cas")
        if self.mem.read64(ptep) != old:
            return False
        if self.events.trace_ptes:
            self.events.record(PteWrite(ptep, old, new))
        self.mem.write64(ptep, new)
        return True

    # Page allocation and refcounts.

    def zalloc_page(self, mc: KvmMmuMemoryCache | None) -> int | None:
        """Return a zeroed table page (refcount 1), or None.

        Kernel: mm_ops->zalloc_page; stage2_memcache_zalloc_page, kvm_mmu_memory_cache_alloc.
        """
        if self.zalloc_from == "pool":
            pa = self.pool.alloc_page()
        elif mc is not None and mc.objects:
            pa = mc.objects.pop()
        elif self.memcache_fallback:
            self.events.record(Warn("kvm_mmu_memory_cache_alloc", "!mc->nobjs"))
            pa = self.pool.alloc_page()
            if pa is None:
                raise KernelBug("kvm_mmu_memory_cache_alloc: BUG_ON(!p): atomic allocation failed")
        else:
            return None
        if pa is not None:
            self.pgtable_pages += 1
            self.events.record(PageAlloc(pa))
        return pa

    def zalloc_pages_exact(self, size: int) -> int | None:
        """Return physically contiguous zeroed pages covering size bytes, or None.

        Kernel: kvm_s2_zalloc_pages_exact.
        """
        n = -(-size // self.g.page_size)
        pa = self.pool.alloc_pages_exact(n)
        if pa is not None:
            self.pgtable_pages += n
            for i in range(n):
                self.events.record(PageAlloc(pa + i * self.g.page_size))
        return pa

    def free_pages_exact(self, pa: int, size: int) -> None:
        """Free pages from zalloc_pages_exact, whatever their refcount.

        Kernel: kvm_s2_free_pages_exact.
        """
        n = -(-size // self.g.page_size)
        self.pgtable_pages -= n
        for i in range(n):
            page = pa + i * self.g.page_size
            self.pool.free(page)
            self.events.record(PageFree(page))

    def free_unlinked_table(
        self, childp: int, level: int, pgt: KvmPgtable | None = None
    ) -> Gen[None]:
        """Free a table detached from the tree: after a grace period, or now without RCU.

        pgt, when given, is the table it was detached from (its counted-entry rule).

        Kernel: stage2_free_unlinked_table, stage2_free_unlinked_table_rcu_cb.
        """
        if self.rcu is None:
            yield from self._free_unlinked(self, childp, level, pgt)
            return
        from s2mmu.pgtable.steps import run

        self.rcu.call_rcu(lambda: run(self._free_unlinked(self, childp, level, pgt)))

    def get_page(self, addr: int) -> None:
        """Take a reference on the page holding addr.

        Kernel: kvm_host_get_page.
        """
        page = addr & ~(self.g.page_size - 1)
        count = self.pool.refcount.get(page)
        if count is None:
            self.events.record(UseAfterFree(addr, "get_page"))
            return
        self.pool.refcount[page] = count + 1

    def put_page(self, addr: int) -> None:
        """Drop a reference on the page holding addr; free it when none are left.

        Kernel: kvm_s2_put_page.
        """
        page = addr & ~(self.g.page_size - 1)
        count = self.pool.refcount.get(page)
        if count is None:
            self.events.record(UseAfterFree(addr, "put_page"))
            return
        if count == 1:
            self.pgtable_pages -= 1
            self.pool.free(page)
            self.events.record(PageFree(page))
            return
        self.pool.refcount[page] = count - 1

    def page_count(self, addr: int) -> int:
        """Return the refcount of the page holding addr (0 once freed).

        Kernel: kvm_host_page_count.
        """
        return self.pool.refcount.get(addr & ~(self.g.page_size - 1), 0)

    # Cache maintenance, recorded.

    def _dcache(self, pa: int, size: int) -> None:
        """Clean to the PoC, which FWB makes unnecessary (FWB also implies IDC).

        Kernel: clean_dcache_guest_page, __clean_dcache_guest_page (asm/kvm_mmu.h).
        """
        if self.caps.stage2_fwb:
            return
        self.events.record(DcacheCleanInvalPoc(pa, size))

    def _icache(self, pa: int, size: int) -> None:
        """Invalidate the I-cache to the PoU; with DIC that is only an ISB.

        Kernel: invalidate_icache_guest_page, icache_inval_pou (arch/arm64/mm/cache.S,
        the ARM64_HAS_CACHE_DIC alternative).
        """
        if self.caps.dic:
            self.events.record(Isb())
            return
        self.events.record(IcacheInvalPou(pa, size))

    def warn(self, function: str, condition: str) -> None:
        """Record a WARN_ON() that fired."""
        self.events.record(Warn(function, condition))
