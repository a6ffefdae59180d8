"""The kvm layer's part of a scenario: its tables, world state, event kinds, expectations
and invariants, registered with :data:`s2mmu.scenario.schema.REGISTRY`.

Tables: [host], [vm], [[vma]], [[memslot]] (each a setup step: KVM_SET_USER_MEMORY_REGION
before the timeline), [[vcpu]]; the VM follows the rules of the scenario's kernel release
([kvm] profile, read by s2mmu.scenario.schema for every layer). Events: guest accesses
(read, write, exec, dc), a raw abort, host memory events (munmap, madvise, migrate,
hwpoison, mmap), memslot ioctls and the dirty log. The model lives in s2mmu.kvm; this
module parses into typed events, wires them to it and compares outcomes with
expectations. It formats no sentence: the records
it fills are rendered by s2mmu.scenario.render_text and render_json.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from s2mmu.arch.errors import InputError
from s2mmu.arch.faults import FaultRecord
from s2mmu.arch.features import IdRegs
from s2mmu.arch.inputs import shorten
from s2mmu.arch.memory import PhysMem
from s2mmu.arch.state import SysRegs
from s2mmu.kvm.abort import Error, GuestAbort, Resumed, ResumeReason
from s2mmu.kvm.cpu import Completed, GuestFault, S1Map, build_guest_stage1, guest_access, vcpu_regs
from s2mmu.kvm.dirty import (
    kvm_clear_dirty_log_bytes,
    kvm_clear_dirty_log_protect,
    kvm_get_dirty_log_protect,
)
from s2mmu.kvm.errno import errname
from s2mmu.kvm.fault import FaultHooks, kvm_handle_guest_abort
from s2mmu.kvm.host import HostFeatures, HostMm, MemType, Vma, VmaKind
from s2mmu.kvm.invariants import (
    KvmViolation,
    PgtableRuleBroken,
    StepChecker,
    WarnFired,
    check_dirty_bits,
    check_dirty_writable,
    check_invariants,
    stage2_leaves,
)
from s2mmu.kvm.memslot import KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY, Memslot
from s2mmu.kvm.tlb import StaleTlbEntry, VcpuTlbs
from s2mmu.kvm.vm import (
    KVM_DIRTY_LOG_INITIALLY_SET,
    KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE,
    Kvm,
    KvmError,
    KvmVcpu,
    MemoryChange,
    Refusal,
    kvm_create_vm,
    kvm_dirty_log_manual_protect_and_init_set,
    kvm_set_id_regs,
    kvm_set_memory_region,
    kvm_vm_ioctl_create_vcpu,
    set_slot_flags,
)
from s2mmu.pgtable.backend import DIRECT
from s2mmu.pgtable.events import (
    DcacheCleanInvalPoc,
    IcacheInvalPou,
    PteWrite,
    TlbiVmid,
    TlbiVmidIpa,
    TlbiVmidRange,
    WalkReturn,
    Warn,
)
from s2mmu.pgtable.inject import InjectedBug
from s2mmu.pkvm.backend import pkvm_backend
from s2mmu.scenario.records import FaultStep, Mismatch, Outcome, StepDraft, World
from s2mmu.scenario.schema import (
    ACCESS,
    EXPECTS,
    HOST_EVENTS,
    PAGE,
    REGISTRY,
    SLOT_FLAGS,
    VMA_KEYS,
    Checker,
    Event,
    EventKind,
    Expectation,
    ExpectationKind,
    Invariant,
    Item,
    Layer,
    ParseContext,
    ScenarioError,
    Where,
    _check_race,
    _check_vma,
    check_kvm_tables,
    common_fields,
    locate,
)

MAX_ATTEMPTS = 16
CHECKER_EVENTS = (PteWrite, WalkReturn)
"""Events recorded for the invariant checkers, left out of a step's trace."""
SHOWN_EVENTS = (TlbiVmidIpa, TlbiVmidRange, TlbiVmid, DcacheCleanInvalPoc, IcacheInvalPou)
"""The events a timeline shows: TLB invalidations and cache maintenance."""


# -- configuration: the layer's tables ---------------------------------------------------


@dataclass(frozen=True)
class VmaSpec:
    """A VMA the host maps ([[vma]] or an mmap event)."""

    name: str
    start: int
    size: int
    kind: VmaKind
    thp: bool = False
    hugetlb_shift: int = 0
    mem_type: MemType = MemType.NORMAL
    allow_any_uncached: bool = False
    mte_allowed: bool = False
    writable: bool = True
    pa: int = 0


@dataclass(frozen=True)
class VcpuSpec:
    """A vCPU and, if given, its stage 1 (written into guest memory at stage1_tables)."""

    id: int
    stage1_tables: int | None
    maps: tuple[S1Map, ...]
    where: Where
    key_lines: Mapping[str, int] = field(default_factory=dict, compare=False)
    tlb: bool = False
    """Its accesses look in its TLB before walking (tlb = true)."""


@dataclass(frozen=True)
class KvmConfig:
    """The host, the VM and the vCPUs a scenario describes."""

    features: frozenset[str]
    protected_kvm: bool
    """[host] kvm_mode = "protected": the VM runs under the [pkvm] hypervisor."""
    pa_bits: int
    ras_claims_sea: bool
    ipa_bits: int
    mte: bool
    manual_dirty_log_protect: bool
    initially_set: bool
    eager_split_chunk: int
    nisv_to_user: bool
    protected: bool
    vm_lines: Mapping[str, int]
    vmas: tuple[VmaSpec, ...]
    vcpus: tuple[VcpuSpec, ...]
    path: str
    inject: frozenset[InjectedBug] = frozenset()
    """Bugs the page-table library is told to have ([vm] inject)."""
    id_regs: tuple[tuple[str, int], ...] = ()
    """[vm] id_regs: the ID register values the VM is given (the others stay the
    host's)."""
    thp_zero_page: bool = False
    """[host] thp_zero_page: a read of untouched THP memory maps the huge zero page (the
    host's /sys/kernel/mm/transparent_hugepage/use_zero_page)."""


def vma_spec(it: Item) -> VmaSpec:
    """Return the VMA a checked [[vma]] table or mmap event describes."""
    kind = VmaKind(it.get("kind", "anon"))
    shift = it.get("hugetlb", 1 << 21).bit_length() - 1 if kind is VmaKind.HUGETLB else 0
    return VmaSpec(it.get("name", ""), it.get("start"), it.get("size"), kind,
                   it.get("thp", False), shift, MemType(it.get("mem_type", "normal")),
                   it.get("allow_any_uncached", False), it.get("mte_allowed", False),
                   it.get("writable", True), it.get("pa", 0))


def parse_kvm(c: Checker, data: dict[str, Any], ctx: ParseContext) -> tuple[KvmConfig,
                                                                             list[Event]]:
    """Parse the kvm tables into the configuration and the memslot setup steps."""
    host, vm, vmas, slots, vcpus = check_kvm_tables(c, data)
    vm_lines = {k: locate(c.text, "vm", None, k) for k in vm}
    specs = tuple(VcpuSpec(it.index, it.get("stage1_tables"),
                           tuple(S1Map(m["va"], m["ipa"], m["size"], m.get("ro", False),
                                       m.get("xn", False), m.get("device", False))
                                 for m in it.get("map", [])), it.where, it.key_lines,
                           it.get("tlb", False))
                  for it in vcpus)
    protected_kvm = host.get("kvm_mode", "default") == "protected"
    if protected_kvm and "pkvm" not in data:
        raise c.fail("host", None, "kvm_mode", "\"protected\" needs a [pkvm] table "
                                               "(the hypervisor)")
    config = KvmConfig(frozenset(host.get("features", [])), protected_kvm,
                       host.get("pa_bits", 48),
                       host.get("ras_claims_sea", False), vm.get("ipa_bits", 40),
                       vm.get("mte", False), vm.get("manual_dirty_log_protect", False),
                       vm.get("initially_set", False), vm.get("eager_split_chunk", 0),
                       vm.get("nisv_to_user", False), vm.get("protected", False), vm_lines,
                       tuple(vma_spec(it) for it in vmas), specs, c.path,
                       frozenset(InjectedBug(b) for b in vm.get("inject", [])),
                       _id_regs(c, vm.get("id_regs", {})), host.get("thp_zero_page", False))
    setup: list[Event] = [SetMemslot(**common_fields(it, "memslot"), slot=it.get("id"),
                                     gpa=it.get("gpa"), size=it.get("size"), hva=it.get("hva"),
                                     flags=tuple(it.get("flags", [])))
                          for it in slots]
    return config, setup


ID_REG_NAMES = tuple(f.name for f in fields(IdRegs))


def _id_regs(c: Checker, t: Any) -> tuple[tuple[str, int], ...]:
    """Check [vm] id_regs: a table of ID register values (IdRegs' fields)."""
    if not isinstance(t, dict):
        raise c.fail("vm", None, "id_regs", f"must be a table like {{ ID_AA64MMFR1_EL1 = "
                                            f"0x200000 }}, not {shorten(t)}")
    for k in t:
        if k not in ID_REG_NAMES:
            raise c.fail("vm", None, "id_regs", f"{shorten(k)}: not an ID register the model "
                                                f"decodes (known: {', '.join(ID_REG_NAMES)})")
    return tuple((str(k), c.size("vm", None, "id_regs", v)) for k, v in t.items())


# -- world state -------------------------------------------------------------------------------


@dataclass
class KvmWorld:
    """The kvm layer's running state: host, VM, vCPUs and their EL1 registers."""

    host: HostMm
    kvm: Kvm
    vcpus: list[KvmVcpu] = field(default_factory=list)
    regs: list[SysRegs] = field(default_factory=list)
    written: dict[int, set[int]] = field(default_factory=dict)
    """Per logging slot: the pages a handled write dirtied since its bitmap was allocated
    (all pages when the bitmap started all-set), for check_dirty_bits."""
    bitmaps: dict[int, bytearray] = field(default_factory=dict)
    checker: StepChecker | None = None
    """Follows the event log for the WARN and page-table-rule invariants."""
    warned: list[WarnFired] = field(default_factory=list)
    """The WARNs the last step fired."""
    unexpected_warns: list[WarnFired] = field(default_factory=list)
    """Those of them the step did not expect (expect_warn)."""
    rules: list[PgtableRuleBroken] = field(default_factory=list)
    """The page-table library's rules the last step broke."""
    at_fault_return: list[KvmViolation] = field(default_factory=list)
    """What the last step's faults broke as they returned (dirty but not writable)."""
    tlbs: VcpuTlbs | None = None
    """Every vCPU's TLB (built with the vCPUs)."""


def build_host(config: KvmConfig) -> HostMm:
    """Return the host the scenario describes, with its VMAs mapped."""
    feats = config.features
    host = HostMm(PhysMem(), HostFeatures(fwb="fwb" in feats, dic="dic" in feats,
                                          idc="idc" in feats, tlb_range="tlb_range" in feats,
                                          mte="mte" in feats, pa_bits=config.pa_bits,
                                          ras_claims_sea=config.ras_claims_sea,
                                          cpu=frozenset(f for f in feats
                                                        if f.startswith("FEAT_"))),
                  use_huge_zero_page=config.thp_zero_page)
    for spec in config.vmas:
        host.mmap(vma_of(spec))
    return host


def vma_of(spec: VmaSpec) -> Vma:
    """Return the host VMA of a spec."""
    return Vma(spec.start, spec.start + spec.size, spec.kind, writable=spec.writable,
               thp=spec.thp, hugetlb_shift=spec.hugetlb_shift, mem_type=spec.mem_type,
               allow_any_uncached=spec.allow_any_uncached, mte_allowed=spec.mte_allowed,
               pfn_base=spec.pa, name=spec.name)


def build_kvm(world: World, config: KvmConfig) -> None:
    """Build host and VM (memslots and vCPUs come later).

    A VM KVM refuses to create makes the scenario malformed (ScenarioError naming the
    field): nothing can run without it.
    """
    host = build_host(config)
    backend, env = DIRECT, None
    pconf = world.scenario.config("pkvm")
    if config.protected_kvm:
        # Imported here so that the layers keep their registration order (kvm first).
        from s2mmu.scenario.pkvm_events import boot_pkvm

        hyp = boot_pkvm(world, pconf, host.mem, host.features.kvm_caps()).pkvm
        assert hyp is not None
        handle = 1 + max((g.handle for g in pconf.guests), default=0)
        backend, env = pkvm_backend(hyp, handle, config.protected), hyp.env
    try:
        kvm = kvm_create_vm(host, config.ipa_bits, has_mte=config.mte, env=env,
                            backend=backend, protected=config.protected,
                            profile=world.scenario.profile.pgtable)
    except KvmError as e:
        key = {Refusal.MTE_UNSUPPORTED: "mte", Refusal.PROTECTED_WITHOUT_PKVM: "protected"}.get(
            e.reason, "ipa_bits")
        raise ScenarioError(f"{config.path}:{config.vm_lines.get(key, 1)}: vm.{key}: "
                            f"KVM_CREATE_VM fails {errname(e.errno)}: {e.why}") from None
    if config.id_regs:
        try:
            kvm_set_id_regs(kvm, replace(kvm.id_regs, **dict(config.id_regs)))
        except InputError as e:
            raise ScenarioError(f"{config.path}:{config.vm_lines.get('id_regs', 1)}: "
                                f"vm.id_regs: {e}") from None
    kvm.nisv_to_user = config.nisv_to_user
    if config.manual_dirty_log_protect:
        kvm.manual_dirty_log_protect = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | (
            KVM_DIRTY_LOG_INITIALLY_SET if config.initially_set else 0)
    kvm.pgt.s2_mmu.split_page_chunk_size = config.eager_split_chunk
    kvm.pgt.ops.bugs = config.inject
    world.add(KvmWorld(host, kvm, checker=StepChecker(kvm)))


def build_vcpus(world: World, config: KvmConfig) -> None:
    """Create the vCPUs and write their stage 1 into guest memory (after the memslots).

    Stage-1 tables outside guest memory make the scenario malformed.
    """
    kw = world.part(KvmWorld)
    specs = config.vcpus or (VcpuSpec(0, None, (), Where(config.path, 1)),)
    kw.tlbs = VcpuTlbs(kw.kvm, len(specs), frozenset(s.id for s in specs if s.tlb))
    for spec in specs:
        kw.vcpus.append(kvm_vm_ioctl_create_vcpu(kw.kvm))
        if spec.stage1_tables is None:
            kw.regs.append(vcpu_regs(kw.kvm))
            continue
        try:
            kw.regs.append(build_guest_stage1(kw.kvm, spec.stage1_tables, list(spec.maps)))
        except ValueError as e:
            line = spec.key_lines.get("stage1_tables", spec.where.line)
            raise ScenarioError(f"{spec.where.path}:{line}: vcpu[{spec.id}].stage1_tables: "
                                f"{e}") from None


def mark_events(world: World) -> int:
    """Return where the VM's event log stands before a step (and forget the last step's
    fault-return findings)."""
    kw = world.part(KvmWorld)
    kw.at_fault_return = []
    return len(kw.kvm.env.events)


def observe_events(world: World, mark: int, draft: StepDraft, trace: bool) -> None:
    """Give the step the TLBI/CMO events outside its faults (and every event, if traced)."""
    since = tuple(world.part(KvmWorld).kvm.env.events.since(mark))
    if not draft.faults:
        draft.events = tuple(e for e in since if isinstance(e, SHOWN_EVENTS))
    if trace:
        draft.trace = draft.trace + tuple(e for e in since if not isinstance(e, CHECKER_EVENTS))


def note_bitmaps(kw: KvmWorld) -> None:
    """Start tracking each newly allocated dirty bitmap (every page allowed if all-set)."""
    kvm = kw.kvm
    for sid in [s for s in kw.bitmaps if s not in kvm.dirty_bitmap]:
        del kw.bitmaps[sid], kw.written[sid]
    for sid, bitmap in kvm.dirty_bitmap.items():
        if kw.bitmaps.get(sid) is not bitmap:
            kw.bitmaps[sid] = bitmap
            all_set = kvm_dirty_log_manual_protect_and_init_set(kvm)
            kw.written[sid] = set(range(kvm.memslots[sid].npages)) if all_set else set()


def other_layers_warns(draft: StepDraft, seen: list[WarnFired]) -> list[WarnFired]:
    """Return the WARNs other layers put in the step's events (pKVM's hypervisor), less
    those the VM's own event log already gave."""
    mine = Counter((w.function, w.condition) for w in seen)
    theirs = Counter((e.function, e.condition) for e in draft.events if isinstance(e, Warn))
    return [WarnFired(f, c) for (f, c), n in (theirs - mine).items() for _ in range(n)]


def after_step(world: World, draft: StepDraft) -> None:
    """Track new dirty bitmaps and the pages the step's handled writes dirtied; follow the
    event log for WARNs (those the step expects aside) and the page-table rules."""
    kw = world.part(KvmWorld)
    if kw.tlbs is not None:
        kw.tlbs.sync(getattr(draft.event, "vcpu", None))
    if kw.checker is not None:
        kw.warned, rules = kw.checker.after_step(draft.index)
        kw.warned += other_layers_warns(draft, kw.warned)
        kw.rules = [r for r in rules if isinstance(r, PgtableRuleBroken)]
        expected = {e.function for e in draft.event.expects if isinstance(e, ExpectWarn)}
        kw.unexpected_warns = [w for w in kw.warned if w.function not in expected]
    note_bitmaps(kw)
    for fault in draft.faults:
        for page in fault.handled.dirtied:
            if page.slot in kw.written:
                kw.written[page.slot].add(page.page)


# -- the summary -------------------------------------------------------------------------------


@dataclass(frozen=True)
class KvmSummary:
    """The VM at the end of a run."""

    mappings: Mapping[int, int]
    """Stage-2 leaves counted by size in bytes."""
    dirty_pages: Mapping[int, int]
    """Dirty pages counted per logging slot."""
    mmu_invalidate_seq: int
    memslots: tuple[Memslot, ...]
    table_pages: int


def leaf_counts(kvm: Kvm) -> dict[int, int]:
    """Return the stage-2 leaves counted by size, smallest first."""
    return dict(sorted(Counter(lf.size for lf in stage2_leaves(kvm)).items()))


def summarize(world: World) -> KvmSummary | None:
    """Return the VM's final state: mappings by size, dirty pages, memslots (None for a
    pKVM scenario that has no VMA or memslot: nothing to say)."""
    kvm = world.part(KvmWorld).kvm
    if world.scenario.configs.get("pkvm") is not None and not kvm.memslots \
            and not world.scenario.config("kvm").vmas:
        return None
    return KvmSummary(leaf_counts(kvm),
                      {sid: sum(bin(b).count("1") for b in bm)
                       for sid, bm in sorted(kvm.dirty_bitmap.items())},
                      kvm.mmu_invalidate_seq, tuple(kvm.slots()), kvm.env.pool.in_use())


# -- events ----------------------------------------------------------------------------------


class AccessKind(enum.Enum):
    """A guest access: load, store, instruction fetch, or cache maintenance (DC, a write
    with ESR.CM set)."""

    READ = "read"
    WRITE = "write"
    EXEC = "exec"
    DC = "dc"


class HostOp(enum.Enum):
    """A host memory event on an HVA range."""

    MUNMAP = "munmap"
    MADVISE = "madvise"
    MIGRATE = "migrate"
    HWPOISON = "hwpoison"


@dataclass(frozen=True)
class HostRace:
    """A host event run inside an access's first fault: between the page pin and mmu_lock
    (at "before-lock", where mmu_invalidate_retry sees it), or after the abort was taken
    and before user_mem_abort reads mmu_invalidate_seq (at "before-seq", where it does
    not, and the stage-2 walk meets what the event left)."""

    op: HostOp
    hva: int
    size: int
    at: str = "before-lock"


@dataclass(frozen=True, kw_only=True)
class GuestAccess(Event):
    """A guest access by VA (through the vCPU's stage 1 and stage 2) or IPA (MMU off)."""

    access: AccessKind
    vcpu: int = 0
    va: int | None = None
    ipa: int | None = None
    syndrome: tuple[int, int] | None = None
    race: HostRace | None = None
    size: int | None = None
    """The access's size in bytes (one access even when it crosses a page boundary); None:
    the syndrome's size if it gives one, else 1."""

    def nbytes(self) -> int:
        """Return the access's size in bytes."""
        if self.size is not None:
            return self.size
        return self.syndrome[0] if self.syndrome is not None else 1


@dataclass(frozen=True, kw_only=True)
class RawAbort(Event):
    """An abort handed to kvm_handle_guest_abort as the registers give it."""

    vcpu: int = 0
    esr: int
    far: int
    hpfar: int


@dataclass(frozen=True, kw_only=True)
class HostEvent(Event):
    """munmap / madvise(MADV_DONTNEED) / migrate / hwpoison on the host."""

    op: HostOp
    hva: int
    size: int = PAGE


@dataclass(frozen=True, kw_only=True)
class Mmap(Event):
    """The VMM maps a new VMA."""

    vma: VmaSpec


@dataclass(frozen=True, kw_only=True)
class SetMemslot(Event):
    """KVM_SET_USER_MEMORY_REGION: create a slot, or change one (fields left out keep
    the slot's values)."""

    slot: int
    gpa: int | None = None
    size: int | None = None
    hva: int | None = None
    flags: tuple[str, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class MoveMemslot(Event):
    """KVM_SET_USER_MEMORY_REGION with a new guest_phys_addr."""

    slot: int
    gpa: int


@dataclass(frozen=True, kw_only=True)
class DeleteMemslot(Event):
    """KVM_SET_USER_MEMORY_REGION with memory_size 0."""

    slot: int


@dataclass(frozen=True, kw_only=True)
class DirtyLogToggle(Event):
    """Turn KVM_MEM_LOG_DIRTY_PAGES on or off for a slot."""

    slot: int
    enable: bool


@dataclass(frozen=True, kw_only=True)
class GetDirtyLog(Event):
    """KVM_GET_DIRTY_LOG."""

    slot: int


@dataclass(frozen=True, kw_only=True)
class ClearDirtyLog(Event):
    """KVM_CLEAR_DIRTY_LOG of [first_page, first_page + num_pages) (pages: only these)."""

    slot: int
    first_page: int = 0
    num_pages: int | None = None
    pages: tuple[int, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class Check(Event):
    """Nothing happens: a place to check expectations and invariants."""


KvmEvent = (GuestAccess | RawAbort | HostEvent | Mmap | SetMemslot | MoveMemslot
            | DeleteMemslot | DirtyLogToggle | GetDirtyLog | ClearDirtyLog | Check)
"""The kvm layer's events: a closed union."""


# -- step results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccessCompleted:
    """The access translated to pa."""

    pa: int


@dataclass(frozen=True)
class GuestFaulted:
    """Stage 1 faulted: the guest's own exception, KVM not involved."""

    fault: FaultRecord


@dataclass(frozen=True)
class SlotChanged:
    """A memory-region ioctl succeeded."""

    slot: int
    change: MemoryChange
    gpa: int
    size: int


@dataclass(frozen=True)
class DirtyLogToggled:
    """Dirty logging turned on or off."""

    slot: int
    enabled: bool


@dataclass(frozen=True)
class DirtyLog:
    """KVM_GET_DIRTY_LOG's bitmap: the slot's dirty pages (slot-relative page numbers)."""

    slot: int
    pages: tuple[int, ...]


@dataclass(frozen=True)
class DirtyLogCleared:
    """KVM_CLEAR_DIRTY_LOG cleared and re-protected [first_page, first_page + num_pages)."""

    slot: int
    first_page: int
    num_pages: int


@dataclass(frozen=True)
class HostDone:
    """A host event ran (moved: for migrate, whether the page moved)."""

    op: HostOp
    hva: int
    size: int
    moved: bool | None = None
    errno: int = 0
    """0, or the -errno the kernel's mm returns (a hugetlb munmap off its huge page size:
    -EINVAL; a hole in a madvise range: -ENOMEM ...)."""


@dataclass(frozen=True)
class HostErrno:
    """What a host event returned, when expect_errno did not match it (None: success)."""

    errno: str | None


@dataclass(frozen=True)
class VmaMapped:
    """The VMM mapped a VMA."""

    vma: VmaSpec


@dataclass(frozen=True)
class IoctlRefused:
    """An ioctl failed: its -errno, the reason, and the kernel's message."""

    errno: int
    reason: Refusal
    why: str


def refused(draft: StepDraft, e: KvmError) -> Outcome:
    """Record an ioctl's failure as the step's result."""
    draft.result = IoctlRefused(e.errno, e.reason, e.why)
    return Outcome.ERROR


# -- running events ---------------------------------------------------------------------------


def run_race(world: World, ev: Event, race: HostRace) -> None:
    """Run a host event as the interleaved race of a fault."""
    host_event(world, ev, race.op, race.hva, race.size, "race")


def host_event(world: World, ev: Event, op: HostOp, hva: int, size: int,
               key: str = "hva") -> HostDone:
    """Run munmap / madvise / migrate / hwpoison.

    An operation the kernel refuses (-EINVAL, -ENOMEM ...) is a result of the step. A
    host event the host cannot do (hwpoison where nothing is mapped) is a scenario error
    naming the event's field.
    """
    h = world.part(KvmWorld).host
    moved = None
    err = 0
    try:
        if op is HostOp.MUNMAP:
            err = h.munmap(hva, size)
        elif op is HostOp.MADVISE:
            err = h.madvise_dontneed(hva, size)
        elif op is HostOp.MIGRATE:
            moved = h.migrate(hva)
        else:
            err = h.hwpoison(hva)
    except ValueError as e:
        raise ev.error(key, str(e)) from None
    return HostDone(op, hva, size, moved, err)


def run_access(world: World, ev: GuestAccess, draft: StepDraft) -> Outcome:
    """Run a guest access until it completes or KVM gives a non-retry answer."""
    kw = world.part(KvmWorld)
    kvm = kw.kvm
    regs = kw.regs[ev.vcpu] if ev.va is not None else vcpu_regs(kvm)
    addr = ev.va if ev.va is not None else ev.ipa
    assert addr is not None
    dc = ev.access is AccessKind.DC
    race = ev.race
    outcome = Outcome.RESUMED
    tlbs = kw.tlbs
    if tlbs is not None and ev.vcpu in tlbs.consult and not dc:
        tlbs.sync(ev.vcpu)
        hit = tlbs.lookup(ev.vcpu, regs, addr, ev.access.value, ev.va is not None)
        if hit is not None:
            draft.result = AccessCompleted(hit)
            return Outcome.COMPLETED
    for _ in range(MAX_ATTEMPTS):
        o = guest_access(kvm, regs, addr, "write" if dc else ev.access.value, ev.syndrome, cm=dc,
                         size=ev.nbytes())
        if isinstance(o, Completed):
            draft.result = AccessCompleted(o.out.paddress)
            if tlbs is not None:
                tlbs.sync(ev.vcpu)
                tlbs.fill(ev.vcpu, regs, addr, o.out)
            return Outcome.COMPLETED
        if isinstance(o, GuestFault):
            draft.result = GuestFaulted(o.fault)
            return Outcome.GUEST_FAULT
        hooks = FaultHooks()
        if race is not None:
            if race.at == "before-seq":
                hooks.before_mmu_seq = lambda r=race: run_race(world, ev, r)
            else:
                hooks.between_pin_and_lock = lambda r=race: run_race(world, ev, r)
            race = None
        draft.faults.append(handle_abort(kw, o.abort, ev.vcpu, hooks))
        outcome = draft.faults[-1].outcome
        result = draft.faults[-1].handled.result
        if isinstance(result, Resumed) and result.reason is not ResumeReason.CM_SKIPPED:
            continue
        return outcome
    return outcome


def handle_abort(kw: KvmWorld, abort: GuestAbort, vcpu: int, hooks: FaultHooks) -> FaultStep:
    """Hand one abort to kvm_handle_guest_abort; return it with the events it issued."""
    mark = len(kw.kvm.env.events)
    out = kvm_handle_guest_abort(abort, kw.kvm, kw.vcpus[vcpu], hooks)
    if kw.vcpus[vcpu].hw_mmu is None:  # a nested fault maps a shadow stage 2
        kw.at_fault_return += check_dirty_writable(kw.kvm, kw.kvm.pgt, out.dirtied)
    shown = tuple(e for e in kw.kvm.env.events.since(mark) if isinstance(e, SHOWN_EVENTS))
    return FaultStep(abort, out, shown)


def run_abort(world: World, ev: RawAbort, draft: StepDraft) -> Outcome:
    """Hand a raw abort (ESR, FAR, HPFAR as given) to kvm_handle_guest_abort."""
    abort = GuestAbort(ev.esr, ev.far, ev.hpfar)
    draft.faults.append(handle_abort(world.part(KvmWorld), abort, ev.vcpu, FaultHooks()))
    return draft.faults[-1].outcome


def run_host_event(world: World, ev: HostEvent, draft: StepDraft) -> Outcome:
    """Run a host memory event."""
    draft.result = host_event(world, ev, ev.op, ev.hva, ev.size)
    return Outcome.DONE


def run_mmap(world: World, ev: Mmap, draft: StepDraft) -> Outcome:
    """Map a VMA; one over a live VMA is a scenario error."""
    try:
        world.part(KvmWorld).host.mmap(vma_of(ev.vma))
    except ValueError as e:
        raise ev.error("start", str(e)) from None
    draft.result = VmaMapped(ev.vma)
    return Outcome.DONE


def slot_flags(names: tuple[str, ...]) -> int:
    """Return KVM_MEM_* flags from their scenario names."""
    return (KVM_MEM_LOG_DIRTY_PAGES if "log_dirty_pages" in names else 0) | (
        KVM_MEM_READONLY if "readonly" in names else 0)


def memslot_step(world: World, draft: StepDraft, slot_id: int, gpa: int, size: int, hva: int,
                 flags: int) -> Outcome:
    """Run one KVM_SET_USER_MEMORY_REGION."""
    try:
        change = kvm_set_memory_region(world.part(KvmWorld).kvm, slot_id, flags, gpa, size, hva)
    except KvmError as e:
        return refused(draft, e)
    draft.result = SlotChanged(slot_id, change, gpa, size)
    return Outcome.DONE


def run_set_memslot(world: World, ev: SetMemslot, draft: StepDraft) -> Outcome:
    """Create a slot, or change the fields given."""
    old = world.part(KvmWorld).kvm.memslots.get(ev.slot)
    missing = sorted(k for k in ("gpa", "size", "hva") if getattr(ev, k) is None)
    if old is None and missing:
        raise ev.error(None, f"slot {ev.slot} does not exist yet: creating it needs "
                             f"{', '.join(missing)}")
    size = ev.size if ev.size is not None else old.npages << 12 if old else 0
    gpa = ev.gpa if ev.gpa is not None else old.base_gfn << 12 if old else 0
    hva = ev.hva if ev.hva is not None else old.userspace_addr if old else 0
    flags = slot_flags(ev.flags) if ev.flags is not None else (old.flags if old else 0)
    return memslot_step(world, draft, ev.slot, gpa, size, hva, flags)


def run_move_memslot(world: World, ev: MoveMemslot, draft: StepDraft) -> Outcome:
    """Move a slot to a new IPA."""
    old = world.part(KvmWorld).kvm.memslots.get(ev.slot)
    if old is None:
        raise ev.error("slot", f"no memslot {ev.slot} to move at this point of the timeline")
    return memslot_step(world, draft, ev.slot, ev.gpa, old.npages << 12, old.userspace_addr,
                        old.flags)


def run_delete_memslot(world: World, ev: DeleteMemslot, draft: StepDraft) -> Outcome:
    """Delete a slot (memory_size 0)."""
    old = world.part(KvmWorld).kvm.memslots.get(ev.slot)
    gpa = old.base_gfn << 12 if old else 0
    hva = old.userspace_addr if old else 0
    return memslot_step(world, draft, ev.slot, gpa, 0, hva, old.flags if old else 0)


def run_dirty_log_toggle(world: World, ev: DirtyLogToggle, draft: StepDraft) -> Outcome:
    """Turn dirty logging on or off for a slot."""
    kvm = world.part(KvmWorld).kvm
    if ev.slot not in kvm.memslots:
        raise ev.error("slot", f"no memslot {ev.slot} at this point of the timeline")
    flags = kvm.memslots[ev.slot].flags
    flags = flags | KVM_MEM_LOG_DIRTY_PAGES if ev.enable else flags & ~KVM_MEM_LOG_DIRTY_PAGES
    try:
        set_slot_flags(kvm, ev.slot, flags)
    except KvmError as e:
        return refused(draft, e)
    draft.result = DirtyLogToggled(ev.slot, ev.enable)
    return Outcome.DONE


def run_get_dirty_log(world: World, ev: GetDirtyLog, draft: StepDraft) -> Outcome:
    """KVM_GET_DIRTY_LOG: the dirty pages, slot-relative."""
    kvm = world.part(KvmWorld).kvm
    try:
        bitmap = kvm_get_dirty_log_protect(kvm, ev.slot)
    except KvmError as e:
        return refused(draft, e)
    npages = kvm.memslots[ev.slot].npages
    draft.result = DirtyLog(ev.slot, tuple(i for i in range(npages)
                                           if bitmap[i >> 3] >> (i & 7) & 1))
    return Outcome.DONE


def clear_dirty_log(world: World, ev: ClearDirtyLog, draft: StepDraft) -> Outcome:
    """KVM_CLEAR_DIRTY_LOG with a user bitmap of every page in the range (or the pages
    given)."""
    kvm = world.part(KvmWorld).kvm
    first = ev.first_page
    slot = kvm.memslots.get(ev.slot)
    rest = max(0, slot.npages - first) if slot is not None else 0
    num = ev.num_pages if ev.num_pages is not None else rest
    given = min(num, rest)  # KVM refuses more pages before it reads the bitmap
    user = bytearray(kvm_clear_dirty_log_bytes(given))
    for i in range(given) if ev.pages is None else [p - first for p in ev.pages
                                                     if p - first < given]:
        user[i >> 3] |= 1 << (i & 7)
    try:
        kvm_clear_dirty_log_protect(kvm, ev.slot, first, num, bytes(user))
    except KvmError as e:
        return refused(draft, e)
    draft.result = DirtyLogCleared(ev.slot, first, num)
    return Outcome.DONE


def run_check(world: World, ev: Check, draft: StepDraft) -> Outcome:
    """Do nothing (expectations and invariants are checked after every step)."""
    return Outcome.DONE


# -- parsing events ---------------------------------------------------------------------------


def _vcpu(it: Item, ctx: ParseContext) -> int:
    nvcpus = max(1, len(ctx.configs["kvm"].vcpus))  # type: ignore[attr-defined]
    vcpu: int = it.get("vcpu", 0)
    if vcpu >= nvcpus:
        raise it.error("vcpu", f"no vCPU {vcpu} ({nvcpus} defined)")
    return vcpu


def parse_access(it: Item, ctx: ParseContext) -> GuestAccess:
    """Parse read / write / exec / dc."""
    if ("va" in it.fields) == ("ipa" in it.fields):
        raise it.error("do", "a guest access needs exactly one of va, ipa")
    vcpu = _vcpu(it, ctx)
    s = it.get("syndrome")
    if s is not None and not (isinstance(s, list) and len(s) == 2
                              and not any(isinstance(x, bool) for x in s)
                              and s[0] in (1, 2, 4, 8) and isinstance(s[1], int)
                              and 0 <= s[1] < 32):
        raise it.error("syndrome", "must be [size in bytes 1/2/4/8, register 0-31]")
    size = it.get("size")
    if size is not None and (isinstance(size, bool) or size not in ACCESS_SIZES):
        raise it.error("size", f"must be one of {', '.join(map(str, ACCESS_SIZES))} (bytes), "
                               f"not {shorten(size)}")
    if size is not None and s is not None and s[0] != size:
        raise it.error("size", f"{size} bytes, but the syndrome says {s[0]}")
    race = None
    if "race" in it.fields:
        r = _check_race(ctx.checker, it.index, it.get("race"))
        race = HostRace(HostOp(r["do"]), r["hva"], r["size"], r["at"])
    return GuestAccess(**common_fields(it), access=AccessKind(it.get("do")), vcpu=vcpu,
                       va=it.get("va"), ipa=it.get("ipa"),
                       syndrome=None if s is None else (int(s[0]), int(s[1])), race=race,
                       size=None if size is None else int(size))


def parse_abort(it: Item, ctx: ParseContext) -> RawAbort:
    """Parse a raw abort: ESR must be an instruction or data abort from a lower EL."""
    if not {"esr", "far", "hpfar"} <= set(it.fields):
        raise it.error("do", "abort needs esr, far and hpfar")
    ec = (it.get("esr") >> 26) & 0x3F
    if ec not in (0x20, 0x24):
        raise it.error("esr", f"ESR_EL2.EC={ec:#x} is not an Instruction or Data Abort from a "
                              "lower EL (0x20, 0x24): kvm_handle_guest_abort handles only those")
    return RawAbort(**common_fields(it), vcpu=_vcpu(it, ctx), esr=it.get("esr"),
                    far=it.get("far"), hpfar=it.get("hpfar"))


def parse_host_event(it: Item, ctx: ParseContext) -> HostEvent:
    """Parse munmap / madvise / migrate / hwpoison."""
    if "hva" not in it.fields:
        raise it.error("do", f"{it.get('do')} needs 'hva'")
    return HostEvent(**common_fields(it), op=HostOp(it.get("do")), hva=it.get("hva"),
                     size=it.get("size", PAGE))


def parse_mmap(it: Item, ctx: ParseContext) -> Mmap:
    """Parse an mmap event (a VMA's fields)."""
    _check_vma(ctx.checker, it, "event")
    return Mmap(**common_fields(it), vma=vma_spec(it))


def parse_set_memslot(it: Item, ctx: ParseContext) -> SetMemslot:
    """Parse a memslot event (create, or change the fields given)."""
    flags = None
    if "flags" in it.fields:
        flags = tuple(ctx.checker.choices("event", it.index, "flags", it.get("flags"),
                                           SLOT_FLAGS))
    return SetMemslot(**common_fields(it), slot=it.get("slot", 0), gpa=it.get("gpa"),
                      size=it.get("size"), hva=it.get("hva"), flags=flags)


def parse_move_memslot(it: Item, ctx: ParseContext) -> MoveMemslot:
    """Parse move_memslot."""
    if "gpa" not in it.fields:
        raise it.error("do", "move_memslot needs 'gpa'")
    return MoveMemslot(**common_fields(it), slot=it.get("slot", 0), gpa=it.get("gpa"))


def parse_delete_memslot(it: Item, ctx: ParseContext) -> DeleteMemslot:
    """Parse delete_memslot."""
    return DeleteMemslot(**common_fields(it), slot=it.get("slot", 0))


def parse_dirty_log_toggle(it: Item, ctx: ParseContext) -> DirtyLogToggle:
    """Parse dirty_log_enable / dirty_log_disable."""
    return DirtyLogToggle(**common_fields(it), slot=it.get("slot", 0),
                          enable=it.get("do") == "dirty_log_enable")


def parse_get_dirty_log(it: Item, ctx: ParseContext) -> GetDirtyLog:
    """Parse get_dirty_log."""
    return GetDirtyLog(**common_fields(it), slot=it.get("slot", 0))


def parse_clear_dirty_log(it: Item, ctx: ParseContext) -> ClearDirtyLog:
    """Parse clear_dirty_log: pages must lie in first_page..first_page+num_pages."""
    first = it.get("first_page", 0)
    pages = it.get("pages")
    if pages is not None:
        end = first + it.get("num_pages", 1 << 64)
        for p in pages:
            if not first <= p < end:
                raise it.error("pages", f"page {p} is outside first_page..first_page+num_pages")
    return ClearDirtyLog(**common_fields(it), slot=it.get("slot", 0), first_page=first,
                         num_pages=it.get("num_pages"),
                         pages=None if pages is None else tuple(pages))


def parse_check(it: Item, ctx: ParseContext) -> Check:
    """Parse check."""
    return Check(**common_fields(it))


# -- expectations ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpectOutcome(Expectation):
    """expect: the step's outcome (retry also holds when any fault was retried)."""

    outcome: Outcome


@dataclass(frozen=True)
class ExpectMapping(Expectation):
    """expect_mapping: the size of the last mapping the step's faults made (None: none)."""

    size: int | None


@dataclass(frozen=True)
class ExpectErrno(Expectation):
    """expect_errno: KVM_RUN's last error, like "EFAULT"."""

    errno: str


@dataclass(frozen=True)
class ExpectError(Expectation):
    """expect_error: the ioctl's errno, like "EINVAL" (None: it succeeds)."""

    errno: str | None


@dataclass(frozen=True)
class ExpectDirty(Expectation):
    """expect_dirty: GET_DIRTY_LOG's pages (slot-relative)."""

    pages: tuple[int, ...]


@dataclass(frozen=True)
class ExpectDirtyCount(Expectation):
    """expect_dirty_count: how many pages GET_DIRTY_LOG reports."""

    count: int


@dataclass(frozen=True)
class ExpectLeaves(Expectation):
    """expect_leaves: stage-2 leaves counted by size in bytes (zero counts dropped)."""

    leaves: Mapping[int, int]


@dataclass(frozen=True)
class ExpectMarkedDirty(Expectation):
    """expect_marked_dirty: how many times the step's faults marked a page dirty in a
    logging slot (user_mem_abort's mark_page_dirty_in_slot after a handled write)."""

    count: int


@dataclass(frozen=True)
class ExpectSeq(Expectation):
    """expect_seq: mmu_invalidate_seq after the step."""

    seq: int


@dataclass(frozen=True)
class ExpectWarn(Expectation):
    """expect_warn: the step fires a WARN in this kernel function (a scenario that means
    to reach it; the warn invariant then lets that WARN pass)."""

    function: str


SIZE_BYTES = {"4K": 1 << 12, "2M": 1 << 21, "1G": 1 << 30}


def _expect_outcome(it: Item) -> ExpectOutcome:
    v = it.get("expect")
    if not isinstance(v, str) or v not in EXPECTS:
        raise it.error("expect", f"must be one of {', '.join(sorted(EXPECTS))}, "
                                 f"not {shorten(v)}")
    return ExpectOutcome(Outcome(v))


def check_outcome(world: World, e: ExpectOutcome, d: StepDraft) -> Mismatch | None:
    """Compare the outcome (retry: any fault of the step was retried)."""
    retried = any(f.outcome is Outcome.RETRY for f in d.faults)
    if d.outcome is e.outcome or (e.outcome is Outcome.RETRY and retried):
        return None
    return Mismatch(e, d.outcome)


def check_mapping(world: World, e: ExpectMapping, d: StepDraft) -> Mismatch | None:
    """Compare the size of the last mapping made."""
    sizes = [f.handled.mapping.size for f in d.faults if f.handled.mapping is not None]
    got = sizes[-1] if sizes else None
    return None if got == e.size else Mismatch(e, got)


def check_errno(world: World, e: ExpectErrno, d: StepDraft) -> Mismatch | None:
    """Compare KVM_RUN's last error (for a host event: the errno the host's mm returned)."""
    if isinstance(d.result, HostDone):
        host_err = errname(d.result.errno) if d.result.errno else None
        return None if host_err == "-" + e.errno.lstrip("-") else Mismatch(e, HostErrno(host_err))
    errs = [f.handled.result.errno for f in d.faults if isinstance(f.handled.result, Error)]
    got = errname(errs[-1]) if errs else None
    return None if got == "-" + e.errno.lstrip("-") else Mismatch(e, got)


def check_error(world: World, e: ExpectError, d: StepDraft) -> Mismatch | None:
    """Compare the ioctl's errno."""
    got = errname(d.result.errno) if isinstance(d.result, IoctlRefused) else None
    want = None if e.errno is None else "-" + e.errno.lstrip("-")
    return None if got == want else Mismatch(e, got)


def check_dirty(world: World, e: ExpectDirty, d: StepDraft) -> Mismatch | None:
    """Compare GET_DIRTY_LOG's pages."""
    got = d.result.pages if isinstance(d.result, DirtyLog) else None
    return None if got == e.pages else Mismatch(e, got)


def check_dirty_count(world: World, e: ExpectDirtyCount, d: StepDraft) -> Mismatch | None:
    """Compare how many pages GET_DIRTY_LOG reported."""
    got = len(d.result.pages) if isinstance(d.result, DirtyLog) else 0
    return None if got == e.count else Mismatch(e, got)


def check_marked_dirty(world: World, e: ExpectMarkedDirty, d: StepDraft) -> Mismatch | None:
    """Compare how many times the step's faults marked a page dirty."""
    got = sum(len(f.handled.dirtied) for f in d.faults)
    return None if got == e.count else Mismatch(e, got)


def check_leaves(world: World, e: ExpectLeaves, d: StepDraft) -> Mismatch | None:
    """Compare the stage-2 leaves by size."""
    got = leaf_counts(world.part(KvmWorld).kvm)
    return None if got == dict(e.leaves) else Mismatch(e, got)


def check_warn(world: World, e: ExpectWarn, d: StepDraft) -> Mismatch | None:
    """Check that the step fired a WARN in the function named (got: those it fired)."""
    got = tuple(w.function for w in world.part(KvmWorld).warned)
    return None if e.function in got else Mismatch(e, got)


def check_seq(world: World, e: ExpectSeq, d: StepDraft) -> Mismatch | None:
    """Compare mmu_invalidate_seq."""
    got = world.part(KvmWorld).kvm.mmu_invalidate_seq
    return None if got == e.seq else Mismatch(e, got)


def _leaves(it: Item) -> ExpectLeaves:
    want = {SIZE_BYTES[k]: int(v) for k, v in dict(it.get("expect_leaves")).items() if v}
    return ExpectLeaves(dict(sorted(want.items())))


def _mapping(it: Item) -> ExpectMapping:
    v = it.get("expect_mapping")
    return ExpectMapping(None if v == "none" else SIZE_BYTES[v])


def _error(it: Item) -> ExpectError:
    v = it.get("expect_error")
    return ExpectError(None if v == "none" else v)


# -- invariants --------------------------------------------------------------------------------


def stage2_invariants(world: World) -> list[KvmViolation]:
    """Pins released, nothing mapped outside a memslot, logging rules, PFNMAP cacheability,
    stage 2 equal to the host mapping."""
    return check_invariants(world.part(KvmWorld).kvm)


def dirty_bit_invariant(world: World) -> list[KvmViolation]:
    """Dirty bits only for pages a handled write dirtied."""
    kw = world.part(KvmWorld)
    return check_dirty_bits(kw.kvm, kw.written)


def warn_invariant(world: World) -> list[WarnFired]:
    """No WARN fired that the step did not expect."""
    return world.part(KvmWorld).unexpected_warns


def stale_tlb_invariant(world: World) -> list[StaleTlbEntry]:
    """No vCPU's TLB holds a translation stage 2 no longer gives once KVM is done."""
    tlbs = world.part(KvmWorld).tlbs
    return [] if tlbs is None else tlbs.stale()


def dirty_writable_invariant(world: World) -> list[KvmViolation]:
    """Every page a fault marked dirty was mapped writable when the fault returned."""
    return world.part(KvmWorld).at_fault_return


def pgtable_rule(*rules: str) -> Callable[[World], list[PgtableRuleBroken]]:
    """Return the invariant check for some of the page-table library's rules."""
    def check(world: World) -> list[PgtableRuleBroken]:
        return [r for r in world.part(KvmWorld).rules if r.rule in rules]
    return check


PGTABLE_INVARIANTS = (
    ("break-without-tlbi", ("break-without-tlbi",)),
    ("table-tlbi-level", ("table-tlbi-level",)),
    ("reuse-before-tlbi", ("reuse-before-tlbi",)),
    ("valid-to-valid", ("valid-to-valid",)),
    ("walk-contract", ("walk-contract",)),
    ("table-refcount", ("refcount", "freed-table", "wrong-mapping")),
)
"""The page-table library's rules as registered invariants: (name, checker rules)."""


# -- registration -------------------------------------------------------------------------------

ACCESS_SIZES = (1, 2, 4, 8, 16)
"""The sizes of a guest load/store in bytes (LDRB .. LDR Q)."""
FAULT_EXPECTS = frozenset({"expect", "expect_mapping", "expect_errno", "expect_marked_dirty"})


def register() -> None:
    """Register the kvm layer: tables, world, events, expectations, invariants."""
    REGISTRY.layer(Layer("kvm", frozenset({"host", "vm", "vma", "memslot", "vcpu"}), parse_kvm,
                         build_kvm, build_vcpus, mark_events, observe_events, after_step,
                         summarize))
    access_keys = frozenset({"vcpu", "va", "ipa", "syndrome", "race", "size"})
    for name in sorted(ACCESS):
        REGISTRY.event_kind(EventKind(name, GuestAccess, access_keys, parse_access, run_access,
                                      FAULT_EXPECTS))
    REGISTRY.event_kind(EventKind("abort", RawAbort, frozenset({"vcpu", "esr", "far", "hpfar"}),
                                  parse_abort, run_abort, FAULT_EXPECTS))
    for name in sorted(HOST_EVENTS):
        REGISTRY.event_kind(EventKind(name, HostEvent, frozenset({"hva", "size"}),
                                      parse_host_event, run_host_event,
                                      frozenset({"expect_errno"})))
    REGISTRY.event_kind(EventKind("mmap", Mmap, frozenset(VMA_KEYS), parse_mmap, run_mmap))
    for name in ("dirty_log_enable", "dirty_log_disable"):
        REGISTRY.event_kind(EventKind(name, DirtyLogToggle, frozenset({"slot"}),
                                      parse_dirty_log_toggle, run_dirty_log_toggle))
    REGISTRY.event_kind(EventKind("get_dirty_log", GetDirtyLog, frozenset({"slot"}),
                                  parse_get_dirty_log, run_get_dirty_log,
                                  frozenset({"expect_dirty", "expect_dirty_count"})))
    REGISTRY.event_kind(EventKind("clear_dirty_log", ClearDirtyLog,
                                  frozenset({"slot", "first_page", "num_pages", "pages"}),
                                  parse_clear_dirty_log, clear_dirty_log))
    REGISTRY.event_kind(EventKind("memslot", SetMemslot,
                                  frozenset({"slot", "gpa", "size", "hva", "flags"}),
                                  parse_set_memslot, run_set_memslot))
    REGISTRY.event_kind(EventKind("move_memslot", MoveMemslot, frozenset({"slot", "gpa"}),
                                  parse_move_memslot, run_move_memslot))
    REGISTRY.event_kind(EventKind("delete_memslot", DeleteMemslot, frozenset({"slot"}),
                                  parse_delete_memslot, run_delete_memslot))
    REGISTRY.event_kind(EventKind("check", Check, frozenset(), parse_check, run_check))
    for key, typ, parse, check in (
            ("expect", ExpectOutcome, _expect_outcome, check_outcome),
            ("expect_mapping", ExpectMapping, _mapping, check_mapping),
            ("expect_errno", ExpectErrno, lambda it: ExpectErrno(str(it.get("expect_errno"))),
             check_errno),
            ("expect_error", ExpectError, _error, check_error),
            ("expect_dirty", ExpectDirty, lambda it: ExpectDirty(tuple(it.get("expect_dirty"))),
             check_dirty),
            ("expect_dirty_count", ExpectDirtyCount,
             lambda it: ExpectDirtyCount(it.get("expect_dirty_count")), check_dirty_count),
            ("expect_marked_dirty", ExpectMarkedDirty,
             lambda it: ExpectMarkedDirty(it.get("expect_marked_dirty")), check_marked_dirty),
            ("expect_leaves", ExpectLeaves, _leaves, check_leaves),
            ("expect_seq", ExpectSeq, lambda it: ExpectSeq(it.get("expect_seq")), check_seq),
            ("expect_warn", ExpectWarn, lambda it: ExpectWarn(str(it.get("expect_warn"))),
             check_warn)):
        REGISTRY.expectation(ExpectationKind(key, typ, parse, check))
    REGISTRY.invariant(Invariant("stage2", stage2_invariants))
    REGISTRY.invariant(Invariant("dirty-bits", dirty_bit_invariant))
    REGISTRY.invariant(Invariant("warn", warn_invariant))
    REGISTRY.invariant(Invariant("dirty-writable", dirty_writable_invariant))
    REGISTRY.invariant(Invariant("stale-tlb", stale_tlb_invariant))
    for name, rules in PGTABLE_INVARIANTS:
        REGISTRY.invariant(Invariant(name, pgtable_rule(*rules)))


register()
