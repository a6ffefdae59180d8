"""Page ownership at EL2: the host's identity stage 2 and the hypercalls that move pages.

The hypervisor keeps three kinds of page table, all built with the page-table library:
the host's stage 2 (an identity map, no FWB, filled lazily on host aborts, holding
owner annotations for pages the host gave away), its own stage 1 (its view of pages
it owns or borrows, with the state in the software bits), and a stage 2 per guest
(state in the software bits). The host's state lives in the vmemmap (hyp_page).

Every transition checks the states of both sides first and changes nothing on a
failure: -EPERM for a page in the wrong state or not transitionable memory, -EINVAL for
a bad argument or a range that straddles memory and MMIO, -EBUSY for a pinned page or
an exhausted share count, -ENOENT when nothing is mapped where a guest page should be.

Layout: host state as of the vmemmap tracking in the mem_protect.c read (v6.16 era:
get_host_state, host_share_guest_count); hypervisor state in its stage-1 software bits,
as the older mem_protect.c read keeps it (hyp_get_page_state, hyp_complete_share), so a
page shared with EL2 is mapped there while shared (v6.16 instead maps it only while
pinned and keeps the state in hyp_page). Each hypercall runs to completion under the
component locks the kernel takes (s2mmu.pkvm.locks: host_mmu.lock, pkvm_pgd_lock, the
VM's lock, in that order), recorded as ComponentLock events.

Kernel: arch/arm64/kvm/hyp/nvhe/mem_protect.c (two versions read: the pkvm_mem_transition
era and the v6.16-era one with __pkvm_host_share_guest(pfn, gfn, nr_pages, ...)):
host_stage2_unmap_dev_all, __host_stage2_idmap, host_stage2_try, host_stage2_adjust_range,
host_stage2_idmap_locked, __host_update_page_state, host_stage2_set_owner_locked,
host_stage2_force_pte_cb, host_stage2_idmap, check_page_state_range,
__host_check_page_state_range, __host_set_page_state_range, hyp_get_page_state,
guest_get_page_state, __guest_check_page_state_range, __pkvm_host_share_hyp,
__pkvm_host_unshare_hyp, __pkvm_host_donate_hyp, __pkvm_hyp_donate_host,
hyp_pin_shared_mem, hyp_unpin_shared_mem, __pkvm_host_share_ffa, __pkvm_host_unshare_ffa,
__guest_check_transition_size, __pkvm_host_share_guest, __check_host_shared_guest,
__pkvm_host_unshare_guest, __pkvm_host_relax_perms_guest, __pkvm_host_wrprotect_guest,
__pkvm_host_test_clear_young_guest, __pkvm_host_mkyoung_guest, pkvm_ownership_selftest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from s2mmu.arch.memory import PhysMem
from s2mmu.pgtable.caps import KvmCaps
from s2mmu.pgtable.env import PgtableEnv, new_env, new_hyp, new_stage2, pkvm_guest_mm_ops
from s2mmu.pgtable.errno import E2BIG, EAGAIN, EINVAL, ENOENT, ENOMEM, EPERM
from s2mmu.pgtable.events import EventLog
from s2mmu.pgtable.hyp import kvm_pgtable_hyp_map, kvm_pgtable_hyp_unmap
from s2mmu.pgtable.mm import (
    KvmMmuMemoryCache,
    KvmPgtableMmOps,
    PagePool,
    __kvm_mmu_topup_memory_cache,
)
from s2mmu.pgtable.profile import CURRENT, BehaviourProfile
from s2mmu.pgtable.prot import (
    KVM_PGTABLE_PROT_RWX,
    PAGE_HYP,
    kvm_pgtable_hyp_pte_prot,
    kvm_pgtable_stage2_pte_prot,
)
from s2mmu.pgtable.pte import (
    KVM_PGTABLE_LAST_LEVEL,
    PkvmComponentId,
    kvm_granule_size,
    kvm_level_supports_block_mapping,
    kvm_pte_to_phys,
    kvm_pte_valid,
)
from s2mmu.pgtable.stage2 import (
    kvm_pgtable_stage2_free_unlinked,
    kvm_pgtable_stage2_map,
    kvm_pgtable_stage2_mkyoung,
    kvm_pgtable_stage2_relax_perms,
    kvm_pgtable_stage2_set_owner,
    kvm_pgtable_stage2_test_clear_young,
    kvm_pgtable_stage2_unmap,
    kvm_pgtable_stage2_wrprotect,
)
from s2mmu.pgtable.steps import Gen
from s2mmu.pgtable.table import KVM_PGTABLE_S2_IDMAP, KVM_PGTABLE_S2_NOFWB, KvmPgtable
from s2mmu.pgtable.walk import (
    KVM_PGTABLE_WALK_LEAF,
    KvmPgtableVisitCtx,
    KvmPgtableWalker,
    kvm_pgtable_get_leaf,
    kvm_pgtable_walk,
)
from s2mmu.pkvm.errno import EBUSY
from s2mmu.pkvm.locks import component_locks
from s2mmu.pkvm.memory import (
    U32_MAX,
    HypMemory,
    KvmMemRange,
    MemblockRegion,
    Vmemmap,
    addr_is_memory,
    check_range_allowed_memory,
    find_mem_range,
    range_included,
    range_is_memory,
)
from s2mmu.pkvm.states import (
    PKVM_HOST_MEM_PROT,
    PKVM_HOST_MMIO_PROT,
    PKVM_ID_GUEST,
    PKVM_ID_HOST,
    PKVM_ID_HYP,
    PKVM_NOPAGE,
    PKVM_PAGE_OWNED,
    PKVM_PAGE_SHARED_BORROWED,
    PKVM_PAGE_SHARED_OWNED,
    PkvmPageState,
    pkvm_getstate,
    pkvm_mkstate,
)

KVM_HOST_S2_FLAGS = KVM_PGTABLE_S2_NOFWB | KVM_PGTABLE_S2_IDMAP

HYP_VA_OFFSET = 1 << 47
"""Where the hypervisor's linear map puts PA 0 (the model's __hyp_va offset)."""

RAM_BASE = 0x4000_0000
HYP_POOL_BASE = 0x8000_0000
HOST_S2_POOL_BASE = 0x9000_0000


@dataclass
class PkvmHypVm:
    """A guest as EL2 knows it: handle, protection, stage 2 and the vCPU's memcache.

    Kernel: struct pkvm_hyp_vm (kvm.arch.mmu, pgt, the vCPU's pkvm_memcache);
    pkvm_hyp_vm_is_protected.
    """

    handle: int
    protected: bool
    pgt: KvmPgtable
    memcache: KvmMmuMemoryCache
    dying: bool = False


@dataclass
class Pkvm:
    """The hypervisor's state: memory map, vmemmap, host stage 2, hyp stage 1, guests.

    Kernel: hyp_memory, hyp_vmemmap, host_mmu (its pgt and host_s2_pool), pkvm_pgtable,
    the VM table of nvhe/pkvm.c.
    """

    env: PgtableEnv
    hyp_memory: HypMemory
    vmemmap: Vmemmap
    host_s2_pool: PagePool
    host_pgt: KvmPgtable
    hyp_pgt: KvmPgtable
    vms: dict[int, PkvmHypVm] = field(default_factory=dict)
    locks_held: list[tuple[PkvmComponentId, int]] = field(default_factory=list)

    @property
    def events(self) -> EventLog:
        """Return the event log (ComponentLock events land here)."""
        return self.env.events

    @property
    def page_size(self) -> int:
        """Return PAGE_SIZE."""
        return self.env.g.page_size


def __hyp_va(phys: int) -> int:
    """Return the hypervisor's linear-map address of phys. Kernel: __hyp_va."""
    return phys + HYP_VA_OFFSET


def __hyp_pa(va: int) -> int:
    """Return the physical address of a hypervisor linear-map address. Kernel: __hyp_pa."""
    return va - HYP_VA_OFFSET


def hyp_pfn_to_phys(pkvm: Pkvm, pfn: int) -> int:
    """Return the address of page frame pfn. Kernel: hyp_pfn_to_phys."""
    return pfn * pkvm.page_size


# ---------------------------------------------------------------------------------------
# Setup.


def host_stage2_pte_is_counted(pte: int, level: int) -> bool:
    """Return whether a host stage-2 entry holds a reference on its table page.

    Annotations count; a valid leaf counts only if its prot is not the host's default
    for memory (RWX) or MMIO (RW): default identity entries can always be rebuilt.
    """
    if not kvm_pte_valid(pte):
        return pte != 0
    prot = kvm_pgtable_stage2_pte_prot(pte)
    return prot not in (PKVM_HOST_MEM_PROT, PKVM_HOST_MMIO_PROT)


def _host_force_pte_cb(mem: HypMemory) -> Callable[[int, int, int], bool]:
    def host_stage2_force_pte_cb(addr: int, end: int, prot: int) -> bool:
        """Force pages for any mapping but the defaults. Kernel: host_stage2_force_pte_cb."""
        if range_is_memory(mem, addr, end):
            return prot != PKVM_HOST_MEM_PROT
        return prot != PKVM_HOST_MMIO_PROT

    return host_stage2_force_pte_cb


def _host_mm_ops(env: PgtableEnv, pool: PagePool) -> KvmPgtableMmOps:
    return KvmPgtableMmOps(
        mem=env.mem,
        pool=pool,
        events=env.events,
        caps=env.caps,
        profile=env.profile,
        free_unlinked=kvm_pgtable_stage2_free_unlinked.steps,
        zalloc_from="pool",
        hyp_context=True,
        cmo=False,
    )


def new_pkvm(
    ram_pages: int = 512,
    *,
    nomap_pages: int = 16,
    profile: BehaviourProfile = CURRENT,
    hyp_pool_pages: int = 512,
    host_s2_pool_pages: int = 64,
    mem: PhysMem | None = None,
    caps: KvmCaps | None = None,
    host_ram: MemblockRegion | None = None,
) -> Pkvm:
    """Return a booted pKVM: host RAM host-owned, the hypervisor's carve-outs hyp-owned.

    Memory: RAM at RAM_BASE, then a MEMBLOCK_NOMAP region, then the hyp pool (hyp
    stage-1 and guest tables) and the host stage-2 pool; the rest is MMIO. The carve-outs
    are mapped in the hyp stage 1 and annotated PKVM_ID_HYP in the host stage 2, as the
    kernel's setup does before the host is deprivileged (nvhe/setup.c, not read here).

    mem and caps: the physical memory and CPU capabilities to share with a host KVM (its
    guests' pages and the tables EL2 builds for them live in the same memory);
    host_ram: a further RAM region above the carve-outs, host-owned (where a host KVM's
    memory comes from).

    Kernel: kvm_host_prepare_stage2, prepare_host_vtcr, prepare_s2_pool.
    """
    env = new_env(profile=profile, pool_base=HYP_POOL_BASE, pool_pages=hyp_pool_pages,
                  mem=mem, caps=caps)
    page = env.g.page_size
    ram = MemblockRegion(RAM_BASE, ram_pages * page)
    regions = [ram]
    if nomap_pages:
        regions.append(MemblockRegion(ram.end, nomap_pages * page, nomap=True))
    hyp_pool = MemblockRegion(HYP_POOL_BASE, hyp_pool_pages * page)
    host_pool = MemblockRegion(HOST_S2_POOL_BASE, host_s2_pool_pages * page)
    if regions[-1].end > HYP_POOL_BASE or hyp_pool.end > HOST_S2_POOL_BASE:
        raise ValueError("RAM and the hyp pool must fit below the host stage-2 pool")
    if host_ram is not None:
        if host_ram.base < host_pool.end:
            raise ValueError("host_ram must lie above the host stage-2 pool")
        regions.append(host_ram)
    hyp_mem = HypMemory(tuple(sorted((*regions, hyp_pool, host_pool), key=lambda r: r.base)))
    host_s2_pool = PagePool(env.mem, env.g, HOST_S2_POOL_BASE, host_s2_pool_pages)
    host_pgt = new_stage2(
        env, 40, vmid=0, flags=KVM_HOST_S2_FLAGS, force_pte_cb=_host_force_pte_cb(hyp_mem),
        mm_ops=_host_mm_ops(env, host_s2_pool), pte_is_counted_cb=host_stage2_pte_is_counted,
    )  # fmt: skip
    pkvm = Pkvm(env, hyp_mem, Vmemmap(hyp_mem, page), host_s2_pool, host_pgt, new_hyp(env, 48))
    for reg in (hyp_pool, host_pool):
        if pkvm_create_mappings_locked(pkvm, reg.base, reg.size, PAGE_HYP):
            raise MemoryError("cannot map the hypervisor's carve-out")
        if host_stage2_set_owner_locked(pkvm, reg.base, reg.size, PKVM_ID_HYP):
            raise MemoryError("cannot annotate the hypervisor's carve-out")
    for reg in regions:
        for p in pkvm.vmemmap.for_each_hyp_page(reg.base, reg.size):
            p.host_state = PKVM_PAGE_OWNED
    return pkvm


def pkvm_create_mappings_locked(pkvm: Pkvm, phys: int, size: int, prot: int) -> int:
    """Map [phys, phys + size) in the hypervisor's linear map with prot.

    Kernel: pkvm_create_mappings_locked (nvhe/mm.c, by name).
    """
    return kvm_pgtable_hyp_map(pkvm.hyp_pgt, __hyp_va(phys), size, phys, prot)


# ---------------------------------------------------------------------------------------
# The host stage 2.


def _no_memcache() -> KvmMmuMemoryCache:
    # The host stage 2 allocates from host_s2_pool whatever cache it is passed.
    return KvmMmuMemoryCache()


def host_stage2_unmap_dev_all(pkvm: Pkvm) -> int:
    """Unmap everything outside memory from the host stage 2 to recycle table pages.

    Kernel: host_stage2_unmap_dev_all.
    """
    pgt = pkvm.host_pgt
    addr = 0
    for reg in pkvm.hyp_memory.regions:
        ret = kvm_pgtable_stage2_unmap(pgt, addr, reg.base - addr)
        if ret:
            return ret
        addr = reg.end
    return kvm_pgtable_stage2_unmap(pgt, addr, (1 << pgt.ia_bits) - addr)


def host_stage2_try(pkvm: Pkvm, fn: Callable[[], int]) -> int:
    """Run fn; on -ENOMEM unmap all device mappings and run it once more.

    Kernel: host_stage2_try.
    """
    ret = fn()
    if ret == -ENOMEM:
        ret = host_stage2_unmap_dev_all(pkvm)
        if not ret:
            ret = fn()
    return ret


def __host_stage2_idmap(pkvm: Pkvm, start: int, end: int, prot: int) -> int:
    """Identity-map [start, end) in the host stage 2. Kernel: __host_stage2_idmap."""
    return kvm_pgtable_stage2_map(pkvm.host_pgt, start, end - start, start, prot, _no_memcache())


def host_stage2_idmap_locked(pkvm: Pkvm, addr: int, size: int, prot: int) -> int:
    """Identity-map [addr, addr + size), recycling device mappings on -ENOMEM.

    Kernel: host_stage2_idmap_locked.
    """
    return host_stage2_try(pkvm, lambda: __host_stage2_idmap(pkvm, addr, addr + size, prot))


def __host_update_page_state(pkvm: Pkvm, addr: int, size: int, state: PkvmPageState) -> None:
    """Set the host state of every page of the range. Kernel: __host_update_page_state."""
    for p in pkvm.vmemmap.for_each_hyp_page(addr, size):
        p.host_state = state


def host_stage2_set_owner_locked(
    pkvm: Pkvm, addr: int, size: int, owner_id: PkvmComponentId
) -> int:
    """Annotate [addr, addr + size) as owner_id's in the host stage 2 and the vmemmap.

    -EPERM unless the range is memory. PKVM_ID_HOST clears the annotations (the host
    faults the pages back in) and makes the pages OWNED; any other owner makes them
    NOPAGE for the host.

    Kernel: host_stage2_set_owner_locked.
    """
    if not range_is_memory(pkvm.hyp_memory, addr, addr + size):
        return -EPERM
    ret = host_stage2_try(
        pkvm,
        lambda: kvm_pgtable_stage2_set_owner(pkvm.host_pgt, addr, size, _no_memcache(), owner_id),
    )
    if ret:
        return ret
    state = PKVM_PAGE_OWNED if owner_id == PKVM_ID_HOST else PKVM_NOPAGE
    __host_update_page_state(pkvm, addr, size, state)
    return 0


def host_stage2_adjust_range(pkvm: Pkvm, addr: int, rng: KvmMemRange) -> tuple[int, KvmMemRange]:
    """Shrink rng to the largest block around addr that is empty in the host stage 2.

    -EAGAIN if addr is already mapped (another CPU got there first); -EPERM if its entry
    is an annotation (the page is not the host's); -EINVAL (with a WARN) if no block
    level fits.

    Kernel: host_stage2_adjust_range.
    """
    leaf = kvm_pgtable_get_leaf(pkvm.host_pgt, addr)
    if leaf.ret:
        return leaf.ret, rng
    if kvm_pte_valid(leaf.pte):
        return -EAGAIN, rng
    if leaf.pte:
        if addr_is_memory(pkvm.hyp_memory, addr):
            state = pkvm.vmemmap.hyp_phys_to_page(addr).host_state
            if state != PKVM_NOPAGE:
                pkvm.host_pgt.ops.warn("host_stage2_adjust_range", "host state != PKVM_NOPAGE")
        return -EPERM, rng
    g = pkvm.env.g
    for level in range(leaf.level, KVM_PGTABLE_LAST_LEVEL + 1):
        if not kvm_level_supports_block_mapping(level, g):
            continue
        granule = kvm_granule_size(level, g)
        cur = KvmMemRange(addr & ~(granule - 1), (addr & ~(granule - 1)) + granule)
        if range_included(cur, rng):
            return 0, cur
    pkvm.host_pgt.ops.warn("host_stage2_adjust_range", "no level fits")
    return -EINVAL, rng


def host_stage2_idmap(pkvm: Pkvm, addr: int) -> int:
    """Map the largest empty block around addr that fits its memory or MMIO range.

    Kernel: host_stage2_idmap.
    """
    with component_locks(pkvm, "host_stage2_idmap"):
        reg, rng = find_mem_range(pkvm.hyp_memory, addr)
        prot = PKVM_HOST_MEM_PROT if reg is not None else PKVM_HOST_MMIO_PROT
        ret, rng = host_stage2_adjust_range(pkvm, addr, rng)
        if ret:
            return ret
        return host_stage2_idmap_locked(pkvm, rng.start, rng.end - rng.start, prot)


# ---------------------------------------------------------------------------------------
# Page-state checks.


class CheckWalkData:
    """The state a range must be in and how to read it from an entry.

    Kernel: struct check_walk_data.
    """

    __slots__ = ("desired", "get_page_state")

    def __init__(
        self, desired: PkvmPageState, get_page_state: Callable[[int], PkvmPageState]
    ) -> None:
        self.desired = desired
        self.get_page_state = get_page_state


def __check_page_state_visitor(ctx: KvmPgtableVisitCtx, visit: int) -> Gen[int]:
    """Return -EPERM if the entry's state is not the desired one.

    Kernel: __check_page_state_visitor.
    """
    d: CheckWalkData = ctx.arg
    return 0 if d.get_page_state(ctx.old) == d.desired else -EPERM
    yield  # pragma: no cover - makes this a generator


def check_page_state_range(pgt: KvmPgtable, addr: int, size: int, data: CheckWalkData) -> int:
    """Check every leaf of [addr, addr + size). Kernel: check_page_state_range."""
    walker = KvmPgtableWalker(__check_page_state_visitor, data, KVM_PGTABLE_WALK_LEAF)
    return kvm_pgtable_walk(pgt, addr, size, walker)


def __host_check_page_state_range(
    pkvm: Pkvm, addr: int, size: int, state: PkvmPageState
) -> int:
    """Check that the host holds every page of the range in state (in the vmemmap).

    -EINVAL/-EPERM from check_range_allowed_memory first: MMIO and no-map memory are
    never the host's to transition, whatever their host stage-2 entries say.

    Kernel: __host_check_page_state_range.
    """
    ret = check_range_allowed_memory(pkvm.hyp_memory, addr, addr + size)
    if ret:
        return ret
    for p in pkvm.vmemmap.for_each_hyp_page(addr, size):
        if p.host_state != state:
            return -EPERM
    return 0


def __host_set_page_state_range(
    pkvm: Pkvm, addr: int, size: int, state: PkvmPageState
) -> int:
    """Set the host state of the range, mapping it back first if the host had lost it.

    Before the state moved to the hyp vmemmap (profile knob host_state_in_pte, as 6.1 and
    6.12 do) the state is written into the host stage-2 PTEs: the range is identity-mapped
    with pkvm_mkstate(PKVM_HOST_MEM_PROT, state), page by page (a prot other than the
    default forces pages). The vmemmap is kept too, so the model's checks read one place.

    Kernel: __host_set_page_state_range (6.1, 6.12: host_stage2_idmap_locked with
    pkvm_mkstate; later: the vmemmap's host_state).
    """
    if pkvm.env.profile.host_state_in_pte:
        ret = host_stage2_idmap_locked(pkvm, addr, size, pkvm_mkstate(PKVM_HOST_MEM_PROT, state))
        if ret:
            return ret
    elif pkvm.vmemmap.hyp_phys_to_page(addr).host_state == PKVM_NOPAGE:
        ret = host_stage2_idmap_locked(pkvm, addr, size, PKVM_HOST_MEM_PROT)
        if ret:
            return ret
    __host_update_page_state(pkvm, addr, size, state)
    return 0


def hyp_get_page_state(pkvm: Pkvm, pte: int) -> PkvmPageState:
    """Return the hypervisor's state of a page from its stage-1 entry.

    Kernel: hyp_get_page_state.
    """
    if not kvm_pte_valid(pte):
        return PKVM_NOPAGE
    return pkvm_getstate(kvm_pgtable_hyp_pte_prot(pte, pkvm.env.caps))


def __hyp_check_page_state_range(pkvm: Pkvm, phys: int, size: int, state: PkvmPageState) -> int:
    """Check the hypervisor's state of the range in its stage 1.

    Kernel: __hyp_check_page_state_range (stage-1 walk form).
    """
    data = CheckWalkData(state, lambda pte: hyp_get_page_state(pkvm, pte))
    return check_page_state_range(pkvm.hyp_pgt, __hyp_va(phys), size, data)


def guest_get_page_state(pte: int) -> PkvmPageState:
    """Return a guest's state of a page from its stage-2 entry.

    Kernel: guest_get_page_state.
    """
    if not kvm_pte_valid(pte):
        return PKVM_NOPAGE
    return pkvm_getstate(kvm_pgtable_stage2_pte_prot(pte))


def __guest_check_page_state_range(
    vm: PkvmHypVm, addr: int, size: int, state: PkvmPageState
) -> int:
    """Check the guest's state of [addr, addr + size). Kernel: __guest_check_page_state_range."""
    return check_page_state_range(vm.pgt, addr, size, CheckWalkData(state, guest_get_page_state))


# ---------------------------------------------------------------------------------------
# Host <-> hypervisor.


def __pkvm_host_share_hyp(pkvm: Pkvm, pfn: int) -> int:
    """Share a host-owned page with the hypervisor (host SHARED_OWNED, hyp BORROWED).

    Kernel: __pkvm_host_share_hyp.
    """
    with component_locks(pkvm, "__pkvm_host_share_hyp"):
        phys, size = hyp_pfn_to_phys(pkvm, pfn), pkvm.page_size
        ret = __host_check_page_state_range(pkvm, phys, size, PKVM_PAGE_OWNED)
        if ret:
            return ret
        ret = __hyp_check_page_state_range(pkvm, phys, size, PKVM_NOPAGE)
        if ret:
            return ret
        prot = pkvm_mkstate(PAGE_HYP, PKVM_PAGE_SHARED_BORROWED)
        _warn_on(pkvm, "__pkvm_host_share_hyp", pkvm_create_mappings_locked(pkvm, phys, size, prot))
        _warn_on(
            pkvm,
            "__pkvm_host_share_hyp",
            __host_set_page_state_range(pkvm, phys, size, PKVM_PAGE_SHARED_OWNED),
        )
        return 0


def hyp_page_count(pkvm: Pkvm, phys: int) -> int:
    """Return the pin count of a memory page. Kernel: hyp_page_count."""
    return pkvm.vmemmap.hyp_phys_to_page(phys).refcount


def __pkvm_host_unshare_hyp(pkvm: Pkvm, pfn: int) -> int:
    """Take back a page shared with the hypervisor; -EBUSY while the hypervisor pins it.

    Kernel: __pkvm_host_unshare_hyp.
    """
    with component_locks(pkvm, "__pkvm_host_unshare_hyp"):
        phys, size = hyp_pfn_to_phys(pkvm, pfn), pkvm.page_size
        ret = __host_check_page_state_range(pkvm, phys, size, PKVM_PAGE_SHARED_OWNED)
        if ret:
            return ret
        ret = __hyp_check_page_state_range(pkvm, phys, size, PKVM_PAGE_SHARED_BORROWED)
        if ret:
            return ret
        if hyp_page_count(pkvm, phys):
            return -EBUSY
        unmapped = kvm_pgtable_hyp_unmap(pkvm.hyp_pgt, __hyp_va(phys), size)
        _warn_on(pkvm, "__pkvm_host_unshare_hyp", unmapped != size)
        _warn_on(
            pkvm,
            "__pkvm_host_unshare_hyp",
            __host_set_page_state_range(pkvm, phys, size, PKVM_PAGE_OWNED),
        )
        return 0


def __pkvm_host_donate_hyp(pkvm: Pkvm, pfn: int, nr_pages: int) -> int:
    """Give host-owned pages to the hypervisor (host NOPAGE, hyp OWNED).

    Kernel: __pkvm_host_donate_hyp.
    """
    with component_locks(pkvm, "__pkvm_host_donate_hyp"):
        phys, size = hyp_pfn_to_phys(pkvm, pfn), pkvm.page_size * nr_pages
        ret = __host_check_page_state_range(pkvm, phys, size, PKVM_PAGE_OWNED)
        if ret:
            return ret
        ret = __hyp_check_page_state_range(pkvm, phys, size, PKVM_NOPAGE)
        if ret:
            return ret
        mapped = pkvm_create_mappings_locked(pkvm, phys, size, PAGE_HYP)
        _warn_on(pkvm, "__pkvm_host_donate_hyp", mapped)
        _warn_on(
            pkvm,
            "__pkvm_host_donate_hyp",
            host_stage2_set_owner_locked(pkvm, phys, size, PKVM_ID_HYP),
        )
        return 0


def __pkvm_hyp_donate_host(pkvm: Pkvm, pfn: int, nr_pages: int) -> int:
    """Give hypervisor-owned pages back to the host.

    Kernel: __pkvm_hyp_donate_host.
    """
    with component_locks(pkvm, "__pkvm_hyp_donate_host"):
        phys, size = hyp_pfn_to_phys(pkvm, pfn), pkvm.page_size * nr_pages
        ret = __hyp_check_page_state_range(pkvm, phys, size, PKVM_PAGE_OWNED)
        if ret:
            return ret
        ret = __host_check_page_state_range(pkvm, phys, size, PKVM_NOPAGE)
        if ret:
            return ret
        unmapped = kvm_pgtable_hyp_unmap(pkvm.hyp_pgt, __hyp_va(phys), size)
        _warn_on(pkvm, "__pkvm_hyp_donate_host", unmapped != size)
        _warn_on(
            pkvm,
            "__pkvm_hyp_donate_host",
            host_stage2_set_owner_locked(pkvm, phys, size, PKVM_ID_HOST),
        )
        return 0


def hyp_pin_shared_mem(pkvm: Pkvm, start: int, end: int) -> int:
    """Pin the pages of the hyp VA range [start, end), which the host shares with EL2.

    While pinned, the host's unshare fails with -EBUSY.

    Kernel: hyp_pin_shared_mem.
    """
    page = pkvm.page_size
    start &= ~(page - 1)
    end = (end + page - 1) & ~(page - 1)
    phys, size = __hyp_pa(start), end - start
    with component_locks(pkvm, "hyp_pin_shared_mem"):
        ret = __host_check_page_state_range(pkvm, phys, size, PKVM_PAGE_SHARED_OWNED)
        if ret:
            return ret
        ret = __hyp_check_page_state_range(pkvm, phys, size, PKVM_PAGE_SHARED_BORROWED)
        if ret:
            return ret
        for p in pkvm.vmemmap.for_each_hyp_page(phys, size):
            p.refcount += 1
        return 0


def hyp_unpin_shared_mem(pkvm: Pkvm, start: int, end: int) -> None:
    """Drop one pin of each page of [start, end). Kernel: hyp_unpin_shared_mem."""
    page = pkvm.page_size
    start &= ~(page - 1)
    end = (end + page - 1) & ~(page - 1)
    with component_locks(pkvm, "hyp_unpin_shared_mem"):
        for p in pkvm.vmemmap.for_each_hyp_page(__hyp_pa(start), end - start):
            _warn_on(pkvm, "hyp_unpin_shared_mem", p.refcount == 0)
            p.refcount = max(0, p.refcount - 1)


def __pkvm_host_share_ffa(pkvm: Pkvm, pfn: int, nr_pages: int) -> int:
    """Mark host pages shared with the secure world through the FF-A proxy.

    Kernel: __pkvm_host_share_ffa.
    """
    with component_locks(pkvm, "__pkvm_host_share_ffa"):
        phys, size = hyp_pfn_to_phys(pkvm, pfn), pkvm.page_size * nr_pages
        ret = __host_check_page_state_range(pkvm, phys, size, PKVM_PAGE_OWNED)
        if not ret:
            ret = __host_set_page_state_range(pkvm, phys, size, PKVM_PAGE_SHARED_OWNED)
        return ret


def __pkvm_host_unshare_ffa(pkvm: Pkvm, pfn: int, nr_pages: int) -> int:
    """Take back pages shared through the FF-A proxy. Kernel: __pkvm_host_unshare_ffa."""
    with component_locks(pkvm, "__pkvm_host_unshare_ffa"):
        phys, size = hyp_pfn_to_phys(pkvm, pfn), pkvm.page_size * nr_pages
        ret = __host_check_page_state_range(pkvm, phys, size, PKVM_PAGE_SHARED_OWNED)
        if not ret:
            ret = __host_set_page_state_range(pkvm, phys, size, PKVM_PAGE_OWNED)
        return ret


def _warn_on(pkvm: Pkvm, function: str, cond: object) -> None:
    """Record a WARN_ON that fired (the kernel's WARN_ON around calls that cannot fail)."""
    if cond:
        pkvm.host_pgt.ops.warn(function, f"WARN_ON({cond!r})")


# ---------------------------------------------------------------------------------------
# Host <-> guest.


def __guest_check_transition_size(
    pkvm: Pkvm, phys: int, ipa: int, nr_pages: int
) -> tuple[int, int]:
    """Return (0, size) for one page or one aligned last-level-minus-one block, else -EINVAL.

    Kernel: __guest_check_transition_size.
    """
    g = pkvm.env.g
    if nr_pages == 1:
        return 0, g.page_size
    block_size = kvm_granule_size(KVM_PGTABLE_LAST_LEVEL - 1, g)
    if nr_pages != block_size // g.page_size:
        return -EINVAL, 0
    if (phys | ipa) & (block_size - 1):
        return -EINVAL, 0
    return 0, block_size


def __pkvm_host_share_guest(
    pkvm: Pkvm, pfn: int, gfn: int, nr_pages: int, vm: PkvmHypVm, prot: int
) -> int:
    """Share host memory with a guest at gfn (host SHARED_OWNED, guest BORROWED).

    The guest IPA range must be free (-EPERM); the host pages must be OWNED or already
    shared with guests only (-EPERM otherwise; -EBUSY when the share count is full);
    prot may only hold R, W and X (-EINVAL).

    Kernel: __pkvm_host_share_guest.
    """
    phys, ipa = hyp_pfn_to_phys(pkvm, pfn), hyp_pfn_to_phys(pkvm, gfn)
    if prot & ~int(KVM_PGTABLE_PROT_RWX):
        return -EINVAL
    ret, size = __guest_check_transition_size(pkvm, phys, ipa, nr_pages)
    if ret:
        return ret
    ret = check_range_allowed_memory(pkvm.hyp_memory, phys, phys + size)
    if ret:
        return ret
    with component_locks(pkvm, "__pkvm_host_share_guest", vm.handle):
        ret = __guest_check_page_state_range(vm, ipa, size, PKVM_NOPAGE)
        if ret:
            return ret
        pages = pkvm.vmemmap.for_each_hyp_page(phys, size)
        for p in pages:
            if p.host_state == PKVM_PAGE_OWNED:
                continue
            if p.host_state == PKVM_PAGE_SHARED_OWNED:
                if p.host_share_guest_count == U32_MAX:
                    return -EBUSY
                if p.host_share_guest_count:
                    continue
            return -EPERM
        for p in pages:
            p.host_state = PKVM_PAGE_SHARED_OWNED
            p.host_share_guest_count += 1
        guest_prot = pkvm_mkstate(prot, PKVM_PAGE_SHARED_BORROWED)
        _warn_on(
            pkvm,
            "__pkvm_host_share_guest",
            kvm_pgtable_stage2_map(vm.pgt, ipa, size, phys, guest_prot, vm.memcache, 0),
        )
        return 0


def __check_host_shared_guest(pkvm: Pkvm, vm: PkvmHypVm, ipa: int, size: int) -> tuple[int, int]:
    """Return (0, phys) if ipa maps host memory the host shares with vm.

    -ENOENT if nothing is mapped, -E2BIG if the mapping's size is not size, -EPERM if
    the page is not a shared one.

    Kernel: __check_host_shared_guest.
    """
    leaf = kvm_pgtable_get_leaf(vm.pgt, ipa)
    if leaf.ret:
        return leaf.ret, 0
    if not kvm_pte_valid(leaf.pte):
        return -ENOENT, 0
    g = pkvm.env.g
    if size and kvm_granule_size(leaf.level, g) != size:
        return -E2BIG, 0
    size = size or kvm_granule_size(leaf.level, g)
    if guest_get_page_state(leaf.pte) != PKVM_PAGE_SHARED_BORROWED:
        return -EPERM, 0
    phys = kvm_pte_to_phys(leaf.pte, g)
    ret = check_range_allowed_memory(pkvm.hyp_memory, phys, phys + size)
    if ret:
        _warn_on(pkvm, "__check_host_shared_guest", ret)
        return ret, 0
    for p in pkvm.vmemmap.for_each_hyp_page(phys, size):
        if p.host_state != PKVM_PAGE_SHARED_OWNED:
            return -EPERM, 0
        if not p.host_share_guest_count:
            _warn_on(pkvm, "__check_host_shared_guest", "!host_share_guest_count")
            return -EINVAL, 0
    return 0, phys


def __pkvm_host_unshare_guest(pkvm: Pkvm, gfn: int, nr_pages: int, vm: PkvmHypVm) -> int:
    """Unmap a shared page from a guest; the host owns it again when no guest shares it.

    Kernel: __pkvm_host_unshare_guest.
    """
    ipa = hyp_pfn_to_phys(pkvm, gfn)
    ret, size = __guest_check_transition_size(pkvm, 0, ipa, nr_pages)
    if ret:
        return ret
    with component_locks(pkvm, "__pkvm_host_unshare_guest", vm.handle):
        ret, phys = __check_host_shared_guest(pkvm, vm, ipa, size)
        if ret:
            return ret
        ret = kvm_pgtable_stage2_unmap(vm.pgt, ipa, size)
        if ret:
            return ret
        for p in pkvm.vmemmap.for_each_hyp_page(phys, size):
            p.host_share_guest_count -= 1
            if not p.host_share_guest_count:
                p.host_state = PKVM_PAGE_OWNED
        return 0


def __pkvm_host_relax_perms_guest(pkvm: Pkvm, gfn: int, vm: PkvmHypVm, prot: int) -> int:
    """Relax a non-protected guest's permissions at gfn; -EPERM for a protected guest.

    The walk passes no flag, so what an unmapped gfn returns depends on the profile's
    -EAGAIN rule (seed 000): 0 from v6.3 to v6.19-rc4, -EAGAIN from v6.19.

    Kernel: __pkvm_host_relax_perms_guest.
    """
    if vm.protected:
        return -EPERM
    if prot & ~int(KVM_PGTABLE_PROT_RWX):
        return -EINVAL
    with component_locks(pkvm, "__pkvm_host_relax_perms_guest", vm.handle):
        return kvm_pgtable_stage2_relax_perms(vm.pgt, hyp_pfn_to_phys(pkvm, gfn), prot, 0)


def __pkvm_host_wrprotect_guest(pkvm: Pkvm, gfn: int, nr_pages: int, vm: PkvmHypVm) -> int:
    """Write-protect a non-protected guest's range; -EPERM for a protected guest.

    Kernel: __pkvm_host_wrprotect_guest.
    """
    if vm.protected:
        return -EPERM
    ipa = hyp_pfn_to_phys(pkvm, gfn)
    ret, size = __guest_check_transition_size(pkvm, 0, ipa, nr_pages)
    if ret:
        return ret
    with component_locks(pkvm, "__pkvm_host_wrprotect_guest", vm.handle):
        return kvm_pgtable_stage2_wrprotect(vm.pgt, ipa, size)


def __pkvm_host_test_clear_young_guest(
    pkvm: Pkvm, gfn: int, nr_pages: int, mkold: bool, vm: PkvmHypVm
) -> int:
    """Return 1 if the range was young (clearing AF if mkold); -EPERM if protected.

    Kernel: __pkvm_host_test_clear_young_guest.
    """
    if vm.protected:
        return -EPERM
    ipa = hyp_pfn_to_phys(pkvm, gfn)
    ret, size = __guest_check_transition_size(pkvm, 0, ipa, nr_pages)
    if ret:
        return ret
    with component_locks(pkvm, "__pkvm_host_test_clear_young_guest", vm.handle):
        return int(kvm_pgtable_stage2_test_clear_young(vm.pgt, ipa, size, mkold))


def __pkvm_host_mkyoung_guest(pkvm: Pkvm, gfn: int, vm: PkvmHypVm) -> int:
    """Set the access flag of a non-protected guest's page; -EPERM if protected.

    Kernel: __pkvm_host_mkyoung_guest.
    """
    if vm.protected:
        return -EPERM
    with component_locks(pkvm, "__pkvm_host_mkyoung_guest", vm.handle):
        kvm_pgtable_stage2_mkyoung(vm.pgt, hyp_pfn_to_phys(pkvm, gfn), 0)
        return 0


def __pkvm_host_donate_guest(pkvm: Pkvm, pfn: int, gfn: int, vm: PkvmHypVm) -> int:
    """Give a host-owned page to a protected guest at gfn (host NOPAGE, guest OWNED).

    -EPERM for a non-protected guest (the model's rule: those get shares), a page the
    host does not own, or a gfn already mapped. Written from the share path's checks
    and the annotation PKVM_ID_GUEST; the upstream donation hypercall was not read.
    """
    phys, ipa, size = hyp_pfn_to_phys(pkvm, pfn), hyp_pfn_to_phys(pkvm, gfn), pkvm.page_size
    if not vm.protected or vm.dying:
        return -EPERM
    with component_locks(pkvm, "__pkvm_host_donate_guest", vm.handle):
        ret = __host_check_page_state_range(pkvm, phys, size, PKVM_PAGE_OWNED)
        if ret:
            return ret
        ret = __guest_check_page_state_range(vm, ipa, size, PKVM_NOPAGE)
        if ret:
            return ret
        prot = pkvm_mkstate(KVM_PGTABLE_PROT_RWX, PKVM_PAGE_OWNED)
        ret = kvm_pgtable_stage2_map(vm.pgt, ipa, size, phys, prot, vm.memcache, 0)
        if ret:
            return ret
        _warn_on(
            pkvm,
            "__pkvm_host_donate_guest",
            host_stage2_set_owner_locked(pkvm, phys, size, PKVM_ID_GUEST),
        )
        return 0


def __pkvm_host_reclaim_page(pkvm: Pkvm, vm: PkvmHypVm, gfn: int) -> int:
    """Return the page a dying guest has at gfn to the host.

    A donated page is scrubbed (zeroed) before the host gets it; a shared one is
    unshared. -EPERM unless the VM is being torn down; -ENOENT if nothing is mapped.
    Model of the reclaim step of pKVM's teardown; the upstream hypercall was not read.
    """
    if not vm.dying:
        return -EPERM
    ipa, size = hyp_pfn_to_phys(pkvm, gfn), pkvm.page_size
    leaf = kvm_pgtable_get_leaf(vm.pgt, ipa)
    if leaf.ret:
        return leaf.ret
    if not kvm_pte_valid(leaf.pte):
        return -ENOENT
    if guest_get_page_state(leaf.pte) == PKVM_PAGE_SHARED_BORROWED:
        return __pkvm_host_unshare_guest(pkvm, gfn, 1, vm)
    with component_locks(pkvm, "__pkvm_host_reclaim_page", vm.handle):
        g = pkvm.env.g
        phys = kvm_pte_to_phys(leaf.pte, g) + (ipa & (kvm_granule_size(leaf.level, g) - 1))
        ret = kvm_pgtable_stage2_unmap(vm.pgt, ipa, size)
        if ret:
            return ret
        pkvm.env.mem.write_bytes(phys, bytes(size))
        return host_stage2_set_owner_locked(pkvm, phys, size, PKVM_ID_HOST)


def new_hyp_vm(pkvm: Pkvm, handle: int, protected: bool, memcache_pages: int = 16,
               ipa_bits: int = 40, mmfr0: int | None = None) -> PkvmHypVm:
    """Create a guest's EL2 state: a stage 2 and a vCPU memcache from the hyp pool.

    The kernel fills the memcache with pages the host donates; the model takes them
    from the hyp pool. Kernel: kvm_guest_prepare_stage2 (its mm_ops and stage-2 init).
    """
    if handle in pkvm.vms:
        raise ValueError(f"VM handle {handle} is in use")
    mm_ops = pkvm_guest_mm_ops(pkvm.env)
    if mmfr0 is None:
        pgt = new_stage2(pkvm.env, ipa_bits, vmid=handle, mm_ops=mm_ops)
    else:
        pgt = new_stage2(pkvm.env, ipa_bits, vmid=handle, mm_ops=mm_ops, mmfr0=mmfr0)
    mc = KvmMmuMemoryCache()
    if __kvm_mmu_topup_memory_cache(mc, pkvm.env.pool, memcache_pages, memcache_pages):
        raise MemoryError("hyp pool exhausted")
    vm = PkvmHypVm(handle, protected, pgt, mc)
    pkvm.vms[handle] = vm
    return vm
