"""A scenario turned into a plan for the VMM: VMAs, memslots, guest code and host steps.

The plan keeps the scenario's step numbering (memslot set-up steps first, then the
timeline), so each record the VMM prints names the step the model numbers the same way.
Guest accesses become guest code run with the MMU off: the VMM's own memslot (the code
slot) holds an exception vector table and, after it, for each access step: the IPA into
x27, the access, then a store of the step number to the VMM's marker page (an IPA with no
memslot, so the store exits to the VMM). A step whose access traps to the guest (an SEA
KVM injects, an undefined instruction fetched) goes through the vector, which reports
ESR_EL1 and ELR_EL1 to the marker page and resumes after the access.

A scenario whose vCPU has a stage 1 ([[vcpu]] stage1_tables and map) runs with the guest's
MMU on: the plan lays out the same stage-1 tables the model writes (s2mmu.kvm.cpu
.write_guest_stage1) and the VMM writes them at the HVAs behind their IPAs before the first
timeline step; SCTLR_EL1, TCR_EL1, MAIR_EL1 and TTBR0_EL1 are the model's, set with
KVM_SET_ONE_REG. The VMM's own code and marker page are reached through TTBR1_EL1 (VAs
from :data:`HIGH_BASE`), with tables in the code slot, so the scenario's TTBR0 tables are
exactly the model's and every fault of their walks is the scenario's.

Only what the VMM can express is planned; anything else is refused with
:class:`Unsupported`, one line naming the feature (:data:`UNSUPPORTED` lists them all).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from s2mmu.arch.builder import BumpAllocator, TableBuilder, s1_attrs
from s2mmu.arch.errors import InputError
from s2mmu.arch.params import Granule
from s2mmu.arch.registers import TCR_EL1
from s2mmu.kvm.cpu import guest_stage1_el1, write_guest_stage1
from s2mmu.kvm.host import VmaKind
from s2mmu.kvm.memslot import KVM_MEM_LOG_DIRTY_PAGES
from s2mmu.real import asm
from s2mmu.real.asm import Reg
from s2mmu.scenario.kvm_events import (
    AccessKind,
    Check,
    ClearDirtyLog,
    DeleteMemslot,
    DirtyLogToggle,
    GetDirtyLog,
    GuestAccess,
    HostEvent,
    HostOp,
    KvmConfig,
    Mmap,
    MoveMemslot,
    SetMemslot,
    VmaSpec,
    slot_flags,
)
from s2mmu.scenario.schema import Event, Scenario

CODE_SIZE = 0x10000
"""The code slot: 64K, vectors in its first 2K, the program after them."""
ENTRY = 0x800
MARK_STEP, MARK_ESR, MARK_ELR = 0x00, 0x10, 0x18
DUMP_FLAG = 1 << 32
"""Marked with the step number when the guest leaves the spin of a stage-2 dump."""
PAGE = 1 << 12
MARK_FAR = 0x20
HIGH_BASE = 0xFFFF_FF80_0000_0000
"""Where TTBR1_EL1 maps the code slot and, after it, the marker page (T1SZ=25)."""
S1_TABLES = CODE_SIZE - 3 * PAGE
"""The code slot's offset of the TTBR1 tables (level 1, 2 and 3, one page each)."""

UNSUPPORTED = {
    "dc": "QEMU's TCG CPU makes DC CIVAC a no-op (target/arm/helper.c, v8_cp_reginfo: "
          "ARM_CP_NOP), so no stage-2 abort happens to compare",
    "va": "an access by VA needs the vCPU's stage 1 ([[vcpu]] stage1_tables and map)",
    "ipa-with-stage1": "with a stage 1 the guest code runs at TTBR1 VAs with the MMU on, so "
                       "an access by IPA (MMU off) cannot be placed between two by VA",
    "vcpu": "the VMM runs one vCPU (vcpu 0)",
    "race": "a host event between pin and mmu_lock cannot be placed on real KVM",
    "abort": "a raw abort (ESR/FAR/HPFAR given) cannot be made real: the CPU reports aborts",
    "migrate": "page migration has no system call the VMM can drive deterministically",
    "hwpoison": "memory poisoning needs MADV_HWPOISON and CAP_SYS_ADMIN; not planned yet",
    "pfnmap": "a PFNMAP VMA needs a device (VFIO) the booted machine does not have",
    "mte": "the VM needs KVM_CAP_ARM_MTE; QEMU's virt machine is booted without mte=on",
    "layer": "only the kvm layer's tables and events run on real KVM (pkvm: no; nested: "
             "needs FEAT_NV, which QEMU 7.2's -cpu max lacks: QEMU 10.0, a 7.x kernel booted "
             "with kvm-arm.mode=nested and an EL2 vCPU with an in-kernel vGICv3, which the "
             "VMM does not create yet)",
    "syndrome-register": "the guest code keeps x25-x28 and x30; a syndrome may not name them",
    "alignment": "with the MMU off data accesses are Device memory: an unaligned one faults",
    "code-size": "the guest code does not fit the 64K code slot",
    "no-memslot": "a scenario without a [[memslot]] table gives the guest no memory to run",
}
"""Each scenario feature the real run refuses, with the reason."""


class Unsupported(InputError):
    """A scenario feature the real run cannot express (one line naming it)."""


def refuse(ev: Event | None, feature: str, scn: Scenario) -> Unsupported:
    """Return the refusal of a feature, naming where the scenario uses it."""
    where = f"{ev.where.path}:{ev.where.line}: {ev.table}[{ev.index}]" if ev else scn.path
    return Unsupported(f"{where}: real KVM: {feature} unsupported: {UNSUPPORTED[feature]}")


# -- the plan ---------------------------------------------------------------------------


@dataclass(frozen=True)
class VmLine:
    """KVM_CREATE_VM and the capabilities enabled on it."""

    ipa_bits: int
    nisv_to_user: bool
    manual_protect: int
    eager_split_chunk: int


@dataclass(frozen=True)
class SlotStep:
    """KVM_SET_USER_MEMORY_REGION (a create, flags change, move, or delete: size 0)."""

    index: int
    slot: int
    gpa: int
    size: int
    hva: int
    flags: int


@dataclass(frozen=True)
class GuestStep:
    """Run the vCPU through one access of the guest code."""

    index: int
    access: AccessKind
    ipa: int
    """The address the guest code accesses: an IPA, or a VA when by_va."""
    syndrome: tuple[int, int] | None
    by_va: bool = False


@dataclass(frozen=True)
class Stage1:
    """The guest's stage 1: its EL1 registers, and the words to write into its memory."""

    sctlr: int
    tcr: int
    mair: int
    ttbr0: int
    ttbr1: int
    pokes: tuple[tuple[int, int], ...]
    """(HVA, 64-bit word) the VMM writes: every word of the tables the model writes, a
    zero word for each table page the model touches without writing anything else."""
    machinery: tuple[tuple[int, tuple[int, ...]], ...]
    """(code-slot offset, words): the TTBR1 tables of the VMM's own pages."""
    table_levels: tuple[tuple[int, int], ...] = ()
    """(IPA, level): the page of each of the guest's stage-1 tables and the walk level
    that reads it (a stage-2 fault on that read is an S1PTW fault on that page)."""

    def table_level(self, ipa: int) -> int | None:
        """Return the stage-1 level whose table is at ipa's page (None: no table)."""
        return dict(self.table_levels).get(ipa & ~(PAGE - 1))


@dataclass(frozen=True)
class HostStep:
    """munmap or madvise(MADV_DONTNEED) in the VMM."""

    index: int
    op: HostOp
    hva: int
    size: int


@dataclass(frozen=True)
class MmapStep:
    """mmap a new VMA in the VMM."""

    index: int
    vma: VmaSpec


@dataclass(frozen=True)
class GetDirtyStep:
    """KVM_GET_DIRTY_LOG."""

    index: int
    slot: int
    npages: int


@dataclass(frozen=True)
class ClearDirtyStep:
    """KVM_CLEAR_DIRTY_LOG with a bitmap of num_pages bits."""

    index: int
    slot: int
    first_page: int
    num_pages: int
    bitmap: bytes


@dataclass(frozen=True)
class CheckStep:
    """Nothing to do (the model checks its expectations here)."""

    index: int


PlanStep = (SlotStep | GuestStep | HostStep | MmapStep | GetDirtyStep | ClearDirtyStep
            | CheckStep)


@dataclass(frozen=True)
class Plan:
    """Everything the VMM does for one scenario, in order."""

    name: str
    vm: VmLine
    vmas: tuple[VmaSpec, ...]
    code_gpa: int
    mmio_gpa: int
    code: tuple[int, ...]
    steps: tuple[PlanStep, ...]
    dos: tuple[str, ...]
    """Each step's event name in the scenario ("memslot", "write" ...), by step."""
    dumps: tuple[int, ...] = ()
    """The steps after which the guest spins while the stage 2 is read (gdbstub)."""
    stage1: Stage1 | None = None
    """The guest's stage 1 (None: the guest runs with the MMU off)."""
    pokes_after: int = 0
    """The step after which the stage-1 words are written (the last set-up step)."""
    host_dumps: bool = False
    """The dumps read the host's stage 2 (pKVM): the guest stays stopped meanwhile."""
    thp_zero_page: bool = False
    """The VMM sets the host's use_zero_page to this before its VMAs are touched."""

    def hva_of(self, step: int) -> Callable[[int], int | None]:
        """Return IPA -> HVA through the memslots as they are after a step."""
        slots: dict[int, SlotStep] = {}
        for s in self.steps:
            if isinstance(s, SlotStep) and s.index <= step:
                if s.size:
                    slots[s.slot] = s
                else:
                    slots.pop(s.slot, None)

        def hva(ipa: int) -> int | None:
            for s in slots.values():
                if s.gpa <= ipa < s.gpa + s.size:
                    return s.hva + ipa - s.gpa
            return None
        return hva

    def is_machinery(self, ipa: int) -> bool:
        """Return whether an IPA is the VMM's own (code slot or marker page)."""
        return (self.code_gpa <= ipa < self.code_gpa + CODE_SIZE
                or self.mmio_gpa <= ipa < self.mmio_gpa + PAGE)


# -- from a scenario ---------------------------------------------------------------------


def check_config(scn: Scenario) -> KvmConfig:
    """Return the kvm configuration, refusing what the VMM cannot set up."""
    for layer, cfg in scn.configs.items():
        if layer != "kvm" and cfg is not None:
            raise refuse(None, "layer", scn)
    config: KvmConfig = scn.config("kvm")
    if config.mte:
        raise refuse(None, "mte", scn)
    for v in config.vmas:
        check_vma(v, None, scn)
    return config


def check_vma(v: VmaSpec, ev: Event | None, scn: Scenario) -> None:
    """Refuse a VMA the VMM cannot map."""
    if v.kind is VmaKind.PFNMAP:
        raise refuse(ev, "pfnmap", scn)


def access_step(ev: GuestAccess, index: int, scn: Scenario, stage1: bool) -> GuestStep:
    """Return the guest step of an access by IPA (the MMU off) or by VA (stage 1 on)."""
    if ev.vcpu != 0:
        raise refuse(ev, "vcpu", scn)
    if ev.va is not None and not stage1:
        raise refuse(ev, "va", scn)
    if ev.ipa is not None and stage1:
        raise refuse(ev, "ipa-with-stage1", scn)
    if ev.access is AccessKind.DC:
        raise refuse(ev, "dc", scn)
    if ev.race is not None:
        raise refuse(ev, "race", scn)
    addr = ev.va if ev.va is not None else ev.ipa
    assert addr is not None
    size = ev.syndrome[0] if ev.syndrome else 8
    if ev.syndrome and ev.syndrome[1] in asm.RESERVED:
        raise refuse(ev, "syndrome-register", scn)
    if ev.access is not AccessKind.EXEC and addr % size:
        raise refuse(ev, "alignment", scn)
    if ev.access is AccessKind.EXEC and addr % 4:
        raise refuse(ev, "alignment", scn)
    return GuestStep(index, ev.access, addr, ev.syndrome, ev.va is not None)


class SlotTable:
    """The memslots as the plan's steps leave them (fields left out keep old values)."""

    def __init__(self) -> None:
        self.slots: dict[int, SlotStep] = {}

    def set(self, index: int, slot: int, gpa: int | None, size: int | None, hva: int | None,
            flags: int | None) -> SlotStep:
        """Return the step that sets a slot, filled from the slot's old values."""
        old = self.slots.get(slot, SlotStep(index, slot, 0, 0, 0, 0))
        step = SlotStep(index, slot, old.gpa if gpa is None else gpa,
                        old.size if size is None else size, old.hva if hva is None else hva,
                        old.flags if flags is None else flags)
        if step.size:
            self.slots[slot] = step
        else:
            self.slots.pop(slot, None)
        return step

    def npages(self, slot: int) -> int:
        """Return a slot's size in pages (0 for no slot)."""
        s = self.slots.get(slot)
        return s.size // PAGE if s else 0


def plan_step(ev: Event, index: int, slots: SlotTable, scn: Scenario,
              stage1: bool = False) -> PlanStep:
    """Return the plan step of one scenario event (refusing what cannot run)."""
    match ev:
        case GuestAccess():
            return access_step(ev, index, scn, stage1)
        case SetMemslot():
            flags = slot_flags(ev.flags) if ev.flags is not None else None
            return slots.set(index, ev.slot, ev.gpa, ev.size, ev.hva, flags)
        case MoveMemslot():
            return slots.set(index, ev.slot, ev.gpa, None, None, None)
        case DeleteMemslot():
            return slots.set(index, ev.slot, None, 0, None, None)
        case DirtyLogToggle():
            old = slots.slots[ev.slot].flags if ev.slot in slots.slots else 0
            new = old | KVM_MEM_LOG_DIRTY_PAGES if ev.enable else old & ~KVM_MEM_LOG_DIRTY_PAGES
            return slots.set(index, ev.slot, None, None, None, new)
        case GetDirtyLog():
            return GetDirtyStep(index, ev.slot, slots.npages(ev.slot))
        case ClearDirtyLog():
            return clear_step(ev, index, slots)
        case HostEvent(op=HostOp.MUNMAP | HostOp.MADVISE):
            return HostStep(index, ev.op, ev.hva, ev.size)
        case HostEvent():
            raise refuse(ev, ev.op.value, scn)
        case Mmap():
            check_vma(ev.vma, ev, scn)
            return MmapStep(index, ev.vma)
        case Check():
            return CheckStep(index)
    raise refuse(ev, "abort" if ev.do == "abort" else "layer", scn)


def clear_step(ev: ClearDirtyLog, index: int, slots: SlotTable) -> ClearDirtyStep:
    """Return KVM_CLEAR_DIRTY_LOG's arguments as the model's run function builds them."""
    rest = max(0, slots.npages(ev.slot) - ev.first_page)
    num = ev.num_pages if ev.num_pages is not None else rest
    given = min(num, rest)
    bitmap = bytearray((given + 63) // 64 * 8)
    for i in range(given) if ev.pages is None else [p - ev.first_page for p in ev.pages
                                                     if p - ev.first_page < given]:
        bitmap[i >> 3] |= 1 << (i & 7)
    return ClearDirtyStep(index, ev.slot, ev.first_page, num, bytes(bitmap))


# -- guest code ----------------------------------------------------------------------------


def vectors() -> list[int]:
    """Return the vector table: 16 entries, each reporting FAR_EL1, ESR_EL1 and ELR_EL1
    and resuming after the access (at x30 when the fault was the fetch of the branch
    target)."""
    s, t, m = Reg.SCRATCH, Reg.TARGET, Reg.MARKER
    entry = [asm.mrs_far_el1(s), asm.str_(s, m, 8, MARK_FAR),
             asm.mrs_esr_el1(s), asm.str_(s, m, 8, MARK_ESR),
             asm.mrs_elr_el1(s), asm.str_(s, m, 8, MARK_ELR),
             asm.cmp(s, t), asm.b_ne(3), asm.msr_elr_el1(Reg.LINK), asm.ERET,
             asm.add_imm(s, s, 4), asm.msr_elr_el1(s), asm.ERET]
    out: list[int] = []
    for _ in range(16):
        out += entry + [asm.b_self()] * (32 - len(entry))
    return out


def access_code(step: GuestStep) -> list[int]:
    """Return one access and the store of its step number to the marker page."""
    t = Reg.TARGET
    code = asm.mov_imm(t, step.ipa)
    write = step.access is AccessKind.WRITE
    if step.access is AccessKind.EXEC:
        code.append(asm.blr(t))
    elif step.syndrome is not None:
        size, reg = step.syndrome
        code.append(asm.str_(reg, t, size) if write else asm.ldr(reg, t, size))
    else:
        code.append(asm.stp_w(Reg.X1, Reg.X2, t) if write else asm.ldp_w(Reg.X1, Reg.X2, t))
    return code + asm.mov_imm(Reg.DATA, step.index) + [asm.str_(Reg.DATA, Reg.MARKER, 8,
                                                                 MARK_STEP)]


def dump_code(index: int) -> list[int]:
    """Return the spin a stage-2 dump happens in, then its marker store (DUMP_FLAG | N);
    the VMM steps the guest past the spin when the dump is done."""
    return [asm.b_self()] + asm.mov_imm(Reg.DATA, DUMP_FLAG | index) + [
        asm.str_(Reg.DATA, Reg.MARKER, 8, MARK_STEP)]


def program(code_gpa: int, mmio_gpa: int, steps: tuple[PlanStep, ...],
            dumps: tuple[int, ...] = ()) -> list[int]:
    """Return the code slot's words: vectors, then the entry, every access and every
    dump's spin, in step order. code_gpa and mmio_gpa are where the guest code sees the
    code slot and the marker page (VAs when the MMU is on)."""
    words = vectors()
    words += [asm.b_self()] * (ENTRY // 4 - len(words))
    words += asm.mov_imm(Reg.MARKER, mmio_gpa) + asm.mov_imm(Reg.SCRATCH, code_gpa)
    words += [asm.msr_vbar_el1(Reg.SCRATCH), asm.ISB]
    for step in steps:
        if isinstance(step, GuestStep):
            words += access_code(step)
        if step.index in dumps:
            words += dump_code(step.index)
    return words + [asm.b_self()]


def used_ranges(scn: Scenario) -> list[tuple[int, int]]:
    """Return the IPA ranges the scenario names (memslots and accesses)."""
    out = []
    for ev in (*scn.setup, *scn.events):
        if isinstance(ev, SetMemslot | MoveMemslot) and ev.gpa is not None:
            size = getattr(ev, "size", None) or 1 << 30
            out.append((ev.gpa, ev.gpa + size))
        elif isinstance(ev, GuestAccess) and ev.ipa is not None:
            out.append((ev.ipa & ~(PAGE - 1), (ev.ipa & ~(PAGE - 1)) + PAGE))
    return out


def top_level_span(ipa_bits: int) -> int:
    """Return the IPA span of one entry of KVM's top-level stage-2 table (4K granule).

    Kernel: kvm_stage2_levels / ARM64_HW_PGTABLE_LEVELS(ipa_bits - 4) (concatenated start
    tables take up to 4 bits of the IPA).
    """
    levels = (ipa_bits - 4 - 4) // 9
    return 1 << (12 + 9 * (levels - 1))


def free_window(scn: Scenario, ipa_bits: int) -> int:
    """Return where the code slot and the marker page go: the base of the highest
    top-level stage-2 entry that no memslot or access of the scenario touches, so that the
    VMM's own mappings share no table with the scenario's and leave its fault levels as
    the model sees them."""
    used = used_ranges(scn)
    span = top_level_span(ipa_bits)
    for base in range((1 << ipa_bits) - span, -1, -span):
        if all(base + span <= lo or base >= hi for lo, hi in used):
            return base
    raise Unsupported(f"{scn.path}: real KVM: code-size unsupported: no top-level "
                      "stage-2 entry is free for the VMM's code slot")


class RecordingMemory:
    """IPA-addressed memory that records what a table builder writes (zero elsewhere)."""

    def __init__(self) -> None:
        self.words: dict[int, int] = {}
        self.pages: set[int] = set()

    def read64(self, pa: int, big_endian: bool = False) -> int:
        self.pages.add(pa & ~(PAGE - 1))
        return self.words.get(pa, 0)

    def write64(self, pa: int, value: int, big_endian: bool = False) -> None:
        self.pages.add(pa & ~(PAGE - 1))
        self.words[pa] = value


def guest_stage1(scn: Scenario, config: KvmConfig, slots: SlotTable) -> Stage1 | None:
    """Return vCPU 0's stage 1 as the VMM writes it (None when it has none); slots: the
    memslots after the set-up steps, when the model writes the tables."""
    if len(config.vcpus) > 1:
        raise refuse(None, "vcpu", scn)
    if not config.vcpus or config.vcpus[0].stage1_tables is None:
        return None
    spec = config.vcpus[0]
    assert spec.stage1_tables is not None
    mem = RecordingMemory()
    el1 = guest_stage1_el1(write_guest_stage1(mem, spec.stage1_tables, list(spec.maps)))
    pokes = []
    for page in sorted(mem.pages):
        slot = next((s for s in slots.slots.values() if s.gpa <= page < s.gpa + s.size), None)
        if slot is None:
            raise Unsupported(f"{spec.where.path}:{spec.where.line}: vcpu[0].stage1_tables: "
                              f"guest stage-1 table at IPA {page:#x} is outside every memslot")
        words = [(a, v) for a, v in sorted(mem.words.items())
                 if page <= a < page + PAGE and v] or [(page, 0)]
        pokes += [(slot.hva + a - slot.gpa, v) for a, v in words]
    tcr = el1.TCR_EL1 & ~TCR_EL1.encode(EPD1=1) | TCR_EL1.encode(
        T1SZ=25, TG1=2, IRGN1=1, ORGN1=1, SH1=3)
    return Stage1(el1.SCTLR_EL1, tcr, el1.MAIR_EL1, el1.TTBR0_EL1, 0, tuple(pokes), (),
                  tuple(sorted(table_levels(mem, el1.TTBR0_EL1, S1_START_LEVEL).items())))


S1_START_LEVEL = 1
"""write_guest_stage1's start level (4K granule, 39-bit VA)."""


def table_levels(mem: RecordingMemory, root: int, start: int) -> dict[int, int]:
    """Return each table page of a 4K-granule tree and its level, from the root down."""
    out = {root: start}
    todo = [root]
    while todo:
        table = todo.pop()
        if out[table] == 3:
            continue
        for a in range(table, table + PAGE, 8):
            desc = mem.words.get(a, 0)
            if desc & 0b11 == 0b11:
                nxt = desc & 0x0000_FFFF_FFFF_F000
                out[nxt] = out[table] + 1
                todo.append(nxt)
    return out


def machinery_stage1(stage1: Stage1, code_gpa: int, mmio_gpa: int) -> Stage1:
    """Return stage1 with the TTBR1 tables that map the code slot (executable at EL1) and
    the marker page (Device) from HIGH_BASE, laid out in the code slot's last pages."""
    mem = RecordingMemory()
    b = TableBuilder(mem, BumpAllocator(code_gpa + S1_TABLES, code_gpa + CODE_SIZE),
                     Granule.G4K, iasize=39, startlevel=1)
    b.map(0, code_gpa, CODE_SIZE, s1_attrs(attrindx=0, uxn=True))
    b.map(CODE_SIZE, mmio_gpa, PAGE, s1_attrs(attrindx=1, pxn=True, uxn=True))
    words: list[tuple[int, tuple[int, ...]]] = []
    for page in sorted(mem.pages):
        entries = [mem.words.get(a, 0) for a in range(page, page + PAGE, 8)]
        last = max((i for i, v in enumerate(entries) if v), default=0)
        words.append((page - code_gpa, tuple(w for v in entries[:last + 1]
                                             for w in (v & 0xFFFFFFFF, v >> 32))))
    return replace(stage1, ttbr1=b.root, machinery=tuple(words))


def make_plan(scn: Scenario, dumps: tuple[int, ...] = (), host_dumps: bool = False) -> Plan:
    """Return the VMM's plan for a scenario, or raise Unsupported.

    dumps: the steps after which the stage 2 is read (checked by the caller); host_dumps:
    the host's stage 2 (pKVM), read with the guest stopped.
    """
    config = check_config(scn)
    slots = SlotTable()
    setup = tuple(plan_step(ev, i, slots, scn) for i, ev in enumerate(scn.setup, 1))
    stage1 = guest_stage1(scn, config, slots)
    steps = setup + tuple(plan_step(ev, i, slots, scn, stage1 is not None)
                          for i, ev in enumerate(scn.events, len(setup) + 1))
    if not steps or not isinstance(steps[0], SlotStep):
        raise refuse(None, "no-memslot", scn)
    code_gpa = free_window(scn, config.ipa_bits)
    mmio_gpa = code_gpa + CODE_SIZE
    if stage1 is None:
        code = program(code_gpa, mmio_gpa, steps, dumps)
        limit = CODE_SIZE
    else:
        stage1 = machinery_stage1(stage1, code_gpa, mmio_gpa)
        code = program(HIGH_BASE, HIGH_BASE + CODE_SIZE, steps, dumps)
        limit = S1_TABLES
    if len(code) * 4 > limit:
        raise refuse(None, "code-size", scn)
    manual = 0
    if config.manual_dirty_log_protect:
        manual = 1 | (2 if config.initially_set else 0)
    vm = VmLine(config.ipa_bits, config.nisv_to_user, manual, config.eager_split_chunk)
    dos = tuple(ev.do for ev in (*scn.setup, *scn.events))
    return Plan(scn.name, vm, config.vmas, code_gpa, mmio_gpa, tuple(code), steps, dos,
                tuple(sorted(dumps)), stage1, len(setup), host_dumps,
                config.thp_zero_page)


# -- the text the VMM reads ------------------------------------------------------------------


def vma_fields(v: VmaSpec) -> str:
    """Return START SIZE KIND THP WRITABLE."""
    return f"{v.start:#x} {v.size:#x} {v.kind.value} {int(v.thp)} {int(v.writable)}"


def step_line(step: PlanStep) -> str:
    """Return one step's plan line."""
    head = f"step {step.index}"
    match step:
        case SlotStep():
            return f"{head} memslot {step.slot} {step.gpa:#x} {step.size:#x} {step.hva:#x} " \
                   f"{step.flags}"
        case GuestStep():
            return f"{head} guest"
        case HostStep():
            return f"{head} {step.op.value} {step.hva:#x} {step.size:#x}"
        case MmapStep():
            return f"{head} mmap {vma_fields(step.vma)}"
        case GetDirtyStep():
            return f"{head} getdirty {step.slot} {step.npages}"
        case ClearDirtyStep():
            return f"{head} cleardirty {step.slot} {step.first_page} {step.num_pages} " \
                   f"{step.bitmap.hex() or '00'}"
        case CheckStep():
            return f"{head} check"
    raise AssertionError(step)


def render_plan(plan: Plan) -> str:
    """Return the plan file the VMM reads."""
    vm = plan.vm
    lines = [f"scenario {plan.name.replace(' ', '_') or 'scenario'}",
             f"vm {vm.ipa_bits} {int(vm.nisv_to_user)} {vm.manual_protect} "
             f"{vm.eager_split_chunk}"]
    lines.append(f"thpzero {int(plan.thp_zero_page)}")
    lines += [f"vma {vma_fields(v)}" for v in plan.vmas]
    lines += [f"codeslot {plan.code_gpa:#x} {CODE_SIZE:#x} {ENTRY:#x}",
              f"mmio {plan.mmio_gpa:#x}"]
    lines += code_lines(0, plan.code)
    if plan.stage1 is not None:
        for off, words in plan.stage1.machinery:
            lines += code_lines(off, words)
        lines += stage1_lines(plan.stage1)
    if plan.stage1 is not None and not plan.pokes_after:
        lines += [f"poke {hva:#x} {v:#x}" for hva, v in plan.stage1.pokes]
    for step in plan.steps:
        lines.append(step_line(step))
        if step.index in plan.dumps:
            lines.append(f"dump {step.index}" + (" host" if plan.host_dumps else ""))
        if plan.stage1 is not None and step.index == plan.pokes_after:
            lines += [f"poke {hva:#x} {v:#x}" for hva, v in plan.stage1.pokes]
    return "\n".join(lines) + "\n"


def code_lines(offset: int, words: tuple[int, ...]) -> list[str]:
    """Return "code OFFSET WORD..." lines, 16 words a line."""
    return [f"code {offset + i * 4:#x} " + " ".join(f"{w:#x}" for w in words[i:i + 16])
            for i in range(0, len(words), 16)]


KVM_REG_ARM64_U64 = 0x6030_0000_0000_0000
KVM_REG_ARM_CORE = 0x0010 << 16
KVM_REG_ARM64_SYSREG = 0x0013 << 16
PC_CORE_ID = KVM_REG_ARM64_U64 | KVM_REG_ARM_CORE | 256 // 4
"""struct kvm_regs: regs.pc after x0-x30 and sp, in 32-bit units."""


def sysreg_id(op0: int, op1: int, crn: int, crm: int, op2: int) -> int:
    """Return KVM_SET_ONE_REG's id of a system register (ARM64_SYS_REG)."""
    return (KVM_REG_ARM64_U64 | KVM_REG_ARM64_SYSREG | op0 << 14 | op1 << 11 | crn << 7
            | crm << 3 | op2)


SCTLR_EL1_ID = sysreg_id(3, 0, 1, 0, 0)
TTBR0_EL1_ID = sysreg_id(3, 0, 2, 0, 0)
TTBR1_EL1_ID = sysreg_id(3, 0, 2, 0, 1)
TCR_EL1_ID = sysreg_id(3, 0, 2, 0, 2)
MAIR_EL1_ID = sysreg_id(3, 0, 10, 2, 0)


def stage1_lines(s1: Stage1) -> list[str]:
    """Return the "reg ID VALUE" lines that start the vCPU with its stage 1 on, at the
    entry's TTBR1 VA (SCTLR_EL1 last, after the tables' registers)."""
    regs = [(TTBR0_EL1_ID, s1.ttbr0), (TTBR1_EL1_ID, s1.ttbr1), (TCR_EL1_ID, s1.tcr),
            (MAIR_EL1_ID, s1.mair), (SCTLR_EL1_ID, s1.sctlr), (PC_CORE_ID, HIGH_BASE + ENTRY)]
    return [f"reg {i:#x} {v:#x}" for i, v in regs]
