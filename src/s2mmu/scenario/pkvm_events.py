"""The pkvm layer of scenarios: a pKVM host, its guests, hypercalls and host accesses.

Tables: ``[pkvm]`` (the hypervisor: policy for host aborts on pages the host gave away,
RAM size, whether the host unmaps donated pages from its direct map; the kernel release
is the scenario's ``[kvm] profile``)
and ``[[pkvm_guest]]`` (handle, protected or not). Events (``do = ...``), named after the
hypercall or host function they call:

- host_share_hyp, host_unshare_hyp (pfn); host_donate_hyp, hyp_donate_host (pfn,
  nr_pages); hyp_pin_shared_mem, hyp_unpin_shared_mem (pfn, nr_pages): EL2's
  __pkvm_host_share_hyp and friends;
- host_share_guest (guest, pfn, gfn, prot, write_fault), host_unshare_guest (guest,
  gfn): the host's pkvm_pgtable_stage2_map/unmap (its record of what it shares, then
  __pkvm_host_share_guest/__pkvm_host_unshare_guest); host_donate_guest (guest, pfn,
  gfn); host_relax_perms_guest (guest, gfn, prot, write_fault); host_wrprotect_guest,
  host_mkyoung_guest (guest, gfn); host_reclaim_page (guest, gfn);
- start_teardown_vm, finalize_teardown_vm (guest): __pkvm_start_teardown_vm,
  __pkvm_finalize_teardown_vm; teardown (guest): the host's pkvm_pgtable_stage2_destroy;
- host_access (pa, size, write, data, fixup): a host kernel load or store through its
  linear map (host_fault.host_access).

``write_fault = true`` says the call comes from user_mem_abort handling a write fault,
which marks the page dirty when the call returns 0 (``if (writable && !ret)
mark_page_dirty_in_slot``): seed 000's "mark the page dirty twice".

Expectations: expect_ret ("0", "-EPERM", ...: the call's return), expect_access (done,
fixed-up, oops, sea-panic, hyp-panic), expect_data (the bytes a load read, hex),
expect_dirty_marks (how many times the event's gfn was marked dirty so far). The
invariants of s2mmu.pkvm.invariants are checked after every step. Once the host or the
hypervisor has panicked, later events do not run (their result says so).

Kernel: the hypercalls of nvhe/mem_protect.c and nvhe/pkvm.c and the host's pkvm.c as the
s2mmu.pkvm modules model them; user_mem_abort's dirty marking (mmu.c).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any

from s2mmu.arch.inputs import shorten
from s2mmu.arch.memory import PhysMem
from s2mmu.kvm.host import HOST_RAM_BASE
from s2mmu.pgtable.caps import KvmCaps
from s2mmu.pgtable.events import Warn
from s2mmu.pgtable.prot import KVM_PGTABLE_PROT_R, KVM_PGTABLE_PROT_W, KVM_PGTABLE_PROT_X
from s2mmu.pkvm import mem_protect as mp
from s2mmu.pkvm import pkvm as pk
from s2mmu.pkvm.errno import errname
from s2mmu.pkvm.host_fault import (
    PAGE_OFFSET,
    AccessDone,
    AccessOutcome,
    DirectMap,
    Fixup,
    HostAccess,
    HostAccessHypPanic,
    HostFaultPolicy,
    HostOops,
    HostSeaPanic,
    ZeropadFixedUp,
    host_access,
)
from s2mmu.pkvm.invariants import PkvmViolation, check_pkvm, page_views
from s2mmu.pkvm.memory import MemblockRegion
from s2mmu.pkvm.states import PKVM_PAGE_OWNED, PKVM_PAGE_SHARED_OWNED
from s2mmu.scenario.records import Mismatch, Outcome, StepDraft, World
from s2mmu.scenario.schema import (
    REGISTRY,
    Checker,
    Event,
    EventKind,
    Expectation,
    ExpectationKind,
    Invariant,
    Item,
    Layer,
    ParseContext,
    common_fields,
)

PKVM_KEYS = {"policy", "ram_pages", "nomap_pages", "unmap_donated"}
GUEST_KEYS = {"handle", "protected"}
POLICIES = {"data-abort": HostFaultPolicy.INJECT_DATA_ABORT,
            "sea": HostFaultPolicy.INJECT_SEA, "bug": HostFaultPolicy.BUG}
POLICY_NAMES = {v: k for k, v in POLICIES.items()}
MAX_RAM_PAGES = 4096
MAX_HANDLE = 255
MAX_ACCESS = 64
HOST_IPA_BITS = 40
"""The host stage 2's input size (new_pkvm builds it with 40 bits)."""
PFN_LIMIT = 1 << (HOST_IPA_BITS - 12)
FIXUPS = {"none": Fixup.NONE, "zeropad": Fixup.ZEROPAD}
PROT_BITS = {"R": KVM_PGTABLE_PROT_R, "W": KVM_PGTABLE_PROT_W, "X": KVM_PGTABLE_PROT_X}


# -- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GuestSpec:
    """A [[pkvm_guest]] table: the guest's pKVM handle and whether it is protected."""

    handle: int
    protected: bool


@dataclass(frozen=True)
class PkvmConfig:
    """The [pkvm] table and the guests: what the hypervisor boots with."""

    policy: HostFaultPolicy
    ram_pages: int
    nomap_pages: int
    unmap_donated: bool
    guests: tuple[GuestSpec, ...]


def parse_pkvm(c: Checker, data: dict[str, Any],
               ctx: ParseContext) -> tuple[PkvmConfig | None, list[Event]]:
    """Parse [pkvm] and [[pkvm_guest]]; None when the scenario has neither."""
    if "pkvm" not in data:
        if "pkvm_guest" in data:
            raise c.fail("pkvm_guest", 0, None, "needs a [pkvm] table (the hypervisor)")
        return None, []
    t = c.keys("pkvm", None, data["pkvm"], PKVM_KEYS)
    policy = POLICIES[c.choice("pkvm", None, "policy", t.get("policy", "data-abort"),
                               set(POLICIES))]
    ram = c.size("pkvm", None, "ram_pages", t.get("ram_pages", 512))
    if not 1 <= ram <= MAX_RAM_PAGES:
        raise c.fail("pkvm", None, "ram_pages", f"must be 1..{MAX_RAM_PAGES}, not {ram}")
    nomap = c.size("pkvm", None, "nomap_pages", t.get("nomap_pages", 16))
    if nomap > MAX_RAM_PAGES:
        raise c.fail("pkvm", None, "nomap_pages", f"must be 0..{MAX_RAM_PAGES}, not {nomap}")
    unmap = c.boolean("pkvm", None, "unmap_donated", t.get("unmap_donated", False))
    return PkvmConfig(policy, ram, nomap, unmap, _guests(c, data)), []


def _guests(c: Checker, data: dict[str, Any]) -> tuple[GuestSpec, ...]:
    raw = data.get("pkvm_guest", [])
    if not isinstance(raw, list):
        raise c.fail("pkvm_guest", None, None, "use [[pkvm_guest]] (an array of tables)")
    out: list[GuestSpec] = []
    for i, d in enumerate(raw):
        c.keys("pkvm_guest", i, d, GUEST_KEYS)
        if "handle" not in d:
            raise c.fail("pkvm_guest", i, None, "missing field 'handle'")
        h = c.size("pkvm_guest", i, "handle", d["handle"])
        if not 1 <= h <= MAX_HANDLE:
            raise c.fail("pkvm_guest", i, "handle", f"must be 1..{MAX_HANDLE} (the model uses "
                                                    f"it as the guest's VMID), not {h}")
        if any(g.handle == h for g in out):
            raise c.fail("pkvm_guest", i, "handle", f"handle {h} is already used")
        out.append(GuestSpec(h, c.boolean("pkvm_guest", i, "protected",
                                          d.get("protected", False))))
    return tuple(out)


# -- world state -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DirtyMark:
    """A page user_mem_abort marked dirty: the guest, the gfn and the step."""

    guest: int
    gfn: int
    step: int


@dataclass
class PkvmWorld:
    """The pkvm layer's running state (pkvm is None when the scenario has no [pkvm])."""

    pkvm: mp.Pkvm | None
    policy: HostFaultPolicy = HostFaultPolicy.INJECT_DATA_ABORT
    unmap_donated: bool = False
    direct_map: DirectMap = field(default_factory=DirectMap)
    host_vms: dict[int, pk.PkvmHostVm] = field(default_factory=dict)
    dirty_marks: list[DirtyMark] = field(default_factory=list)
    panicked_at: int | None = None


HOST_KVM_RAM = MemblockRegion(HOST_RAM_BASE, 1 << 26)
"""The RAM a host KVM's memory comes from (its folios are allocated from HOST_RAM_BASE)."""


def boot_pkvm(world: World, config: PkvmConfig, mem: PhysMem | None = None,
              caps: KvmCaps | None = None) -> PkvmWorld:
    """Boot the hypervisor and create the [[pkvm_guest]] guests; return the layer's part.

    mem and caps: a host KVM's memory and CPU capabilities, when the scenario's VM runs
    under this hypervisor (the kvm layer boots it first, then; its RAM is then memory
    EL2 knows, host-owned).
    """
    pkvm = mp.new_pkvm(config.ram_pages, nomap_pages=config.nomap_pages,
                       profile=world.scenario.profile.pgtable, mem=mem, caps=caps,
                       host_ram=None if mem is None else HOST_KVM_RAM)
    pw = PkvmWorld(pkvm, config.policy, config.unmap_donated)
    for g in config.guests:
        pk.__pkvm_init_vm(pkvm, g.handle, g.protected)
        pw.host_vms[g.handle] = pk.PkvmHostVm(g.handle, g.protected)
    world.add(pw)
    return pw


def build_pkvm(world: World, config: PkvmConfig | None) -> None:
    """Boot the hypervisor and create the guests (nothing when there is no [pkvm]), unless
    the kvm layer booted it already for its VM."""
    if world.has(PkvmWorld):
        return
    if config is None:
        world.add(PkvmWorld(None))
        return
    boot_pkvm(world, config)


def mark_pkvm(world: World) -> int:
    """Return where the hypervisor's event log stands before a step."""
    p = world.part(PkvmWorld).pkvm
    return 0 if p is None else len(p.env.events)


def observe_pkvm(world: World, mark: int, draft: StepDraft, trace: bool) -> None:
    """Give the step the WARN_ONs the hypervisor hit (and every event, if traced)."""
    p = world.part(PkvmWorld).pkvm
    if p is None:
        return
    since = tuple(p.env.events.since(mark))
    draft.events = draft.events + tuple(e for e in since if isinstance(e, Warn))
    if trace:
        # Under protected KVM the VM's log is the hypervisor's: the kvm layer has traced
        # these events already (the same objects), so each is given once.
        traced = {id(e) for e in draft.trace}
        draft.trace = draft.trace + tuple(e for e in since if id(e) not in traced)


# -- events ----------------------------------------------------------------------------------


class HypOp(enum.Enum):
    """A host <-> hypervisor call, by its scenario name."""

    HOST_SHARE_HYP = "host_share_hyp"
    HOST_UNSHARE_HYP = "host_unshare_hyp"
    HOST_DONATE_HYP = "host_donate_hyp"
    HYP_DONATE_HOST = "hyp_donate_host"
    PIN = "hyp_pin_shared_mem"
    UNPIN = "hyp_unpin_shared_mem"


class GuestOp(enum.Enum):
    """A host <-> guest call, by its scenario name."""

    SHARE = "host_share_guest"
    UNSHARE = "host_unshare_guest"
    DONATE = "host_donate_guest"
    RELAX_PERMS = "host_relax_perms_guest"
    WRPROTECT = "host_wrprotect_guest"
    MKYOUNG = "host_mkyoung_guest"
    RECLAIM = "host_reclaim_page"


class VmOp(enum.Enum):
    """A guest's teardown step."""

    START_TEARDOWN = "start_teardown_vm"
    FINALIZE_TEARDOWN = "finalize_teardown_vm"
    TEARDOWN = "teardown"


@dataclass(frozen=True, kw_only=True)
class HypCall(Event):
    """A host <-> hypervisor hypercall on nr_pages pages from pfn."""

    op: HypOp
    pfn: int
    nr_pages: int = 1


@dataclass(frozen=True, kw_only=True)
class GuestCall(Event):
    """A host <-> guest call: the guest's handle, the gfn, and pfn/prot where they apply."""

    op: GuestOp
    guest: int
    gfn: int
    pfn: int | None = None
    prot: int = 0
    write_fault: bool = False


@dataclass(frozen=True, kw_only=True)
class VmCall(Event):
    """A step of a guest's teardown."""

    op: VmOp
    guest: int


@dataclass(frozen=True, kw_only=True)
class HostAccessEvent(Event):
    """A host kernel access of length bytes through its linear map at PA pa (VA
    PAGE_OFFSET + pa); the file's key for length is ``size``."""

    pa: int
    length: int
    write: bool = False
    data: bytes = b""
    fixup: Fixup = Fixup.NONE

    @property
    def va(self) -> int:
        """Return the linear-map address the kernel uses."""
        return PAGE_OFFSET + self.pa


@dataclass(frozen=True)
class Returned:
    """What a hypercall (or the host function around it) returned."""

    function: str
    ret: int


@dataclass(frozen=True)
class HostAccessed:
    """How a host access ended (host_fault's AccessOutcome)."""

    outcome: AccessOutcome


@dataclass(frozen=True)
class NotRun:
    """The event did not run: the host or the hypervisor panicked at an earlier step."""

    panicked_at: int


FUNCTIONS = {
    HypOp.HOST_SHARE_HYP: "__pkvm_host_share_hyp", HypOp.HOST_UNSHARE_HYP:
    "__pkvm_host_unshare_hyp", HypOp.HOST_DONATE_HYP: "__pkvm_host_donate_hyp",
    HypOp.HYP_DONATE_HOST: "__pkvm_hyp_donate_host", HypOp.PIN: "hyp_pin_shared_mem",
    HypOp.UNPIN: "hyp_unpin_shared_mem",
    GuestOp.SHARE: "pkvm_pgtable_stage2_map", GuestOp.UNSHARE: "pkvm_pgtable_stage2_unmap",
    GuestOp.DONATE: "__pkvm_host_donate_guest",
    GuestOp.RELAX_PERMS: "__pkvm_host_relax_perms_guest",
    GuestOp.WRPROTECT: "__pkvm_host_wrprotect_guest",
    GuestOp.MKYOUNG: "__pkvm_host_mkyoung_guest", GuestOp.RECLAIM: "__pkvm_host_reclaim_page",
    VmOp.START_TEARDOWN: "__pkvm_start_teardown_vm",
    VmOp.FINALIZE_TEARDOWN: "__pkvm_finalize_teardown_vm",
    VmOp.TEARDOWN: "pkvm_pgtable_stage2_destroy",
}
"""The kernel function each event calls."""


def _alive(world: World, draft: StepDraft) -> PkvmWorld | None:
    """Return the layer's state if the event can run (else set the NotRun result)."""
    pw = world.part(PkvmWorld)
    if pw.panicked_at is not None:
        draft.result = NotRun(pw.panicked_at)
        return None
    return pw


def _pkvm(pw: PkvmWorld) -> mp.Pkvm:
    assert pw.pkvm is not None  # parse refuses pkvm events without [pkvm]
    return pw.pkvm


def run_hyp_call(world: World, ev: HypCall, draft: StepDraft) -> Outcome:
    """Call a host <-> hypervisor hypercall; unmap/remap the direct map around donations."""
    pw = _alive(world, draft)
    if pw is None:
        return Outcome.DONE
    p = _pkvm(pw)
    va = mp.__hyp_va(mp.hyp_pfn_to_phys(p, ev.pfn))
    end = va + ev.nr_pages * p.page_size
    match ev.op:
        case HypOp.HOST_SHARE_HYP:
            ret = mp.__pkvm_host_share_hyp(p, ev.pfn)
        case HypOp.HOST_UNSHARE_HYP:
            ret = mp.__pkvm_host_unshare_hyp(p, ev.pfn)
        case HypOp.HOST_DONATE_HYP:
            ret = mp.__pkvm_host_donate_hyp(p, ev.pfn, ev.nr_pages)
        case HypOp.HYP_DONATE_HOST:
            ret = mp.__pkvm_hyp_donate_host(p, ev.pfn, ev.nr_pages)
        case HypOp.PIN:
            ret = mp.hyp_pin_shared_mem(p, va, end)
        case HypOp.UNPIN:
            mp.hyp_unpin_shared_mem(p, va, end)
            ret = 0
    if ret == 0 and pw.unmap_donated and ev.op in (HypOp.HOST_DONATE_HYP, HypOp.HYP_DONATE_HOST):
        for pfn in range(ev.pfn, ev.pfn + ev.nr_pages):
            if ev.op is HypOp.HOST_DONATE_HYP:
                pw.direct_map.set_direct_map_invalid_noflush(pfn)
            else:
                pw.direct_map.set_direct_map_default_noflush(pfn)
    draft.result = Returned(FUNCTIONS[ev.op], ret)
    return Outcome.DONE


def run_guest_call(world: World, ev: GuestCall, draft: StepDraft) -> Outcome:
    """Call a host <-> guest function; a write fault's caller marks the page dirty on 0."""
    pw = _alive(world, draft)
    if pw is None:
        return Outcome.DONE
    p = _pkvm(pw)
    vm = p.vms.get(ev.guest)
    if vm is None:
        raise ev.error("guest", f"guest {ev.guest} was torn down")
    hvm = pw.host_vms[ev.guest]
    match ev.op:
        case GuestOp.SHARE:
            assert ev.pfn is not None
            page = p.page_size
            ret = pk.pkvm_pgtable_stage2_map(p, hvm, ev.gfn * page, page, ev.pfn * page, ev.prot)
        case GuestOp.UNSHARE:
            ret = pk.pkvm_pgtable_stage2_unmap(p, hvm, ev.gfn * p.page_size, p.page_size)
        case GuestOp.DONATE:
            assert ev.pfn is not None
            ret = mp.__pkvm_host_donate_guest(p, ev.pfn, ev.gfn, vm)
        case GuestOp.RELAX_PERMS:
            ret = mp.__pkvm_host_relax_perms_guest(p, ev.gfn, vm, ev.prot)
        case GuestOp.WRPROTECT:
            ret = mp.__pkvm_host_wrprotect_guest(p, ev.gfn, 1, vm)
        case GuestOp.MKYOUNG:
            ret = mp.__pkvm_host_mkyoung_guest(p, ev.gfn, vm)
        case GuestOp.RECLAIM:
            ret = mp.__pkvm_host_reclaim_page(p, vm, ev.gfn)
            if ret == 0:
                for m in hvm.mappings.in_range(ev.gfn, ev.gfn + 1):
                    hvm.mappings.remove(m)
    if ev.write_fault and ret == 0:
        pw.dirty_marks.append(DirtyMark(ev.guest, ev.gfn, draft.index))
    draft.result = Returned(FUNCTIONS[ev.op], ret)
    return Outcome.DONE


def run_vm_call(world: World, ev: VmCall, draft: StepDraft) -> Outcome:
    """Run a teardown step of a guest."""
    pw = _alive(world, draft)
    if pw is None:
        return Outcome.DONE
    p = _pkvm(pw)
    match ev.op:
        case VmOp.START_TEARDOWN:
            ret = pk.__pkvm_start_teardown_vm(p, ev.guest)
        case VmOp.FINALIZE_TEARDOWN:
            ret = pk.__pkvm_finalize_teardown_vm(p, ev.guest)
        case VmOp.TEARDOWN:
            ret = pk.pkvm_pgtable_stage2_destroy(p, pw.host_vms[ev.guest])
    draft.result = Returned(FUNCTIONS[ev.op], ret)
    return Outcome.DONE


FATAL = (HostOops, HostSeaPanic, HostAccessHypPanic)


def run_host_access(world: World, ev: HostAccessEvent, draft: StepDraft) -> Outcome:
    """Perform a host kernel access; a fatal outcome stops the rest of the scenario."""
    pw = _alive(world, draft)
    if pw is None:
        return Outcome.DONE
    access = HostAccess(ev.va, ev.length, ev.write, ev.fixup)
    got = host_access(_pkvm(pw), pw.direct_map, access, pw.policy, ev.data)
    if isinstance(got, FATAL):
        pw.panicked_at = draft.index
    draft.result = HostAccessed(got)
    return Outcome.DONE


# -- parsing events ----------------------------------------------------------------------------


def _config(it: Item, ctx: ParseContext) -> PkvmConfig:
    config = ctx.configs.get("pkvm")
    if not isinstance(config, PkvmConfig):
        raise it.error("do", f"a {it.get('do')} event needs a [pkvm] table")
    return config


def _int(it: Item, ctx: ParseContext, key: str, default: int | None = None) -> int:
    if key not in it.fields:
        if default is None:
            raise it.error(None, f"missing field {key!r}")
        return default
    return ctx.checker.size("event", it.index, key, it.get(key))


def _frame(it: Item, ctx: ParseContext, key: str) -> int:
    v = _int(it, ctx, key)
    if v >= PFN_LIMIT:
        raise it.error(key, f"{v:#x} is beyond the host's {HOST_IPA_BITS}-bit stage 2")
    return v


def _pages(it: Item, ctx: ParseContext) -> int:
    n = _int(it, ctx, "nr_pages", 1)
    if not 1 <= n <= MAX_RAM_PAGES:
        raise it.error("nr_pages", f"must be 1..{MAX_RAM_PAGES}, not {n}")
    return n


def _prot(it: Item, default: str) -> int:
    v = it.get("prot", default)
    if not isinstance(v, str) or not re.fullmatch(r"R?W?X?", v) or not v:
        raise it.error("prot", f"must be letters of \"RWX\" in that order, like \"RW\", "
                               f"not {shorten(v)}")
    out = 0
    for letter in v:
        out |= int(PROT_BITS[letter])
    return out


def _guest(it: Item, ctx: ParseContext, config: PkvmConfig) -> int:
    h = _int(it, ctx, "guest")
    if all(g.handle != h for g in config.guests):
        known = ", ".join(str(g.handle) for g in config.guests) or "none"
        raise it.error("guest", f"no [[pkvm_guest]] with handle {h} (known: {known})")
    return h


def parse_hyp_call(it: Item, ctx: ParseContext) -> HypCall:
    """Parse a host <-> hypervisor call (pfn, nr_pages)."""
    _config(it, ctx)
    op = HypOp(it.get("do"))
    pages = _pages(it, ctx)
    if pages != 1 and op in (HypOp.HOST_SHARE_HYP, HypOp.HOST_UNSHARE_HYP):
        raise it.error("nr_pages", f"{op.value} takes one page (__pkvm_{op.value}(pfn))")
    return HypCall(**common_fields(it), op=op, pfn=_frame(it, ctx, "pfn"), nr_pages=pages)


GUEST_FIELDS = {GuestOp.SHARE: {"pfn", "prot", "write_fault"}, GuestOp.DONATE: {"pfn"},
                GuestOp.RELAX_PERMS: {"prot", "write_fault"}}


def parse_guest_call(it: Item, ctx: ParseContext) -> GuestCall:
    """Parse a host <-> guest call (guest, gfn, and pfn, prot, write_fault where used)."""
    config = _config(it, ctx)
    op = GuestOp(it.get("do"))
    allowed = GUEST_FIELDS.get(op, set())  # the schema refused the others
    pfn = _frame(it, ctx, "pfn") if "pfn" in allowed else None
    wf = ctx.checker.boolean("event", it.index, "write_fault", it.get("write_fault", False))
    return GuestCall(**common_fields(it), op=op, guest=_guest(it, ctx, config),
                     gfn=_frame(it, ctx, "gfn"), pfn=pfn,
                     prot=_prot(it, "RWX") if "prot" in allowed else 0, write_fault=wf)


def parse_vm_call(it: Item, ctx: ParseContext) -> VmCall:
    """Parse a teardown step (guest)."""
    config = _config(it, ctx)
    return VmCall(**common_fields(it), op=VmOp(it.get("do")), guest=_guest(it, ctx, config))


def _data(it: Item, size: int) -> bytes:
    v = it.get("data")
    if not isinstance(v, str) or not re.fullmatch(r"([0-9a-fA-F]{2})*", v.replace(" ", "")):
        raise it.error("data", f"must be bytes in hex like \"41424344\", not {shorten(v)}")
    data = bytes.fromhex(v.replace(" ", ""))
    if len(data) != size:
        raise it.error("data", f"holds {len(data)} bytes, the access is {size}")
    return data


def parse_host_access(it: Item, ctx: ParseContext) -> HostAccessEvent:
    """Parse a host access (pa, size, write, data, fixup)."""
    _config(it, ctx)
    pa, size = _int(it, ctx, "pa"), _int(it, ctx, "size", 8)
    if not 1 <= size <= MAX_ACCESS:
        raise it.error("size", f"must be 1..{MAX_ACCESS} bytes, not {size}")
    if pa + size > 1 << HOST_IPA_BITS:
        raise it.error("pa", f"{pa:#x}+{size} ends beyond the host's {HOST_IPA_BITS}-bit "
                             "stage 2")
    write = ctx.checker.boolean("event", it.index, "write", it.get("write", False))
    fixup = FIXUPS[ctx.checker.choice("event", it.index, "fixup", it.get("fixup", "none"),
                                      set(FIXUPS))]
    if write and fixup is Fixup.ZEROPAD:
        raise it.error("fixup", "zeropad is a load's fixup (load_unaligned_zeropad), not a "
                                "store's")
    if write != ("data" in it.fields):
        raise it.error("data" if "data" in it.fields else None,
                       "a store needs data, a load takes none")
    data = _data(it, size) if write else b""
    return HostAccessEvent(**common_fields(it), pa=pa, length=size, write=write, data=data,
                           fixup=fixup)


# -- expectations --------------------------------------------------------------------------------


class AccessResult(enum.Enum):
    """How a host access ended, as expect_access names it."""

    DONE = "done"
    FIXED_UP = "fixed-up"
    OOPS = "oops"
    SEA_PANIC = "sea-panic"
    HYP_PANIC = "hyp-panic"


def access_result(o: AccessOutcome) -> AccessResult:
    """Return the name of an access outcome."""
    match o:
        case AccessDone():
            return AccessResult.DONE
        case ZeropadFixedUp():
            return AccessResult.FIXED_UP
        case HostOops():
            return AccessResult.OOPS
        case HostSeaPanic():
            return AccessResult.SEA_PANIC
        case HostAccessHypPanic():
            return AccessResult.HYP_PANIC
    raise AssertionError(o)


@dataclass(frozen=True)
class ExpectRet(Expectation):
    """expect_ret: what the call returned (0 or a negative errno)."""

    ret: int


@dataclass(frozen=True)
class ExpectAccess(Expectation):
    """expect_access: how a host access ended."""

    result: AccessResult


@dataclass(frozen=True)
class ExpectData(Expectation):
    """expect_data: the bytes a host load read (fixed-up zeros included)."""

    data: bytes


@dataclass(frozen=True)
class ExpectDirtyMarks(Expectation):
    """expect_dirty_marks: how many times the event's gfn has been marked dirty so far."""

    count: int


ERRNO_NAMES = {errname(-n).lstrip("-"): -n for n in range(1, 40)
               if not errname(-n).lstrip("-").isdigit()}


def _expect_ret(it: Item) -> ExpectRet:
    v = it.get("expect_ret")
    if v == "0" or v == 0:
        return ExpectRet(0)
    name = v.lstrip("-") if isinstance(v, str) else None
    if name not in ERRNO_NAMES:
        raise it.error("expect_ret", f"must be \"0\" or one of "
                                     f"{', '.join(sorted(ERRNO_NAMES))}, not {shorten(v)}")
    return ExpectRet(ERRNO_NAMES[name])


def _expect_access(it: Item) -> ExpectAccess:
    v = it.get("expect_access")
    names = {r.value for r in AccessResult}
    if v not in names:
        raise it.error("expect_access", f"must be one of {', '.join(sorted(names))}, "
                                        f"not {shorten(v)}")
    return ExpectAccess(AccessResult(v))


def _expect_data(it: Item) -> ExpectData:
    v = it.get("expect_data")
    if not isinstance(v, str) or not re.fullmatch(r"([0-9a-fA-F]{2})*", v.replace(" ", "")):
        raise it.error("expect_data", f"must be bytes in hex like \"41424344\", "
                                      f"not {shorten(v)}")
    return ExpectData(bytes.fromhex(v.replace(" ", "")))


def _expect_marks(it: Item) -> ExpectDirtyMarks:
    v = it.get("expect_dirty_marks")
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise it.error("expect_dirty_marks", f"must be a count, not {shorten(v)}")
    return ExpectDirtyMarks(v)


def check_ret(world: World, e: ExpectRet, d: StepDraft) -> Mismatch | None:
    """Compare the call's return (None when it did not run)."""
    got = d.result.ret if isinstance(d.result, Returned) else None
    return None if got == e.ret else Mismatch(e, got)


def check_access(world: World, e: ExpectAccess, d: StepDraft) -> Mismatch | None:
    """Compare how the host access ended."""
    got = access_result(d.result.outcome) if isinstance(d.result, HostAccessed) else None
    return None if got is e.result else Mismatch(e, got)


def check_data(world: World, e: ExpectData, d: StepDraft) -> Mismatch | None:
    """Compare the bytes the load read."""
    got = None
    if isinstance(d.result, HostAccessed) and isinstance(d.result.outcome,
                                                         AccessDone | ZeropadFixedUp):
        got = d.result.outcome.data
    return None if got == e.data else Mismatch(e, got)


def check_marks(world: World, e: ExpectDirtyMarks, d: StepDraft) -> Mismatch | None:
    """Compare how many times the gfn was marked dirty."""
    ev = d.event
    assert isinstance(ev, GuestCall)
    got = sum(1 for m in world.part(PkvmWorld).dirty_marks
              if (m.guest, m.gfn) == (ev.guest, ev.gfn))
    return None if got == e.count else Mismatch(e, got)


# -- invariants and summary ------------------------------------------------------------------


def ownership_invariants(world: World) -> list[PkvmViolation]:
    """One owner per page; host stage 2, borrows, share counts and refcounts agree."""
    p = world.part(PkvmWorld).pkvm
    return [] if p is None else check_pkvm(p)


@dataclass(frozen=True)
class PkvmSummary:
    """The hypervisor at the end of a run: who owns the transitionable pages."""

    profile: str
    policy: HostFaultPolicy
    host_pages: int
    shared_pages: int
    hyp_pages: int
    guest_pages: int
    guests: tuple[int, ...]
    dirty_marks: int
    direct_map_holes: int
    panicked_at: int | None


def summarize_pkvm(world: World) -> PkvmSummary | None:
    """Return the ownership counts (None when the scenario has no [pkvm])."""
    pw = world.part(PkvmWorld)
    p = pw.pkvm
    if p is None:
        return None
    views = page_views(p).values()
    return PkvmSummary(
        p.env.profile.name, pw.policy,
        sum(1 for v in views if v.host in (PKVM_PAGE_OWNED, PKVM_PAGE_SHARED_OWNED)),
        sum(1 for v in views if v.host is PKVM_PAGE_SHARED_OWNED),
        sum(1 for v in views if v.hyp is PKVM_PAGE_OWNED),
        sum(1 for v in views if any(s is PKVM_PAGE_OWNED for _, s in v.guests)),
        tuple(sorted(p.vms)), len(pw.dirty_marks), len(pw.direct_map.invalid), pw.panicked_at)


# -- registration ---------------------------------------------------------------------------------


def register() -> None:
    """Register the pkvm layer: tables, world, events, expectations, invariants."""
    REGISTRY.layer(Layer("pkvm", frozenset({"pkvm", "pkvm_guest"}), parse_pkvm, build_pkvm,
                         mark=mark_pkvm, observe=observe_pkvm, summary=summarize_pkvm))
    ret = frozenset({"expect_ret"})
    for hop in HypOp:
        REGISTRY.event_kind(EventKind(hop.value, HypCall, frozenset({"pfn", "nr_pages"}),
                                      parse_hyp_call, run_hyp_call, ret))
    for gop in GuestOp:
        keys = frozenset({"guest", "gfn"} | GUEST_FIELDS.get(gop, set()))
        marks = ret | {"expect_dirty_marks"} if "write_fault" in keys else ret
        REGISTRY.event_kind(EventKind(gop.value, GuestCall, keys, parse_guest_call,
                                      run_guest_call, marks))
    for vop in VmOp:
        REGISTRY.event_kind(EventKind(vop.value, VmCall, frozenset({"guest"}), parse_vm_call,
                                      run_vm_call, ret))
    REGISTRY.event_kind(EventKind("host_access", HostAccessEvent,
                                  frozenset({"pa", "size", "write", "data", "fixup"}),
                                  parse_host_access, run_host_access,
                                  frozenset({"expect_access", "expect_data"})))
    for key, typ, parse, check in (
            ("expect_ret", ExpectRet, _expect_ret, check_ret),
            ("expect_access", ExpectAccess, _expect_access, check_access),
            ("expect_data", ExpectData, _expect_data, check_data),
            ("expect_dirty_marks", ExpectDirtyMarks, _expect_marks, check_marks)):
        REGISTRY.expectation(ExpectationKind(key, typ, parse, check))
    REGISTRY.invariant(Invariant("pkvm-ownership", ownership_invariants))


register()
