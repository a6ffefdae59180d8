"""AT cases at EL2 run as a guest hypervisor's AT through KVM's emulation (issue 10).

A harness case executed at EL2 is re-expressed as the state of an L1 guest hypervisor:

- the case's registers are L1's virtual EL2 (and EL1) registers, its PSTATE.PAN L1's;
- the case's physical memory is L1's guest-physical memory: one memslot, guest PA
  [0, GUEST_SLOT_SIZE), backed by host memory at HOST_OFFSET above it;
- KVM's own stage 2 of the VM (the canonical MMU) is the offset map guest PA ->
  guest PA + HOST_OFFSET, in KVM's tables outside the memslot;
- the shadow stage 2 of L1's current VTTBR_EL2/VTCR_EL2 is filled as KVM's fault path
  fills it when L2 runs: before L1 traps on its AT, L2 has touched every VA the case's
  EL1&0 ops name, so each stage-2 fault of its stage-1 walks made KVM walk L1's stage 2
  (kvm_walk_nested_s2) and map that page, composed with KVM's stage 2 and with L1's
  permissions (l2_touch). A page L1's stage 2 does not map stays unmapped.

Each op then goes through kvm_at (the fast path on that shadow state, the slow path
where KVM does not trust it). PAR_EL1 addresses are guest-physical on every path (a
stage-1 AT returns the IPA, an S12 AT L1's stage-2 output), so they compare with
QEMU's directly; descriptor updates are reported at guest PAs, and updates of KVM's own
tables (the fast path's hardware AF on the shadow) are not L1's memory.

The comparison is three-way. The QEMU answer Q, the emulation's answer N and the
architecture model's answer A (s2mmu.arch on the same case, which the harness checks
against QEMU on its own) are compared op by op:

- N == Q: agreement;
- N == A: the difference is QEMU's, and must be a listed QEMU 7.2 departure
  (divergences.classify on Q against A);
- otherwise N must differ from A exactly as listed KVM differences say
  (s2mmu.nested.differences): those that are KVM reading the state otherwise (an
  IMPLEMENTATION DEFINED choice, a register field or feature its walkers ignore) by
  running the architecture model again with that reading (RECONFIGURATIONS, the
  smallest set that works), those that are KVM reporting otherwise by rewriting A under
  the condition that triggers them (KVM_NORMALISERS); Q must then equal A or differ
  from it by a listed departure.

Anything else is a mismatch. Ops executed at EL1 or EL3 are not L1's (a guest
hypervisor runs at virtual EL2) and are dropped from the cases before they run.

Kernel: arch/arm64/kvm/at.c (__kvm_at_s1e01, __kvm_at_s1e2, __kvm_at_s12,
compute_par_s1, compute_par_s12), nested.c (kvm_walk_nested_s2), mmu.c
(kvm_handle_guest_abort's nested branch: the shadow is filled by L2's faults).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import combinations
from typing import Any

from s2mmu.arch import atcase
from s2mmu.arch.access import acc_at
from s2mmu.arch.at import AtOp as ArchAtOp
from s2mmu.arch.at import ParResult, execute_at
from s2mmu.arch.builder import BumpAllocator, TableBuilder, s2_attrs
from s2mmu.arch.config import ImplChoices
from s2mmu.arch.errors import InputError
from s2mmu.arch.faults import Fault, FaultRecord
from s2mmu.arch.features import NO_HW_UPDATE, FeatureSet, qemu_7_2_max
from s2mmu.arch.memory import PhysMem
from s2mmu.arch.params import Granule, get_s1_ttw_params, get_s2_ttw_params
from s2mmu.arch.registers import HCR_EL2, VTCR_EL2
from s2mmu.arch.state import Regime, SysRegs
from s2mmu.arch.translate import Env, s1_translate
from s2mmu.conformance.casefile import HarnessCase, parse_case
from s2mmu.conformance.compare import (
    AGREE,
    DIVERGENCE,
    MISMATCH,
    NOT_RUN,
    NOT_RUN_VERDICT,
    CaseComparison,
    OpComparison,
    Report,
    model_answer,
    normal_changes,
    normal_op,
    run_model,
)
from s2mmu.conformance.divergences import (
    OpEvidence,
    classify,
    divergence_named,
    explain_memory,
    undo_dirty,
)
from s2mmu.conformance.generator import generate_case
from s2mmu.conformance.qemu import QemuAt, QemuConfig
from s2mmu.nested.at import (
    AT_CHOICES,
    CURRENT,
    S12_STAGE1,
    AtContext,
    AtProfile,
    ShadowS2,
    compute_translation_regime,
    kvm_at,
    kvm_va_precheck,
)
from s2mmu.nested.differences import BY_NAME, KvmDifference, s12_attribute_difference
from s2mmu.nested.guest import GuestMemory, GuestRegion
from s2mmu.nested.nested import NestedVm, NestedWalkError, kvm_walk_nested_s2, vtcr_to_walk_params

GUEST_SLOT_SIZE = 1 << 40
"""L1's memory: guest PA [0, 1TB), every case's tables and the probe's RAM inside it."""

HOST_OFFSET = 1 << 44
"""Where L1's memory sits in the host: host PA = guest PA + HOST_OFFSET."""

KVM_TABLES = 0xF000_0000_0000
"""Host PA of KVM's own stage-2 tables (canonical and shadow), outside the memslot."""

KVM_IPA_LIMIT = 48
"""get_kvm_ipa_limit(): the host's IPA size as KVM reports it."""

KVM_VTCR_40 = VTCR_EL2.encode(T0SZ=24, SL0=1, TG0=0, SH0=3, ORGN0=1, IRGN0=1, PS=0b101)
KVM_VTCR_48 = VTCR_EL2.encode(T0SZ=16, SL0=2, TG0=0, SH0=3, ORGN0=1, IRGN0=1, PS=0b101)
"""KVM's VTCR_EL2 for the canonical (40-bit IPA) and the shadow (48-bit IPA) stage 2."""

PA_MASK = ((1 << 48) - 1) & ~0xFFF
PA52_MASK = ((1 << 52) - 1) & ~0xFFF
NS, BIT11, PTW, S2 = 1 << 9, 1 << 11, 1 << 8, 1 << 9
SCTLR_C, HCR_PTW, VTCR_HA, VTCR_HD, VTCR_DS = 1 << 2, 1 << 2, 1 << 21, 1 << 22, 1 << 32
ATTR_SH = 0xFF << 56 | 0b11 << 7
NC_OSH = 0x44 << 56 | 0b10 << 7
THROUGH = ("architecture", "nested")
"""What `s2mmu conformance --through` runs QEMU's cases through."""


# --- L1's machine -------------------------------------------------------------------------


@dataclass
class L1Machine:
    """An L1 guest hypervisor's VM for one case: memory, KVM's stage 2s, L1's registers."""

    vm: NestedVm
    regs: SysRegs
    canonical: ShadowS2
    shadow: TableBuilder

    def context(self, profile: AtProfile) -> AtContext:
        """Return the AT context: the canonical MMU and the shadow of L1's VTTBR/VTCR."""
        return AtContext(self.vm, profile, self.canonical,
                         ShadowS2(KVM_VTCR_48, self.shadow.root))


def l1_machine(case: atcase.AtCase, fs: FeatureSet) -> L1Machine:
    """Return the VM of case: its memory as L1's, KVM's canonical and empty shadow MMUs."""
    host = PhysMem()
    for chunk in case.memory:
        if chunk.pa + len(chunk.data) > GUEST_SLOT_SIZE:
            raise InputError(f"case {case.name}: memory at {chunk.pa:#x} is outside L1's "
                             f"memslot [0, {GUEST_SLOT_SIZE:#x})")
        host.write_bytes(chunk.pa + HOST_OFFSET, chunk.data)
    guest = GuestMemory(host, (GuestRegion(0, GUEST_SLOT_SIZE, HOST_OFFSET),))
    alloc = BumpAllocator(KVM_TABLES, KVM_TABLES + (64 << 20))
    canonical = TableBuilder(host, alloc, Granule.G4K, 40, 1)
    canonical.map(0, HOST_OFFSET, GUEST_SLOT_SIZE, s2_attrs(), level=1)
    shadow = TableBuilder(host, alloc, Granule.G4K, 48, 0)
    vm = NestedVm(fs, KVM_IPA_LIMIT, host, guest)
    return L1Machine(vm, case.regs, ShadowS2(KVM_VTCR_40, canonical.root), shadow)


def l1_stage2_on(regs: SysRegs) -> bool:
    """Return whether L1's stage 2 translates L2's IPAs (HCR_EL2.VM or DC)."""
    h = HCR_EL2.decode(regs.HCR_EL2)
    return bool(h.VM or h.DC)


def fill_shadow(m: L1Machine, ipa: int) -> bool:
    """Map the page of L2's ipa in the shadow as KVM's fault path would; False if it can't.

    L1's stage 2 (when on) gives the L1 PA and L1's read/write permission; KVM's stage 2
    adds HOST_OFFSET. A fault or refusal of L1's stage 2 would be injected into L1 and
    leaves the shadow alone. Kernel: mmu.c kvm_handle_guest_abort (nested branch),
    nested.c kvm_walk_nested_s2.
    """
    page = ipa & ~0xFFF
    if page >= 1 << 48:
        return False
    if not l1_stage2_on(m.regs):
        out, s2ap = page, 0b11
    else:
        t = kvm_walk_nested_s2(m.vm, m.regs, page)
        if isinstance(t, NestedWalkError) or t.fault is not None or not t.readable:
            return False
        out, s2ap = t.output & ~0xFFF, 0b01 | (0b10 if t.writable else 0)
    if out + 0x1000 > GUEST_SLOT_SIZE:
        return False
    m.shadow.map(page, out + HOST_OFFSET, 0x1000, s2_attrs(s2ap=s2ap))
    return True


def l2_touch(m: L1Machine, va: int) -> None:
    """Let L2 access va: fill the shadow for each stage-2 fault of its stage-1 walk.

    The walk is the hardware's (L1's EL1&0 registers, the shadow as stage 2), without
    descriptor updates; it stops when it no longer faults on a table it could map.
    """
    fs = m.vm.fs
    shadow = get_s2_ttw_params(replace(SysRegs(), VTCR_EL2=KVM_VTCR_48,
                                       VTTBR_EL2=m.shadow.root), fs, AT_CHOICES, NO_HW_UPDATE)
    p = get_s1_ttw_params(m.regs, Regime.EL10, va, fs, AT_CHOICES, NO_HW_UPDATE)
    env = Env(m.vm.host, fs, AT_CHOICES, hw=NO_HW_UPDATE)
    for _ in range(8):
        got = s1_translate(p, shadow, va, acc_at(1, False), env)
        if not (isinstance(got, FaultRecord) and got.s2fs1walk and got.ipaddress is not None
                and got.statuscode is Fault.TRANSLATION and fill_shadow(m, got.ipaddress)):
            return


# --- The emulation's answer ---------------------------------------------------------------


def nested_answer(case_obj: Mapping[str, Any], profile: AtProfile = CURRENT,
                  fs: FeatureSet | None = None) -> dict[str, Any]:
    """Run a case's ops as L1's AT instructions through kvm_at (at-case.md output).

    Each op answer carries `path` ("fast" or "slow"), which the comparison ignores.
    """
    case = atcase.parse_case(dict(case_obj))
    m = l1_machine(case, fs or qemu_7_2_max())
    for spec in case.ops:
        if spec.el != 2:
            raise InputError(f"case {case.name}: {spec.op.name} at EL{spec.el} is not L1's "
                             "(a guest hypervisor runs at virtual EL2)")
        if compute_translation_regime(stage1_op(spec.op), m.regs) is Regime.EL10:
            l2_touch(m, spec.va)
    m.vm.host.hw_writes.clear()
    ops = []
    for spec in case.ops:
        got = kvm_at(m.context(profile), m.regs, spec.pan, spec.op, spec.va)
        ops.append({"op": spec.op.name, "va": f"{spec.va:#x}", "el": "EL2", "pan": int(spec.pan),
                    "outcome": "par", "PAR_EL1": f"{got.par:#018x}", "path": got.path,
                    **s12_leaf(m, profile, spec)})
    changes = [atcase.memory_change_json(replace(w, pa=w.pa - HOST_OFFSET))
               for w in m.vm.host.hw_writes if HOST_OFFSET <= w.pa < HOST_OFFSET + GUEST_SLOT_SIZE]
    return {"name": case.name, "ops": ops, "memory_changes": changes}


def s12_leaf(m: L1Machine, profile: AtProfile, spec: atcase.AtOpSpec) -> dict[str, str]:
    """Return an S12 op's stage-1 PAR_EL1 and L1's stage-2 leaf, when both stages ran.

    The comparison needs them to tell which listed attribute difference applies; the
    stage-1 AT is replayed (its descriptor updates already happened and are not kept).
    """
    if spec.op.stage != 12 or not two_stages(m.regs, spec.op):
        return {}
    writes = len(m.vm.host.hw_writes)
    s1 = kvm_at(m.context(profile), m.regs, spec.pan, stage1_op(spec.op), spec.va).par
    del m.vm.host.hw_writes[writes:]
    if s1 & 1:
        return {}
    t = kvm_walk_nested_s2(m.vm, m.regs, s1 & PA_MASK | spec.va & 0xFFF)
    if isinstance(t, NestedWalkError) or t.fault is not None:
        return {"s1_par": f"{s1:#x}"}
    return {"s1_par": f"{s1:#x}", "s2_desc": f"{t.desc:#x}"}


def two_stages(regs: SysRegs, op: ArchAtOp) -> bool:
    """Return whether an AT S12E* in this state goes through L1's stage 2."""
    return (op.stage == 12 and l1_stage2_on(regs)
            and compute_translation_regime(stage1_op(op), regs) is Regime.EL10)


def stage1_op(op: ArchAtOp) -> ArchAtOp:
    """Return the stage-1 op of an AT S12E* (the op itself otherwise)."""
    return S12_STAGE1.get(op, op)


# --- Cases L1 executes --------------------------------------------------------------------


def el2_case(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """Return the case with only its ops executed at EL2, or None if it has none."""
    case = parse_case(obj, 0)
    source_ops = list(obj.get("ops", []))
    ops = [source_ops[i] for i, op in enumerate(case.ops) if op.el == 2]
    return {**obj, "ops": ops} if ops else None


def generate_nested_cases(count: int, seed: int, families: Sequence[str]) -> list[dict[str, Any]]:
    """Return `count` generated cases that have ops at EL2, cycling through the families.

    The harness's generator draws case i of family f; cases without an EL2 op are
    passed over, so the names keep their generator index and replay alone.
    """
    found: list[dict[str, Any]] = []
    index = 0
    while len(found) < count and index < 20 * count + 100:
        case = el2_case(generate_case(families[index % len(families)], seed, index))
        if case is not None:
            found.append(case)
        index += 1
    return found


# --- Listed KVM differences as normalisations of the architecture's answer ----------------


@dataclass(frozen=True)
class NestedEvidence:
    """One op: L1's registers, the op, the emulation's and the architecture's PAR_EL1."""

    regs: SysRegs
    op: ArchAtOp
    va: int
    pan: bool
    kvm: int
    arch: int
    fs: FeatureSet
    rerun: Callable[[SysRegs, ImplChoices, FeatureSet], int]
    s1_par: int | None = None
    s2_desc: int | None = None
    arch_regs: SysRegs = SysRegs()
    arch_choices: ImplChoices = ImplChoices()
    arch_fs: FeatureSet = FeatureSet(frozenset())
    fast: bool = False

    @property
    def two_stages(self) -> bool:
        """Return whether an S12 op of this state goes through L1's stage 2."""
        return two_stages(self.regs, self.op)


Normaliser = Callable[[NestedEvidence], "int | None"]
Reconfigure = Callable[[NestedEvidence], "NestedEvidence | None"]


def ok(par: int) -> bool:
    """Return whether PAR_EL1 reports a translation (F=0)."""
    return not par & 1


def fst(par: int) -> int:
    """Return PAR_EL1.FST."""
    return par >> 1 & 0x3F


def par_ns(ev: NestedEvidence) -> int | None:
    """compute_par_s1/compute_par_s12 never set NS; the architecture's is UNKNOWN."""
    if ok(ev.kvm) and ok(ev.arch) and ev.arch & NS and not ev.kvm & NS:
        return ev.arch & ~NS
    return None


def s12_bit11(ev: NestedEvidence) -> int | None:
    """compute_par_s12 builds a successful PAR_EL1 without bit 11."""
    if ev.two_stages and ok(ev.kvm) and ok(ev.arch) and ev.arch & BIT11 and not ev.kvm & BIT11:
        return ev.arch & ~BIT11
    return None


def s2_fault_level(ev: NestedEvidence) -> int | None:
    """walk_s1 reports a stage-2 fault on the stage-1 walk at the stage-1 level."""
    both = ev.kvm & ev.arch
    if not both & 1 or not both & S2 or not both & PTW or fst(ev.kvm) >> 2 != fst(ev.arch) >> 2:
        return None
    return ev.arch & ~(0b11 << 1) | ev.kvm & 0b11 << 1


def refused_walk(ev: NestedEvidence) -> int | None:
    """L1's VTCR_EL2 is one KVM refuses to walk: S1 walks and S12 report as at.c does."""
    regime = compute_translation_regime(stage1_op(ev.op), ev.regs)
    if regime is not Regime.EL10 or not l1_stage2_on(ev.regs):
        return None
    if not isinstance(vtcr_to_walk_params(ev.regs, vm_view(ev.fs)), NestedWalkError):
        return None
    if ev.kvm & 1 and ev.kvm & S2 and ev.kvm & PTW and fst(ev.kvm) >> 2 == 0:
        return ev.kvm                                   # AT_S2_REFUSED_WALK
    if ev.op.stage == 12 and ok(ev.kvm):
        return ev.kvm                                   # AT_S12_REFUSED_WALK
    return None


def va_addrsz(ev: NestedEvidence) -> int | None:
    """setup_s1_walk reports a VA out of the regime's form as a level-0 Address size fault."""
    regime = compute_translation_regime(stage1_op(ev.op), ev.regs)
    p = get_s1_ttw_params(ev.regs, regime, ev.va, ev.fs, AT_CHOICES, NO_HW_UPDATE)
    if not p.mmu_on or not kvm_va_precheck(regime, p.tbi, ev.va):
        return None
    if ev.kvm & 1 and not ev.kvm & S2 and fst(ev.kvm) == 0 and ev.arch & 1:
        return ev.kvm
    return None


def sctlr_c(ev: NestedEvidence) -> int | None:
    """compute_par_s1 reports Normal memory as Non-cacheable when SCTLR_ELx.C is 0."""
    regime = compute_translation_regime(stage1_op(ev.op), ev.regs)
    sctlr = ev.regs.SCTLR_EL1 if regime is Regime.EL10 else ev.regs.SCTLR_EL2
    if sctlr & SCTLR_C or not sctlr & 1 or ev.two_stages or not (ok(ev.kvm) and ok(ev.arch)):
        return None
    if ev.arch >> 60 == 0 or ev.kvm & ATTR_SH != NC_OSH:
        return None
    return ev.arch & ~ATTR_SH | NC_OSH


def reconfigured(ev: NestedEvidence, regs: SysRegs, choices: ImplChoices,
                 fs: FeatureSet | None = None) -> NestedEvidence | None:
    """Return ev with the architecture run again under regs, choices and features, or None
    when that changes nothing (the difference does not apply). Changes accumulate: each
    rerun keeps the configuration of the ones before it."""
    fs = fs or ev.arch_fs
    again = ev.rerun(regs, choices, fs)
    if again == ev.arch:
        return None
    return replace(ev, arch=again, arch_regs=regs, arch_choices=choices, arch_fs=fs)


def s2_oa_48bit(ev: NestedEvidence) -> NestedEvidence | None:
    """KVM's walker of L1's stage 2 has 48-bit descriptors only: the architecture on an
    implementation without FEAT_LPA/FEAT_LPA2 (no OA[51:48], no 64KB level-1 blocks)."""
    if not l1_stage2_on(ev.regs) or compute_translation_regime(
            stage1_op(ev.op), ev.regs) is not Regime.EL10:
        return None
    fs = replace(ev.arch_fs.with_features(remove=("FEAT_LPA", "FEAT_LPA2")), pa_bits=48)
    return reconfigured(ev, ev.arch_regs, ev.arch_choices, fs)


def reserved_tg(ev: NestedEvidence) -> NestedEvidence | None:
    """setup_s1_walk walks a reserved TGx as 64KB: the architecture with that IMPDEF choice.

    Not for a stage 1 the fast path answered: that is the CPU's walk, with its choices.
    """
    if ev.fast:
        return None
    return reconfigured(ev, ev.arch_regs, replace(ev.arch_choices, reserved_tg_granule=64))


def contiguous_oa(ev: NestedEvidence) -> NestedEvidence | None:
    """KVM's walkers take a contiguous run's low output bits from the input address.

    Not for a stage-1 AT the fast path answered (the CPU's walk, with its choices).
    """
    if ev.fast and ev.op.stage == 1:
        return None
    return reconfigured(ev, ev.arch_regs, replace(ev.arch_choices, contiguous_oa_from_ia=True))


def s12_hcr_cd(ev: NestedEvidence) -> NestedEvidence | None:
    """compute_par_s12 applies HCR_EL2.CD with FWB too: the architecture reporting so."""
    if not ev.two_stages or not HCR_EL2.decode(ev.regs.HCR_EL2).CD:
        return None
    return reconfigured(ev, ev.arch_regs, replace(ev.arch_choices, par_hcr_cd="always"))


def ptw_device(ev: NestedEvidence) -> NestedEvidence | None:
    """Neither path reports L1's HCR_EL2.PTW fault: the architecture with PTW=0."""
    if not ev.regs.HCR_EL2 & HCR_PTW or not l1_stage2_on(ev.regs):
        return None
    regs = replace(ev.arch_regs, HCR_EL2=ev.arch_regs.HCR_EL2 & ~HCR_PTW)
    return reconfigured(ev, regs, ev.arch_choices)


def vtcr_cleared(bits: int) -> Reconfigure:
    """Return a reconfiguration: the architecture with L1's VTCR_EL2 bits cleared (KVM's
    walker of L1's stage 2 does not read them)."""
    def normalise(ev: NestedEvidence) -> NestedEvidence | None:
        if not ev.regs.VTCR_EL2 & bits or not l1_stage2_on(ev.regs):
            return None
        regs = replace(ev.arch_regs, VTCR_EL2=ev.arch_regs.VTCR_EL2 & ~bits)
        return reconfigured(ev, regs, ev.arch_choices)
    return normalise


def s2_ipa_unchecked(ev: NestedEvidence) -> int | None:
    """KVM walks the IPA bits below L1's IPA size where the architecture faults at level 0."""
    if not ev.two_stages or ev.s1_par is None:
        return None
    ipa = ev.s1_par & PA52_MASK | ev.va & 0xFFF
    ia_bits = 64 - VTCR_EL2.decode(ev.regs.VTCR_EL2).T0SZ
    if ipa >> ia_bits == 0 or not ev.arch & 1 or ev.arch & (S2 | PTW) != S2:
        return None
    return ev.kvm if fst(ev.arch) == 0b000100 else None


def s12_attrs(ev: NestedEvidence) -> int | None:
    """compute_par_s12's attribute combination where a listed S12 difference applies."""
    if not ev.two_stages or ev.s1_par is None or ev.s2_desc is None:
        return None
    if not (ok(ev.kvm) and ok(ev.arch)) or (ev.kvm ^ ev.arch) & ~(ATTR_SH | NS | BIT11):
        return None
    fwb = bool(HCR_EL2.decode(ev.regs.HCR_EL2).FWB)
    if not s12_attribute_difference(fwb, ev.s2_desc >> 2 & 0xF, ev.s1_par >> 56):
        return None
    return ev.arch & ~ATTR_SH | ev.kvm & ATTR_SH


def s1_blocks_48bit(ev: NestedEvidence) -> NestedEvidence | None:
    """at.c's walk_s1 takes blocks only at the 48-bit layouts' levels: the architecture on
    an implementation without FEAT_LPA/FEAT_LPA2 (no 64KB level-1 block). Slow path only."""
    if ev.fast:
        return None
    fs = replace(ev.arch_fs.with_features(remove=("FEAT_LPA", "FEAT_LPA2")), pa_bits=48)
    return reconfigured(ev, ev.arch_regs, ev.arch_choices, fs)


def par_pa_48bit(ev: NestedEvidence) -> int | None:
    """compute_par_s1 keeps PA[47:12] only (slow path)."""
    if ev.fast or not ok(ev.arch) or not ev.arch >> 48 & 0xF:
        return None
    return ev.arch & ~(0xF << 48)


def af_unchecked(ev: NestedEvidence) -> int | None:
    """6.12's walk_s1 never reads AF: an Access flag fault of the architecture is KVM's
    translation (or its permission fault on the same leaf)."""
    if ev.fast or ok(ev.arch) or ev.arch & S2 or fst(ev.arch) & 0b111100 != 0b001000:
        return None
    return ev.kvm if ok(ev.kvm) or fst(ev.kvm) & 0b111100 == 0b001100 else None


def ptw_on_s1_fault(ev: NestedEvidence) -> int | None:
    """6.12's walk_s1 sets PAR_EL1.PTW on a stage-1 Translation or Address size fault."""
    if ok(ev.arch) or ev.arch & (S2 | PTW) or fst(ev.arch) & 0b111100 not in (0, 0b000100):
        return None
    return ev.arch | PTW


def s12_without_e2h(ev: NestedEvidence) -> int | None:
    """6.12's __kvm_at_s12 returns the stage-1 result (bit 11 set) when E2H is 0."""
    if ev.op.stage != 12 or ev.regs.e2h() or not l1_stage2_on(ev.regs):
        return None
    return ev.kvm if ok(ev.kvm) and ev.kvm & BIT11 else None


def fwb_device_ngnrne(ev: NestedEvidence) -> int | None:
    """6.12's compute_par_s12 reads a stage-2 Device MemAttr under FWB as Device-nGnRnE."""
    if not ev.two_stages or ev.s2_desc is None or not ok(ev.arch):
        return None
    if not HCR_EL2.decode(ev.regs.HCR_EL2).FWB or ev.s2_desc >> 2 & 0b0100:
        return None
    return ev.arch & ~(0xFF << 56)


def vm_view(fs: FeatureSet) -> NestedVm:
    """Return a VM with no memory, for the register-only checks of KVM's walker."""
    host = PhysMem()
    return NestedVm(fs, KVM_IPA_LIMIT, host, host)


RECONFIGURATIONS: tuple[tuple[str, Reconfigure], ...] = (
    ("AT_RESERVED_TG", reserved_tg),
    ("AT_PTW_DEVICE", ptw_device),
    ("AT_CONTIGUOUS_OA", contiguous_oa),
    ("AT_S12_HCR_CD", s12_hcr_cd),
    ("S2_NO_DS", vtcr_cleared(VTCR_DS)),
    ("S2_OA_48BIT", s2_oa_48bit),
    ("S2_NO_HW_DIRTY", vtcr_cleared(VTCR_HD)),
    ("S2_NO_HW_AF", vtcr_cleared(VTCR_HA)),
    ("AT_S1_BLOCK_LEVELS", s1_blocks_48bit),
)
"""Listed differences that are KVM reading the state otherwise (an IMPLEMENTATION DEFINED
choice, a register field or feature it does not read): the architecture model is run
again with that reading (several accumulate, in this order)."""

KVM_NORMALISERS: tuple[tuple[str, Normaliser], ...] = (
    ("AT_VA_ADDRSZ", va_addrsz),
    ("S2_IPA_SIZE_UNCHECKED", s2_ipa_unchecked),
    ("AT_S2_REFUSED_WALK", refused_walk),
    ("AT_S2_FAULT_LEVEL", s2_fault_level),
    ("AT_S12_PAR_BIT11", s12_bit11),
    ("S12_ATTRIBUTES", s12_attrs),
    ("AT_PAR_SCTLR_C", sctlr_c),
    ("AT_PAR_NS", par_ns),
    ("AT612_NO_AF_CHECK", af_unchecked),
    ("AT612_PTW_ON_S1_FAULT", ptw_on_s1_fault),
    ("AT612_S12_NEEDS_E2H", s12_without_e2h),
    ("AT612_FWB_DEVICE_NGNRNE", fwb_device_ngnrne),
    ("AT_PAR_PA_48BIT", par_pa_48bit),
)
"""Listed differences in how KVM reports a result: each turns the architecture's PAR_EL1
into KVM's under the condition that triggers it (applied in this order, after the
reconfigurations)."""


def explain_kvm(ev: NestedEvidence) -> list[str] | None:
    """Return the listed KVM differences that turn the architecture's PAR into KVM's.

    The smallest set of reconfigurations (none, one, two, three of them, in list order)
    after which the reporting normalisers give KVM's PAR_EL1 wins; each reconfiguration in
    the set must change the architecture's answer.
    """
    for size in range(4):
        for chosen in combinations(RECONFIGURATIONS, size):
            names = reconfigure_all(ev, chosen)
            if names is not None:
                return names
    return None


def reconfigure_all(ev: NestedEvidence, chosen: Sequence[tuple[str, Reconfigure]]
                    ) -> list[str] | None:
    """Return the differences explaining ev after these reconfigurations, or None."""
    names: list[str] = []
    for name, reconfigure in chosen:
        changed = reconfigure(ev)
        if changed is None:
            return None
        ev = changed
        names.append(name)
    for name, normalise in KVM_NORMALISERS:
        if ev.arch == ev.kvm:
            break
        got = normalise(ev)
        if got is not None and got != ev.arch:
            if name == "S12_ATTRIBUTES":
                name = s12_attribute_difference(bool(HCR_EL2.decode(ev.regs.HCR_EL2).FWB),
                                                (ev.s2_desc or 0) >> 2 & 0xF,
                                                (ev.s1_par or 0) >> 56)
            ev = replace(ev, arch=got)
            names.append(name)
    return names if ev.arch == ev.kvm else None


# --- The three-way comparison -------------------------------------------------------------


def par_of(answer: Mapping[str, Any]) -> int | None:
    """Return an op answer's PAR_EL1, or None when it has none."""
    return int(str(answer["PAR_EL1"]), 16) if answer.get("outcome") == "par" else None


def compare_nested_op(case: HarnessCase, index: int, qemu: Mapping[str, Any],
                      kvm: Mapping[str, Any], arch: Mapping[str, Any],
                      fs: FeatureSet) -> OpComparison:
    """Compare QEMU's answer with the emulation's, explaining a difference three-way."""
    if qemu.get("outcome") in NOT_RUN:
        return OpComparison(index, qemu, kvm, NOT_RUN_VERDICT)
    if normal_op(qemu) == normal_op(kvm):
        return OpComparison(index, qemu, kvm, AGREE)
    names: list[str] = []
    if normal_op(kvm) != normal_op(arch):
        kp, ap = par_of(kvm), par_of(arch)
        if kp is None or ap is None:
            return OpComparison(index, qemu, kvm, MISMATCH)
        ev = nested_evidence(case, index, kvm, kp, ap, fs)
        found = explain_kvm(ev)
        if found is None:
            return OpComparison(index, qemu, kvm, MISMATCH)
        names += [f"kvm:{name}" for name in found]
    if normal_op(qemu) != normal_op(arch):
        departure = classify(OpEvidence(case, case.ops[index], qemu, arch, index))
        if departure is None:
            return OpComparison(index, qemu, kvm, MISMATCH)
        names.append(f"qemu:{departure.name}")
    return OpComparison(index, qemu, kvm, DIVERGENCE, "+".join(names))


def nested_evidence(case: HarnessCase, index: int, kvm: Mapping[str, Any], kvm_par: int,
                    arch_par: int, fs: FeatureSet) -> NestedEvidence:
    """Return the evidence of one op, with the architecture model ready to run again."""
    at_case = atcase.parse_case(dict(case.source))
    spec = at_case.ops[index]

    def rerun(regs: SysRegs, choices: ImplChoices, arch_fs: FeatureSet) -> int:
        env = Env(atcase.load_memory(at_case), arch_fs, choices)
        got = execute_at(spec.op, spec.va, spec.el, spec.pan, regs, env)
        return got.par if isinstance(got, ParResult) else -1

    def extra(key: str) -> int | None:
        return int(str(kvm[key]), 16) if key in kvm else None

    return NestedEvidence(at_case.regs, spec.op, spec.va, spec.pan, kvm_par, arch_par, fs,
                          rerun, extra("s1_par"), extra("s2_desc"), at_case.regs,
                          arch_fs=fs, fast=kvm.get("path") == "fast")


def nested_memory_verdict(ops: Sequence[OpComparison], qemu: Mapping[str, Any],
                          kvm: Mapping[str, Any], arch: Mapping[str, Any],
                          af_unchecked: bool = False) -> str:
    """Compare descriptor updates: equal, QEMU's listed extra updates, or a diverging op's.

    af_unchecked: a release whose software walk never reads AF (AT612_NO_AF_CHECK), so
    the architecture's access-flag updates are missing from KVM's.
    """
    if qemu.get("skipped") or qemu.get("memory_changes_dropped") or \
            any(op.verdict == NOT_RUN_VERDICT for op in ops):
        return NOT_RUN_VERDICT
    q, n = normal_changes(qemu), normal_changes(kvm)
    if q == n:
        return AGREE
    if n == normal_changes(arch) and explain_memory(q, n) is not None:
        return DIVERGENCE
    if n == normal_changes(arch) and sorted(undo_s2_dirty(q)) == n:
        return DIVERGENCE
    names = {name for op in ops for name in (op.divergence or "").split("+")}
    if n == normal_changes(arch) and any(name.startswith("qemu:") for name in names):
        return DIVERGENCE     # as compare.memory_verdict: QEMU departed on an op of the case
    walks_less = bool(names & WALKS_LESS) or af_unchecked
    if walks_less and only_af_missing(undo_s2_dirty(q), n):
        return DIVERGENCE
    return MISMATCH


WALKS_LESS = frozenset(f"kvm:{name}" for name in (
    "AT_S2_REFUSED_WALK", "S2_NO_HW_AF", "S2_NO_HW_DIRTY", "S2_NO_DS", "AT_PTW_DEVICE",
    "AT_RESERVED_TG", "AT_VA_ADDRSZ"))
"""Listed differences where KVM's walk stops earlier or elsewhere than the architecture's,
so the architecture's access-flag updates on the way may be missing."""


def only_af_missing(qemu: list[tuple[int, int, int]], kvm: list[tuple[int, int, int]]) -> bool:
    """Return whether KVM's updates are QEMU's less some access-flag sets (either byte order)."""
    rest = list(qemu)
    for change in kvm:
        if change not in rest:
            return False
        rest.remove(change)
    return all(after ^ before in (AF_LE, AF_BE) and after & ~before for _, before, after in rest)


AF_LE, AF_BE = 1 << 10, 1 << 50


def undo_s2_dirty(changes: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Return QEMU's updates without its AT dirty-state ones, at either stage.

    MEMORY_AT_DIRTY (divergences.py): AT never updates dirty state; QEMU 7.2's AT *W
    clears AP[2] of a stage-1 DBM descriptor or sets S2AP[1] of a stage-2 one.
    """
    out = []
    for change in changes:
        undone = undo_dirty(change)
        if undone is None:
            continue
        pa, before, after = undone
        if before & DBM and not before & S2AP_W and after & S2AP_W:
            after &= ~S2AP_W
        if after != before:
            out.append((pa, before, after))
    return out


DBM, S2AP_W = 1 << 51, 1 << 7


def compare_nested_case(case: HarnessCase, qemu: Mapping[str, Any], profile: AtProfile,
                        fs: FeatureSet | None = None) -> CaseComparison:
    """Run one case through the emulation and the architecture; compare with QEMU's answer."""
    fs = fs or qemu_7_2_max()
    kvm = run_model(case, qemu, lambda obj: nested_answer(obj, profile, fs))
    arch = run_model(case, qemu, model_answer)
    n_ops = len(case.ops)
    kvm_ops = list(kvm.get("ops", [])) + [{"outcome": "missing"}] * n_ops
    arch_ops = list(arch.get("ops", [])) + [{"outcome": "missing"}] * n_ops
    ops = tuple(compare_nested_op(case, i, qemu["ops"][i], kvm_ops[i], arch_ops[i], fs)
                for i in range(n_ops))
    return CaseComparison(case=case, ops=ops,
                          memory_verdict=nested_memory_verdict(
                              ops, qemu, kvm, arch, af_unchecked=not profile.s1_af_checked),
                          qemu=qemu, model=kvm)


def compare_nested_cases(objs: Sequence[Mapping[str, Any]], config: QemuConfig | None = None,
                         profile: AtProfile = CURRENT) -> Report:
    """Run case objects (EL2 ops only) on QEMU and through the emulation; compare."""
    cases = [parse_case(obj, i) for i, obj in enumerate(objs)]
    answers = QemuAt(config or QemuConfig()).run(cases)
    return Report(tuple(compare_nested_case(case, qemu, profile)
                        for case, qemu in zip(cases, answers, strict=True)))


def path_counts(report: Report) -> dict[str, int]:
    """Return how many ops the emulation answered on the fast and on the slow path."""
    counts = {"fast": 0, "slow": 0}
    for _, op in report.ops():
        path = op.model.get("path")
        if path in counts:
            counts[str(path)] += 1
    return counts


def divergence_reason(name: str) -> str:
    """Return the reason of a divergence: QEMU's departures, KVM's differences, combined."""
    parts = []
    for part in name.split("+"):
        kind, _, key = part.partition(":")
        if kind == "kvm":
            parts.append(kvm_reason(BY_NAME[key]))
        else:
            parts.append(divergence_named(key if kind == "qemu" else part).reason)
    return " / ".join(parts)


def kvm_reason(d: KvmDifference) -> str:
    """Return a listed KVM difference as one line: KVM's answer, the architecture's, why."""
    return f"KVM ({d.where}): {d.kvm}; the architecture: {d.architecture}. {d.reason}."
