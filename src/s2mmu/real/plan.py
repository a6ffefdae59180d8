"""A scenario turned into a plan for the VMM: VMAs, memslots, guest code and host steps.

The plan keeps the scenario's step numbering (memslot set-up steps first, then the
timeline), so each record the VMM prints names the step the model numbers the same way.
Guest accesses become guest code run with the MMU off: the VMM's own memslot (the code
slot) holds an exception vector table and, after it, for each access step: the IPA into
x27, the access, then a store of the step number to the VMM's marker page (an IPA with no
memslot, so the store exits to the VMM). A step whose access traps to the guest (an SEA
KVM injects, an undefined instruction fetched) goes through the vector, which reports
ESR_EL1 and ELR_EL1 to the marker page and resumes after the access.

Only what the VMM can express is planned; anything else is refused with
:class:`Unsupported`, one line naming the feature (:data:`UNSUPPORTED` lists them all).
"""

from __future__ import annotations

from dataclasses import dataclass

from s2mmu.arch.errors import InputError
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

UNSUPPORTED = {
    "dc": "QEMU's TCG CPU makes DC CIVAC a no-op (target/arm/helper.c, v8_cp_reginfo: "
          "ARM_CP_NOP), so no stage-2 abort happens to compare",
    "va": "guest accesses by VA need a guest stage 1, which the VMM does not build yet",
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
    syndrome: tuple[int, int] | None


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
    thp_zero_page: bool = False
    """The VMM sets the host's use_zero_page to this before its VMAs are touched."""

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


def access_step(ev: GuestAccess, index: int, scn: Scenario) -> GuestStep:
    """Return the guest step of an access by IPA."""
    if ev.va is not None:
        raise refuse(ev, "va", scn)
    if ev.access is AccessKind.DC:
        raise refuse(ev, "dc", scn)
    if ev.race is not None:
        raise refuse(ev, "race", scn)
    assert ev.ipa is not None
    size = ev.syndrome[0] if ev.syndrome else 8
    if ev.syndrome and ev.syndrome[1] in asm.RESERVED:
        raise refuse(ev, "syndrome-register", scn)
    if ev.access is not AccessKind.EXEC and ev.ipa % size:
        raise refuse(ev, "alignment", scn)
    if ev.access is AccessKind.EXEC and ev.ipa % 4:
        raise refuse(ev, "alignment", scn)
    return GuestStep(index, ev.access, ev.ipa, ev.syndrome)


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


def plan_step(ev: Event, index: int, slots: SlotTable, scn: Scenario) -> PlanStep:
    """Return the plan step of one scenario event (refusing what cannot run)."""
    match ev:
        case GuestAccess():
            return access_step(ev, index, scn)
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
    """Return the vector table: 16 entries, each reporting ESR_EL1 and ELR_EL1 and resuming
    after the access (at x30 when the fault was the fetch of the branch target)."""
    s, t, m = Reg.SCRATCH, Reg.TARGET, Reg.MARKER
    entry = [asm.mrs_esr_el1(s), asm.str_(s, m, 8, MARK_ESR),
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
    dump's spin, in step order."""
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


def make_plan(scn: Scenario, dumps: tuple[int, ...] = ()) -> Plan:
    """Return the VMM's plan for a scenario, or raise Unsupported.

    dumps: the steps after which the stage 2 is read (checked by the caller).
    """
    config = check_config(scn)
    slots = SlotTable()
    steps = tuple(plan_step(ev, i, slots, scn)
                  for i, ev in enumerate((*scn.setup, *scn.events), 1))
    if not steps or not isinstance(steps[0], SlotStep):
        raise refuse(None, "no-memslot", scn)
    code_gpa = free_window(scn, config.ipa_bits)
    mmio_gpa = code_gpa + CODE_SIZE
    code = program(code_gpa, mmio_gpa, steps, dumps)
    if len(code) * 4 > CODE_SIZE:
        raise refuse(None, "code-size", scn)
    manual = 0
    if config.manual_dirty_log_protect:
        manual = 1 | (2 if config.initially_set else 0)
    vm = VmLine(config.ipa_bits, config.nisv_to_user, manual, config.eager_split_chunk)
    dos = tuple(ev.do for ev in (*scn.setup, *scn.events))
    return Plan(scn.name, vm, config.vmas, code_gpa, mmio_gpa, tuple(code), steps, dos,
                tuple(sorted(dumps)), config.thp_zero_page)


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
    for off in range(0, len(plan.code), 16):
        words = " ".join(f"{w:#x}" for w in plan.code[off:off + 16])
        lines.append(f"code {off * 4:#x} {words}")
    for step in plan.steps:
        lines.append(step_line(step))
        if step.index in plan.dumps:
            lines.append(f"dump {step.index}")
    return "\n".join(lines) + "\n"
