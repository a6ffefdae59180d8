"""Real accesses as instructions execute them: a load, a store, an instruction fetch.

An AT case (shared/formats/at-case.md) may hold, beside AT instructions, the accesses a
program makes: `LDR X1, [X2]`, `STR X4, [X2]` and `BR X2` (the fetch at the branch
target). They translate through the one engine (full_translate, with the access of
ASL CreateAccDescGPR / CreateAccDescIFetch); the outcome is the value read, the store
done, or the abort taken (ASL AArch64.Abort: the EL, ESR_ELx, FAR_ELx, HPFAR_EL2), and
the descriptor updates the walk made (access flag, and the dirty state a store sets
through DBM).

ASL: AArch64.FaultSyndrome (the instruction syndrome ISS[24:14] is reported for a
stage-2 fault that is not on a stage-1 walk: `IsSecondStage(fault) && !fault.s2fs1walk`),
LSInstructionSyndrome (ISV, SAS, SSE, SRT, SF, AR), AArch64.Abort, AArch64.DataAbort,
AArch64.InstructionAbort.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

from s2mmu.arch.access import AccessDescriptor, acc_gpr, acc_ifetch
from s2mmu.arch.bits import bit
from s2mmu.arch.errors import InputError
from s2mmu.arch.faults import FaultRecord, esr_undefined
from s2mmu.arch.inputs import shorten, shorten_hex
from s2mmu.arch.params import get_s1_ttw_params
from s2mmu.arch.reprs import hex_repr
from s2mmu.arch.state import Regime, SysRegs, regime_for
from s2mmu.arch.syndrome import taken_abort
from s2mmu.arch.translate import AddressDescriptor, Env, addr_top, full_translate


class AccessOp(Enum):
    """The access instructions: (kind, transfer register Rt, access size in bytes).

    LDR: `LDR X1, [X2]`; STR: `STR X4, [X2]`; FETCH: `BR X2`, then the fetch at X2.
    """

    LDR = ("load", 1, 8)
    STR = ("store", 4, 8)
    FETCH = ("fetch", None, 4)

    @property
    def kind(self) -> str:
        kind: str = self.value[0]
        return kind

    @property
    def rt(self) -> int | None:
        rt: int | None = self.value[1]
        return rt

    @property
    def size(self) -> int:
        size: int = self.value[2]
        return size

    @property
    def write(self) -> bool:
        return self is AccessOp.STR

    @classmethod
    def parse(cls, name: str) -> AccessOp:
        """Return the access op called name (case-insensitive)."""
        try:
            return cls[name.strip().upper()]
        except KeyError:
            raise InputError(f"unknown access operation {shorten(name)} (known: "
                             f"{', '.join(op.name for op in cls)})") from None


@hex_repr()
@dataclass(frozen=True)
class Loaded:
    """The load completed: the 64-bit value it read."""

    value: int
    result: AddressDescriptor


@hex_repr()
@dataclass(frozen=True)
class Stored:
    """The store completed: the value it wrote."""

    value: int
    result: AddressDescriptor


@hex_repr()
@dataclass(frozen=True)
class Fetched:
    """The fetch completed and found a non-zero instruction word (executed, not modelled)."""

    insn: int
    result: AddressDescriptor


@hex_repr(decimal=("taken_to",))
@dataclass(frozen=True)
class AccessException:
    """The access took an exception: an abort, or UDF #0 fetched from memory reading zero."""

    taken_to: int
    esr: int
    far: int | None = None
    hpfar: int | None = None
    fault: FaultRecord | None = None


AccessResult = Loaded | Stored | Fetched | AccessException


def check_access(op: AccessOp, va: int, el: int) -> None:
    """Refuse what the model does not execute: an EL above 2, an unaligned address."""
    if el not in (0, 1, 2):
        raise InputError(f"{op.name} at EL{shorten(el)}: accesses execute at EL0, EL1 or EL2")
    if not 0 <= va < 1 << 64:
        raise InputError(f"{op.name} va={shorten_hex(va)}: a virtual address is 64 bits")
    if va % op.size:
        raise InputError(f"{op.name} va={va:#x}: must be {op.size}-byte aligned (the model "
                         "executes single aligned accesses; alignment faults are not modelled)")


def access_descriptor(op: AccessOp, el: int, pan: bool) -> AccessDescriptor:
    """Return the access op makes from el (ASL CreateAccDescGPR / CreateAccDescIFetch)."""
    if op is AccessOp.FETCH:
        return acc_ifetch(el)
    return acc_gpr(el, op.write, pan=pan and el != 0)


def execute_access(op: AccessOp, va: int, el: int, pan: bool, value: int, regs: SysRegs,
                   env: Env) -> AccessResult:
    """Execute op on va from el with PSTATE.PAN=pan (value: what STR writes)."""
    check_access(op, va, el)
    regime = regime_for(el, regs)
    if op is AccessOp.FETCH:
        va = branch_addr(va, el, regs, regime, env)
    got = full_translate(regs, regime, va, access_descriptor(op, el, pan), env)
    if isinstance(got, FaultRecord):
        return abort_of(op, got, va, el, regs)
    order: Literal["big", "little"] = "big" if data_big_endian(regs, regime, el) else "little"
    if op is AccessOp.LDR:
        return Loaded(int.from_bytes(env.mem.read_bytes(got.paddress, op.size), order), got)
    if op is AccessOp.STR:
        env.mem.write_bytes(got.paddress, (value & (1 << 64) - 1).to_bytes(8, order))
        return Stored(value, got)
    insn = int.from_bytes(env.mem.read_bytes(got.paddress, 4), "little")
    if insn == 0:   # UDF #0: an Undefined Instruction exception at the fetching EL
        return AccessException(undefined_target(el, regs), esr_undefined())
    return Fetched(insn, got)


def branch_addr(target: int, el: int, regs: SysRegs, regime: Regime, env: Env) -> int:
    """Return the PC a branch to target sets (ASL AArch64.BranchAddr): a tag the fetch's
    top-byte-ignore removes is replaced by the extension of bit 55 (sign-extension at
    EL0/EL1 and in the EL2&0 host, zero-extension at EL2)."""
    p = get_s1_ttw_params(regs, regime, target, env.fs, env.choices)
    msbit = addr_top(p, ifetch=True)
    if msbit == 63:
        return target
    low = target & (1 << msbit + 1) - 1
    if (el in (0, 1) or regime is Regime.EL20) and bit(target, msbit):
        return low | ((1 << 64) - (1 << msbit + 1))
    return low


def abort_of(op: AccessOp, fault: FaultRecord, va: int, el: int,
             regs: SysRegs) -> AccessException:
    """Return the abort a faulting access takes, with its instruction syndrome."""
    abort = taken_abort(fault, va, el, regs.tge())
    esr = abort.esr | instruction_syndrome(op, fault)
    return AccessException(abort.taken_to, esr, abort.far, abort.hpfar, fault)


def instruction_syndrome(op: AccessOp, fault: FaultRecord) -> int:
    """Return ISS[24:14] for a data abort (ASL AArch64.FaultSyndrome, LSInstructionSyndrome).

    Only a stage-2 fault that is not on a stage-1 walk reports it: ISV=1, SAS=0b11
    (doubleword), SSE=0, SRT=Rt, SF=1 (64-bit register), AR=0.
    """
    if op.rt is None or not fault.secondstage or fault.s2fs1walk:
        return 0
    return 1 << 24 | 0b11 << 22 | op.rt << 16 | 1 << 15


def undefined_target(el: int, regs: SysRegs) -> int:
    """Return where an UNDEFINED instruction at el is taken (EL0 -> EL1, or EL2 with TGE)."""
    if el == 0:
        return 2 if regs.tge() else 1
    return el


def data_big_endian(regs: SysRegs, regime: Regime, el: int) -> bool:
    """Return whether data accesses from el are big-endian: SCTLR_ELx.E0E for EL0,
    SCTLR_ELx.EE otherwise, of the regime's SCTLR (ASL BigEndian)."""
    sctlr = regs.SCTLR_EL1 if regime is Regime.EL10 else regs.SCTLR_EL2
    return bool(bit(sctlr, 24 if el == 0 else 25))
