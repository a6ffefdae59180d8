"""Address translation instructions: AT S1E0R ... S12E1W, and the PAR_EL1 they produce.

ASL: AArch64.AT (the AT S1Exx/S12Exx instruction bodies), AArch64.EncodePAR,
AArch64.PARFault. A stage-2 fault on the stage-1 walk of an AT executed at EL1 is not
reported in PAR_EL1: it is taken to EL2 as a Data Abort (ESR CM=1, WnR=1, S1PTW=1).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from s2mmu.arch.access import AccessDescriptor, acc_at
from s2mmu.arch.attrs import par_attr, par_sh
from s2mmu.arch.bits import bits
from s2mmu.arch.errors import InputError
from s2mmu.arch.faults import (
    FaultRecord,
    esr_abort,
    esr_undefined,
    hpfar,
    par_fault,
    reports_hpfar,
)
from s2mmu.arch.inputs import shorten, shorten_hex
from s2mmu.arch.reprs import hex_repr
from s2mmu.arch.state import Regime, SysRegs
from s2mmu.arch.translate import AddressDescriptor, Env, full_translate
from s2mmu.arch.walk import WalkStep


class AtOp(Enum):
    """The AT operations: (stage, EL whose permissions apply, write, PAN-aware, any).

    "any" is FEAT_ATS1A's AT S1E1A/S1E2A: a translation with no permission check.
    """

    S1E0R = (1, 0, False, False, False)
    S1E0W = (1, 0, True, False, False)
    S1E1R = (1, 1, False, False, False)
    S1E1W = (1, 1, True, False, False)
    S1E1RP = (1, 1, False, True, False)
    S1E1WP = (1, 1, True, True, False)
    S1E1A = (1, 1, False, False, True)
    S1E2R = (1, 2, False, False, False)
    S1E2W = (1, 2, True, False, False)
    S1E2A = (1, 2, False, False, True)
    S12E0R = (12, 0, False, False, False)
    S12E0W = (12, 0, True, False, False)
    S12E1R = (12, 1, False, False, False)
    S12E1W = (12, 1, True, False, False)

    @property
    def stage(self) -> int:
        return self.value[0]

    @property
    def el(self) -> int:
        return self.value[1]

    @property
    def write(self) -> bool:
        return self.value[2]

    @property
    def pan_aware(self) -> bool:
        return self.value[3]

    @property
    def any_access(self) -> bool:
        return self.value[4]

    @classmethod
    def parse(cls, name: str) -> AtOp:
        """Return the op called name (case-insensitive, 'AT ' prefix allowed)."""
        key = name.strip().upper().removeprefix("AT ").strip()
        try:
            return cls[key]
        except KeyError:
            raise InputError(f"unknown AT operation {shorten(name)} (known: "
                             f"{', '.join(op.name for op in cls)})") from None


@hex_repr()
@dataclass(frozen=True)
class ParResult:
    """The AT instruction completed: PAR_EL1 holds the result (or the fault)."""

    par: int
    result: AddressDescriptor | FaultRecord


@hex_repr(decimal=("taken_to",))
@dataclass(frozen=True)
class AtException:
    """The AT instruction itself took an exception."""

    taken_to: int
    esr: int
    far: int | None = None
    hpfar: int | None = None
    fault: FaultRecord | None = None
    reason: str = ""


AtResult = ParResult | AtException


def at_undefined_reason(op: AtOp, el: int, env: Env) -> str:
    """Return why op is UNDEFINED when executed at el, or "".

    AT S1E2* and S12E* need EL2 or EL3; S1E1RP/WP need FEAT_PAN2; S1E1A/S1E2A need
    FEAT_ATS1A. el is where the instruction executes: EL1, EL2 or EL3 (see check_at_el).
    """
    check_at_el(el)
    if el == 1 and (op.stage == 12 or op.el == 2):
        return f"AT {op.name} is UNDEFINED at EL1"
    if op.pan_aware and not env.fs.has("FEAT_PAN2"):
        return f"AT {op.name} needs FEAT_PAN2"
    if op.any_access and not env.fs.has("FEAT_ATS1A"):
        return f"AT {op.name} needs FEAT_ATS1A"
    return ""


def at_regime(op: AtOp, regs: SysRegs) -> tuple[Regime, int]:
    """Return the regime and the permission-checking EL of op (ASL AArch64.AT).

    With HCR_EL2.{E2H,TGE}={1,1} (ELIsInHost(EL0)), AT S1E1*, S1E0* and also S12E1*,
    S12E0* translate in the EL2&0 regime, stage 1 only (the AT S12E0R/S12E1R
    instruction pseudocode calls AArch64.AT with TranslationStage_1 there; AArch64.AT
    checks an EL1 access as EL2). AT S1E2* translate in EL2&0 when E2H=1.
    """
    host = regs.e2h() and regs.tge()
    if op.el == 2:
        return (Regime.EL20 if regs.e2h() else Regime.EL2), 2
    if host:
        return Regime.EL20, (2 if op.el == 1 else 0)
    return Regime.EL10, op.el


def check_at_el(el: int) -> None:
    """Refuse an EL an AT instruction cannot execute at and be modelled from.

    At EL0 every AT encoding is UNDEFINED and the exception is taken to EL1 (or EL2 with
    HCR_EL2.TGE=1), never to EL0: that is the executing EL1/EL2 case, not an EL0 one.
    """
    if el not in (1, 2, 3):
        raise InputError(f"el={shorten(el)}: AT instructions are executed at EL1, EL2 or EL3 "
                         "(at EL0 they are UNDEFINED and taken to EL1 or EL2)")


def execute_at(op: AtOp, va: int, el: int, pan: bool, regs: SysRegs, env: Env,
               trace: list[WalkStep] | None = None) -> AtResult:
    """Execute AT op on va from el with PSTATE.PAN=pan; return PAR_EL1 or the exception.

    el must be 1, 2 or 3 and va a 64-bit address (InputError otherwise).
    """
    if not 0 <= va < 1 << 64:
        raise InputError(f"va={shorten_hex(va)}: an AT input address is 64 bits (0..2^64-1)")
    undef = at_undefined_reason(op, el, env)
    if undef:
        return AtException(el, esr_undefined(), reason=undef)
    regime, perm_el = at_regime(op, regs)
    access = acc_at(perm_el, op.write, pan=op.pan_aware and pan, any_access=op.any_access)
    got = full_translate(regs, regime, va, access, env, stage1_only=op.stage == 1, trace=trace)
    return at_outcome(got, va, el, env)


def at_outcome(got: AddressDescriptor | FaultRecord, va: int, el: int, env: Env) -> AtResult:
    """Return what an AT executed at el does with its translation: PAR_EL1, or an exception.

    A stage-2 fault on an AT executed at EL1 is taken to EL2; everything else is PAR_EL1.
    """
    if isinstance(got, FaultRecord) and el == 1 and got.secondstage:
        return stage2_exception(got, va)
    return ParResult(encode_par(got, env), got)


def stage2_exception(fault: FaultRecord, va: int) -> AtException:
    """Return the Data Abort to EL2 for a stage-2 fault during an AT executed at EL1."""
    ipa = fault.ipaddress
    return AtException(2, esr_abort(fault, same_el=False), far=va,
                       hpfar=hpfar(ipa) if ipa is not None and reports_hpfar(fault) else None,
                       fault=fault, reason=fault.reason)


def encode_par(result: AddressDescriptor | FaultRecord, env: Env) -> int:
    """Return PAR_EL1 for a translation result (ASL AArch64.EncodePAR / PARFault)."""
    if isinstance(result, FaultRecord):
        return par_fault(result, env.choices.par_res1_bit11)
    attrs = result.par_attrs()
    par = bits(result.paddress, 51, 12) << 12
    par |= par_attr(attrs) << 56
    par |= par_sh(attrs) << 7
    par |= int(env.choices.par_ns_nonsecure) << 9
    par |= int(env.choices.par_res1_bit11) << 11
    return par


def access_for(op: AtOp, pan: bool) -> AccessDescriptor:
    """Return the access descriptor op uses (for callers that translate directly)."""
    return acc_at(op.el, op.write, pan=op.pan_aware and pan, any_access=op.any_access)
