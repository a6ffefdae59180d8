"""Real accesses as instructions execute them: loads, stores, exclusives, atomics, fetches.

An AT case (shared/formats/at-case.md) may hold, beside AT instructions, the accesses a
program makes: `LDR X1, [X2]`, `STR X4, [X2]`, `BR X2` (the fetch at the branch
target), the exclusives `LDXR X1, [X2]`, `LDAXR X1, [X2]` and the pair
`LDXR X1, [X2]; STXR W5, X4, [X2]`, and the FEAT_LSE atomics `LDADD X4, X1, [X2]`,
`SWP X4, X1, [X2]` and `CAS X1, X4, [X2]` (X1 = 0). They translate through the one
engine (full_translate, with the access of ASL CreateAccDescGPR, CreateAccDescExLDST,
CreateAccDescAtomicOp, CreateAccDescIFetch); the outcome is the value read, the store
done, or the abort taken (ASL AArch64.Abort: the EL, ESR_ELx, FAR_ELx, HPFAR_EL2), and
the descriptor updates the walk made (access flag, and the dirty state a store or an
atomic sets through DBM).

Alignment (ASL AArch64.UnalignedAccessFaults, before translation): an exclusive or atomic
access must be aligned to its size (no FEAT_LSE2), and with SCTLR_ELx.A=1 every data
access must; either way the Alignment fault (FSC 0b100001) has priority over every
translation fault. An unaligned data access to Device memory faults after the walk
has found the memory type (AArch64.S1HasAlignmentFault / S2HasAlignmentFault in
full_translate), before the permission check. An unaligned access that is permitted
reads or writes its bytes through the translation of each page they lie in
(access.access_pieces).

ASL: AArch64.FaultSyndrome (the instruction syndrome ISS[24:14] is reported for a
stage-2 fault that is not on a stage-1 walk: `IsSecondStage(fault) && !fault.s2fs1walk`),
LSInstructionSyndrome (ISV, SAS, SSE, SRT, SF, AR), AArch64.Abort, AArch64.DataAbort,
AArch64.InstructionAbort.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

from s2mmu.arch.access import (
    AccessDescriptor,
    acc_atomicop,
    acc_exldst,
    acc_gpr,
    acc_ifetch,
    access_pieces,
)
from s2mmu.arch.bits import bit
from s2mmu.arch.errors import InputError
from s2mmu.arch.faults import Fault, FaultRecord, esr_undefined
from s2mmu.arch.inputs import shorten, shorten_hex
from s2mmu.arch.memory import PAGE_SIZE
from s2mmu.arch.params import get_s1_ttw_params
from s2mmu.arch.reprs import hex_repr
from s2mmu.arch.state import Regime, SysRegs, regime_for
from s2mmu.arch.syndrome import taken_abort
from s2mmu.arch.translate import AddressDescriptor, Env, addr_top, full_translate


class AccessOp(Enum):
    """The access instructions: (kind, transfer register Rt, access size in bytes).

    LDR: `LDR X1, [X2]`; STR: `STR X4, [X2]`; FETCH: `BR X2`, then the fetch at X2;
    LDXR / LDAXR: `LDXR X1, [X2]` / `LDAXR X1, [X2]`; STXR: `LDXR X1, [X2]` then
    `STXR W5, X4, [X2]`; LDADD: `LDADD X4, X1, [X2]`; SWP: `SWP X4, X1, [X2]`;
    CAS: `CAS X1, X4, [X2]` with X1 = 0 (X1: the value read).
    """

    LDR = ("load", 1, 8)
    STR = ("store", 4, 8)
    FETCH = ("fetch", None, 4)
    LDXR = ("exclusive load", 1, 8)
    LDAXR = ("exclusive load-acquire", 1, 8)
    STXR = ("exclusive store", 4, 8)
    LDADD = ("atomic add", 1, 8)
    SWP = ("atomic swap", 1, 8)
    CAS = ("atomic compare and swap", 1, 8)

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
        return self in (AccessOp.STR, AccessOp.STXR) or self.atomic

    @property
    def exclusive(self) -> bool:
        """Return whether the op is a Load/Store Exclusive."""
        return self in (AccessOp.LDXR, AccessOp.LDAXR, AccessOp.STXR)

    @property
    def atomic(self) -> bool:
        """Return whether the op is a FEAT_LSE atomic read-modify-write."""
        return self in (AccessOp.LDADD, AccessOp.SWP, AccessOp.CAS)

    @property
    def reports_iss(self) -> bool:
        """Return whether a stage-2 data abort of the op can report the instruction
        syndrome (ISV=1): single-register loads and stores, not exclusives or atomics
        (ESR_ELx.ISV)."""
        return self in (AccessOp.LDR, AccessOp.STR)

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
    """The store completed: the value it wrote (status: a Store-Exclusive's W5, 0 when
    the exclusive monitors passed and the store was done)."""

    value: int
    result: AddressDescriptor
    status: int | None = None


@hex_repr()
@dataclass(frozen=True)
class Atomic:
    """The atomic read-modify-write completed: the value it read (into X1)."""

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


AccessResult = Loaded | Stored | Atomic | Fetched | AccessException

U64 = (1 << 64) - 1


def check_access(op: AccessOp, va: int, el: int) -> None:
    """Refuse what the model does not execute: an EL above 2, an unaligned fetch."""
    if el not in (0, 1, 2):
        raise InputError(f"{op.name} at EL{shorten(el)}: accesses execute at EL0, EL1 or EL2")
    if not 0 <= va < 1 << 64:
        raise InputError(f"{op.name} va={shorten_hex(va)}: a virtual address is 64 bits")
    if op is AccessOp.FETCH and va % op.size:
        raise InputError(f"FETCH va={va:#x}: must be 4-byte aligned (a branch to an "
                         "unaligned target takes a PC alignment fault, which the model "
                         "does not model)")


def access_descriptor(op: AccessOp, el: int, pan: bool, aligned: bool = True
                      ) -> AccessDescriptor:
    """Return the access op makes from el (ASL CreateAccDescGPR, CreateAccDescExLDST,
    CreateAccDescAtomicOp, CreateAccDescIFetch). A STXR's is its store's."""
    pan = pan and el != 0
    if op is AccessOp.FETCH:
        return acc_ifetch(el)
    if op.exclusive:
        return acc_exldst(el, op.write, pan=pan)
    if op.atomic:
        return acc_atomicop(el, pan=pan)
    return acc_gpr(el, op.write, pan=pan, aligned=aligned)


def alignment_enforced(regs: SysRegs, regime: Regime) -> bool:
    """Return SCTLR_ELx.A of the regime (ASL AlignmentEnforced)."""
    sctlr = regs.SCTLR_EL1 if regime is Regime.EL10 else regs.SCTLR_EL2
    return bool(bit(sctlr, 1))


def alignment_fault(op: AccessOp, va: int, el: int, pan: bool, regs: SysRegs,
                    regime: Regime) -> FaultRecord | None:
    """Return the Alignment fault an access takes before translation, or None.

    ASL AArch64.UnalignedAccessFaults (called by MemAtomic and AArch64.SetExclusiveMonitors
    before AArch64.TranslateAddress): an unaligned exclusive or atomic access always
    faults (without FEAT_LSE2), any unaligned data access does with SCTLR_ELx.A=1
    (AlignmentEnforced). The fault is at the access's address, before any translation
    fault.
    """
    if op is AccessOp.FETCH or not va % op.size:
        return None
    if op.exclusive or op.atomic:
        why = f"{op.name} must be {op.size}-byte aligned"
    elif alignment_enforced(regs, regime):
        why = ("SCTLR_EL1.A=1" if regime is Regime.EL10 else "SCTLR_EL2.A=1") + \
            " enforces alignment"
    else:
        return None
    return FaultRecord(Fault.ALIGNMENT, 0, access_descriptor(op, el, pan, aligned=False),
                       vaddress=va, reason=f"unaligned va {va:#x}: {why}")


def execute_access(op: AccessOp, va: int, el: int, pan: bool, value: int, regs: SysRegs,
                   env: Env) -> AccessResult:
    """Execute op on va from el with PSTATE.PAN=pan (value: what X4 holds: what STR and
    STXR write, what LDADD adds, what SWP and CAS write)."""
    check_access(op, va, el)
    regime = regime_for(el, regs)
    if op is AccessOp.FETCH:
        return execute_fetch(va, el, regs, regime, env)
    first_insn = AccessOp.LDXR if op is AccessOp.STXR else op
    misaligned = alignment_fault(first_insn, va, el, pan, regs, regime)
    if misaligned is not None:
        return abort_of(op, misaligned, va, el, regs)
    order: Literal["big", "little"] = "big" if data_big_endian(regs, regime, el) else "little"
    value &= U64
    if op is AccessOp.STXR:   # the LDXR that arms the monitor, then the store
        loaded = data_access(AccessOp.LDXR, va, el, pan, regs, regime, env)
        if isinstance(loaded, FaultRecord):
            return abort_of(AccessOp.LDXR, loaded, va, el, regs)
    done = data_access(op, va, el, pan, regs, regime, env)
    if isinstance(done, FaultRecord):
        return abort_of(op, done, va, el, regs)
    first, pieces = done
    old = int.from_bytes(b"".join(env.mem.read_bytes(pa, n) for pa, n in pieces), order)
    new = value_written(op, old, value)
    if new is not None:
        data = new.to_bytes(op.size, order)
        at = 0
        for pa, n in pieces:
            env.mem.write_bytes(pa, data[at:at + n])
            at += n
    if op is AccessOp.STR:
        return Stored(value, first)
    if op is AccessOp.STXR:
        return Stored(value, first, status=0)
    if op.atomic:
        return Atomic(old, first)
    return Loaded(old, first)


def value_written(op: AccessOp, old: int, value: int) -> int | None:
    """Return what op writes over old with X4 = value, or None if it writes nothing.

    Stores write X4; LDADD old + X4 (modulo 2^64); SWP X4; CAS X4 only when old equals
    X1, which is 0 (ASL MemAtomic, MemAtomicCompareAndSwap). Loads write nothing.
    """
    if op in (AccessOp.STR, AccessOp.STXR, AccessOp.SWP):
        return value
    if op is AccessOp.LDADD:
        return (old + value) & U64
    if op is AccessOp.CAS:
        return value if old == 0 else None
    return None


def execute_fetch(target: int, el: int, regs: SysRegs, regime: Regime, env: Env
                  ) -> AccessResult:
    """Branch to target from el and fetch the instruction there."""
    va = branch_addr(target, el, regs, regime, env)
    got = full_translate(regs, regime, va, acc_ifetch(el), env)
    if isinstance(got, FaultRecord):
        return abort_of(AccessOp.FETCH, got, va, el, regs)
    insn = int.from_bytes(env.mem.read_bytes(got.paddress, 4), "little")
    if insn == 0:   # UDF #0: an Undefined Instruction exception at the fetching EL
        return AccessException(undefined_target(el, regs), esr_undefined())
    return Fetched(insn, got)


Pieces = tuple[AddressDescriptor, list[tuple[int, int]]]
"""A translated data access: the first byte's translation, and (PA, length) per piece."""


def data_access(op: AccessOp, va: int, el: int, pan: bool, regs: SysRegs, regime: Regime,
                env: Env) -> Pieces | FaultRecord:
    """Translate each page-sized piece of a data access (ASL Mem: the bytes of an
    unaligned access translate one by one); return the translations, or the fault of
    the first piece that faults (reported at that piece's address)."""
    access = access_descriptor(op, el, pan, aligned=not va % op.size)
    first: AddressDescriptor | None = None
    out = []
    for addr, n in access_pieces(va, op.size, PAGE_SIZE):
        got = full_translate(regs, regime, addr, access, env)
        if isinstance(got, FaultRecord):
            return got
        first = first or got
        out.append((got.paddress, n))
    assert first is not None
    return first, out


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
    (doubleword), SSE=0, SRT=Rt, SF=1 (64-bit register), AR=0. Exclusives and atomics
    report ISV=0.
    """
    if op.rt is None or not op.reports_iss or not fault.secondstage or fault.s2fs1walk:
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
