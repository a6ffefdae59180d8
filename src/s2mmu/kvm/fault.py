"""The stage-2 abort path: kvm_handle_guest_abort() and user_mem_abort() in small steps.

The three kinds of state stay apart (seed 004):

- the architectural abort (GuestAbort: ESR, FAR, HPFAR) is its own parameter, and every
  fact about it is a function of it (kvm_is_write_fault(abort), ...);
- the hypervisor context (FaultContext: memslot, HVA, IPA) is a frozen value the
  dispatcher builds once; the VMA snapshot (VmaInfo), the mapping size (MapSize) and
  the protection decision (ProtDecision) are values that one step returns and the next
  takes;
- implementation mechanics (memcache top-up, mmu_seq, the page pin) stay local to
  user_mem_abort and kvm_s2_fault_map.

Each step appends what it decided to a list of decisions the caller owns: a typed value
per step (the step's kernel name and the values it chose: VmaInfo, MapSize, PfnPinned,
ProtDecision, PgtableCall, ...), so a timeline can show the path without the steps
knowing about output. Wording lives above the model (s2mmu.scenario.render_text).

Kernel: kvm_handle_guest_abort, user_mem_abort, fault_supports_stage2_huge_mapping,
transparent_hugepage_adjust, get_user_mapping_size, handle_access_fault,
kvm_send_hwpoison_signal, io_mem_abort (arch/arm64/kvm/mmio.c), prepare_mmu_memcache,
kvm_mmu_cache_min_pages (arch/arm64/kvm/mmu.c); the step names follow Fuad Tabba's
split of user_mem_abort (kvm_s2_fault_get_vma_info, kvm_s2_resolve_vma_size,
kvm_s2_fault_pin_pfn, kvm_s2_fault_compute_prot, kvm_s2_fault_map; seed 004).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ClassVar

from s2mmu.kvm.abort import (
    Error,
    ErrorReason,
    GuestAbort,
    GuestResult,
    HwpoisonSignal,
    InjectedAbort,
    InjectedS2Fault,
    InjectKind,
    MmioExit,
    NisvExit,
    Resumed,
    ResumeReason,
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
from s2mmu.kvm.dirty import SlotPage, mark_page_dirty_in_slot
from s2mmu.kvm.errno import EFAULT, ENOEXEC, ENOSYS
from s2mmu.kvm.host import (
    PAGE_SHIFT,
    PAGE_SIZE,
    PMD_SHIFT,
    PMD_SIZE,
    PUD_SHIFT,
    PUD_SIZE,
    FaultinError,
    HostMm,
    MemType,
    Pfn,
    VmaKind,
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
from s2mmu.kvm.vm import Kvm, KvmVcpu, kvm_vcpu_hw_pgt, kvm_vm_is_protected, mmu_invalidate_retry
from s2mmu.pgtable.backend import BackendKind, MmuLockMode
from s2mmu.pgtable.callers import access_fault_walk_flags, fault_walk_flags
from s2mmu.pgtable.errno import EAGAIN
from s2mmu.pgtable.profile import NestedExecRule
from s2mmu.pgtable.prot import (
    KVM_PGTABLE_PROT_DEVICE,
    KVM_PGTABLE_PROT_NORMAL_NC,
    KVM_PGTABLE_PROT_PX,
    KVM_PGTABLE_PROT_R,
    KVM_PGTABLE_PROT_RWX,
    KVM_PGTABLE_PROT_SW0,
    KVM_PGTABLE_PROT_SW1,
    KVM_PGTABLE_PROT_UX,
    KVM_PGTABLE_PROT_W,
    KVM_PGTABLE_PROT_X,
)
from s2mmu.pgtable.s2trans import (
    KvmS2Trans,
    NestedWalkError,
    kvm_s2_trans_exec_el0,
    kvm_s2_trans_exec_el1,
    kvm_s2_trans_executable,
    kvm_s2_trans_output,
    kvm_s2_trans_readable,
    kvm_s2_trans_size,
    kvm_s2_trans_writable,
)

# -- the decisions: one value per step, with the step's kernel name ---------------------------


KVM_NV_GUEST_MAP_SZ = int(KVM_PGTABLE_PROT_SW1 | KVM_PGTABLE_PROT_SW0)
"""The software bits of a shadow stage-2 leaf holding the level of L1's translation.

Kernel: KVM_NV_GUEST_MAP_SZ, kvm_encode_nested_level (arch/arm64/include/asm/kvm_nested.h).
"""
# The prot bits stage2_prot() combines, as plain ints (IntFlag arithmetic is slow).
_PROT_R, _PROT_W = int(KVM_PGTABLE_PROT_R), int(KVM_PGTABLE_PROT_W)
_PROT_X = int(KVM_PGTABLE_PROT_X)
_PROT_NORMAL_NC, _PROT_DEVICE = int(KVM_PGTABLE_PROT_NORMAL_NC), int(KVM_PGTABLE_PROT_DEVICE)


@dataclass(frozen=True)
class FaultContext:
    """The hypervisor context of one fault, built once by the dispatcher.

    fault_ipa is the IPA that faulted in the vCPU's current stage 2 (L2's IPA when a
    guest hypervisor's stage 2 is in use); ipa is the canonical IPA (L1's output, the
    memslot's address space); nested is L1's translation of fault_ipa, or None;
    protected: the VM is a protected one (its pages are donated, page by page).

    Kernel: kvm_handle_guest_abort's fault_ipa, ipa and nested_trans; kvm_vm_is_protected.
    """

    memslot: Memslot
    hva: int
    fault_ipa: int
    ipa: int
    nested: KvmS2Trans | None = None
    protected: bool = False


@dataclass(frozen=True)
class NestedS2Walk:
    """L1's stage 2 translated the faulting IPA (trans.esr 0), faulted (trans.esr the
    FSC to inject into L1), or the walk was refused (a NestedWalkError: KVM injects the
    abort's syndrome with FSC 0). Kernel: kvm_walk_nested_s2."""

    step: ClassVar[str] = "kvm_walk_nested_s2"
    fault_ipa: int
    trans: KvmS2Trans | NestedWalkError


@dataclass(frozen=True)
class NestedPermFault:
    """A permission fault L1's stage 2 forbids too: forwarded to L1 with esr.

    Kernel: kvm_s2_handle_perm_fault (arch/arm64/kvm/nested.c).
    """

    step: ClassVar[str] = "kvm_s2_handle_perm_fault"
    fault_ipa: int
    esr: int


@dataclass(frozen=True)
class NestedMapCap:
    """L1's block size capped the mapping size. Kernel: user_mem_abort (the nested block)."""

    step: ClassVar[str] = "user_mem_abort"
    l1_size: int
    max_map_size: int


@dataclass(frozen=True)
class IpaOutOfRange:
    """A translation fault on an IPA beyond the host's limit (a size fault) or beyond the
    VM's IPA space (an SEA). Kernel: kvm_handle_guest_abort."""

    step: ClassVar[str] = "kvm_handle_guest_abort"
    ipa: int
    ipa_bits: int
    beyond_host_limit: bool
    inject: InjectKind


@dataclass(frozen=True)
class GuestSea:
    """A synchronous external abort: claimed by the host's RAS code, or an SError for the
    guest. Kernel: kvm_handle_guest_sea."""

    step: ClassVar[str] = "kvm_handle_guest_sea"
    claimed: bool


@dataclass(frozen=True)
class UnsupportedFsc:
    """An FSC the stage-2 path does not handle. Kernel: kvm_handle_guest_abort."""

    step: ClassVar[str] = "kvm_handle_guest_abort"
    fsc: int
    esr: int


@dataclass(frozen=True)
class MemslotLookup:
    """The memslot and HVA behind the faulting IPA (slot None: a hole). Kernel:
    gfn_to_memslot, gfn_to_hva_memslot_prot."""

    step: ClassVar[str] = "gfn_to_memslot"
    ipa: int
    slot: int | None
    hva: int | None
    writable: bool


class OutsideAction(enum.Enum):
    """What kvm_handle_guest_abort does with an abort outside writable memslot memory,
    before trying MMIO."""

    INJECT_PABT = "inject-pabt"
    """An instruction fetch."""
    INJECT_DABT = "inject-dabt"
    """A stage-1 table walk."""
    SKIP_CM = "skip-cm"
    """Cache maintenance on a hole: skip the instruction."""


@dataclass(frozen=True)
class OutsideMemslot:
    """The abort is outside memslots (or a write to a read-only one) and not MMIO."""

    step: ClassVar[str] = "kvm_handle_guest_abort"
    action: OutsideAction


@dataclass(frozen=True)
class IoMemAbort:
    """An access outside memslots: MMIO with a valid syndrome, else NISV or -ENOSYS.
    Kernel: io_mem_abort."""

    step: ClassVar[str] = "io_mem_abort"
    ipa: int
    isv: bool
    write: bool
    length: int
    nisv_to_user: bool


@dataclass(frozen=True)
class AccessFlag:
    """handle_access_fault made the leaf at ipa young."""

    step: ClassVar[str] = "handle_access_fault"
    ipa: int


@dataclass(frozen=True)
class ReadPermissionFault:
    """A read permission fault cannot be fixed by mapping: -EFAULT. Kernel: user_mem_abort."""

    step: ClassVar[str] = "user_mem_abort"


@dataclass(frozen=True)
class TopupFailed:
    """The vCPU's memcache could not be filled. Kernel: kvm_mmu_topup_memory_cache."""

    step: ClassVar[str] = "kvm_mmu_topup_memory_cache"
    ret: int


@dataclass(frozen=True)
class NoVma:
    """No VMA behind the HVA: -EFAULT. Kernel: user_mem_abort (vma_lookup)."""

    step: ClassVar[str] = "vma_lookup"
    hva: int


@dataclass(frozen=True)
class VmaInfo:
    """What the fault needs of the VMA, snapshotted under mmap_read_lock.

    Kernel: the locals user_mem_abort copies before mmap_read_unlock (vma_shift,
    mte_allowed, vfio_allow_any_uc, vm_flags, is_vma_cacheable).
    """

    step: ClassVar[str] = "vma_lookup"
    name: str
    kind: VmaKind
    mem_type: MemType
    vma_shift: int
    pfnmap: bool
    cacheable: bool
    allow_any_uncached: bool
    mte_allowed: bool


class SizeReason(enum.Enum):
    """Why kvm_s2_resolve_vma_size chose the mapping size."""

    VMA_SHIFT = "vma-shift"
    LOGGING = "logging"
    PUD_DOES_NOT_FIT = "pud-does-not-fit"
    PMD_DOES_NOT_FIT = "pmd-does-not-fit"
    PROTECTED_VM = "protected-vm"
    """A protected VM is mapped page by page (pkvm_pgtable_stage2_map refuses more)."""


@dataclass(frozen=True)
class MapSize:
    """The mapping size chosen from the VMA and the memslot, and the IPA it starts at."""

    step: ClassVar[str] = "kvm_s2_resolve_vma_size"
    vma_pagesize: int
    force_pte: bool
    ipa: int
    reason: SizeReason


@dataclass(frozen=True)
class PfnPinned:
    """The page behind the HVA: its PA, whether writable, whether a struct page was pinned.
    Kernel: __kvm_faultin_pfn."""

    step: ClassVar[str] = "__kvm_faultin_pfn"
    pa: int
    writable: bool
    pinned: bool


@dataclass(frozen=True)
class PfnError:
    """__kvm_faultin_pfn gave an error PFN."""

    step: ClassVar[str] = "__kvm_faultin_pfn"
    error: FaultinError


@dataclass(frozen=True)
class ProtDecision:
    """Whether the mapping is writable, and whether it must be non-cacheable."""

    step: ClassVar[str] = "compute_prot"
    writable: bool
    force_noncacheable: bool


class ProtRefusal(enum.Enum):
    """Why compute_prot refuses the fault."""

    CACHEABLE_PFNMAP_WITHOUT_FWB = "cacheable-pfnmap-without-fwb"
    """-EFAULT: cacheable VM_PFNMAP needs FEAT_S2FWB and CTR_EL0.DIC."""
    EXEC_NONCACHEABLE = "exec-noncacheable"
    """-ENOEXEC: an instruction fetch from non-cacheable memory (an SEA for the guest)."""


@dataclass(frozen=True)
class ProtRefused:
    """compute_prot refused the fault, with the errno it returns."""

    step: ClassVar[str] = "compute_prot"
    refusal: ProtRefusal
    errno: int


@dataclass(frozen=True)
class InvalidateRetry:
    """An invalidation ran since mmu_seq was read: -EAGAIN. Kernel: mmu_invalidate_retry."""

    step: ClassVar[str] = "mmu_invalidate_retry"


@dataclass(frozen=True)
class ThpAdjust:
    """A THP backs the page: map the PMD block. Kernel: transparent_hugepage_adjust."""

    step: ClassVar[str] = "transparent_hugepage_adjust"
    size: int
    ipa: int
    pa: int


@dataclass(frozen=True)
class MteNotAllowed:
    """An MTE VM faulting on a VMA without VM_MTE_ALLOWED: -EFAULT. Kernel: user_mem_abort
    (kvm_has_mte, sanitise_mte_tags)."""

    step: ClassVar[str] = "kvm_has_mte"


class PgtableOp(enum.Enum):
    """The page-table library call that installs the mapping."""

    MAP = "kvm_pgtable_stage2_map"
    RELAX_PERMS = "kvm_pgtable_stage2_relax_perms"


@dataclass(frozen=True)
class PgtableCall:
    """A stage-2 backend call, its return value (0 or -errno), the backend KVM_PGT_FN
    picked and how the fault held mmu_lock (kvm_fault_lock)."""

    op: PgtableOp
    ipa: int
    size: int
    pa: int
    prot: int
    ret: int
    backend: BackendKind = BackendKind.DIRECT
    lock: MmuLockMode = MmuLockMode.READ

    @property
    def step(self) -> str:
        """Return the call's kernel name (pkvm_pgtable_stage2_map under pKVM)."""
        return self.backend.fn(self.op.value.removeprefix("kvm_pgtable_"))


Decision = (IpaOutOfRange | GuestSea | UnsupportedFsc | MemslotLookup | OutsideMemslot
            | IoMemAbort | AccessFlag | ReadPermissionFault | TopupFailed | NoVma | VmaInfo
            | MapSize | PfnPinned | PfnError | ProtDecision | ProtRefused | InvalidateRetry
            | ThpAdjust | MteNotAllowed | PgtableCall | NestedS2Walk | NestedPermFault
            | NestedMapCap)
"""One step's decision: a closed union, each with its kernel name as .step."""


@dataclass(frozen=True)
class Mapping:
    """What the fault installed: a new leaf (MAP) or relaxed permissions (RELAX_PERMS)."""

    op: PgtableOp
    ipa: int
    size: int
    pa: int
    prot: int


@dataclass(frozen=True)
class AbortOutcome:
    """kvm_handle_guest_abort's answer: what the guest sees, the path, the mapping made,
    and the pages a write marked dirty in a logging slot."""

    result: GuestResult
    decisions: tuple[Decision, ...]
    mapping: Mapping | None = None
    dirtied: tuple[SlotPage, ...] = ()


NestedS2Walker = Callable[[int], KvmS2Trans | NestedWalkError]
"""Walk the guest hypervisor's stage 2 for an L2 IPA: the vCPU's current shadow MMU has
L1's stage 2 enabled. The nested layer supplies it (kvm_walk_nested_s2); KVM's fault
path only calls it. Kernel: kvm_walk_nested_s2 behind kvm_is_nested_s2_mmu and
mmu->nested_stage2_enabled."""


@dataclass
class FaultHooks:
    """Test seams for the implementation mechanics (not state of the fault).

    between_pin_and_lock: run after the page is pinned and before mmu_lock is taken,
    where a concurrent MMU-notifier invalidation makes mmu_invalidate_retry() fire.
    before_mmu_seq: run after the abort was taken and before user_mem_abort reads
    mmu_invalidate_seq: an invalidation there is finished before the fault starts, so
    mmu_invalidate_retry() cannot see it, and the stage-2 walk meets what it left.
    """

    between_pin_and_lock: Callable[[], None] | None = None
    before_mmu_seq: Callable[[], None] | None = None


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


def kvm_s2_fault_get_vma_info(host: HostMm, ctx: FaultContext, log: Log) -> VmaInfo | NoVma:
    """Look the VMA up and snapshot what the fault needs of it.

    Kernel: user_mem_abort's mmap_read_lock section (vma_lookup, get_vma_page_shift).
    """
    vma = host.vma_lookup(ctx.hva)
    if vma is None:
        missing = NoVma(ctx.hva)
        log.append(missing)
        return missing
    info = VmaInfo(vma.name or vma.kind.value, vma.kind, vma.mem_type,
                   get_vma_page_shift(vma, ctx.hva), vma_is_pfnmap(vma),
                   kvm_vma_is_cacheable(vma), vma.allow_any_uncached, kvm_vma_mte_allowed(vma))
    log.append(info)
    return info


def kvm_s2_resolve_vma_size(info: VmaInfo, ctx: FaultContext, log: Log) -> MapSize:
    """Choose the mapping size: logging forces pages; a block must fit the memslot.

    A PUD-sized VMA falls back to PMD, then to PAGE, when the slot's alignment or
    bounds do not allow the block.

    Kernel: user_mem_abort (the vma_shift switch and its fallthroughs).
    """
    slot = ctx.memslot
    force_pte = memslot_is_logging(slot)
    shift = PAGE_SHIFT if force_pte else info.vma_shift
    why = SizeReason.LOGGING if force_pte else SizeReason.VMA_SHIFT
    if ctx.protected:
        shift, force_pte, why = PAGE_SHIFT, True, SizeReason.PROTECTED_VM
    if shift == PUD_SHIFT and not fault_supports_stage2_huge_mapping(slot, ctx.hva, PUD_SIZE):
        shift, why = PMD_SHIFT, SizeReason.PUD_DOES_NOT_FIT
    if shift == PMD_SHIFT and not fault_supports_stage2_huge_mapping(slot, ctx.hva, PMD_SIZE):
        shift, force_pte, why = PAGE_SHIFT, True, SizeReason.PMD_DOES_NOT_FIT
    size = 1 << shift
    if ctx.nested is not None:
        size, force_pte = nested_max_map_size(ctx.nested, size, force_pte, log)
    ipa = ctx.fault_ipa & ~(size - 1) if size in (PMD_SIZE, PUD_SIZE) else ctx.fault_ipa
    decision = MapSize(size, force_pte, ipa, why)
    log.append(decision)
    return decision


def nested_max_map_size(nested: KvmS2Trans, vma_pagesize: int, force_pte: bool,
                        log: Log) -> tuple[int, bool]:
    """Cap the mapping at L1's block size, rounded down to a size the host maps.

    A shadow stage-2 block may not be larger than the L1 leaf it stands for; a size
    between two host sizes takes the smaller.

    Kernel: user_mem_abort (the if (nested) block: max_map_size, kvm_s2_trans_size).
    """
    max_map_size = min(kvm_s2_trans_size(nested), PAGE_SIZE if force_pte else PUD_SIZE)
    if PMD_SIZE <= max_map_size < PUD_SIZE:
        max_map_size = PMD_SIZE
    elif PAGE_SIZE <= max_map_size < PMD_SIZE:
        max_map_size = PAGE_SIZE
    log.append(NestedMapCap(kvm_s2_trans_size(nested), max_map_size))
    return min(vma_pagesize, max_map_size), max_map_size == PAGE_SIZE


def kvm_s2_fault_pin_pfn(host: HostMm, ctx: FaultContext, write: bool,
                         log: Log) -> Pfn | FaultinError:
    """Fault the page in and take a reference (write: FOLL_WRITE); read-only slots give
    read-only PFNs, and so does a read of untouched anonymous memory (the shared zero
    page, HostMm.get_user_page): the mapping is then made without W, and the guest's
    first write to it is a permission fault whose FOLL_WRITE pin copies the page, whose
    MMU-notifier invalidation unmaps the IPA and makes mmu_invalidate_retry() fire, so
    the guest retries into a translation fault that maps the new page writable.

    Kernel: __kvm_faultin_pfn, __gfn_to_pfn_memslot (memslot_is_readonly).
    """
    # A protected VM's page is donated whole: the model pins it for write, so a read
    # never hands it the shared zero page.
    pfn = host.get_user_page(ctx.hva, write or ctx.protected)
    if isinstance(pfn, Pfn) and memslot_is_readonly(ctx.memslot):
        pfn = replace(pfn, writable=False)
    if isinstance(pfn, FaultinError):
        log.append(PfnError(pfn))
    else:
        log.append(PfnPinned(pfn.pa, pfn.writable, pfn.folio is not None))
    return pfn


def kvm_s2_fault_compute_prot(abort: GuestAbort, ctx: FaultContext, info: VmaInfo,
                              pfn: Pfn, kvm: Kvm, log: Log) -> ProtDecision | ProtRefused:
    """Decide cacheability and writability, or refuse the fault.

    - memory without struct pages whose VMA is cacheable maps cacheable only with FWB
      and DIC; otherwise -EFAULT (never a silent Device mapping, seed 003);
    - other such memory is forced non-cacheable;
    - a logging slot maps read faults read-only;
    - an exec fault on non-cacheable memory is -ENOEXEC (an SEA for the guest);
    - under a guest hypervisor's stage 2, writable only if L1's leaf is writable.

    Kernel: user_mem_abort (the VM_PFNMAP / pfn_is_map_memory block,
    adjust_nested_fault_perms).
    """
    writable = pfn.writable
    noncacheable = False
    decision: ProtDecision | ProtRefused
    if info.pfnmap and pfn.folio is None:
        if info.cacheable:
            if not kvm_supports_cacheable_pfnmap(kvm.host.features):
                decision = ProtRefused(ProtRefusal.CACHEABLE_PFNMAP_WITHOUT_FWB, -EFAULT)
                log.append(decision)
                return decision
        else:
            noncacheable = True
    elif memslot_is_logging(ctx.memslot) and not kvm_is_write_fault(abort):
        writable = False
    if ctx.nested is not None:
        writable = writable and ctx.nested.writable
    if kvm_vcpu_trap_is_exec_fault(abort) and noncacheable:
        decision = ProtRefused(ProtRefusal.EXEC_NONCACHEABLE, -ENOEXEC)
    else:
        decision = ProtDecision(writable, noncacheable)
    log.append(decision)
    return decision


def transparent_hugepage_adjust(host: HostMm, ctx: FaultContext, pfn: Pfn,
                                ipa: int) -> tuple[int, int, int]:
    """Return (size, pa, ipa): a PMD block when a THP backs the HVA and the slot allows it.

    Kernel: transparent_hugepage_adjust, get_user_mapping_size.
    """
    if pfn.folio is not None and fault_supports_stage2_huge_mapping(ctx.memslot, ctx.hva, PMD_SIZE):
        if host.user_mapping_size(ctx.hva) >= PMD_SIZE:
            return PMD_SIZE, pfn.pa & ~(PMD_SIZE - 1), ipa & ~(PMD_SIZE - 1)
    return PAGE_SIZE, pfn.pa, ipa


def stage2_prot(abort: GuestAbort, kvm: Kvm, prot: ProtDecision, info: VmaInfo,
                nested: KvmS2Trans | None = None) -> int:
    """Return the KVM_PGTABLE_PROT_* set for the mapping.

    Under a guest hypervisor's stage 2, L1's leaf limits the set: no R if L1's leaf is
    not readable (W was already limited in compute_prot), L1's level goes in the
    software bits (KVM_NV_GUEST_MAP_SZ) as the span hint L1's TLBIs use, and execute
    follows the release's rule (profile ``nested_exec``): before v6.19 the DIC shortcut
    adds X only where desc bit 54 is clear but an exec fault adds X unchecked; from
    v6.19 adjust_nested_exec_perms removes PX/UX where L1's leaf denies EL1/EL0.

    A protected VM's page is mapped RWX whatever the fault (pkvm_pgtable_stage2_map
    refuses any other prot for it: WARN_ON_ONCE(prot != KVM_PGTABLE_PROT_RWX)).

    Kernel: user_mem_abort (prot: R always; W if writable; X for an exec fault, or for
    cacheable memory when CTR_EL0.DIC makes I-cache maintenance unnecessary; NORMAL_NC
    only with VM_ALLOW_ANY_UNCACHED, otherwise DEVICE); adjust_nested_fault_perms,
    adjust_nested_exec_perms, kvm_encode_nested_level (6.12.118's user_mem_abort for the
    rule before v6.19).
    """
    if kvm_vm_is_protected(kvm):
        return int(KVM_PGTABLE_PROT_RWX)
    rule = kvm.env.profile.nested_exec
    p = _PROT_R
    if prot.writable:
        p |= _PROT_W
    if kvm_vcpu_trap_is_exec_fault(abort):
        p |= _PROT_X
    if prot.force_noncacheable:
        p |= _PROT_NORMAL_NC if info.allow_any_uncached else _PROT_DEVICE
    elif kvm.host.features.dic and (nested is None or rule is not NestedExecRule.DESC_BIT54
                                    or kvm_s2_trans_executable(nested)):
        p |= _PROT_X
    if nested is None:
        return p
    out = adjust_nested_fault_perms(nested, p)
    if rule is NestedExecRule.DESC_BIT54:
        return out
    return adjust_nested_exec_perms(nested, out, rule, kvm.env.caps.xnx)


def kvm_encode_nested_level(nested: KvmS2Trans) -> int:
    """Return L1's level in the software bits. Kernel: kvm_encode_nested_level."""
    return (nested.level << 55) & KVM_NV_GUEST_MAP_SZ


def adjust_nested_fault_perms(nested: KvmS2Trans, prot: int) -> int:
    """Drop R if L1's leaf is not readable; record L1's level in the software bits.

    Kernel: adjust_nested_fault_perms (arch/arm64/kvm/mmu.c).
    """
    if not kvm_s2_trans_readable(nested):
        prot &= ~int(KVM_PGTABLE_PROT_R)
    return prot | kvm_encode_nested_level(nested)


def adjust_nested_exec_perms(nested: KvmS2Trans, prot: int, rule: NestedExecRule,
                             host_xnx: bool) -> int:
    """Drop UX where L1's leaf denies EL0 execution, PX where it denies EL1 (v6.19 on).

    Without FEAT_XNX on the host a leaf's PX and UX must agree (stage2_set_xn_attr): an
    L1 leaf executable at one EL only then gets neither (never more than L1 allows; KVM
    offers L1 FEAT_XNX only when the host has it, so the kernel does not meet this case).

    Kernel: adjust_nested_exec_perms (arch/arm64/kvm/mmu.c, from d93febe2ed2e), with
    kvm_s2_trans_exec_el0/_el1 as the release decodes them.
    """
    el0 = kvm_s2_trans_exec_el0(nested, rule)
    el1 = kvm_s2_trans_exec_el1(nested, rule)
    if not el1 or not (host_xnx or el0):
        prot &= ~int(KVM_PGTABLE_PROT_PX)
    if not el0 or not (host_xnx or el1):
        prot &= ~int(KVM_PGTABLE_PROT_UX)
    return prot


def kvm_mmu_cache_min_pages(kvm: Kvm) -> int:
    """Return the table pages one map can need. Kernel: kvm_mmu_cache_min_pages."""
    return 4 - kvm.pgt.start_level - 1


def kvm_s2_fault_map(kvm: Kvm, vcpu: KvmVcpu, abort: GuestAbort, ctx: FaultContext,
                     info: VmaInfo, size: MapSize, pfn: Pfn, prot: ProtDecision,
                     mmu_seq: int, log: Log) -> tuple[int, Mapping | None]:
    """Under mmu_lock: retry if invalidated, adjust for THP, check MTE, then map or relax.

    A permission fault whose leaf already has the chosen size only relaxes permissions;
    any other size change goes through kvm_pgtable_stage2_map (collapse or split).

    Both calls pass the walker flags the profile's kernel passes (SHARED from v6.2, with
    HANDLE_FAULT from v6.3 to v6.18: s2mmu.pgtable.callers), so a relax on an entry a
    racing unmap cleared returns -EAGAIN and the guest retries.

    Kernel: user_mem_abort (from kvm_fault_lock to out_unlock).
    """
    fault_is_perm = esr_fsc_is_permission_fault(abort)
    if mmu_invalidate_retry(kvm, mmu_seq):
        log.append(InvalidateRetry())
        return -EAGAIN, None
    vma_pagesize, pa, ipa = size.vma_pagesize, pfn.pa & ~(size.vma_pagesize - 1), size.ipa
    if vma_pagesize == PAGE_SIZE and not (size.force_pte or prot.force_noncacheable):
        granule = kvm_vcpu_trap_get_perm_fault_granule(abort) if fault_is_perm else 0
        if fault_is_perm and granule > PAGE_SIZE:
            vma_pagesize, pa, ipa = granule, pfn.pa & ~(granule - 1), ipa & ~(granule - 1)
        else:
            vma_pagesize, pa, ipa = transparent_hugepage_adjust(kvm.host, ctx, pfn, ipa)
            if vma_pagesize > PAGE_SIZE:
                log.append(ThpAdjust(vma_pagesize, ipa, pa))
    if not fault_is_perm and not prot.force_noncacheable and kvm.has_mte and not info.mte_allowed:
        log.append(MteNotAllowed())
        return -EFAULT, None
    p = stage2_prot(abort, kvm, prot, info, ctx.nested)
    pgt = kvm_vcpu_hw_pgt(kvm, vcpu)
    backend = kvm.backend
    if fault_is_perm and vma_pagesize == kvm_vcpu_trap_get_perm_fault_granule(abort):
        op = PgtableOp.RELAX_PERMS
        # The level L1 mapped with stays as the leaf has it (relax_perms keeps SW bits).
        p &= ~KVM_NV_GUEST_MAP_SZ
        ret = backend.relax_perms(pgt, ipa, p, fault_walk_flags(kvm.env.profile))
    else:
        op = PgtableOp.MAP
        ret = backend.map(pgt, ipa, vma_pagesize, pa, p, vcpu.mmu_page_cache,
                          fault_walk_flags(kvm.env.profile))
    log.append(PgtableCall(op, ipa, vma_pagesize, pa, p, ret, backend.kind, backend.fault_lock))
    return ret, Mapping(op, ipa, vma_pagesize, pa, p) if ret == 0 else None


UserMemAbortResult = tuple[int | HwpoisonSignal, Mapping | None, tuple[SlotPage, ...]]


def user_mem_abort(kvm: Kvm, vcpu: KvmVcpu, abort: GuestAbort, ctx: FaultContext,
                   hooks: FaultHooks, log: Log) -> UserMemAbortResult:
    """Resolve a translation or permission fault on memslot memory.

    Returns (0, -errno or the hwpoison signal; the mapping made; the pages marked dirty).

    Kernel: user_mem_abort.
    """
    fault_is_perm = esr_fsc_is_permission_fault(abort)
    write = kvm_is_write_fault(abort)
    if fault_is_perm and not write and not kvm_vcpu_trap_is_exec_fault(abort):
        log.append(ReadPermissionFault())
        return -EFAULT, None, ()
    if not fault_is_perm or (memslot_is_logging(ctx.memslot) and write):
        ret = kvm.backend.topup_memcache(vcpu.mmu_page_cache, kvm.env.pool,
                                         kvm_mmu_cache_min_pages(kvm))
        if ret:
            log.append(TopupFailed(ret))
            return ret, None, ()
    info = kvm_s2_fault_get_vma_info(kvm.host, ctx, log)
    if isinstance(info, NoVma):
        return -EFAULT, None, ()
    size = kvm_s2_resolve_vma_size(info, ctx, log)
    if hooks.before_mmu_seq is not None:
        hooks.before_mmu_seq()
    mmu_seq = kvm.mmu_invalidate_seq
    pfn = kvm_s2_fault_pin_pfn(kvm.host, ctx, write, log)
    if pfn is FaultinError.KVM_PFN_ERR_HWPOISON:
        # lsb is vma_shift after logging and the memslot's bounds chose the mapping size.
        return HwpoisonSignal(ctx.hva, size.vma_pagesize.bit_length() - 1), None, ()
    if isinstance(pfn, FaultinError):
        return -EFAULT, None, ()
    prot = kvm_s2_fault_compute_prot(abort, ctx, info, pfn, kvm, log)
    if isinstance(prot, ProtRefused):
        kvm.host.put_page(pfn)
        return prot.errno, None, ()
    if hooks.between_pin_and_lock is not None:
        hooks.between_pin_and_lock()
    ret, mapping = kvm_s2_fault_map(kvm, vcpu, abort, ctx, info, size, pfn, prot, mmu_seq, log)
    kvm.host.put_page(pfn)
    dirtied: tuple[SlotPage, ...] = ()
    if prot.writable and ret == 0:
        gfn = ctx.ipa >> PAGE_SHIFT
        mark_page_dirty_in_slot(kvm, ctx.memslot, gfn)
        if memslot_is_logging(ctx.memslot):
            dirtied = (SlotPage(ctx.memslot.id, gfn - ctx.memslot.base_gfn),)
    return (0 if ret == -EAGAIN else ret), mapping, dirtied


# -- the dispatcher -----------------------------------------------------------------------


def handle_access_fault(kvm: Kvm, vcpu: KvmVcpu, fault_ipa: int, log: Log) -> None:
    """Set the access flag of the leaf in the vCPU's current stage 2.

    The walk passes the profile's flags (SHARED from v6.2: the AF update is a
    compare-and-swap against other vCPUs' walks).

    Kernel: handle_access_fault (vcpu->arch.hw_mmu->pgt).
    """
    flags = access_fault_walk_flags(kvm.env.profile)
    kvm.backend.mkyoung(kvm_vcpu_hw_pgt(kvm, vcpu), fault_ipa, flags)
    log.append(AccessFlag(fault_ipa))


def kvm_vcpu_ipa_limit_check(abort: GuestAbort, kvm: Kvm, log: Log) -> GuestResult | None:
    """Handle a translation fault beyond the VM's IPA space (a size fault or an SEA).

    The SEA reports the IPA (with FAR's page offset) as its address, not the VA: the
    guest's own translation produced an IPA outside the space the VMM asked for.

    Kernel: kvm_handle_guest_abort (the get_kvm_ipa_limit / VTCR_EL2_IPA checks).
    """
    if not esr_fsc_is_translation_fault(abort):
        return None
    ipa = kvm_vcpu_get_fault_ipa(abort)
    limit = get_kvm_ipa_limit(kvm.host.features)
    if ipa >> limit:
        log.append(IpaOutOfRange(ipa, limit, True, InjectKind.SIZE))
        return InjectedAbort(InjectKind.SIZE, abort.far)
    if ipa >> kvm.ipa_bits:
        kind = InjectKind.PABT if kvm_vcpu_trap_is_iabt(abort) else InjectKind.DABT
        log.append(IpaOutOfRange(ipa, kvm.ipa_bits, False, kind))
        return InjectedAbort(kind, ipa | (abort.far & 0xFFF))
    return None


def io_mem_abort(abort: GuestAbort, kvm: Kvm, ipa: int, log: Log) -> GuestResult:
    """Give an access outside memslots to userspace as MMIO, if the syndrome allows.

    Kernel: io_mem_abort (arch/arm64/kvm/mmio.c).
    """
    isv = kvm_vcpu_dabt_isvalid(abort)
    write = kvm_is_write_fault(abort)
    length = dabt_access_size(abort) if isv else 0
    log.append(IoMemAbort(ipa, isv, write, length, kvm.nisv_to_user))
    if not isv:
        if kvm.nisv_to_user:
            return NisvExit(abort.esr & 0x1FFFFFF, ipa)
        return Error(-ENOSYS, ErrorReason.NO_VALID_SYNDROME)
    return MmioExit(ipa, length, write)


def outside_memslot(abort: GuestAbort, kvm: Kvm, hva: int | None, ipa: int,
                    log: Log) -> GuestResult:
    """Handle an abort on a hole or a write to a read-only slot.

    Kernel: kvm_handle_guest_abort (the kvm_is_error_hva || (write && !writable) branch).
    """
    if kvm_vcpu_trap_is_iabt(abort):
        log.append(OutsideMemslot(OutsideAction.INJECT_PABT))
        return InjectedAbort(InjectKind.PABT, abort.far)
    if kvm_vcpu_abt_iss1tw(abort):
        log.append(OutsideMemslot(OutsideAction.INJECT_DABT))
        return InjectedAbort(InjectKind.DABT, abort.far)
    if hva is None and kvm_vcpu_dabt_is_cm(abort):
        log.append(OutsideMemslot(OutsideAction.SKIP_CM))
        return Resumed(ResumeReason.CM_SKIPPED)
    return io_mem_abort(abort, kvm, ipa | (abort.far & 0xFFF), log)


def error_reason(decision: Decision | None) -> ErrorReason:
    """Return why user_mem_abort failed, from the step that refused."""
    match decision:
        case ReadPermissionFault():
            return ErrorReason.READ_PERMISSION_FAULT
        case TopupFailed():
            return ErrorReason.MEMCACHE
        case NoVma():
            return ErrorReason.NO_VMA
        case PfnError():
            return ErrorReason.FAULTIN
        case ProtRefused():
            return ErrorReason.CACHEABLE_PFNMAP
        case MteNotAllowed():
            return ErrorReason.MTE_NOT_ALLOWED
    return ErrorReason.PGTABLE


def esr_s2_fault(abort: GuestAbort, fsc: int) -> int:
    """Return the ESR L1 sees: the L2 abort's syndrome with L1's fault status code.

    Kernel: esr_s2_fault (arch/arm64/kvm/nested.c).
    """
    return (abort.esr & ~0x3F) | (fsc & 0x3F)


def kvm_s2_handle_perm_fault(abort: GuestAbort, trans: KvmS2Trans, rule: NestedExecRule,
                             priv: bool = True) -> int:
    """Return the ESR to forward a permission fault L1's stage 2 forbids too, else 0.

    A write needs L1's write permission, a read its read permission. An instruction
    fetch needs execute permission as the release reads it: before v6.19 desc bit 54
    clear (kvm_s2_trans_executable, whatever the EL); from v6.19 the faulting EL's
    (kvm_s2_trans_exec_el1 when vcpu_mode_priv, else _el0). priv: vcpu_mode_priv, the
    L2 access ran at EL1 (the model's L2 accesses do: guest_access).

    Kernel: kvm_s2_handle_perm_fault (arch/arm64/kvm/nested.c; 6.12.118 as read, and
    the FEAT_XNX form of d93febe2ed2e).
    """
    if not esr_fsc_is_permission_fault(abort):
        return 0
    if kvm_vcpu_trap_is_iabt(abort):
        if rule is NestedExecRule.DESC_BIT54:
            forward = not kvm_s2_trans_executable(trans)
        elif priv:
            forward = not kvm_s2_trans_exec_el1(trans, rule)
        else:
            forward = not kvm_s2_trans_exec_el0(trans, rule)
    elif kvm_is_write_fault(abort):
        forward = not kvm_s2_trans_writable(trans)
    else:
        forward = not kvm_s2_trans_readable(trans)
    if not forward:
        return 0
    return esr_s2_fault(abort, 0b001100 | (trans.level & 3))


def kvm_nested_resolve(abort: GuestAbort, fault_ipa: int, walk: NestedS2Walker,
                       rule: NestedExecRule, log: Log) -> KvmS2Trans | InjectedS2Fault:
    """Translate L2's IPA through L1's stage 2, or return the fault to inject into L1.

    Kernel: kvm_handle_guest_abort (the kvm_is_nested_s2_mmu branch: kvm_walk_nested_s2,
    kvm_s2_handle_perm_fault, kvm_inject_s2_fault).
    """
    trans = walk(fault_ipa)
    log.append(NestedS2Walk(fault_ipa, trans))
    if isinstance(trans, NestedWalkError):  # ret < 0: injected with FSC 0 all the same
        return InjectedS2Fault(esr_s2_fault(abort, 0), fault_ipa)
    if trans.esr:
        return InjectedS2Fault(esr_s2_fault(abort, trans.esr), fault_ipa)
    esr = kvm_s2_handle_perm_fault(abort, trans, rule)
    if esr:
        log.append(NestedPermFault(fault_ipa, esr))
        return InjectedS2Fault(esr, fault_ipa)
    return trans


def kvm_handle_guest_abort(abort: GuestAbort, kvm: Kvm, vcpu: KvmVcpu,
                           hooks: FaultHooks | None = None,
                           nested_walk: NestedS2Walker | None = None) -> AbortOutcome:
    """Handle a stage-2 abort taken from the guest; return what the guest sees.

    Order: IPA-space checks, SEA, unsupported FSC, then (under a guest hypervisor's
    stage 2, nested_walk given) L1's translation of the faulting IPA, memslot lookup of
    the canonical IPA (holes, read-only, MMIO), access flag, then user_mem_abort.

    Kernel: kvm_handle_guest_abort.
    """
    hooks = hooks or FaultHooks()
    log: Log = []

    def done(result: GuestResult, mapping: Mapping | None = None,
             dirtied: tuple[SlotPage, ...] = ()) -> AbortOutcome:
        return AbortOutcome(result, tuple(log), mapping, dirtied)

    limit = kvm_vcpu_ipa_limit_check(abort, kvm, log)
    if limit is not None:
        return done(limit)
    if kvm_vcpu_abt_issea(abort):
        claimed = kvm.host.features.ras_claims_sea
        log.append(GuestSea(claimed))
        if claimed:
            return done(Resumed(ResumeReason.SEA_CLAIMED))
        return done(InjectedAbort(InjectKind.SERROR, abort.far))
    if not (esr_fsc_is_translation_fault(abort) or esr_fsc_is_permission_fault(abort)
            or esr_fsc_is_access_flag_fault(abort)):
        log.append(UnsupportedFsc(kvm_vcpu_trap_get_fault(abort), abort.esr))
        return done(Error(-EFAULT, ErrorReason.UNSUPPORTED_FSC))
    fault_ipa = ipa = kvm_vcpu_get_fault_ipa(abort)
    nested: KvmS2Trans | None = None
    if nested_walk is not None:
        resolved = kvm_nested_resolve(abort, fault_ipa, nested_walk,
                                      kvm.env.profile.nested_exec, log)
        if isinstance(resolved, InjectedS2Fault):
            return done(resolved)
        nested = resolved
        ipa = kvm_s2_trans_output(nested)
    gfn = ipa >> PAGE_SHIFT
    slot = gfn_to_memslot(kvm.slots(), gfn)
    hva, writable = gfn_to_hva_memslot_prot(slot, gfn)
    write = kvm_is_write_fault(abort)
    log.append(MemslotLookup(ipa, None if slot is None else slot.id, hva, writable))
    if slot is None or hva is None or (write and not writable):
        return done(outside_memslot(abort, kvm, hva, ipa, log))
    if esr_fsc_is_access_flag_fault(abort):
        handle_access_fault(kvm, vcpu, fault_ipa, log)
        return done(Resumed(ResumeReason.ACCESS_FLAG))
    ctx = FaultContext(slot, hva, fault_ipa, ipa, nested, kvm_vm_is_protected(kvm))
    ret, mapping, dirtied = user_mem_abort(kvm, vcpu, abort, ctx, hooks, log)
    if isinstance(ret, HwpoisonSignal):
        return done(ret)
    if ret == -ENOEXEC:
        return done(InjectedAbort(InjectKind.PABT, abort.far))
    if ret < 0:
        return done(Error(ret, error_reason(log[-1] if log else None)))
    reason = ResumeReason.MAPPED if mapping is not None else ResumeReason.RETRY
    return done(Resumed(reason), mapping, dirtied)
