"""AT instructions a guest hypervisor executes at virtual EL2, emulated as KVM does.

L1 runs at virtual EL2, so every AT it executes traps to KVM, which answers PAR_EL1:

- the fast path runs the real AT on the shadow state (L1's stage-1 registers, the
  shadow stage 2 KVM built for them); its result is kept only when it succeeded or
  reports a stage-1 Permission (or, for S1E0/S1E1, Access flag) fault;
- otherwise the slow path walks stage 1 in software: the architecture's stage-1
  translation (s2mmu.arch.translate.s1_translate) reading L1's or L2's tables as guest
  memory, each descriptor address translated by L1's stage 2 (kvm_walk_nested_s2)
  through a table-memory port;
- AT S12E* do stage 1 that way, then walk L1's stage 2 and combine attributes
  (compute_par_s12).

The regime comes from L1's HCR_EL2.{E2H,TGE} (compute_translation_regime). Where KVM
reports something other than the architecture, the model follows KVM; every such
difference is listed once, in s2mmu.nested.differences.

Kernel: arch/arm64/kvm/at.c (compute_translation_regime, setup_s1_walk, walk_s1,
compute_s1_permissions, pan3_enabled, handle_at_slow, __kvm_at_s1e01_fast,
__kvm_at_s1e01, __kvm_at_s1e2, __kvm_at_s12, compute_par_s1, compute_par_s12,
par_check_s1_perm_fault, par_check_s1_access_fault, __kvm_at_swap_desc).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

from s2mmu.arch.access import acc_at
from s2mmu.arch.at import AtOp, at_undefined_reason, encode_par
from s2mmu.arch.bits import bit, bits
from s2mmu.arch.config import ImplChoices
from s2mmu.arch.faults import Fault, FaultRecord
from s2mmu.arch.features import HwUpdate, hw_update_of
from s2mmu.arch.memory import ExternalAbort
from s2mmu.arch.params import Granule, get_s1_ttw_params, get_s2_ttw_params
from s2mmu.arch.registers import HCR_EL2
from s2mmu.arch.state import Regime, SysRegs
from s2mmu.arch.sysreg import RegView
from s2mmu.arch.translate import AddressDescriptor, Env, s1_translate
from s2mmu.arch.walk import WalkStep
from s2mmu.nested.nested import NestedVm, NestedWalkError, kvm_walk_nested_s2
from s2mmu.pgtable.s2trans import KvmS2Trans


class PanCheck(Enum):
    """How the PAN-aware AT S1E1RP/WP decide that PAN denies the access."""

    ARCHITECTURE = "architecture"   # EL0 has read or write (or, with EPAN, execute)
    EL0_PROBE = "el0-probe"         # seed 001's first approach: AT S1E0R, then S1E0W


@dataclass(frozen=True)
class AtProfile:
    """A kernel release's AT emulation behaviour.

    hw_af: the software walk sets the stage-1 access flag (TCR_ELx.HA with FEAT_HAFDBS
    in the VM, through __kvm_at_swap_desc) instead of reporting an Access flag fault.

    The other knobs are 6.12's at.c as measured against its own code by
    `s2mmu kernel diff --at` (Linux 6.12.118) and read there; the current at.c
    (torvalds/linux) has each fixed. The commits that changed them are not pinned here.

    s1_af_checked: the software walk looks at the stage-1 AF at all. 6.12's walk_s1
    never does: an AF=0 leaf translates (modelled as AF read as 1, nothing written).
    ptw_on_s1_walk_fault: a stage-1 Translation or Address size fault found by the
    walk (walk_s1, once a descriptor has been read) sets PAR_EL1.PTW, as 6.12's
    fail_s1_walk(wr, fst, true, false) does; setup_s1_walk's faults do not.
    s12_needs_e2h: AT S12E* walks L1's stage 2 only with HCR_EL2.E2H=1 (6.12's
    __kvm_at_s12 returns the stage-1 result when E2H is 0).
    fwb_device_nGnRnE: with HCR_EL2.FWB a stage-2 Device MemAttr gives Device-nGnRnE
    (6.12's compute_par_s12 computes s2_memattr & GENMASK(1,0) << 2, which C reads
    as s2_memattr & 0b1100) instead of combining stage 1's and stage 2's Device types.
    hw_af needs FEAT_HAFDBS in the guest hypervisor's ID registers, which
    limit_nv_id_regs masks off in every release modelled here: in a scenario it never
    acts; the AT harnesses that build a NestedVm with FEAT_HAFDBS (conformance
    --through nested, kernel diff --at) exercise it.
    """

    name: str
    hw_af: bool
    pan_check: PanCheck = PanCheck.ARCHITECTURE
    s1_af_checked: bool = True
    ptw_on_s1_walk_fault: bool = False
    s12_needs_e2h: bool = False
    fwb_device_nGnRnE: bool = False


V6_12 = AtProfile("v6.12", hw_af=False, s1_af_checked=False, ptw_on_s1_walk_fault=True,
                  s12_needs_e2h=True, fwb_device_nGnRnE=True)  # first software walker
CURRENT = AtProfile("current", hw_af=True)     # software walker sets AF (__kvm_at_swap_desc)
PROFILES = {p.name: p for p in (V6_12, CURRENT)}

# compute_par_s1: no NS bit, SCTLR_ELx.C=0 forces Normal NC, reserved SH reads as NSH,
# a reserved TGx is 64KB, PAR_EL1 bit 11 (RES1) set; compute_par_s12 applies
# HCR_EL2.CD with or without FWB; walk_s1 takes the output bits below a contiguous run
# from the VA (contiguous_bit_shift; also found by `s2mmu kernel diff --at` against
# 6.12's at.c).
AT_CHOICES = ImplChoices(par_ns_nonsecure=False, par_sctlr_cacheability=True,
                         reserved_tg_granule=64, reserved_sh=0b00, par_hcr_cd="always",
                         contiguous_oa_from_ia=True)


@dataclass(frozen=True)
class ShadowS2:
    """A stage 2 KVM loads for the fast path (host tables, host addresses)."""

    vtcr: int
    vttbr: int


@dataclass(frozen=True)
class AtContext:
    """Hypervisor context of one AT emulation, built once and passed in.

    shadow: the shadow stage 2 of L1's current VTTBR/VTCR (None when lookup_s2_mmu
    finds none); canonical: the VM's own stage 2 (for L1's EL2&0 regime), None for no
    hardware fast path at all (the kernel oracle, whose at.c runs with its hardware AT
    failing, compares the software walks). hw_choices: the host CPU's implementation
    choices, which the fast path's real AT reports with (PAR_EL1.NS, SCTLR_ELx.C in
    ATTR, ...); the slow path reports as compute_par_s1 does (AT_CHOICES).
    """

    vm: NestedVm
    profile: AtProfile
    canonical: ShadowS2 | None
    shadow: ShadowS2 | None = None
    hw_choices: ImplChoices = ImplChoices()


@dataclass(frozen=True)
class AtEmulation:
    """What KVM wrote to L1's PAR_EL1, and how it got there."""

    par: int
    path: str                    # "fast" or "slow"
    fast_par: int | None = None  # the fast path's PAR_EL1 when it ran


def hcr(regs: SysRegs) -> RegView:
    """Return L1's HCR_EL2 decoded."""
    return HCR_EL2.decode(regs.HCR_EL2)


def compute_translation_regime(op: AtOp, regs: SysRegs) -> Regime:
    """Return the regime of op executed at virtual EL2: HCR_EL2.{E2H,TGE} alone decide.

    Kernel: at.c compute_translation_regime.
    """
    if op.el == 2:
        return Regime.EL20 if regs.e2h() else Regime.EL2
    return Regime.EL20 if regs.e2h() and regs.tge() else Regime.EL10


def slow_hw(ctx: AtContext) -> HwUpdate:
    """Return the descriptor updates the software walk makes under ctx.profile."""
    af = ctx.profile.hw_af and ctx.vm.fs.has("FEAT_HAFDBS")
    return HwUpdate(s1_af=af, s1_dirty=False, s2_af=False, s2_dirty=False)


# ---------------------------------------------------------------- the guest-memory port

class NestedS1Port:
    """Stage-1 tables read as guest memory, their addresses through L1's stage 2.

    Each read (and the access-flag swap) walks L1's stage 2 first when the regime has
    one; a stage-2 fault, a non-readable (for the swap: non-writable) stage-2 mapping
    or a refused walk ends the access with an ExternalAbort and is kept in s2_failure
    for the AT emulation to report as KVM does. Kernel: at.c walk_s1.
    """

    def __init__(self, vm: NestedVm, regs: SysRegs, stage2: bool,
                 af_ignored: bool = False) -> None:
        self.vm, self.regs, self.stage2, self.af_ignored = vm, regs, stage2, af_ignored
        self.s2_failure: KvmS2Trans | NestedWalkError | None = None
        self.reads = 0

    def _gpa(self, ipa: int, write: bool) -> int | ExternalAbort:
        if not self.stage2:
            return ipa
        t = kvm_walk_nested_s2(self.vm, self.regs, ipa)
        if isinstance(t, NestedWalkError) or t.fault is not None:
            self.s2_failure = t
            return ExternalAbort(ipa, f"L1 stage 2 refused IPA {ipa:#x}")
        if not t.readable or (write and not t.writable):
            self.s2_failure = t
            what = "writable" if write else "readable"
            return ExternalAbort(ipa, f"IPA {ipa:#x} is not {what} at L1's stage 2")
        return t.output

    def read64(self, pa: int, big_endian: bool = False) -> int | ExternalAbort:
        """Return the descriptor at stage-1 table address pa (an IPA under stage 2)."""
        self.reads += 1
        gpa = self._gpa(pa, False)
        return gpa if isinstance(gpa, ExternalAbort) else self.vm.guest.read64(gpa, big_endian)

    def cas64(self, pa: int, expected: int, new: int,
              big_endian: bool = False) -> bool | ExternalAbort:
        """Swap the descriptor at pa (__kvm_at_swap_desc: needs stage-2 write permission).

        With af_ignored (a release whose walk never reads AF) nothing is written.
        """
        if self.af_ignored:
            return True
        gpa = self._gpa(pa, True)
        if isinstance(gpa, ExternalAbort):
            return gpa
        return self.vm.guest.cas64(gpa, expected, new, big_endian)


# ---------------------------------------------------------------- slow path

def kvm_va_precheck(regime: Regime, p_tbi: bool, va: int) -> str:
    """Return why setup_s1_walk reports a level-0 Address size fault for va, or "".

    Kernel: at.c setup_s1_walk: VA[55] set in the EL2 regime, and without TBI a VA
    whose top byte is not the sign extension of bit 55.
    """
    if regime is Regime.EL2 and bit(va, 55):
        return f"VA {va:#x} has bit 55 set in the EL2 regime"
    sext = va | (0xFF << 56) if bit(va, 55) else va & ((1 << 56) - 1)
    if not p_tbi and sext != va:
        return f"VA {va:#x} is not sign-extended from bit 55 and TBI is 0"
    return ""


def slow_access(op: AtOp, regs: SysRegs, pan: bool, regime: Regime) -> tuple[int, bool]:
    """Return (permission EL, PAN in force) of op in the slow path (handle_at_slow)."""
    el = 0 if op.el == 0 else (2 if op.el == 2 or regime is Regime.EL20 else 1)
    return el, op.pan_aware and pan


def handle_at_slow(ctx: AtContext, regs: SysRegs, pan: bool, op: AtOp, va: int
                   ) -> AddressDescriptor | FaultRecord:
    """Walk stage 1 in software for an AT S1E* and return the result (handle_at_slow)."""
    if op.pan_aware and pan and ctx.profile.pan_check is PanCheck.EL0_PROBE:
        return at_pan_el0_probe(ctx, regs, op, va)
    regime = compute_translation_regime(op, regs)
    hw = slow_hw(ctx)
    p = get_s1_ttw_params(regs, regime, va, ctx.vm.fs, AT_CHOICES, hw)
    if not ctx.profile.s1_af_checked:
        p = replace(p, ha=True, hd=False)   # AF reads as 1; the port writes nothing
    el, pan_on = slow_access(op, regs, pan, regime)
    access = acc_at(el, op.write, pan=pan_on, any_access=op.any_access)
    why = kvm_va_precheck(regime, p.tbi, va)
    if why:
        return FaultRecord(Fault.ADDRESS_SIZE, 0, access, vaddress=va, reason=why)
    h = hcr(regs)
    port = NestedS1Port(ctx.vm, regs, regime is Regime.EL10 and bool(h.VM or h.DC),
                        af_ignored=not ctx.profile.s1_af_checked)
    env = Env(ctx.vm.host, ctx.vm.fs, AT_CHOICES, tables=port, hw=hw)
    trace: list[WalkStep] = []
    got = s1_translate(p, None, va, access, env, trace=trace)
    if isinstance(got, FaultRecord) and port.s2_failure is not None:
        return s2_fault_on_s1_walk(got, port.s2_failure)
    if trace and kvm_block_level_refused(p.tgx, trace[-1]):
        got = FaultRecord(Fault.TRANSLATION, trace[-1].level, access, vaddress=va, reason=(
            f"at.c walk_s1 takes no {p.tgx.value}KB block at level {trace[-1].level}"))
    if (ctx.profile.ptw_on_s1_walk_fault and isinstance(got, FaultRecord) and port.reads
            and got.statuscode in (Fault.TRANSLATION, Fault.ADDRESS_SIZE)):
        return replace(got, s2fs1walk=True)
    return got


def kvm_block_level_refused(granule: Granule, last: WalkStep) -> bool:
    """Return whether the walk ended on a block at a level at.c does not accept.

    Kernel: at.c walk_s1 (valid_block: levels 1 and 2 with 4KB, level 2 with 16KB and
    64KB). The architecture also has 64KB level-1 blocks with a 52-bit PA, and 4KB
    level-0 and 16KB level-1 blocks with TCR.DS (differences.AT_S1_BLOCK_LEVELS).
    """
    if last.stage != 1 or last.raw & 0b11 != 0b01:
        return False
    return last.level not in ((1, 2) if granule is Granule.G4K else (2,))


def s2_fault_on_s1_walk(fault: FaultRecord, s2: KvmS2Trans | NestedWalkError) -> FaultRecord:
    """Return a stage-2 fault on the stage-1 walk as at.c walk_s1 reports it.

    The kind is stage 2's, the level is the stage-1 walk's (walk_s1 replaces the FSC's
    level with its own). A stage-2 mapping that is valid but not readable (not writable,
    for the access-flag swap) is a Permission fault; a refused stage-2 walk has no FSC
    and reads as an Address size fault (differences.AT_S2_REFUSED_WALK).
    """
    if isinstance(s2, NestedWalkError):
        kind = Fault.ADDRESS_SIZE
    elif s2.fault is not None:
        kind = s2.fault.statuscode
    else:
        kind = Fault.PERMISSION
    return replace(fault, statuscode=kind, secondstage=True, s2fs1walk=True,
                   reason=f"stage 2 of the stage-1 walk: {fault.reason}")


def at_pan_el0_probe(ctx: AtContext, regs: SysRegs, op: AtOp, va: int
                     ) -> AddressDescriptor | FaultRecord:
    """Decide PAN by translating at EL0 for read, then for write (seed 001's first approach).

    If either EL0 translation succeeds the location counts as EL0-accessible and the
    privileged access takes a Permission fault; otherwise it is translated without PAN.
    """
    plain = AtOp.S1E1W if op.write else AtOp.S1E1R
    got = handle_at_slow(ctx, regs, False, plain, va)
    if isinstance(got, FaultRecord):
        return got
    for probe in (AtOp.S1E0R, AtOp.S1E0W):
        e0 = handle_at_slow(ctx, regs, False, probe, va)
        if isinstance(e0, AddressDescriptor):
            level = got.s1.level if got.s1 is not None else 3
            return FaultRecord(Fault.PERMISSION, level, acc_at(1, op.write, pan=True),
                               vaddress=va, reason=f"PAN: AT {probe.name} succeeded")
    return got


def slow_par(ctx: AtContext, result: AddressDescriptor | FaultRecord) -> int:
    """Return PAR_EL1 as compute_par_s1 builds it: PA[47:12] only (AT_PAR_PA_48BIT)."""
    par = encode_par(result, Env(ctx.vm.host, ctx.vm.fs, AT_CHOICES))
    return par if par & 1 else par & ~(0xF << 48)


# ---------------------------------------------------------------- fast path

def at_fast(ctx: AtContext, regs: SysRegs, pan: bool, op: AtOp, va: int) -> int | None:
    """Run the real AT on the shadow state; None when there is no shadow stage 2.

    Stage 1 is L1's (its registers, its tables as the host sees them in guest memory),
    stage 2 of the walk is the shadow (EL1&0) or the VM's own stage 2 (EL2 and EL2&0).
    PAR_EL1 is the host CPU's (ctx.hw_choices): KVM returns what the hardware wrote.
    Kernel: at.c __kvm_at_s1e01_fast, at_s1e1p_fast, __kvm_at_s1e2.
    """
    regime = compute_translation_regime(op, regs)
    s2 = ctx.shadow if regime is Regime.EL10 else ctx.canonical
    if s2 is None:
        return None
    vm, choices = ctx.vm, ctx.hw_choices
    hw = hw_update_of(vm.fs)
    p = get_s1_ttw_params(regs, regime, va, vm.fs, choices, hw)
    host_regs = replace(SysRegs(), VTCR_EL2=s2.vtcr, VTTBR_EL2=s2.vttbr)
    s2p = get_s2_ttw_params(host_regs, vm.fs, choices, hw)
    el, pan_on = slow_access(op, regs, pan, regime)
    access = acc_at(el, op.write, pan=pan_on, any_access=op.any_access)
    env = Env(vm.host, vm.fs, choices, hw=hw)
    got = s1_translate(p, s2p, va, access, env)
    return encode_par(got, env)


def par_fst(par: int) -> int:
    """Return PAR_EL1.FST."""
    return bits(par, 6, 1)


def par_check_s1_fault(par: int, kind_base: int) -> bool:
    """Return whether PAR_EL1 reports a stage-1 fault of the FSC type kind_base."""
    return par_fst(par) & 0b111100 == kind_base and not bit(par, 9)


def kvm_at_s1(ctx: AtContext, regs: SysRegs, pan: bool, op: AtOp, va: int) -> AtEmulation:
    """Emulate AT S1E0*/S1E1*/S1E2* from virtual EL2 (__kvm_at_s1e01, __kvm_at_s1e2)."""
    fast = at_fast(ctx, regs, pan, op, va)
    if fast is not None and not fast & 1:
        return AtEmulation(fast, "fast", fast)
    if fast is not None and par_check_s1_fault(fast, 0b001100):
        return AtEmulation(fast, "fast", fast)
    if fast is not None and op.el != 2 and par_check_s1_fault(fast, 0b001000):
        return AtEmulation(fast, "fast", fast)
    return AtEmulation(slow_par(ctx, handle_at_slow(ctx, regs, pan, op, va)), "slow", fast)


# ---------------------------------------------------------------- both stages

S12_STAGE1 = {AtOp.S12E1R: AtOp.S1E1R, AtOp.S12E1W: AtOp.S1E1W,
              AtOp.S12E0R: AtOp.S1E0R, AtOp.S12E0W: AtOp.S1E0W}


def kvm_at_s12(ctx: AtContext, regs: SysRegs, pan: bool, op: AtOp, va: int) -> AtEmulation:
    """Emulate AT S12E* from virtual EL2: stage 1, then L1's stage 2 (__kvm_at_s12).

    A refused stage-2 walk leaves the stage-1 result in PAR_EL1.
    """
    s1op = S12_STAGE1[op]
    s1 = kvm_at_s1(ctx, regs, pan, s1op, va)
    h = hcr(regs)
    if (s1.par & 1 or compute_translation_regime(s1op, regs) is Regime.EL20
            or not (h.VM or h.DC) or (ctx.profile.s12_needs_e2h and not regs.e2h())):
        return s1
    ipa = bits(s1.par, 47, 12) << 12 | bits(va, 11, 0)
    out = kvm_walk_nested_s2(ctx.vm, regs, ipa)
    if isinstance(out, NestedWalkError):
        return s1
    if out.esr == 0 and not (out.writable if op.write else out.readable):
        out = replace(out, esr=0b001100 | (out.level & 3))
    return replace(s1, par=compute_par_s12(regs, s1.par, out, mte_perm=False,
                                           fwb_device_nGnRnE=ctx.profile.fwb_device_nGnRnE))


def kvm_at_undefined(vm: NestedVm, op: AtOp) -> str:
    """Return why an AT L1 executes at virtual EL2 is UNDEFINED in this VM, or "".

    The guest hypervisor's ID registers decide (vm.fs, limit_nv_id_regs): AT S1E1A needs
    ID_AA64ISAR2_EL1.ATS1A and S1E1RP/WP need ID_AA64MMFR1_EL1.PAN >= PAN2 (KVM sets their
    HFGITR_EL2 bits in kvm->arch.fgu: fine-grained UNDEFINED), AT S1E2A needs ATS1A too
    (handle_at_s1e2 injects UNDEFINED: it has no fine-grained trap bit). The
    architecture's rule (s2mmu.arch.at.at_undefined_reason at EL2) is the same set.

    Kernel: kvm_calculate_traps (sys_regs.c, the fgu bits), handle_at_s1e2.
    """
    return at_undefined_reason(op, 2, Env(vm.host, vm.fs, AT_CHOICES))


def kvm_at(ctx: AtContext, regs: SysRegs, pan: bool, op: AtOp, va: int) -> AtEmulation:
    """Emulate any AT instruction L1 executes at virtual EL2 with PSTATE.PAN=pan."""
    if op.stage == 12:
        return kvm_at_s12(ctx, regs, pan, op, va)
    return kvm_at_s1(ctx, regs, pan, op, va)


# ---------------------------------------------------------------- compute_par_s12

NC, WT, WB = 0b0100, 0b1000, 0b1100


def memattr_is_device(attr: int) -> bool:
    """Return whether a PAR/MAIR attribute byte is Device (outer nibble 0)."""
    return attr >> 4 == 0


def s2_memattr_to_attr(memattr: int) -> int:
    """Return the MAIR-style byte of a stage-2 MemAttr (reserved values as Normal NC)."""
    memattr &= 0xF
    if memattr < 0b0100:
        return memattr << 2
    nib = {0b00: None, 0b01: NC, 0b10: WT, 0b11: WB}
    outer, inner = nib[memattr >> 2], nib[memattr & 3]
    if memattr == 0b0100:
        return WB << 4 | WB
    if outer is None or inner is None:
        return NC << 4 | NC
    return outer << 4 | inner


def combine_s1_s2_nibble(s1: int, s2: int) -> int:
    """Combine one cacheability nibble of stage 1 with stage 2's (combine_s1_s2_attr).

    The weaker of NC < WT < WB wins; the allocation hints come from stage 1; a transient
    stage-1 hint is kept by encoding the result as transient.
    """
    transient = 0b0001 <= s1 <= 0b0011 or 0b0101 <= s1 <= 0b0111
    if 0b0001 <= s1 <= 0b0011:
        s1 = WT | (s1 & 3)
    elif 0b0101 <= s1 <= 0b0111:
        s1 = WB | (s1 & 3)
    kinds = (s1 & 0b1100, s2 & 0b1100)
    final = NC if NC in kinds else (WT if WT in kinds else WB)
    if final == NC:
        return final
    if transient:
        final = 0 if s1 & 0b1100 == WT else NC
    return final | (s1 & 3)


def compute_sh(attr: int, desc: int) -> int:
    """Return SH for an attribute byte and descriptor: Device and NC are Outer Shareable."""
    if memattr_is_device(attr) or attr == NC << 4 | NC:
        return 0b10
    sh = bits(desc, 9, 8)
    return 0b00 if sh == 0b01 else sh


def combine_sh(s1: int, s2: int) -> int:
    """Return the stronger shareability of the two stages."""
    if 0b10 in (s1, s2):
        return 0b10
    return 0b11 if 0b11 in (s1, s2) else 0b00


def compute_par_s12(regs: SysRegs, s1_par: int, tr: KvmS2Trans, mte_perm: bool,
                    fwb_device_nGnRnE: bool = False) -> int:
    """Return PAR_EL1 for both stages from the stage-1 PAR and L1's stage-2 result.

    Kernel: at.c compute_par_s12 (an FWB arm and a combining arm, then HCR_EL2.CD
    makes Normal memory NC). mte_perm: FEAT_MTE_PERM in
    the VM (MemAttr[3] kept with FWB); the model's feature sets never have it. A
    successful result carries no NS and no bit 11, as in the kernel.
    """
    if tr.esr:
        return (1 << 11) | 1 | (1 << 9) | ((tr.esr & 0x3F) << 1)
    s1_attr = bits(s1_par, 63, 56)
    s2_memattr = bits(tr.desc, 5, 2)
    h = hcr(regs)
    if h.FWB:
        final = fwb_attr(s1_attr, s2_memattr if mte_perm else s2_memattr & 0b0111)
        if fwb_device_nGnRnE and not s2_memattr & 0b0100:
            final = 0x00                     # AtProfile.fwb_device_nGnRnE (6.12)
    else:
        s2_attr = s2_memattr_to_attr(s2_memattr)
        if memattr_is_device(s1_attr) or memattr_is_device(s2_attr):
            final = min(s1_attr, s2_attr)
        else:
            final = (combine_s1_s2_nibble(s1_attr & 0xF, s2_attr & 0xF)
                     | combine_s1_s2_nibble(s1_attr >> 4, s2_attr >> 4) << 4)
    if h.CD and not memattr_is_device(final):
        final = NC << 4 | NC
    sh = combine_sh(bits(s1_par, 8, 7), compute_sh(final, tr.desc))
    return final << 56 | (tr.output & ((1 << 48) - 1) & ~0xFFF) | sh << 7


def fwb_attr(s1_attr: int, s2_memattr: int) -> int:
    """Return the combined attribute byte with HCR_EL2.FWB (compute_par_s12's FWB arm)."""
    if s2_memattr == 0b0101:
        return s1_attr if memattr_is_device(s1_attr) else NC << 4 | NC
    if s2_memattr in (0b0110, 0b1110):
        return 0xFF
    if s2_memattr in (0b0111, 0b1111, 0b0100, 0b1100, 0b1101):
        return s1_attr
    return min(s2_memattr_to_attr(s2_memattr), s1_attr)
