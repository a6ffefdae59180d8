"""Faults as values, and their encodings in ESR, FAR, HPFAR_EL2 and PAR_EL1.

Translation returns ``AddressDescriptor | FaultRecord``. A FaultRecord carries the ASL
field names (statuscode, level, secondstage, s2fs1walk, write). Encoding is pure.

ASL: FaultRecord, NoFault, AArch64.TranslationFault and friends, EncodeLDFSC,
AArch64.PARFaultStatus / EncodePARFault, AArch64.FaultSyndrome.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

from s2mmu.arch.access import AccessDescriptor
from s2mmu.arch.bits import bits
from s2mmu.arch.errors import InputError
from s2mmu.arch.inputs import shorten_hex
from s2mmu.arch.reprs import hex_repr


class Fault(Enum):
    """ASL Fault enumeration (the kinds a translation can report)."""

    TRANSLATION = "Translation"
    ADDRESS_SIZE = "AddressSize"
    ACCESS_FLAG = "AccessFlag"
    PERMISSION = "Permission"
    SYNC_EXTERNAL_ON_WALK = "SyncExternalOnWalk"
    SYNC_EXTERNAL = "SyncExternal"
    SYNC_PARITY_ON_WALK = "SyncParityOnWalk"
    SYNC_PARITY = "SyncParity"
    ALIGNMENT = "Alignment"
    TLB_CONFLICT = "TLBConflict"


@hex_repr(decimal=("level",))
@dataclass(frozen=True)
class FaultRecord:
    """ASL FaultRecord: what went wrong, where, and at which stage.

    vaddress is the input VA of the stage-1 translation (None for a stage-2-only
    lookup). ipaddress is the IPA that stage 2 was translating when the fault is a
    stage-2 fault. reason is a human explanation (not architectural).
    """

    statuscode: Fault
    level: int
    access: AccessDescriptor
    secondstage: bool = False
    s2fs1walk: bool = False
    vaddress: int | None = None
    ipaddress: int | None = None
    reason: str = ""
    atomic_write: bool = False
    """A Permission fault of an atomic read-modify-write because its write is not
    permitted: reported as a write (ESR_ELx.WnR=1)."""

    @property
    def write(self) -> bool:
        """Return whether the fault reports a write (ASL FaultRecord.write).

        ASL NoFaultForAccess sets it to `!accdesc.read && accdesc.write`, so an atomic
        read-modify-write (which reads and writes) reports a read, unless its Permission
        fault is on the write (atomic_write).
        """
        return access_reports_write(self.access) or self.atomic_write


def access_reports_write(access: AccessDescriptor) -> bool:
    """Return the write field a fault of this access starts with (ASL NoFaultForAccess:
    `!accdesc.read && accdesc.write`: stores yes, loads and atomics no)."""
    return access.write and not access.atomicop


def make_fault(kind: Fault, level: int, access: AccessDescriptor, reason: str,
               vaddress: int | None = None) -> FaultRecord:
    """Return a stage-1 fault record of kind at level."""
    return FaultRecord(kind, level, access, vaddress=vaddress, reason=reason)


def as_stage2(fault: FaultRecord, ipa: int, s1ptw: bool) -> FaultRecord:
    """Return fault as reported by stage 2 for ipa (s1ptw: on a stage-1 table walk)."""
    return replace(fault, secondstage=True, s2fs1walk=s1ptw, ipaddress=ipa)


_FSC_BASE = {
    Fault.ADDRESS_SIZE: 0b000000,
    Fault.TRANSLATION: 0b000100,
    Fault.ACCESS_FLAG: 0b001000,
    Fault.PERMISSION: 0b001100,
    Fault.SYNC_EXTERNAL_ON_WALK: 0b010100,
    Fault.SYNC_PARITY_ON_WALK: 0b011100,
}
# Level -1 (FEAT_LPA2) has its own codes: ASL EncodeLDFSC.
_FSC_LEVEL_MINUS1 = {
    Fault.ADDRESS_SIZE: 0b101001,
    Fault.TRANSLATION: 0b101011,
    Fault.SYNC_EXTERNAL_ON_WALK: 0b010011,
    Fault.SYNC_PARITY_ON_WALK: 0b011011,
}
_FSC_FIXED = {Fault.SYNC_EXTERNAL: 0b010000, Fault.SYNC_PARITY: 0b011000,
              Fault.ALIGNMENT: 0b100001, Fault.TLB_CONFLICT: 0b110000}


def fsc(fault: FaultRecord) -> int:
    """Return the 6-bit fault status code (DFSC/IFSC/PAR_EL1.FST).

    ASL: EncodeLDFSC. The table is explicit per (kind, level), level -1 included.
    """
    kind = fault.statuscode
    if kind in _FSC_FIXED:
        return _FSC_FIXED[kind]
    if fault.level == -1:
        if kind not in _FSC_LEVEL_MINUS1:
            raise ValueError(f"{kind.value} fault cannot be reported at level -1")
        return _FSC_LEVEL_MINUS1[kind]
    if not 0 <= fault.level <= 3:
        raise ValueError(f"fault level {fault.level} out of range")
    return _FSC_BASE[kind] | fault.level


_KIND_NAMES = {
    Fault.ADDRESS_SIZE: "Address size fault", Fault.TRANSLATION: "Translation fault",
    Fault.ACCESS_FLAG: "Access flag fault", Fault.PERMISSION: "Permission fault",
    Fault.SYNC_EXTERNAL_ON_WALK: "Synchronous External abort on translation table walk",
    Fault.SYNC_EXTERNAL: "Synchronous External abort", Fault.ALIGNMENT: "Alignment fault",
    Fault.SYNC_PARITY_ON_WALK:
        "Synchronous parity or ECC error on memory access on translation table walk",
    Fault.SYNC_PARITY: "Synchronous parity or ECC error on memory access",
    Fault.TLB_CONFLICT: "TLB conflict abort",
}
FSC_NAMES = {
    **{_FSC_BASE[k] | lvl: f"{_KIND_NAMES[k]}, level {lvl}" for k in _FSC_BASE for lvl in range(4)},
    **{v: f"{_KIND_NAMES[k]}, level -1" for k, v in _FSC_LEVEL_MINUS1.items()},
    **{v: _KIND_NAMES[k] for k, v in _FSC_FIXED.items()},
}


_FSC_DECODE: dict[int, tuple[Fault, int | None]] = {
    **{_FSC_BASE[k] | lvl: (k, lvl) for k in _FSC_BASE for lvl in range(4)},
    **{v: (k, -1) for k, v in _FSC_LEVEL_MINUS1.items()},
    **{v: (k, None) for k, v in _FSC_FIXED.items()},
}


def decode_fsc(code: int) -> tuple[Fault, int | None] | None:
    """Return the (kind, level) a 6-bit FSC encodes, level None for unlevelled codes.

    The inverse of fsc(), from the same table (ASL EncodeLDFSC); None for a code that
    table does not hold (unallocated, or a kind s2mmu does not model, such as GPC faults).
    The parity/ECC codes 0x18, 0x1B-0x1F exist only without FEAT_RAS.
    """
    return _FSC_DECODE.get(code)


def par_fault(fault: FaultRecord, res1_bit11: bool = True) -> int:
    """Return PAR_EL1 (F=1) for a fault reported by an AT instruction.

    ASL: AArch64.PARFault (FST, PTW = s2fs1walk, S = secondstage, bit 11 RES1).
    """
    par = 1 | (fsc(fault) << 1)
    par |= int(fault.s2fs1walk) << 8
    par |= int(fault.secondstage) << 9
    par |= int(res1_bit11) << 11
    return par


EC_IABT_LOW, EC_IABT_CUR, EC_DABT_LOW, EC_DABT_CUR = 0x20, 0x21, 0x24, 0x25
EC_UNKNOWN = 0x00


def esr_abort(fault: FaultRecord, same_el: bool, il: bool = True) -> int:
    """Return the ESR_ELx for a synchronous Data or Instruction Abort caused by fault.

    ASL: AArch64.FaultSyndrome. No instruction syndrome is reported (ISV=0): the model
    does not know the faulting instruction. For cache maintenance and AT instructions
    CM=1 and WnR=1 (Arm ARM, ESR_ELx.ISS encoding for a Data Abort, fields CM and WnR).
    A stage-2 fault on a stage-1 table walk is reported for the access being translated:
    an Instruction Abort for a fetch, and WnR is that access's, not the walk's (ASL
    AArch64.FaultSyndrome: fault.write is not changed by the walk).
    """
    acc = fault.access.original()
    ifetch = acc.is_ifetch()
    ec = (EC_IABT_CUR if same_el else EC_IABT_LOW) if ifetch else (
        EC_DABT_CUR if same_el else EC_DABT_LOW)
    iss = fsc(fault)
    iss |= int(fault.s2fs1walk) << 7
    if not ifetch:
        cm = acc.is_cache_maintenance_or_at()
        iss |= int(access_reports_write(acc) or fault.atomic_write or cm) << 6
        iss |= int(cm) << 8
    return (ec << 26) | (int(il) << 25) | iss


def esr_undefined(il: bool = True) -> int:
    """Return the ESR_ELx of an UNDEFINED instruction (EC 0, Unknown reason)."""
    return (EC_UNKNOWN << 26) | (int(il) << 25)


def hpfar(ipa: int) -> int:
    """Return HPFAR_EL2 for a stage-2 fault on ipa: FIPA holds IPA[51:12] (NS=0).

    ipa is at most 52 bits wide (InputError otherwise: FIPA would drop its top).
    """
    if not 0 <= ipa < 1 << 52:
        raise InputError(f"ipa={shorten_hex(ipa)}: HPFAR_EL2.FIPA holds a 52-bit IPA at most")
    return bits(ipa, 55, 12) << 4


def reports_hpfar(fault: FaultRecord) -> bool:
    """Return whether HPFAR_EL2 holds the faulting IPA for a fault taken to EL2.

    ASL: IPAValid. For a stage-2 fault on a stage-1 table walk: Translation, Access
    flag, Address size and Permission faults. For other stage-2 faults: Translation,
    Access flag and Address size only (HPFAR_EL2 is UNKNOWN for a stage-2 Permission
    fault on the access itself). Never for stage-1 faults.
    """
    if not fault.secondstage:
        return False
    kinds = [Fault.TRANSLATION, Fault.ACCESS_FLAG, Fault.ADDRESS_SIZE]
    if fault.s2fs1walk:
        kinds.append(Fault.PERMISSION)
    return fault.statuscode in kinds
