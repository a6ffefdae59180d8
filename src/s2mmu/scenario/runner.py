"""Run a checked scenario: build the host and the VM, play the timeline, check as it goes.

Data in, records out: every step gives a plain dict (the JSON schema "s2mmu.run/1",
documented in README), and the text timeline is rendered from the same dicts. The model
logic lives in s2mmu.kvm; this module only wires events to it and compares outcomes with
the scenario's expectations.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from s2mmu.arch.faults import FSC_NAMES
from s2mmu.arch.memory import PhysMem
from s2mmu.arch.state import SysRegs
from s2mmu.kvm.abort import (
    Error,
    GuestAbort,
    GuestResult,
    HwpoisonSignal,
    InjectedAbort,
    MmioExit,
    NisvExit,
    Resumed,
    kvm_is_write_fault,
    kvm_vcpu_abt_iss1tw,
    kvm_vcpu_get_fault_ipa,
    kvm_vcpu_trap_get_fault,
    kvm_vcpu_trap_is_iabt,
)
from s2mmu.kvm.cpu import Completed, GuestFault, S1Map, build_guest_stage1, guest_access, vcpu_regs
from s2mmu.kvm.dirty import kvm_clear_dirty_log_protect, kvm_get_dirty_log_protect
from s2mmu.kvm.errno import errname
from s2mmu.kvm.fault import AbortOutcome, FaultHooks, kvm_handle_guest_abort, prot_str
from s2mmu.kvm.host import HostFeatures, HostMm, MemType, Vma, VmaKind
from s2mmu.kvm.invariants import check_dirty_bits, check_invariants, stage2_leaves
from s2mmu.kvm.memslot import KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY, gfn_to_memslot
from s2mmu.kvm.vm import (
    KVM_DIRTY_LOG_INITIALLY_SET,
    KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE,
    Kvm,
    KvmError,
    KvmVcpu,
    kvm_create_vm,
    kvm_dirty_log_manual_protect_and_init_set,
    kvm_set_memory_region,
    kvm_vm_ioctl_create_vcpu,
    set_slot_flags,
)
from s2mmu.pgtable.events import (
    TLBI_TTL_UNKNOWN,
    DcacheCleanInvalPoc,
    IcacheInvalPou,
    TlbiVmid,
    TlbiVmidIpa,
    TlbiVmidRange,
)
from s2mmu.scenario.schema import Item, Scenario, ScenarioError, Where

SCHEMA = "s2mmu.run/1"
MAX_ATTEMPTS = 16
SHOWN_EVENTS = (TlbiVmidIpa, TlbiVmidRange, TlbiVmid, DcacheCleanInvalPoc, IcacheInvalPou)


@dataclass
class World:
    """The running scenario: host, VM, vCPUs and their EL1 registers."""

    host: HostMm
    kvm: Kvm
    vcpus: list[KvmVcpu]
    regs: list[SysRegs]
    written: dict[int, set[int]] = field(default_factory=dict)
    """Per logging slot: the pages a handled write dirtied since its bitmap was allocated
    (all pages when the bitmap started all-set), for check_dirty_bits."""
    bitmaps: dict[int, bytearray] = field(default_factory=dict)


def size_name(size: int) -> str:
    """Return 4K / 2M / 1G."""
    for shift, unit in ((30, "G"), (20, "M"), (10, "K")):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return hex(size)


def build_host(scn: Scenario) -> HostMm:
    """Return the host the scenario describes, with its VMAs mapped."""
    feats = set(scn.host.get("features", []))
    host = HostMm(PhysMem(), HostFeatures(fwb="fwb" in feats, dic="dic" in feats,
                                          idc="idc" in feats, tlb_range="tlb_range" in feats,
                                          mte="mte" in feats, pa_bits=scn.host.get("pa_bits", 48),
                                          ras_claims_sea=scn.host.get("ras_claims_sea", False)))
    for it in scn.vmas:
        host.mmap(vma_of(it))
    return host


def vma_of(it: Item) -> Vma:
    """Return the VMA an item ([[vma]] or an mmap event) describes."""
    kind = VmaKind(it.get("kind", "anon"))
    shift = it.get("hugetlb", 1 << 21).bit_length() - 1 if kind is VmaKind.HUGETLB else 0
    return Vma(it.get("start"), it.get("start") + it.get("size"), kind,
               writable=it.get("writable", True), thp=it.get("thp", False),
               hugetlb_shift=shift, mem_type=MemType(it.get("mem_type", "normal")),
               allow_any_uncached=it.get("allow_any_uncached", False),
               mte_allowed=it.get("mte_allowed", False), pfn_base=it.get("pa", 0),
               name=it.get("name", ""))


def slot_flags(names: list[str]) -> int:
    """Return KVM_MEM_* flags from their scenario names."""
    return (KVM_MEM_LOG_DIRTY_PAGES if "log_dirty_pages" in names else 0) | (
        KVM_MEM_READONLY if "readonly" in names else 0)


def build_world(scn: Scenario, records: list[dict[str, Any]]) -> World:
    """Build host and VM, create the memslots (as steps) and the vCPUs' stage 1.

    A VM KVM refuses to create, or stage-1 tables outside guest memory, make the scenario
    malformed (ScenarioError naming the field): nothing can run without them.
    """
    host = build_host(scn)
    try:
        kvm = kvm_create_vm(host, scn.vm.get("ipa_bits", 40), has_mte=scn.vm.get("mte", False))
    except KvmError as e:
        key = "mte" if "MTE" in e.why else "ipa_bits"
        raise ScenarioError(f"{scn.path}:{scn.vm_lines.get(key, 1)}: vm.{key}: KVM_CREATE_VM "
                            f"fails {errname(e.errno)}: {e.why}") from None
    kvm.nisv_to_user = scn.vm.get("nisv_to_user", False)
    if scn.vm.get("manual_dirty_log_protect", False):
        kvm.manual_dirty_log_protect = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | (
            KVM_DIRTY_LOG_INITIALLY_SET if scn.vm.get("initially_set", False) else 0)
    kvm.pgt.s2_mmu.split_page_chunk_size = scn.vm.get("eager_split_chunk", 0)
    world = World(host, kvm, [], [])
    for it in scn.memslots:
        records.append(memslot_step(world, it, it.get("id"), it.get("gpa"), it.get("size"),
                                    it.get("hva"), slot_flags(it.get("flags", []))))
        note_bitmaps(world)
    for it in scn.vcpus or (Item("vcpu", 0, {"id": 0}, Where(scn.path, 1)),):
        world.vcpus.append(kvm_vm_ioctl_create_vcpu(kvm))
        maps = [S1Map(m["va"], m["ipa"], m["size"], m.get("ro", False), m.get("xn", False),
                      m.get("device", False)) for m in it.get("map", [])]
        if "stage1_tables" not in it.fields:
            world.regs.append(vcpu_regs(kvm))
            continue
        try:
            world.regs.append(build_guest_stage1(kvm, it.get("stage1_tables"), maps))
        except ValueError as e:
            raise it.error("stage1_tables", str(e)) from None
    return world


def memslot_step(world: World, it: Item, slot_id: int, gpa: int, size: int, hva: int,
                 flags: int) -> dict[str, Any]:
    """Run one KVM_SET_USER_MEMORY_REGION and return its record."""
    rec = _record(it, "memslot")
    try:
        change = kvm_set_memory_region(world.kvm, slot_id, flags, gpa, size, hva)
        rec["summary"] = f"slot {slot_id}: {change} IPA {gpa:#x}+{size_name(size) if size else 0}"
        rec["error"] = None
    except KvmError as e:
        rec["summary"] = f"slot {slot_id}: refused {errname(e.errno)} ({e.why})"
        rec["error"] = errname(e.errno)
    return rec


def _record(it: Item, do: str) -> dict[str, Any]:
    return {"index": it.index, "line": it.where.line, "do": do,
            "note": it.get("note", ""), "summary": "", "faults": [], "events": [],
            "expect": [], "invariants": []}


def decode_abort(abort: GuestAbort) -> dict[str, Any]:
    """Return the abort's decoded fields for the timeline."""
    fsc = kvm_vcpu_trap_get_fault(abort)
    return {"esr": f"{abort.esr:#x}", "far": f"{abort.far:#x}", "hpfar": f"{abort.hpfar:#x}",
            "class": "IABT" if kvm_vcpu_trap_is_iabt(abort) else "DABT",
            "fsc": f"{fsc:#04x}", "fsc_name": FSC_NAMES.get(fsc, "?"),
            "s1ptw": kvm_vcpu_abt_iss1tw(abort), "write": kvm_is_write_fault(abort),
            "ipa": f"{kvm_vcpu_get_fault_ipa(abort):#x}"}


def result_kind(r: GuestResult) -> str:
    """Return the expectation name of a guest-visible result."""
    match r:
        case Resumed(why=why):
            return "retry" if why == "retry" else "resumed"
        case MmioExit():
            return "mmio"
        case NisvExit():
            return "nisv"
        case InjectedAbort(kind=kind):
            return {"dabt": "sea-dabt", "pabt": "sea-pabt", "size": "size-fault",
                    "serror": "serror"}[kind]
        case HwpoisonSignal():
            return "hwpoison"
        case Error():
            return "error"
    raise AssertionError(r)


def result_text(r: GuestResult) -> str:
    """Return a one-line description of a result."""
    match r:
        case MmioExit(ipa=ipa, length=n, is_write=w):
            return f"KVM_EXIT_MMIO {'write' if w else 'read'} {n} bytes at IPA {ipa:#x}"
        case NisvExit(ipa=ipa):
            return f"KVM_EXIT_ARM_NISV at IPA {ipa:#x}"
        case InjectedAbort(kind=kind, far=far):
            names = {"dabt": "synchronous external data abort", "pabt":
                     "synchronous external instruction abort", "size": "address size fault",
                     "serror": "SError"}
            return f"inject {names[kind]} into the guest (FAR {far:#x})"
        case HwpoisonSignal(hva=hva, lsb=lsb):
            return f"SIGBUS BUS_MCEERR_AR to the VMM (HVA {hva:#x}, lsb {lsb})"
        case Error(errno=e, why=why):
            return f"KVM_RUN fails {errname(e)}: {why}"
        case Resumed(why=why):
            return f"guest resumed ({why})"
    raise AssertionError(r)


def fault_record(out: AbortOutcome, abort: GuestAbort, events: list[Any]) -> dict[str, Any]:
    """Return one fault's record: decoded abort, decisions, mapping, result, events."""
    m = out.mapping
    return {"abort": decode_abort(abort),
            "steps": [{"step": d.step, "decision": d.text} for d in out.decisions],
            "mapping": None if m is None else {
                "op": m.op, "ipa": f"{m.ipa:#x}", "size": size_name(m.size), "pa": f"{m.pa:#x}",
                "prot": prot_str(m.prot)},
            "result": result_kind(out.result), "result_text": result_text(out.result),
            "dirtied": list(out.dirtied), "events": [event_text(e) for e in events
                                                     if isinstance(e, SHOWN_EVENTS)]}


def event_text(e: Any) -> str:
    """Return a TLBI or CMO event as the instruction sequence a reader knows."""
    match e:
        case TlbiVmidIpa(vmid=v, ipa=ipa, level=lvl, nsh=nsh):
            ttl = "unknown" if lvl == TLBI_TTL_UNKNOWN else str(lvl)
            return f"TLBI IPAS2E1{'' if nsh else 'IS'} VMID {v} IPA {ipa:#x} TTL {ttl}"
        case TlbiVmidRange(vmid=v, ipa=ipa, pages=n):
            return f"TLBI RIPAS2E1IS VMID {v} IPA {ipa:#x} pages {n}"
        case TlbiVmid(vmid=v):
            return f"TLBI VMALLS12E1IS VMID {v}"
        case DcacheCleanInvalPoc(pa=pa, size=n):
            return f"DC CIVAC PA {pa:#x}+{size_name(n)}"
        case IcacheInvalPou(pa=pa, size=n):
            return f"IC IVAU PA {pa:#x}+{size_name(n)}"
    return repr(e)


def run_race(world: World, it: Item, race: dict[str, Any]) -> None:
    """Run a host event (used as the interleaved race of a fault)."""
    host_event(world, it, race["do"], race["hva"], race["size"])


def host_event(world: World, it: Item, do: str, hva: int, size: int) -> tuple[str, int]:
    """Run munmap / madvise / migrate / hwpoison; return a summary and 0 or the -errno.

    An operation the kernel refuses (-EINVAL, -ENOMEM ...) is a result of the step. A
    host event the host cannot do (hwpoison where nothing is mapped) is a scenario error
    naming the event's field.
    """
    h = world.host
    err = 0
    try:
        if do == "munmap":
            err = h.munmap(hva, size)
        elif do == "madvise":
            err = h.madvise_dontneed(hva, size)
        elif do == "migrate":
            moved = h.migrate(hva)
            return f"migrate HVA {hva:#x}: {'moved' if moved else 'refused (pinned or absent)'}", 0
        else:
            err = h.hwpoison(hva)
    except ValueError as e:
        raise it.error("race" if "race" in it.fields else "hva", str(e)) from None
    return f"{do} HVA {hva:#x}+{size_name(size)}" + (f": {errname(err)}" if err else ""), err


def access_step(world: World, it: Item, rec: dict[str, Any]) -> str:
    """Run a guest access until it completes or KVM gives a non-retry answer."""
    kvm, vcpu_id = world.kvm, it.get("vcpu", 0)
    do = it.get("do")
    regs = world.regs[vcpu_id] if "va" in it.fields else vcpu_regs(kvm)
    addr = it.get("va", it.get("ipa"))
    syndrome = tuple(it.get("syndrome")) if it.get("syndrome") else None
    race = it.get("race")
    outcome = "resumed"
    for _ in range(MAX_ATTEMPTS):
        o = guest_access(kvm, regs, addr, "write" if do == "dc" else do, syndrome,
                         cm=do == "dc")
        if isinstance(o, Completed):
            rec["pa"] = f"{o.out.paddress:#x}"
            return "completed"
        if isinstance(o, GuestFault):
            rec["guest_fault"] = f"{o.fault.statuscode.value} fault, level {o.fault.level}"
            return "guest-fault"
        hooks = FaultHooks()
        if race is not None:
            hooks.between_pin_and_lock = lambda r=race: run_race(world, it, r)
            race = None
        mark = len(kvm.env.events)
        out = kvm_handle_guest_abort(o.abort, kvm, world.vcpus[vcpu_id], hooks)
        rec["faults"].append(fault_record(out, o.abort, kvm.env.events.since(mark)))
        outcome = result_kind(out.result)
        skipped = isinstance(out.result, Resumed) and "skipped" in out.result.why
        if outcome == "retry" or (outcome == "resumed" and not skipped):
            continue
        return outcome
    return outcome


def abort_step(world: World, it: Item, rec: dict[str, Any]) -> str:
    """Hand a raw abort (ESR, FAR, HPFAR as given) to kvm_handle_guest_abort."""
    abort = GuestAbort(it.get("esr"), it.get("far"), it.get("hpfar"))
    mark = len(world.kvm.env.events)
    out = kvm_handle_guest_abort(abort, world.kvm, world.vcpus[it.get("vcpu", 0)],
                                 FaultHooks())
    rec["faults"].append(fault_record(out, abort, world.kvm.env.events.since(mark)))
    return result_kind(out.result)


def dirty_step(world: World, it: Item, rec: dict[str, Any]) -> str:
    """Run a dirty-log event; return a summary."""
    kvm, do, sid = world.kvm, it.get("do"), it.get("slot", 0)
    if do in ("dirty_log_enable", "dirty_log_disable"):
        if sid not in kvm.memslots:
            raise it.error("slot", f"no memslot {sid} at this point of the timeline")
        flags = kvm.memslots[sid].flags
        flags = flags | KVM_MEM_LOG_DIRTY_PAGES if do == "dirty_log_enable" else \
            flags & ~KVM_MEM_LOG_DIRTY_PAGES
        set_slot_flags(kvm, sid, flags)
        return f"slot {sid}: {do.replace('_', ' ')}"
    if do == "get_dirty_log":
        bitmap = kvm_get_dirty_log_protect(kvm, sid)
        pages = [i for i in range(kvm.memslots[sid].npages) if bitmap[i >> 3] >> (i & 7) & 1]
        rec["dirty"] = pages
        shown = pages if len(pages) <= 16 else pages[:16] + ["..."]
        return f"slot {sid}: KVM_GET_DIRTY_LOG: {len(pages)} dirty {shown}"
    first = it.get("first_page", 0)
    slot = kvm.memslots.get(sid)
    num = it.get("num_pages", slot.npages - first if slot is not None else 0)
    pages = it.get("pages")
    user = bytearray((num + 7) // 8 + 8)
    for i in range(num) if pages is None else [p - first for p in pages]:
        user[i >> 3] |= 1 << (i & 7)
    kvm_clear_dirty_log_protect(kvm, sid, first, num, bytes(user))
    return f"slot {sid}: KVM_CLEAR_DIRTY_LOG pages {first}..{first + num - 1}"


def run_event(world: World, it: Item) -> dict[str, Any]:
    """Run one timeline event and return its record (expectations checked by the caller)."""
    do = it.get("do")
    rec = _record(it, do)
    kvm = world.kvm
    mark = len(kvm.env.events)
    try:
        if do in ("read", "write", "exec", "dc"):
            rec["outcome"] = access_step(world, it, rec)
            rec["summary"] = f"vCPU{it.get('vcpu', 0)} {do} " + (
                f"VA {it.get('va'):#x}" if "va" in it.fields else f"IPA {it.get('ipa'):#x}")
            return rec
        if do == "abort":
            rec["outcome"] = abort_step(world, it, rec)
            rec["summary"] = f"raw abort ESR {it.get('esr'):#x}"
            return rec
        if do == "mmap":
            vma = vma_of(it)
            try:
                world.host.mmap(vma)
            except ValueError as e:
                raise it.error("start", str(e)) from None
            rec["summary"] = f"mmap {vma.name or vma.kind.value} HVA {vma.start:#x}+" \
                f"{size_name(vma.end - vma.start)}"
        elif do in ("munmap", "madvise", "migrate", "hwpoison"):
            rec["summary"], err = host_event(world, it, do, it.get("hva"), it.get("size", 4096))
            rec["error"] = errname(err) if err else None
        elif do in ("memslot", "move_memslot", "delete_memslot"):
            sid = it.get("slot", 0)
            old = kvm.memslots.get(sid)
            missing = {"gpa", "size", "hva"} - set(it.fields)
            if old is None and do == "move_memslot":
                raise it.error("slot", f"no memslot {sid} to move at this point of the timeline")
            if old is None and do == "memslot" and missing:
                raise it.error(None, f"slot {sid} does not exist yet: creating it needs "
                                     f"{', '.join(sorted(missing))}")
            size = 0 if do == "delete_memslot" else it.get("size", old.npages << 12 if old else 0)
            gpa = it.get("gpa", old.base_gfn << 12 if old else 0)
            hva = it.get("hva", old.userspace_addr if old else 0)
            flags = slot_flags(it.get("flags", [])) if "flags" in it.fields else (
                old.flags if old else 0)
            sub = memslot_step(world, it, sid, gpa, size, hva, flags)
            rec["summary"], rec["error"] = sub["summary"], sub["error"]
        elif do == "check":
            rec["summary"] = "check"
        else:
            rec["summary"] = dirty_step(world, it, rec)
        rec["error"] = rec.get("error")
    except KvmError as e:
        rec["summary"] = f"{do}: refused {errname(e.errno)} ({e.why})"
        rec["error"] = errname(e.errno)
    finally:
        if not rec["faults"]:
            rec["events"] = [event_text(e) for e in kvm.env.events.since(mark)
                             if isinstance(e, SHOWN_EVENTS)]
    return rec


def note_bitmaps(world: World) -> None:
    """Start tracking each newly allocated dirty bitmap (every page allowed if all-set)."""
    kvm = world.kvm
    for sid in [s for s in world.bitmaps if s not in kvm.dirty_bitmap]:
        del world.bitmaps[sid], world.written[sid]
    for sid, bitmap in kvm.dirty_bitmap.items():
        if world.bitmaps.get(sid) is not bitmap:
            world.bitmaps[sid] = bitmap
            all_set = kvm_dirty_log_manual_protect_and_init_set(kvm)
            world.written[sid] = set(range(kvm.memslots[sid].npages)) if all_set else set()


def note_dirtied(world: World, rec: dict[str, Any]) -> None:
    """Record the pages the step's handled write faults dirtied."""
    for fault in rec["faults"]:
        for gfn in fault["dirtied"]:
            slot = gfn_to_memslot(world.kvm.slots(), gfn)
            if slot is not None and slot.id in world.written:
                world.written[slot.id].add(gfn - slot.base_gfn)


def step_invariants(world: World) -> list[str]:
    """Return the invariants broken after a step."""
    return check_invariants(world.kvm) + check_dirty_bits(world.kvm, world.written)


def leaf_counts(kvm: Kvm) -> dict[str, int]:
    """Return the stage-2 leaves counted by size."""
    return dict(sorted(Counter(size_name(lf.size) for lf in stage2_leaves(kvm)).items()))


def check_expectations(world: World, it: Item, rec: dict[str, Any]) -> list[str]:
    """Return the expectation failures of one step."""
    bad: list[str] = []
    f = it.fields
    if "expect" in f:
        got = rec.get("outcome")
        retried = any(x["result"] == "retry" for x in rec["faults"])
        if not (got == f["expect"] or (f["expect"] == "retry" and retried)):
            bad.append(f"expected {f['expect']}, got {got}")
    if "expect_mapping" in f:
        maps = [x["mapping"]["size"] for x in rec["faults"] if x["mapping"]]
        got = maps[-1] if maps else "none"
        if got != f["expect_mapping"]:
            bad.append(f"expected mapping {f['expect_mapping']}, got {got}")
    if "expect_errno" in f and f.get("do") in ("munmap", "madvise", "migrate", "hwpoison"):
        if rec.get("error") != "-" + f["expect_errno"].lstrip("-"):
            bad.append(f"expected errno {f['expect_errno']}, got {rec.get('error') or 'none'}")
    elif "expect_errno" in f:
        errs = [x["result_text"] for x in rec["faults"] if x["result"] == "error"]
        if not errs or f["expect_errno"] not in errs[-1]:
            bad.append(f"expected KVM_RUN error {f['expect_errno']}, got {errs or 'none'}")
    if "expect_error" in f:
        want = None if f["expect_error"] == "none" else "-" + f["expect_error"].lstrip("-")
        if rec.get("error") != want:
            bad.append(f"expected error {f['expect_error']}, got {rec.get('error') or 'none'}")
    if "expect_dirty" in f and rec.get("dirty") != list(f["expect_dirty"]):
        bad.append(f"expected dirty pages {f['expect_dirty']}, got {rec.get('dirty')}")
    if "expect_dirty_count" in f and len(rec.get("dirty", [])) != f["expect_dirty_count"]:
        got_n = len(rec.get("dirty", []))
        bad.append(f"expected {f['expect_dirty_count']} dirty pages, got {got_n}")
    if "expect_leaves" in f:
        got_leaves = leaf_counts(world.kvm)
        want = {k: v for k, v in dict(f["expect_leaves"]).items() if v}
        if got_leaves != want:
            bad.append(f"expected stage-2 leaves {want}, got {got_leaves}")
    if "expect_seq" in f and world.kvm.mmu_invalidate_seq != f["expect_seq"]:
        bad.append(f"expected mmu_invalidate_seq {f['expect_seq']}, got "
                   f"{world.kvm.mmu_invalidate_seq}")
    return bad


def summary(world: World, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the final summary: mappings by size, dirty pages, exits, faults."""
    kvm = world.kvm
    results = Counter(x["result"] for r in records for x in r["faults"])
    return {"mappings": leaf_counts(kvm),
            "dirty_pages": {str(sid): sum(bin(b).count("1") for b in bm)
                            for sid, bm in sorted(kvm.dirty_bitmap.items())},
            "faults": sum(results.values()), "results": dict(sorted(results.items())),
            "mmu_invalidate_seq": kvm.mmu_invalidate_seq,
            "memslots": [{"id": s.id, "gpa": f"{s.base_gfn << 12:#x}",
                          "size": size_name(s.npages << 12), "flags": s.flags}
                         for s in kvm.slots()],
            "table_pages": kvm.env.pool.in_use()}


def run_scenario(scn: Scenario, trace: bool = False) -> dict[str, Any]:
    """Run a scenario; return the report (schema s2mmu.run/1)."""
    records: list[dict[str, Any]] = []
    world = build_world(scn, records)
    for rec, it in zip(records, scn.memslots, strict=True):
        rec["expect"] = check_expectations(world, it, rec)
        rec["invariants"] = step_invariants(world)
    for it in scn.events:
        mark = len(world.kvm.env.events)
        rec = run_event(world, it)
        if trace:
            rec["trace"] = [repr(e) for e in world.kvm.env.events.since(mark)]
        note_bitmaps(world)
        note_dirtied(world, rec)
        rec["expect"] = check_expectations(world, it, rec)
        rec["invariants"] = step_invariants(world)
        records.append(rec)
    failures = [f"step {r['do']}#{r['index']} (line {r['line']}): {m}"
                for r in records for m in r["expect"] + r["invariants"]]
    return {"schema": SCHEMA, "scenario": scn.path, "name": scn.name,
            "description": scn.description, "steps": records, "summary": summary(world, records),
            "failures": failures, "ok": not failures}
