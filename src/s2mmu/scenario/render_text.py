"""The words: every sentence a run shows, rendered from its typed records.

One module holds the wording of the kvm layer's decisions, results, events and
expectations, so text, JSON (which carries these sentences beside the values) and HTML
say the same thing. Conventions: addresses, PAs, IPAs, HVAs, descriptors and register
values in hex; dirty pages as slot-relative page numbers in hex with their slot ("slot 0
page 0x210"); steps numbered #1, #2, ... in run order, memslot creation included.

Other layers add their wording by registering with the singledispatch functions
(:func:`event_summary`, :func:`mismatch_text`, :func:`summary_text`).
"""

from __future__ import annotations

from collections import Counter
from functools import singledispatch
from typing import Any

from s2mmu.arch.faults import FSC_NAMES
from s2mmu.arch.tlb import TlbStage, WalkCacheEntry
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
    kvm_is_write_fault,
    kvm_vcpu_abt_iss1tw,
    kvm_vcpu_get_fault_ipa,
    kvm_vcpu_trap_get_fault,
    kvm_vcpu_trap_is_iabt,
)
from s2mmu.kvm.dirty import SlotPage
from s2mmu.kvm.errno import errname
from s2mmu.kvm.fault import (
    AccessFlag,
    Decision,
    GuestSea,
    InvalidateRetry,
    IoMemAbort,
    IpaOutOfRange,
    MapSize,
    MemslotLookup,
    MteNotAllowed,
    NestedMapCap,
    NestedPermFault,
    NestedS2Walk,
    NoVma,
    OutsideAction,
    OutsideMemslot,
    PfnError,
    PfnPinned,
    PgtableCall,
    PgtableOp,
    ProtDecision,
    ProtRefusal,
    ProtRefused,
    ReadPermissionFault,
    SizeReason,
    ThpAdjust,
    TopupFailed,
    UnsupportedFsc,
    VmaInfo,
)
from s2mmu.kvm.invariants import (
    CacheablePfnmap,
    CleanWritablePage,
    DirtyNotWritable,
    MappedOutsideMemslot,
    PgtableRuleBroken,
    PinLeaked,
    Stage2Mismatch,
    UnexplainedDirtyBit,
    WarnFired,
    WritableBlockWhileLogging,
)
from s2mmu.kvm.tlb import StaleTlbEntry
from s2mmu.nested.invariants import (
    ShadowBeyondL1,
    ShadowMismatch,
    ShadowOutsideMemslot,
    ShadowPermsExceed,
)
from s2mmu.nested.mmu import ShadowS1Tlbi, ShadowUnmap
from s2mmu.nested.profile import CURRENT as CURRENT_PROFILE
from s2mmu.pgtable.backend import MmuLockMode
from s2mmu.pgtable.events import (
    TLBI_TTL_UNKNOWN,
    ComponentLock,
    DcacheCleanInvalPoc,
    Dsb,
    IcacheInvalPou,
    Isb,
    PageAlloc,
    PageFree,
    PteWrite,
    TlbiHyp,
    TlbiVmid,
    TlbiVmidIpa,
    TlbiVmidRange,
    UseAfterFree,
    WalkReturn,
    Warn,
)
from s2mmu.pgtable.prot import (
    KVM_PGTABLE_PROT_DEVICE,
    KVM_PGTABLE_PROT_NORMAL_NC,
    KVM_PGTABLE_PROT_R,
    KVM_PGTABLE_PROT_W,
    KVM_PGTABLE_PROT_X,
)
from s2mmu.pgtable.s2trans import KvmS2Trans, NestedWalkError
from s2mmu.pkvm.errno import errname as pkvm_errname
from s2mmu.pkvm.host_fault import Fixup, ZeropadFixedUp
from s2mmu.pkvm.locks import GUEST, LOCK_NAMES
from s2mmu.scenario.kvm_events import (
    AccessCompleted,
    Check,
    ClearDirtyLog,
    DeleteMemslot,
    DirtyLog,
    DirtyLogCleared,
    DirtyLogToggle,
    ExpectDirty,
    ExpectDirtyCount,
    ExpectErrno,
    ExpectError,
    ExpectLeaves,
    ExpectMapping,
    ExpectMarkedDirty,
    ExpectOutcome,
    ExpectSeq,
    ExpectWarn,
    GetDirtyLog,
    GuestAccess,
    GuestFaulted,
    HostDone,
    HostErrno,
    HostEvent,
    HostOp,
    IoctlRefused,
    KvmSummary,
    Mmap,
    MoveMemslot,
    RawAbort,
    SetMemslot,
    SlotChanged,
)
from s2mmu.scenario.nested_events import (
    AtDone,
    AtUndefined,
    ExpectEsr,
    ExpectPar,
    ExpectPath,
    ExpectShadow,
    L1At,
    L1MapEvent,
    L1Mapped,
    L1Tlbi,
    L1Unmap,
    L1Unmapped,
    L2Access,
    L2Completed,
    L2Enter,
    L2Entered,
    L2Faulted,
    NestedSummary,
    ShadowLeaf,
    TlbiDone,
    TlbiUndefined,
)
from s2mmu.scenario.pkvm_events import (
    POLICY_NAMES,
    ExpectAccess,
    ExpectData,
    ExpectDirtyMarks,
    ExpectRet,
    GuestCall,
    HostAccessed,
    HostAccessEvent,
    HypCall,
    NotRun,
    PkvmSummary,
    Returned,
    VmCall,
)
from s2mmu.scenario.records import Broken, Failure, FaultStep, Mismatch, Outcome, Run, StepRecord
from s2mmu.scenario.schema import ExpectBroken

SHOWN_DIRTY_PAGES = 16
"""A dirty log shows this many pages, then '...'."""
SHOWN_EVENTS = 8
"""A step shows this many TLBI/CMO events, then how many more (JSON has them all)."""


# -- values -------------------------------------------------------------------------------------


def size_name(size: int) -> str:
    """Return 4K / 2M / 1G (hex when not a whole unit)."""
    for shift, unit in ((30, "G"), (20, "M"), (10, "K")):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return hex(size)


def prot_str(p: int) -> str:
    """Return a KVM_PGTABLE_PROT_* set as 'RWX', with ' Device' or ' Normal-NC'."""
    s = ("R" if p & KVM_PGTABLE_PROT_R else "-") + ("W" if p & KVM_PGTABLE_PROT_W else "-")
    s += "X" if p & KVM_PGTABLE_PROT_X == KVM_PGTABLE_PROT_X else "-"
    if p & KVM_PGTABLE_PROT_DEVICE:
        s += " Device"
    elif p & KVM_PGTABLE_PROT_NORMAL_NC:
        s += " Normal-NC"
    return s


def pages_text(pages: tuple[int, ...] | list[int], limit: int | None = None) -> str:
    """Return slot-relative page numbers as '[0x210, 0x500]' (with '...' past limit)."""
    shown = [f"{p:#x}" for p in (pages if limit is None else pages[:limit])]
    if limit is not None and len(pages) > limit:
        shown.append("...")
    return "[" + ", ".join(shown) + "]"


def slot_page_text(p: SlotPage) -> str:
    """Return a page of a memslot as 'slot 0 page 0x210'."""
    return f"slot {p.slot} page {p.page:#x}"


# -- decisions and results -----------------------------------------------------------------------

SIZE_REASONS = {SizeReason.LOGGING: "dirty logging forces pages",
                SizeReason.PUD_DOES_NOT_FIT: "1G block does not fit the memslot",
                SizeReason.PMD_DOES_NOT_FIT: "2M block does not fit the memslot",
                SizeReason.PROTECTED_VM: "a protected VM is mapped page by page"}
OUTSIDE = {OutsideAction.INJECT_PABT: "instruction fetch outside memory: inject pabt",
           OutsideAction.INJECT_DABT: "stage-1 walk outside writable memory: inject dabt",
           OutsideAction.SKIP_CM: "cache maintenance outside memslots: skipped"}
PROT_REFUSALS = {ProtRefusal.CACHEABLE_PFNMAP_WITHOUT_FWB: "cacheable PFNMAP without FWB+DIC",
                 ProtRefusal.EXEC_NONCACHEABLE: "exec fault on non-cacheable memory"}


def decision_text(d: Decision) -> str:
    """Return what one step of the abort path decided, in words."""
    match d:
        case MemslotLookup(ipa=ipa, slot=slot, hva=hva, writable=w):
            where = "no memslot" if slot is None or hva is None else (
                f"slot {slot}, HVA {hva:#x}{'' if w else ' (read-only)'}")
            return f"IPA {ipa:#x}: {where}"
        case NoVma(hva=hva):
            return f"no VMA at HVA {hva:#x}: -EFAULT"
        case VmaInfo(name=name, kind=kind, mem_type=mt, vma_shift=shift):
            return f"VMA {name} ({kind.value}, {mt.value}), vma_shift {shift}"
        case MapSize(vma_pagesize=size, force_pte=force, reason=why):
            because = SIZE_REASONS.get(why, f"VMA shift {size.bit_length() - 1}")
            return f"{size_name(size)} ({because}){', force_pte' if force else ''}"
        case PfnPinned(pa=pa, writable=w, pinned=pinned):
            return (f"PA {pa:#x} {'writable' if w else 'read-only'}, "
                    f"{'pinned' if pinned else 'no struct page, not pinned'}")
        case PfnError(error=err):
            return err.value
        case ProtDecision(writable=w, force_noncacheable=nc):
            return f"{'RW' if w else 'RO'}, {'non-cacheable' if nc else 'cacheable'}"
        case ProtRefused(refusal=r, errno=e):
            return f"{PROT_REFUSALS[r]}: {errname(e)}"
        case ThpAdjust():
            return "THP: PMD block"
        case MteNotAllowed():
            return "MTE VM, VMA without VM_MTE_ALLOWED: -EFAULT"
        case InvalidateRetry():
            return "invalidated since mmu_seq was read: -EAGAIN, the guest retries"
        case PgtableCall(ipa=ipa, size=size, pa=pa, prot=prot, ret=ret, lock=lock):
            return (f"IPA {ipa:#x} {size_name(size)} -> PA {pa:#x} {prot_str(prot)}: "
                    f"{errname(ret) if ret else 'ok'}"
                    + (" (mmu_lock held for write)" if lock is MmuLockMode.WRITE else ""))
        case ReadPermissionFault():
            return "read permission fault: -EFAULT"
        case TopupFailed(ret=ret):
            return f"memcache top-up failed: {errname(ret)}"
        case AccessFlag(ipa=ipa):
            return f"mkyoung IPA {ipa:#x}"
        case IpaOutOfRange(ipa=ipa, ipa_bits=bits, beyond_host_limit=True):
            return f"IPA {ipa:#x} beyond kvm_ipa_limit ({bits} bits): size fault"
        case IpaOutOfRange(ipa=ipa, ipa_bits=bits, inject=kind):
            return f"IPA {ipa:#x} beyond the {bits}-bit IPA space: inject {kind.value}"
        case GuestSea(claimed=claimed):
            return "claimed by the host (APEI)" if claimed else "not claimed: inject SError"
        case UnsupportedFsc(fsc=fsc):
            return f"unsupported FSC {fsc:#x}: -EFAULT"
        case OutsideMemslot(action=action):
            return OUTSIDE[action]
        case IoMemAbort(ipa=ipa, isv=True, write=w, length=n):
            return f"KVM_EXIT_MMIO {'write' if w else 'read'} {n} bytes at {ipa:#x}"
        case IoMemAbort(nisv_to_user=True):
            return "no valid syndrome: KVM_EXIT_ARM_NISV"
        case IoMemAbort():
            return "no valid syndrome: -ENOSYS"
        case NestedS2Walk(fault_ipa=ipa, trans=NestedWalkError(errno=e, reason=why)):
            return f"L1 stage 2 walk refused for L2 IPA {ipa:#x} (-{e}: {why}): inject FSC 0x0"
        case NestedS2Walk(fault_ipa=ipa, trans=KvmS2Trans() as t) if t.esr:
            return f"L1 stage 2 faults on L2 IPA {ipa:#x} (FSC {t.esr:#x}, level {t.level})"
        case NestedS2Walk(fault_ipa=ipa, trans=KvmS2Trans() as t):
            return (f"L1 stage 2: L2 IPA {ipa:#x} -> IPA {t.output:#x} "
                    f"{size_name(t.block_size)} level {t.level} {l1_perms(t)}")
        case NestedPermFault(fault_ipa=ipa, esr=esr):
            return f"L1 stage 2 forbids the access at L2 IPA {ipa:#x}: forward ESR {esr:#x}"
        case NestedMapCap(l1_size=l1, max_map_size=cap):
            return f"L1 maps {size_name(l1)}: at most {size_name(cap)}"
    raise AssertionError(d)


def l1_perms(t: KvmS2Trans) -> str:
    """Return an L1 stage-2 leaf's permissions as 'RW' plus 'X', 'PX', 'UX' or '-'."""
    px, ux = t.exec_el1, t.exec_el0
    return (("R" if t.readable else "-") + ("W" if t.writable else "-")
            + ("X" if px and ux else "PX" if px else "UX" if ux else "-"))


INJECT_NAMES = {InjectKind.DABT: "synchronous external data abort",
                InjectKind.PABT: "synchronous external instruction abort",
                InjectKind.SIZE: "address size fault", InjectKind.SERROR: "SError"}
RESUME_TEXT = {ResumeReason.MAPPED: "mapped", ResumeReason.RETRY: "retry",
               ResumeReason.ACCESS_FLAG: "access flag set",
               ResumeReason.SEA_CLAIMED: "SEA handled by the host",
               ResumeReason.CM_SKIPPED: "cache maintenance skipped (kvm_incr_pc)"}


def error_text(e: Error, abort: GuestAbort, decisions: tuple[Decision, ...]) -> str:
    """Return why KVM_RUN fails: the kernel's message, or the step that refused."""
    match e.reason:
        case ErrorReason.UNSUPPORTED_FSC:
            return f"Unsupported FSC: xFSC={kvm_vcpu_trap_get_fault(abort):#x} " \
                   f"ESR_EL2={abort.esr:#x}"
        case ErrorReason.NO_VALID_SYNDROME:
            return "Data abort outside memslots with no valid syndrome info"
    return decision_text(decisions[-1]) if decisions else errname(e.errno)


def result_text(r: GuestResult, abort: GuestAbort, decisions: tuple[Decision, ...] = ()) -> str:
    """Return what the guest (or the VMM) sees after an abort, in one line."""
    match r:
        case MmioExit(ipa=ipa, length=n, is_write=w):
            return f"KVM_EXIT_MMIO {'write' if w else 'read'} {n} bytes at IPA {ipa:#x}"
        case NisvExit(ipa=ipa):
            return f"KVM_EXIT_ARM_NISV at IPA {ipa:#x}"
        case InjectedAbort(kind=kind, far=far):
            return f"inject {INJECT_NAMES[kind]} into the guest (FAR {far:#x})"
        case HwpoisonSignal(hva=hva, lsb=lsb):
            return f"SIGBUS BUS_MCEERR_AR to the VMM (HVA {hva:#x}, lsb {lsb})"
        case Error(errno=errno):
            return f"KVM_RUN fails {errname(errno)}: {error_text(r, abort, decisions)}"
        case Resumed(reason=reason):
            return f"guest resumed ({RESUME_TEXT[reason]})"
        case InjectedS2Fault(esr=esr, ipa=ipa):
            return f"inject L1 stage-2 fault into the guest hypervisor (ESR {esr:#x}, IPA {ipa:#x})"
    raise AssertionError(r)


def fault_result_text(f: FaultStep) -> str:
    """Return one fault's result line."""
    return result_text(f.handled.result, f.abort, f.handled.decisions)


def abort_class(abort: GuestAbort) -> str:
    """Return IABT or DABT."""
    return "IABT" if kvm_vcpu_trap_is_iabt(abort) else "DABT"


def fsc_name(abort: GuestAbort) -> str:
    """Return the name of the abort's FSC."""
    return FSC_NAMES.get(kvm_vcpu_trap_get_fault(abort), "?")


def abort_text(abort: GuestAbort) -> str:
    """Return the abort as the hardware reported it, decoded."""
    return (f"{abort_class(abort)} ESR {abort.esr:#x} FAR {abort.far:#x} HPFAR "
            f"{abort.hpfar:#x} IPA {kvm_vcpu_get_fault_ipa(abort):#x}: {fsc_name(abort)}"
            f"{', S1PTW' if kvm_vcpu_abt_iss1tw(abort) else ''}"
            f"{', write' if kvm_is_write_fault(abort) else ''}")


def mapping_text(f: FaultStep) -> str | None:
    """Return the mapping a fault made, or None."""
    m = f.handled.mapping
    if m is None:
        return None
    op = "map" if m.op is PgtableOp.MAP else "relax_perms"
    return f"{op} IPA {m.ipa:#x} {size_name(m.size)} -> PA {m.pa:#x} {prot_str(m.prot)}"


# -- model events (TLBI, CMO, and the whole stream for --trace) -----------------------------------


def event_text(e: Any) -> str:
    """Return a recorded model event as the instruction or action a reader knows."""
    match e:
        case TlbiVmidIpa(vmid=v, ipa=ipa, level=lvl, nsh=nsh):
            ttl = "unknown" if lvl == TLBI_TTL_UNKNOWN else str(lvl)
            return f"TLBI IPAS2E1{'' if nsh else 'IS'} VMID {v} IPA {ipa:#x} TTL {ttl}"
        case TlbiVmidRange(vmid=v, ipa=ipa, pages=n):
            return f"TLBI RIPAS2E1IS VMID {v} IPA {ipa:#x} pages {n}"
        case TlbiVmid(vmid=v):
            return f"TLBI VMALLS12E1IS VMID {v}"
        case TlbiHyp(op=op, va=va, level=lvl):
            return f"TLBI {op} VA {va:#x} level {lvl}"
        case Dsb(domain=d):
            return f"DSB {d}"
        case Isb():
            return "ISB"
        case DcacheCleanInvalPoc(pa=pa, size=n):
            return f"DC CIVAC PA {pa:#x}+{size_name(n)}"
        case IcacheInvalPou(pa=pa, size=n):
            return f"IC IVAU PA {pa:#x}+{size_name(n)}"
        case PteWrite(pa=pa, old=old, new=new):
            return f"PTE at PA {pa:#x}: {old:#018x} -> {new:#018x}"
        case PageAlloc(pa=pa):
            return f"table page allocated at PA {pa:#x}"
        case PageFree(pa=pa):
            return f"table page freed at PA {pa:#x}"
        case UseAfterFree(pa=pa, access=access):
            return f"USE AFTER FREE: {access} of freed page PA {pa:#x}"
        case Warn(function=fn, condition=cond):
            return f"WARN_ON in {fn}: {cond}"
        case ComponentLock(component=c, acquire=acq, handle=h):
            return f"{'lock' if acq else 'unlock'} {LOCK_NAMES[c]}" + (
                f" (vm {h})" if c == GUEST else "")
        case WalkReturn(flags=flags, errors=errors, visits=visits, ret=ret):
            seen = ", ".join(f"{r} at visit {n}" for n, r in errors) or "none"
            return (f"kvm_pgtable_walk flags {flags:#x}: {visits} visits, visitor errors "
                    f"{seen}, returned {ret}")
    return type(e).__name__


# -- steps ----------------------------------------------------------------------------------------


@singledispatch
def event_summary(event: Any, step: StepRecord) -> str:
    """Return a step's one-line summary (registered per event type; default: its name)."""
    return str(event.do)


@event_summary.register
def _(event: GuestAccess, step: StepRecord) -> str:
    where = f"VA {event.va:#x}" if event.va is not None else f"IPA {event.ipa:#x}"
    size = f", {event.size} bytes" if event.size is not None else ""
    return f"vCPU{event.vcpu} {event.do} {where}{size}"


@event_summary.register
def _(event: RawAbort, step: StepRecord) -> str:
    return f"raw abort ESR {event.esr:#x}"


@event_summary.register
def _(event: HostEvent, step: StepRecord) -> str:
    r = step.result
    if isinstance(r, HostDone) and r.op is HostOp.MIGRATE:
        return f"migrate HVA {r.hva:#x}: {'moved' if r.moved else 'refused (pinned or absent)'}"
    text = f"{event.op.value} HVA {event.hva:#x}+{size_name(event.size)}"
    return text + (f": {errname(r.errno)}" if isinstance(r, HostDone) and r.errno else "")


@event_summary.register
def _(event: Mmap, step: StepRecord) -> str:
    v = event.vma
    return f"mmap {v.name or v.kind.value} HVA {v.start:#x}+{size_name(v.size)}"


def _slot_summary(event: SetMemslot | MoveMemslot | DeleteMemslot, step: StepRecord) -> str:
    r = step.result
    if isinstance(r, SlotChanged):
        size = size_name(r.size) if r.size else "0"
        return f"slot {r.slot}: {r.change.value} IPA {r.gpa:#x}+{size}"
    return f"slot {event.slot}"


for _t in (SetMemslot, MoveMemslot, DeleteMemslot):
    event_summary.register(_t, _slot_summary)


@event_summary.register
def _(event: DirtyLogToggle, step: StepRecord) -> str:
    return f"slot {event.slot}: dirty log {'enable' if event.enable else 'disable'}"


@event_summary.register
def _(event: GetDirtyLog, step: StepRecord) -> str:
    r = step.result
    if not isinstance(r, DirtyLog):
        return event.do
    return (f"slot {r.slot}: KVM_GET_DIRTY_LOG: {len(r.pages)} dirty "
            f"{pages_text(r.pages, SHOWN_DIRTY_PAGES)}")


@event_summary.register
def _(event: ClearDirtyLog, step: StepRecord) -> str:
    r = step.result
    if not isinstance(r, DirtyLogCleared):
        return event.do
    return (f"slot {r.slot}: KVM_CLEAR_DIRTY_LOG pages {r.first_page:#x}.."
            f"{r.first_page + r.num_pages - 1:#x}")


@event_summary.register
def _(event: Check, step: StepRecord) -> str:
    return "check"


def step_summary(step: StepRecord) -> str:
    """Return a step's summary, with an ioctl's refusal when there is one."""
    r = step.result
    if isinstance(r, IoctlRefused):
        who = f"slot {step.event.slot}" if isinstance(
            step.event, SetMemslot | MoveMemslot | DeleteMemslot) else step.event.do
        return f"{who}: refused {errname(r.errno)} ({r.why})"
    return event_summary(step.event, step)


def shows_outcome(step: StepRecord) -> bool:
    """Return whether the timeline shows '-> outcome' (not for plain done or refused
    ioctls)."""
    return step.outcome is not Outcome.DONE and not isinstance(step.result, IoctlRefused)


def guest_fault_text(r: GuestFaulted) -> str:
    """Return a stage-1 fault the guest takes itself."""
    return f"{r.fault.statuscode.value} fault, level {r.fault.level}"


def step_head(step: StepRecord) -> str:
    """Return a step's first line: number, line, summary, outcome, PA."""
    head = f"#{step.index:<3}[line {step.line:>3}] {step_summary(step)}"
    if shows_outcome(step):
        head += f" -> {step.outcome.value}"
    r = step.result
    if isinstance(r, AccessCompleted):
        head += f" (PA {r.pa:#x})"
    if isinstance(r, GuestFaulted):
        head += f" ({guest_fault_text(r)}, the guest's own exception)"
    return head


def fault_lines(f: FaultStep, indent: str = "    ") -> list[str]:
    """Return one fault's lines: the abort, each decision, its events, the result."""
    out = [f"{indent}abort: {abort_text(f.abort)}"]
    out += [f"{indent}  {d.step}: {decision_text(d)}" for d in f.handled.decisions]
    out += [f"{indent}  ~ {event_text(e)}" for e in f.events]
    out.append(f"{indent}  => {fault_result_text(f)}")
    return out


def step_lines(step: StepRecord, trace: bool = False) -> list[str]:
    """Return one step's lines."""
    out = [step_head(step)]
    if step.event.note:
        out.append(f"    # {step.event.note}")
    for f in step.faults:
        out += fault_lines(f)
    out += [f"    ~ {event_text(e)}" for e in step.events[:SHOWN_EVENTS]]
    if len(step.events) > SHOWN_EVENTS:
        out.append(f"    ~ ... {len(step.events) - SHOWN_EVENTS} more (--json lists them all)")
    if trace:
        out += [f"    . {event_text(e)}" for e in step.trace]
    out += [f"    EXPECTATION FAILED: {mismatch_text(m)}" for m in step.mismatches]
    out += [f"    INVARIANT BROKEN: {invariant_text(v)}" for v in step.invariants]
    out += [f"    invariant broken, as expected: {invariant_text(v)}" for v in step.meant]
    return out


# -- expectations and failures ----------------------------------------------------------------


def _size_or_none(size: int | None) -> str:
    return "none" if size is None else size_name(size)


def leaves_text(leaves: dict[int, int] | Any) -> str:
    """Return leaf counts as '1 x 2M, 515 x 4K' (largest first), or 'none'."""
    return ", ".join(f"{n} x {size_name(s)}" for s, n in sorted(dict(leaves).items(),
                                                               reverse=True)) or "none"


@singledispatch
def mismatch_text(expectation: Any, got: Any = None) -> str:
    """Return a broken expectation as 'expected X, got Y' (registered per type)."""
    if isinstance(expectation, Mismatch):
        return mismatch_text(expectation.expectation, expectation.got)
    return f"expected {expectation}, got {got}"


@mismatch_text.register
def _(e: ExpectOutcome, got: Any = None) -> str:
    return f"expected {e.outcome.value}, got {got.value}"


@mismatch_text.register
def _(e: ExpectMapping, got: Any = None) -> str:
    return f"expected mapping {_size_or_none(e.size)}, got {_size_or_none(got)}"


@mismatch_text.register
def _(e: ExpectErrno, got: Any = None) -> str:
    if isinstance(got, HostErrno):
        return f"expected errno {e.errno}, got {got.errno or 'none'}"
    return f"expected KVM_RUN error {e.errno}, got {got or 'none'}"


@mismatch_text.register
def _(e: ExpectError, got: Any = None) -> str:
    return f"expected error {e.errno or 'none'}, got {got or 'none'}"


@mismatch_text.register
def _(e: ExpectDirty, got: Any = None) -> str:
    return (f"expected dirty pages {pages_text(e.pages)}, got "
            f"{'no dirty log' if got is None else pages_text(got)}")


@mismatch_text.register
def _(e: ExpectDirtyCount, got: Any = None) -> str:
    return f"expected {e.count} dirty pages, got {got}"


@mismatch_text.register
def _(e: ExpectLeaves, got: Any = None) -> str:
    return f"expected stage-2 leaves {leaves_text(e.leaves)}, got {leaves_text(got)}"


@mismatch_text.register
def _(e: ExpectMarkedDirty, got: Any = None) -> str:
    return f"expected the step's faults to mark {e.count} page(s) dirty, got {got}"


@mismatch_text.register
def _(e: ExpectBroken, got: Any = None) -> str:
    return (f"expected the step to break the {e.invariant} invariant, got "
            f"{', '.join(got or ()) or 'none broken'}")


@mismatch_text.register
def _(e: ExpectWarn, got: Any = None) -> str:
    return f"expected a WARN in {e.function}, got {', '.join(got or ()) or 'none'}"


@mismatch_text.register
def _(e: ExpectSeq, got: Any = None) -> str:
    return f"expected mmu_invalidate_seq {e.seq}, got {got}"


@singledispatch
def invariant_text(v: Any) -> str:
    """Return a broken invariant in words (registered per violation type)."""
    return str(v)


@invariant_text.register
def _(b: Broken) -> str:
    return f"{b.invariant}: {invariant_text(b.violation)}"


def _where(ipa: int, size: int) -> str:
    return f"IPA {ipa:#x}+{size:#x}"


@invariant_text.register
def _(v: PinLeaked) -> str:
    return f"host page {v.pa:#x} has refcount {v.refcount} (a pin was not released)"


@invariant_text.register
def _(v: MappedOutsideMemslot) -> str:
    return f"{_where(v.ipa, v.size)} is mapped outside a memslot"


@invariant_text.register
def _(v: WritableBlockWhileLogging) -> str:
    return f"{_where(v.ipa, v.size)}: writable block in logging slot {v.slot}"


@invariant_text.register
def _(v: CleanWritablePage) -> str:
    return f"{_where(v.ipa, v.size)}: writable page in logging slot {v.slot} but not dirty"


@invariant_text.register
def _(v: CacheablePfnmap) -> str:
    return f"{_where(v.ipa, v.size)}: cacheable VM_PFNMAP mapping without FWB+DIC"


@invariant_text.register
def _(v: Stage2Mismatch) -> str:
    got = "nothing" if v.host_pa is None else f"{v.host_pa:#x}"
    return (f"{_where(v.ipa, v.size)}: stage 2 gives PA {v.pa:#x} at +{v.offset:#x}, "
            f"the host maps {got}")


@invariant_text.register
def _(v: UnexplainedDirtyBit) -> str:
    return (f"slot {v.slot} page {v.page:#x} (IPA {v.ipa:#x}) is dirty but no handled write "
            "dirtied it")


@invariant_text.register
def _(v: WarnFired) -> str:
    return f"WARN_ON({v.condition}) in {v.function} (the kernel prints a WARNING here)"


@invariant_text.register
def _(v: DirtyNotWritable) -> str:
    leaf = "nothing mapped" if not v.leaf else f"leaf {v.leaf:#x} is not writable"
    return (f"IPA {v.ipa:#x} (slot {v.slot} page {v.page:#x}) was marked dirty but the fault "
            f"returned with {leaf}")


@invariant_text.register
def _(v: PgtableRuleBroken) -> str:
    return v.detail


@invariant_text.register
def _(v: StaleTlbEntry) -> str:
    e = v.entry
    if isinstance(e, WalkCacheEntry):
        now = "nothing" if v.now is None else f"{v.now:#x}"
        return (f"vCPU{v.vcpu} walk cache holds the stage-{e.stage} level-{e.level} table "
                f"descriptor for IPA {e.ia:#x}+{size_name(e.size)} -> table {e.next_table:#x}: "
                f"{v.reason.value} (now {now})")
    where = f"VA {e.ia:#x}" if e.stage is TlbStage.COMBINED else f"IPA {e.ia:#x}"
    now = "nothing" if v.now is None else f"PA {v.now:#x}"
    return (f"vCPU{v.vcpu} TLB holds {e.stage.value} {where}+{size_name(e.size)} -> PA "
            f"{e.oa:#x} (IPA {e.ipa:#x}, stage-2 level {e.s2_level}): {v.reason.value} "
            f"(now {now}): a missed TLBI")


def failure_text(f: Failure) -> str:
    """Return one failure as the list shows it: the step number, kind, line, what broke."""
    what = mismatch_text(f.what) if f.is_expectation else invariant_text(f.what)
    return f"step #{f.step.index} {f.step.event.do} (line {f.step.line}): {what}"


# -- the summary and the whole timeline ----------------------------------------------------------


def fault_counts(run: Run) -> dict[str, int]:
    """Return the faults' results counted by outcome name, sorted by name."""
    return dict(sorted(Counter(f.outcome.value for f in run.faults()).items()))


@singledispatch
def summary_text(summary: Any, run: Run, layer: str) -> list[str]:
    """Return a layer's summary lines (registered per summary type)."""
    return [f"  {layer}: {summary}"]


@summary_text.register
def _(s: KvmSummary, run: Run, layer: str) -> list[str]:
    dirty = ", ".join(f"slot {k}: {n}" for k, n in s.dirty_pages.items()) or "no logging"
    counts = fault_counts(run)
    res = ", ".join(f"{k} {n}" for k, n in counts.items()) or "none"
    return [f"  stage-2 mappings: {leaves_text(s.mappings)}", f"  dirty pages: {dirty}",
            f"  faults: {sum(counts.values())} ({res})",
            f"  mmu_invalidate_seq: {s.mmu_invalidate_seq}"]


# -- the pkvm layer -------------------------------------------------------------------------------


def returned_text(r: object) -> str:
    """Return what a pKVM call returned ('__pkvm_host_donate_hyp = 0'), or why it did not
    run."""
    match r:
        case Returned(function=fn, ret=ret):
            return f"{fn} = {pkvm_errname(ret)}"
        case NotRun(panicked_at=n):
            return f"not run: the host panicked at step #{n}"
    return "?"


@event_summary.register
def _(event: HypCall, step: StepRecord) -> str:
    pages = f" +{event.nr_pages} pages" if event.nr_pages > 1 else ""
    return f"{event.op.value} pfn {event.pfn:#x}{pages}: {returned_text(step.result)}"


@event_summary.register
def _(event: GuestCall, step: StepRecord) -> str:
    args = f"gfn {event.gfn:#x}"
    if event.pfn is not None:
        args += f" pfn {event.pfn:#x}"
    if event.prot:
        args += f" {prot_str(event.prot)}"
    if event.write_fault:
        args += " (write fault)"
    out = f"guest {event.guest}: {event.op.value} {args}: {returned_text(step.result)}"
    r = step.result
    if event.write_fault and isinstance(r, Returned) and r.ret == 0:
        out += ", page marked dirty"
    return out


@event_summary.register
def _(event: VmCall, step: StepRecord) -> str:
    return f"guest {event.guest}: {event.op.value}: {returned_text(step.result)}"


def access_outcome_text(o: object) -> str:
    """Return how a host access ended; a fixup says which stage faulted."""
    match o:
        case ZeropadFixedUp(data=data, far=far, stage=1):
            return f"stage-1 fault (direct map) at FAR {far:#x}, fixed up: {data.hex()}"
        case ZeropadFixedUp(data=data, far=far):
            return (f"data abort injected by EL2 at FAR {far:#x}, fixed up: "
                    f"{data.hex()}")
    return str(o)


@event_summary.register
def _(event: HostAccessEvent, step: StepRecord) -> str:
    what = f"store {event.length} bytes ({event.data.hex()})" if event.write else \
        f"load {event.length} bytes"
    fixup = ", load_unaligned_zeropad" if event.fixup is Fixup.ZEROPAD else ""
    head = f"host {what} at VA {event.va:#x} (PA {event.pa:#x}){fixup}"
    r = step.result
    return f"{head}: " + (access_outcome_text(r.outcome) if isinstance(r, HostAccessed)
                          else returned_text(r))


@mismatch_text.register
def _(e: ExpectRet, got: Any = None) -> str:
    return (f"expected return {pkvm_errname(e.ret)}, got "
            f"{'no call' if got is None else pkvm_errname(got)}")


@mismatch_text.register
def _(e: ExpectAccess, got: Any = None) -> str:
    return f"expected host access {e.result.value}, got {'none' if got is None else got.value}"


@mismatch_text.register
def _(e: ExpectData, got: Any = None) -> str:
    return f"expected data {e.data.hex()}, got {'none' if got is None else got.hex()}"


@mismatch_text.register
def _(e: ExpectDirtyMarks, got: Any = None) -> str:
    return f"expected the gfn marked dirty {e.count} time(s), got {got}"


@summary_text.register
def _(s: PkvmSummary, run: Run, layer: str) -> list[str]:
    guests = ", ".join(str(g) for g in s.guests) or "none"
    out = [f"  pkvm: profile {s.profile}, host aborts on given-away pages: "
           f"{POLICY_NAMES[s.policy]}",
           f"  pages: host {s.host_pages} ({s.shared_pages} shared), hyp {s.hyp_pages}, "
           f"guests {s.guest_pages}; guests alive: {guests}",
           f"  dirty marks: {s.dirty_marks}; direct-map holes: {s.direct_map_holes}"]
    if s.panicked_at is not None:
        out.append(f"  the host panicked at step #{s.panicked_at}")
    return out


def summary_lines(run: Run) -> list[str]:
    """Return the summary's lines."""
    out = ["summary:"]
    for layer, s in run.summaries.items():
        out += summary_text(s, run, layer)
    return out


def verdict_lines(run: Run) -> list[str]:
    """Return the verdict and, on failure, the numbered list of what broke."""
    failures = run.failures
    if not failures:
        return ["OK: every expectation and invariant holds"]
    return [f"FAILED: {len(failures)} expectation(s)/invariant(s) broken",
            *(f"  {failure_text(f)}" for f in failures)]


def timeline_lines(run: Run, trace: bool = False) -> list[str]:
    """Return the run as text: one block per step, then the summary and the verdict."""
    scn = run.scenario
    release = "" if scn.profile is CURRENT_PROFILE else f", kernel profile {scn.profile.name}"
    out = [f"scenario {scn.name} ({scn.path}){release}"]
    if scn.description:
        out.append(f"  {scn.description}")
    for step in run.steps:
        out += step_lines(step, trace)
    return out + summary_lines(run) + verdict_lines(run)


# -- the nested layer ---------------------------------------------------------------------------


def shadow_unmap_text(u: ShadowUnmap) -> str:
    """Return one shadow range a TLBI emptied."""
    return f"VMID {u.vmid}: shadow L2 IPA {u.ipa:#x}+{size_name(u.size)} unmapped"


def tlbi_result_text(r: object) -> str:
    """Return what KVM did for an L1 TLBI."""
    match r:
        case TlbiUndefined(feature=feat):
            return f"UNDEFINED (the VM has no {feat}): injected into L1"
        case TlbiDone(unmapped=(), s1=()):
            return "no shadow with L1's VMID: nothing to do"
        case TlbiDone(unmapped=done, s1=()):
            return "; ".join(shadow_unmap_text(u) for u in done)
        case TlbiDone(s1=s1):
            return "; ".join(f"VMID {t.vmid}: TLBI VMALLE1IS on shadow VMID {t.shadow_vmid}, "
                             "shadow stage 2 kept" for t in s1)
    return "?"


@event_summary.register
def _(event: L2Access, step: StepRecord) -> str:
    r = step.result
    done = f" (PA {r.pa:#x})" if isinstance(r, L2Completed) else ""
    if isinstance(r, L2Faulted):
        f = r.fault
        done = f" ({f.statuscode.value} fault, level {f.level}, L2's own exception)"
    where = f"VA {event.va:#x}" if event.va is not None else f"L2 IPA {event.ipa:#x}"
    return f"L2 {event.access} {where}{done}"


@event_summary.register
def _(event: L1Tlbi, step: StepRecord) -> str:
    return f"L1 TLBI {event.op.value} Xt {event.xt:#x}: {tlbi_result_text(step.result)}"


def par_text(par: int) -> str:
    """Return PAR_EL1 decoded: the fault status, or the PA and attributes."""
    if par & 1:
        stage = "stage 2" if par >> 9 & 1 else "stage 1"
        return f"F=1 FST {par >> 1 & 0x3F:#x} ({stage})"
    return f"PA {par & ((1 << 52) - 1) & ~0xFFF:#x} ATTR {par >> 56:#04x} SH {par >> 7 & 3}"


@event_summary.register
def _(event: L1At, step: StepRecord) -> str:
    r = step.result
    pan = " (PAN)" if event.pan else ""
    if isinstance(r, AtUndefined):
        return (f"L1 AT {event.op.name} VA {event.va:#x}{pan}: UNDEFINED ({r.reason}): "
                "injected into L1")
    if not isinstance(r, AtDone):
        return f"L1 AT {event.op.name} VA {event.va:#x}{pan}"
    return (f"L1 AT {event.op.name} VA {event.va:#x}{pan}: PAR_EL1 {r.par:#x} = "
            f"{par_text(r.par)}, {r.path} path")


@event_summary.register
def _(event: L1Unmap, step: StepRecord) -> str:
    r = step.result
    if not isinstance(r, L1Unmapped):
        return f"L1 unmaps L2 IPA {event.l2_ipa:#x}"
    return (f"L1 unmaps L2 IPA {r.l2_ipa:#x}: level-{r.level} descriptor at {r.gpa:#x} "
            "zeroed (the shadow is stale until L1 invalidates)")


@event_summary.register
def _(event: L1MapEvent, step: StepRecord) -> str:
    m = event.map
    return f"L1 maps L2 IPA {m.l2_ipa:#x}+{size_name(m.size)} -> IPA {m.ipa:#x}"


@event_summary.register
def _(event: L2Enter, step: StepRecord) -> str:
    regs = ", ".join(f"{k}={v:#x}" for k, v in event.regs)
    r = step.result
    if not isinstance(r, L2Entered):
        return f"L1 enters L2 ({regs})"
    how = ("found by lookup_s2_mmu" if r.found else
           "a new key" if r.recycled_vmid is None else
           f"recycled from L1 VMID {r.recycled_vmid}, its tables unmapped")
    return (f"L1 enters L2 ({regs}): shadow VMID {r.shadow_vmid} for L1 VMID {r.vmid}, "
            f"{how}")


def shadow_leaf_text(leaf: ShadowLeaf | Any) -> str:
    """Return a shadow leaf as '2M RWX' or 'none'."""
    if not isinstance(leaf, ShadowLeaf) or leaf.size is None:
        return "none"
    return (f"{size_name(leaf.size)}" + (f" {leaf.perms or '-'}" if leaf.perms is not None
                                         else "")
            + (f" at PA {leaf.pa:#x}" if leaf.pa is not None else ""))


@mismatch_text.register
def _(e: ExpectEsr, got: Any = None) -> str:
    want = "none" if e.esr is None else f"{e.esr:#x}"
    return f"expected ESR {want} injected into L1, got {'none' if got is None else hex(got)}"


@mismatch_text.register
def _(e: ExpectShadow, got: Any = None) -> str:
    return (f"expected the shadow leaf at L2 IPA {e.l2_ipa:#x} to be "
            f"{shadow_leaf_text(e.leaf)}, got {shadow_leaf_text(got)}")


@mismatch_text.register
def _(e: ExpectPar, got: Any = None) -> str:
    return f"expected PAR_EL1 {e.par:#x}, got {'none' if got is None else hex(got)}"


@mismatch_text.register
def _(e: ExpectPath, got: Any = None) -> str:
    return f"expected the {e.path} path, got {got}"


@invariant_text.register
def _(v: ShadowBeyondL1) -> str:
    return (f"shadow (VMID {v.vmid}) maps L2 IPA {v.l2_ipa:#x}, which L1's stage 2 does not "
            f"translate (FSC {v.fsc:#x})")


@invariant_text.register
def _(v: ShadowOutsideMemslot) -> str:
    return f"shadow (VMID {v.vmid}) maps L2 IPA {v.l2_ipa:#x} to IPA {v.ipa:#x}, in no memslot"


@invariant_text.register
def _(v: ShadowMismatch) -> str:
    host = "nothing" if v.host_pa is None else f"PA {v.host_pa:#x}"
    return (f"shadow (VMID {v.vmid}) maps L2 IPA {v.l2_ipa:#x} to PA {v.pa:#x}, but IPA "
            f"{v.ipa:#x} is backed by {host}")


@invariant_text.register
def _(v: ShadowPermsExceed) -> str:
    return (f"shadow (VMID {v.vmid}) grants {prot_str(v.granted)} at L2 IPA {v.l2_ipa:#x}, "
            f"L1's stage 2 and the memslot allow {prot_str(v.allowed)}")


@summary_text.register
def _(s: NestedSummary, run: Run, layer: str) -> list[str]:
    shadows = ", ".join(f"VMID {x.vmid} ({'stage 2 on' if x.stage2_enabled else 'stage 2 off'}"
                        f", {x.leaves} leaves)" for x in s.shadows) or "none in use"
    return [f"  shadow stage 2s: {shadows} (pool of {s.pool})"]


_ = (L1Mapped, ShadowS1Tlbi)  # results worded by their event's summary
