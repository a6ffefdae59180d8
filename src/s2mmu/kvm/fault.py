"""The stage-2 abort path: kvm_handle_guest_abort() and user_mem_abort() in small steps.

The three kinds of state stay apart (seed 004):

- the architectural abort (GuestAbort: ESR, FAR, HPFAR) is its own parameter, and every
  fact about it is a function of it (kvm_is_write_fault(abort), ...);
- the hypervisor context (FaultContext: memslot, HVA, IPA) is a frozen value the
  dispatcher builds once; the VMA snapshot (VmaFacts), the mapping size (MapSize) and
  the protection decision (ProtDecision) are values that one step returns and the next
  takes;
- implementation mechanics (memcache top-up, mmu_seq, the page pin) stay local to
  user_mem_abort and kvm_s2_fault_map.

Each step appends what it decided to a Decision list the caller owns, so a timeline can
show the path without the steps knowing about output.

Kernel: kvm_handle_guest_abort, user_mem_abort, fault_supports_stage2_huge_mapping,
transparent_hugepage_adjust, get_user_mapping_size, handle_access_fault,
kvm_send_hwpoison_signal, io_mem_abort (arch/arm64/kvm/mmio.c), prepare_mmu_memcache,
kvm_mmu_cache_min_pages (arch/arm64/kvm/mmu.c); the step names follow Fuad Tabba's
split of user_mem_abort (kvm_s2_fault_get_vma_info, kvm_s2_resolve_vma_size,
kvm_s2_fault_pin_pfn, kvm_s2_fault_compute_prot, kvm_s2_fault_map; seed 004).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from s2mmu.kvm.abort import (
    Error,
    GuestAbort,
    GuestResult,
    HwpoisonSignal,
    InjectedAbort,
    MmioExit,
    NisvExit,
    Resumed,
    dabt_access_size,
    esr_fsc_is_access_flag_fault,
    esr_fsc_is_permission_fault,
    esr_fsc_is_translation_fault,
    kvm_is_write_fault,
    kvm_vcpu_abt_iss1tw,
    kvm_vcpu_abt_issea,
    kvm_vcpu_dabt_is_cm,
    kvm_vcpu_dabt_isvalid,
    kvm_vcpu_get_fault_ipa,
    kvm_vcpu_trap_get_fault,
    kvm_vcpu_trap_get_perm_fault_granule,
    kvm_vcpu_trap_is_exec_fault,
    kvm_vcpu_trap_is_iabt,
)
from s2mmu.kvm.dirty import mark_page_dirty_in_slot
from s2mmu.kvm.errno import EFAULT, ENOEXEC, ENOSYS, errname
from s2mmu.kvm.host import (
    PAGE_SHIFT,
    PAGE_SIZE,
    PMD_SHIFT,
    PMD_SIZE,
    PUD_SHIFT,
    PUD_SIZE,
    FaultinError,
    HostMm,
    Pfn,
    get_kvm_ipa_limit,
    get_vma_page_shift,
    kvm_supports_cacheable_pfnmap,
    kvm_vma_is_cacheable,
    kvm_vma_mte_allowed,
    vma_is_pfnmap,
)
from s2mmu.kvm.memslot import (
    Memslot,
    gfn_to_hva_memslot_prot,
    gfn_to_memslot,
    memslot_is_logging,
    memslot_is_readonly,
)
from s2mmu.kvm.vm import Kvm, KvmVcpu, mmu_invalidate_retry
from s2mmu.pgtable.errno import EAGAIN
from s2mmu.pgtable.mm import kvm_mmu_topup_memory_cache
from s2mmu.pgtable.prot import (
    KVM_PGTABLE_PROT_DEVICE,
    KVM_PGTABLE_PROT_NORMAL_NC,
    KVM_PGTABLE_PROT_R,
    KVM_PGTABLE_PROT_W,
    KVM_PGTABLE_PROT_X,
)
from s2mmu.pgtable.stage2 import (
    kvm_pgtable_stage2_map,
    kvm_pgtable_stage2_mkyoung,
    kvm_pgtable_stage2_relax_perms,
)
from s2mmu.pgtable.walk import KVM_PGTABLE_WALK_HANDLE_FAULT, KVM_PGTABLE_WALK_SHARED


@dataclass(frozen=True)
class Decision:
    """One step's decision, for the timeline: the step's kernel name and what it chose."""

    step: str
    text: str


@dataclass(frozen=True)
class FaultContext:
    """The hypervisor context of one fault, built once by the dispatcher."""

    memslot: Memslot
    hva: int
    fault_ipa: int


@dataclass(frozen=True)
class VmaFacts:
    """What the fault needs of the VMA, snapshotted under mmap_read_lock.

    Kernel: the locals user_mem_abort copies before mmap_read_unlock (vma_shift,
    mte_allowed, vfio_allow_any_uc, vm_flags, is_vma_cacheable).
    """

    vma_shift: int
    pfnmap: bool
    cacheable: bool
    allow_any_uncached: bool
    mte_allowed: bool
    name: str


@dataclass(frozen=True)
class MapSize:
    """The mapping size chosen from the VMA and the memslot, and the IPA it starts at."""

    vma_pagesize: int
    force_pte: bool
    ipa: int


@dataclass(frozen=True)
class ProtDecision:
    """Whether the mapping is writable, and whether it must be non-cacheable."""

    writable: bool
    force_noncacheable: bool


@dataclass(frozen=True)
class Mapping:
    """What the fault installed: map (a new leaf) or relax_perms (on the existing one)."""

    op: str
    ipa: int
    size: int
    pa: int
    prot: int


@dataclass(frozen=True)
class AbortOutcome:
    """kvm_handle_guest_abort's answer: what the guest sees, the path, the mapping made."""

    result: GuestResult
    decisions: tuple[Decision, ...]
    mapping: Mapping | None = None
    dirtied: tuple[int, ...] = ()


@dataclass
class FaultHooks:
    """Test seams for the implementation mechanics (not state of the fault).

    between_pin_and_lock: run after the page is pinned and before mmu_lock is taken,
    where a concurrent MMU-notifier invalidation makes mmu_invalidate_retry() fire.
    """

    between_pin_and_lock: Callable[[], None] | None = None


Log = list[Decision]


# -- user_mem_abort's steps -------------------------------------------------------------------


def fault_supports_stage2_huge_mapping(slot: Memslot, hva: int, map_size: int) -> bool:
    """Return whether a block of map_size around hva stays inside the slot, equally aligned.

    Kernel: fault_supports_stage2_huge_mapping.
    """
    gpa_start = slot.base_gfn << PAGE_SHIFT
    uaddr_start = slot.userspace_addr
    uaddr_end = uaddr_start + (slot.npages << PAGE_SHIFT)
    if (gpa_start & (map_size - 1)) != (uaddr_start & (map_size - 1)):
        return False
    base = hva & ~(map_size - 1)
    return base >= uaddr_start and base + map_size <= uaddr_end


def kvm_s2_fault_get_vma_info(host: HostMm, ctx: FaultContext, log: Log) -> VmaFacts | Error:
    """Look the VMA up and snapshot what the fault needs of it.

    Kernel: user_mem_abort's mmap_read_lock section (vma_lookup, get_vma_page_shift).
    """
    vma = host.vma_lookup(ctx.hva)
    if vma is None:
        log.append(Decision("vma_lookup", f"no VMA at HVA {ctx.hva:#x}: -EFAULT"))
        return Error(-EFAULT, f"Failed to find VMA for hva {ctx.hva:#x}")
    facts = VmaFacts(get_vma_page_shift(vma, ctx.hva), vma_is_pfnmap(vma),
                     kvm_vma_is_cacheable(vma), vma.allow_any_uncached,
                     kvm_vma_mte_allowed(vma), vma.name or vma.kind.value)
    log.append(Decision("vma_lookup", f"VMA {facts.name} ({vma.kind.value}, "
                        f"{vma.mem_type.value}), vma_shift {facts.vma_shift}"))
    return facts


def kvm_s2_resolve_vma_size(facts: VmaFacts, ctx: FaultContext, log: Log) -> MapSize:
    """Choose the mapping size: logging forces pages; a block must fit the memslot.

    A PUD-sized VMA falls back to PMD, then to PAGE, when the slot's alignment or
    bounds do not allow the block.

    Kernel: user_mem_abort (the vma_shift switch and its fallthroughs).
    """
    slot = ctx.memslot
    force_pte = memslot_is_logging(slot)
    shift = PAGE_SHIFT if force_pte else facts.vma_shift
    why = "dirty logging forces pages" if force_pte else f"VMA shift {shift}"
    if shift == PUD_SHIFT and not fault_supports_stage2_huge_mapping(slot, ctx.hva, PUD_SIZE):
        shift, why = PMD_SHIFT, "1G block does not fit the memslot"
    if shift == PMD_SHIFT and not fault_supports_stage2_huge_mapping(slot, ctx.hva, PMD_SIZE):
        shift, force_pte, why = PAGE_SHIFT, True, "2M block does not fit the memslot"
    size = 1 << shift
    ipa = ctx.fault_ipa & ~(size - 1) if size in (PMD_SIZE, PUD_SIZE) else ctx.fault_ipa
    log.append(Decision("kvm_s2_resolve_vma_size",
                        f"{_size(size)} ({why}){', force_pte' if force_pte else ''}"))
    return MapSize(size, force_pte, ipa)


def kvm_s2_fault_pin_pfn(host: HostMm, ctx: FaultContext, write: bool,
                         log: Log) -> Pfn | FaultinError:
    """Fault the page in and take a reference (write: FOLL_WRITE); read-only slots give
    read-only PFNs.

    Kernel: __kvm_faultin_pfn, __gfn_to_pfn_memslot (memslot_is_readonly).
    """
    pfn = host.get_user_page(ctx.hva, write)
    if isinstance(pfn, Pfn) and memslot_is_readonly(ctx.memslot):
        pfn = replace(pfn, writable=False)
    if isinstance(pfn, FaultinError):
        log.append(Decision("__kvm_faultin_pfn", pfn.value))
    else:
        pinned = "pinned" if pfn.folio is not None else "no struct page, not pinned"
        log.append(Decision("__kvm_faultin_pfn", f"PA {pfn.pa:#x} "
                            f"{'writable' if pfn.writable else 'read-only'}, {pinned}"))
    return pfn


def kvm_s2_fault_compute_prot(abort: GuestAbort, ctx: FaultContext, facts: VmaFacts,
                              pfn: Pfn, kvm: Kvm, log: Log) -> ProtDecision | Error | int:
    """Decide cacheability and writability, or refuse the fault.

    - memory without struct pages whose VMA is cacheable maps cacheable only with FWB
      and DIC; otherwise -EFAULT (never a silent Device mapping, seed 003);
    - other such memory is forced non-cacheable;
    - a logging slot maps read faults read-only;
    - an exec fault on non-cacheable memory is -ENOEXEC (an SEA for the guest).

    Kernel: user_mem_abort (the VM_PFNMAP / pfn_is_map_memory block).
    """
    writable = pfn.writable
    noncacheable = False
    if facts.pfnmap and pfn.folio is None:
        if facts.cacheable:
            if not kvm_supports_cacheable_pfnmap(kvm.host.features):
                log.append(Decision("compute_prot", "cacheable PFNMAP without FWB+DIC: -EFAULT"))
                return Error(-EFAULT, "cacheable VM_PFNMAP needs FEAT_S2FWB and CTR_EL0.DIC")
        else:
            noncacheable = True
    elif memslot_is_logging(ctx.memslot) and not kvm_is_write_fault(abort):
        writable = False
    if kvm_vcpu_trap_is_exec_fault(abort) and noncacheable:
        log.append(Decision("compute_prot", "exec fault on non-cacheable memory: -ENOEXEC"))
        return -ENOEXEC
    log.append(Decision("compute_prot", f"{'RW' if writable else 'RO'}, "
                        f"{'non-cacheable' if noncacheable else 'cacheable'}"))
    return ProtDecision(writable, noncacheable)


def transparent_hugepage_adjust(host: HostMm, ctx: FaultContext, pfn: Pfn,
                                ipa: int) -> tuple[int, int, int]:
    """Return (size, pa, ipa): a PMD block when a THP backs the HVA and the slot allows it.

    Kernel: transparent_hugepage_adjust, get_user_mapping_size.
    """
    if pfn.folio is not None and fault_supports_stage2_huge_mapping(ctx.memslot, ctx.hva, PMD_SIZE):
        if host.user_mapping_size(ctx.hva) >= PMD_SIZE:
            return PMD_SIZE, pfn.pa & ~(PMD_SIZE - 1), ipa & ~(PMD_SIZE - 1)
    return PAGE_SIZE, pfn.pa, ipa


def stage2_prot(abort: GuestAbort, kvm: Kvm, prot: ProtDecision, facts: VmaFacts) -> int:
    """Return the KVM_PGTABLE_PROT_* set for the mapping.

    Kernel: user_mem_abort (prot: R always; W if writable; X for an exec fault, or for
    cacheable memory when CTR_EL0.DIC makes I-cache maintenance unnecessary; NORMAL_NC
    only with VM_ALLOW_ANY_UNCACHED, otherwise DEVICE).
    """
    p = KVM_PGTABLE_PROT_R
    if prot.writable:
        p |= KVM_PGTABLE_PROT_W
    if kvm_vcpu_trap_is_exec_fault(abort):
        p |= KVM_PGTABLE_PROT_X
    if prot.force_noncacheable:
        p |= KVM_PGTABLE_PROT_NORMAL_NC if facts.allow_any_uncached else KVM_PGTABLE_PROT_DEVICE
    elif kvm.host.features.dic:
        p |= KVM_PGTABLE_PROT_X
    return int(p)


def kvm_mmu_cache_min_pages(kvm: Kvm) -> int:
    """Return the table pages one map can need. Kernel: kvm_mmu_cache_min_pages."""
    return 4 - kvm.pgt.start_level - 1


def kvm_s2_fault_map(kvm: Kvm, vcpu: KvmVcpu, abort: GuestAbort, ctx: FaultContext,
                     facts: VmaFacts, size: MapSize, pfn: Pfn, prot: ProtDecision,
                     mmu_seq: int, log: Log) -> tuple[int, Mapping | None]:
    """Under mmu_lock: retry if invalidated, adjust for THP, check MTE, then map or relax.

    A permission fault whose leaf already has the chosen size only relaxes permissions;
    any other size change goes through kvm_pgtable_stage2_map (collapse or split).

    Kernel: user_mem_abort (from kvm_fault_lock to out_unlock).
    """
    fault_is_perm = esr_fsc_is_permission_fault(abort)
    if mmu_invalidate_retry(kvm, mmu_seq):
        log.append(Decision("mmu_invalidate_retry", "invalidated since mmu_seq was read: "
                            "-EAGAIN, the guest retries"))
        return -EAGAIN, None
    vma_pagesize, pa, ipa = size.vma_pagesize, pfn.pa & ~(size.vma_pagesize - 1), size.ipa
    if vma_pagesize == PAGE_SIZE and not (size.force_pte or prot.force_noncacheable):
        granule = kvm_vcpu_trap_get_perm_fault_granule(abort) if fault_is_perm else 0
        if fault_is_perm and granule > PAGE_SIZE:
            vma_pagesize, pa, ipa = granule, pfn.pa & ~(granule - 1), ipa & ~(granule - 1)
        else:
            vma_pagesize, pa, ipa = transparent_hugepage_adjust(kvm.host, ctx, pfn, ipa)
            if vma_pagesize > PAGE_SIZE:
                log.append(Decision("transparent_hugepage_adjust", "THP: PMD block"))
    if not fault_is_perm and not prot.force_noncacheable and kvm.has_mte and not facts.mte_allowed:
        log.append(Decision("mte", "MTE VM, VMA without VM_MTE_ALLOWED: -EFAULT"))
        return -EFAULT, None
    p = stage2_prot(abort, kvm, prot, facts)
    if fault_is_perm and vma_pagesize == kvm_vcpu_trap_get_perm_fault_granule(abort):
        ret = kvm_pgtable_stage2_relax_perms(kvm.pgt, ipa, p, 0)
        op = "relax_perms"
    else:
        flags = KVM_PGTABLE_WALK_HANDLE_FAULT | KVM_PGTABLE_WALK_SHARED
        ret = kvm_pgtable_stage2_map(kvm.pgt, ipa, vma_pagesize, pa, p,
                                     vcpu.mmu_page_cache, flags)
        op = "map"
    log.append(Decision(f"kvm_pgtable_stage2_{op}", f"IPA {ipa:#x} {_size(vma_pagesize)} -> "
                        f"PA {pa:#x} {prot_str(p)}: {errname(ret) if ret else 'ok'}"))
    return ret, Mapping(op, ipa, vma_pagesize, pa, p) if ret == 0 else None


def user_mem_abort(kvm: Kvm, vcpu: KvmVcpu, abort: GuestAbort, ctx: FaultContext,
                   hooks: FaultHooks, log: Log) -> tuple[int | HwpoisonSignal, Mapping | None,
                                                        tuple[int, ...]]:
    """Resolve a translation or permission fault on memslot memory.

    Returns (0, -errno or the hwpoison signal; the mapping made; the gfns marked dirty).

    Kernel: user_mem_abort.
    """
    fault_is_perm = esr_fsc_is_permission_fault(abort)
    write = kvm_is_write_fault(abort)
    if fault_is_perm and not write and not kvm_vcpu_trap_is_exec_fault(abort):
        log.append(Decision("user_mem_abort", "read permission fault: -EFAULT"))
        return -EFAULT, None, ()
    if not fault_is_perm or (memslot_is_logging(ctx.memslot) and write):
        ret = kvm_mmu_topup_memory_cache(vcpu.mmu_page_cache, kvm.env.pool,
                                         kvm_mmu_cache_min_pages(kvm))
        if ret:
            return ret, None, ()
    facts = kvm_s2_fault_get_vma_info(kvm.host, ctx, log)
    if isinstance(facts, Error):
        return facts.errno, None, ()
    size = kvm_s2_resolve_vma_size(facts, ctx, log)
    mmu_seq = kvm.mmu_invalidate_seq
    pfn = kvm_s2_fault_pin_pfn(kvm.host, ctx, write, log)
    if pfn is FaultinError.KVM_PFN_ERR_HWPOISON:
        # lsb is vma_shift after logging and the memslot's bounds chose the mapping size.
        return HwpoisonSignal(ctx.hva, size.vma_pagesize.bit_length() - 1), None, ()
    if isinstance(pfn, FaultinError):
        return -EFAULT, None, ()
    prot = kvm_s2_fault_compute_prot(abort, ctx, facts, pfn, kvm, log)
    if not isinstance(prot, ProtDecision):
        kvm.host.put_page(pfn)
        return (prot.errno if isinstance(prot, Error) else prot), None, ()
    if hooks.between_pin_and_lock is not None:
        hooks.between_pin_and_lock()
    ret, mapping = kvm_s2_fault_map(kvm, vcpu, abort, ctx, facts, size, pfn, prot, mmu_seq, log)
    kvm.host.put_page(pfn)
    dirtied: tuple[int, ...] = ()
    if prot.writable and ret == 0:
        gfn = ctx.fault_ipa >> PAGE_SHIFT
        mark_page_dirty_in_slot(kvm, ctx.memslot, gfn)
        dirtied = (gfn,) if memslot_is_logging(ctx.memslot) else ()
    return (0 if ret == -EAGAIN else ret), mapping, dirtied


# -- the dispatcher -----------------------------------------------------------------------


def handle_access_fault(kvm: Kvm, fault_ipa: int, log: Log) -> None:
    """Set the access flag of the leaf. Kernel: handle_access_fault."""
    kvm_pgtable_stage2_mkyoung(kvm.pgt, fault_ipa, 0)
    log.append(Decision("handle_access_fault", f"mkyoung IPA {fault_ipa:#x}"))


def kvm_vcpu_ipa_limit_check(abort: GuestAbort, kvm: Kvm, log: Log) -> GuestResult | None:
    """Handle a translation fault beyond the VM's IPA space (a size fault or an SEA).

    The SEA reports the IPA (with FAR's page offset) as its address, not the VA: the
    guest's own translation produced an IPA outside the space the VMM asked for.

    Kernel: kvm_handle_guest_abort (the get_kvm_ipa_limit / VTCR_EL2_IPA checks).
    """
    if not esr_fsc_is_translation_fault(abort):
        return None
    ipa = kvm_vcpu_get_fault_ipa(abort)
    if ipa >> get_kvm_ipa_limit(kvm.host.features):
        log.append(Decision("ipa_limit", f"IPA {ipa:#x} beyond kvm_ipa_limit: size fault"))
        return InjectedAbort("size", abort.far)
    if ipa >> kvm.ipa_bits:
        kind = "pabt" if kvm_vcpu_trap_is_iabt(abort) else "dabt"
        log.append(Decision("ipa_limit", f"IPA {ipa:#x} beyond the {kvm.ipa_bits}-bit IPA "
                            f"space: inject {kind}"))
        return InjectedAbort(kind, ipa | (abort.far & 0xFFF))
    return None


def io_mem_abort(abort: GuestAbort, kvm: Kvm, ipa: int, log: Log) -> GuestResult:
    """Give an access outside memslots to userspace as MMIO, if the syndrome allows.

    Kernel: io_mem_abort (arch/arm64/kvm/mmio.c).
    """
    if not kvm_vcpu_dabt_isvalid(abort):
        if kvm.nisv_to_user:
            log.append(Decision("io_mem_abort", "no valid syndrome: KVM_EXIT_ARM_NISV"))
            return NisvExit(abort.esr & 0x1FFFFFF, ipa)
        log.append(Decision("io_mem_abort", "no valid syndrome: -ENOSYS"))
        return Error(-ENOSYS, "Data abort outside memslots with no valid syndrome info")
    write = kvm_is_write_fault(abort)
    log.append(Decision("io_mem_abort", f"KVM_EXIT_MMIO {'write' if write else 'read'} "
                        f"{dabt_access_size(abort)} bytes at {ipa:#x}"))
    return MmioExit(ipa, dabt_access_size(abort), write)


def outside_memslot(abort: GuestAbort, kvm: Kvm, hva: int | None, ipa: int,
                    log: Log) -> GuestResult:
    """Handle an abort on a hole or a write to a read-only slot.

    Kernel: kvm_handle_guest_abort (the kvm_is_error_hva || (write && !writable) branch).
    """
    if kvm_vcpu_trap_is_iabt(abort):
        log.append(Decision("kvm_handle_guest_abort", "instruction fetch outside memory: "
                            "inject pabt"))
        return InjectedAbort("pabt", abort.far)
    if kvm_vcpu_abt_iss1tw(abort):
        log.append(Decision("kvm_handle_guest_abort", "stage-1 walk outside writable memory: "
                            "inject dabt"))
        return InjectedAbort("dabt", abort.far)
    if hva is None and kvm_vcpu_dabt_is_cm(abort):
        log.append(Decision("kvm_handle_guest_abort", "cache maintenance outside memslots: "
                            "skipped"))
        return Resumed("cache maintenance skipped (kvm_incr_pc)")
    return io_mem_abort(abort, kvm, ipa | (abort.far & 0xFFF), log)


def kvm_handle_guest_abort(abort: GuestAbort, kvm: Kvm, vcpu: KvmVcpu,
                           hooks: FaultHooks | None = None) -> AbortOutcome:
    """Handle a stage-2 abort taken from the guest; return what the guest sees.

    Order: IPA-space checks, SEA, unsupported FSC, memslot lookup (holes, read-only,
    MMIO), access flag, then user_mem_abort.

    Kernel: kvm_handle_guest_abort.
    """
    hooks = hooks or FaultHooks()
    log: Log = []

    def done(result: GuestResult, mapping: Mapping | None = None,
             dirtied: tuple[int, ...] = ()) -> AbortOutcome:
        return AbortOutcome(result, tuple(log), mapping, dirtied)

    limit = kvm_vcpu_ipa_limit_check(abort, kvm, log)
    if limit is not None:
        return done(limit)
    if kvm_vcpu_abt_issea(abort):
        if kvm.host.features.ras_claims_sea:
            log.append(Decision("kvm_handle_guest_sea", "claimed by the host (APEI)"))
            return done(Resumed("SEA handled by the host"))
        log.append(Decision("kvm_handle_guest_sea", "not claimed: inject SError"))
        return done(InjectedAbort("serror", abort.far))
    if not (esr_fsc_is_translation_fault(abort) or esr_fsc_is_permission_fault(abort)
            or esr_fsc_is_access_flag_fault(abort)):
        fsc = kvm_vcpu_trap_get_fault(abort)
        log.append(Decision("kvm_handle_guest_abort", f"unsupported FSC {fsc:#x}: -EFAULT"))
        return done(Error(-EFAULT, f"Unsupported FSC: xFSC={fsc:#x} ESR_EL2={abort.esr:#x}"))
    ipa = kvm_vcpu_get_fault_ipa(abort)
    gfn = ipa >> PAGE_SHIFT
    slot = gfn_to_memslot(kvm.slots(), gfn)
    hva, writable = gfn_to_hva_memslot_prot(slot, gfn)
    write = kvm_is_write_fault(abort)
    log.append(Decision("gfn_to_memslot", f"IPA {ipa:#x}: " + (
        f"slot {slot.id}, HVA {hva:#x}{'' if writable else ' (read-only)'}"
        if slot is not None and hva is not None else "no memslot")))
    if slot is None or hva is None or (write and not writable):
        return done(outside_memslot(abort, kvm, hva, ipa, log))
    if esr_fsc_is_access_flag_fault(abort):
        handle_access_fault(kvm, ipa, log)
        return done(Resumed("access flag set"))
    ret, mapping, dirtied = user_mem_abort(kvm, vcpu, abort, FaultContext(slot, hva, ipa),
                                           hooks, log)
    if isinstance(ret, HwpoisonSignal):
        return done(ret)
    if ret == -ENOEXEC:
        return done(InjectedAbort("pabt", abort.far))
    if ret < 0:
        return done(Error(ret, log[-1].text if log else errname(ret)))
    return done(Resumed("mapped" if mapping is not None else "retry"), mapping, dirtied)


def _size(size: int) -> str:
    return f"{size >> 30}G" if size >= 1 << 30 else (
        f"{size >> 20}M" if size >= 1 << 20 else f"{size >> 10}K")


def prot_str(p: int) -> str:
    """Return a prot set as 'RWX', with ' Device' or ' NC'."""
    s = ("R" if p & KVM_PGTABLE_PROT_R else "-") + ("W" if p & KVM_PGTABLE_PROT_W else "-")
    s += "X" if p & KVM_PGTABLE_PROT_X == KVM_PGTABLE_PROT_X else "-"
    if p & KVM_PGTABLE_PROT_DEVICE:
        s += " Device"
    elif p & KVM_PGTABLE_PROT_NORMAL_NC:
        s += " Normal-NC"
    return s

