"""What kind of access asks for a translation (ASL AccessDescriptor, reduced).

ASL: AccessDescriptor, CreateAccDescGPR, CreateAccDescIFetch, CreateAccDescAT,
CreateAccDescTTEUpdate.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from s2mmu.arch.errors import InputError
from s2mmu.arch.inputs import shorten
from s2mmu.arch.reprs import hex_repr


class AccessType(Enum):
    """ASL AccessType: the kinds of access the model distinguishes."""

    # Members are singletons compared by identity: hash them as such, in C (Enum's
    # own __hash__ is Python code, and walk parameters are hashed on every walk).
    __hash__ = object.__hash__

    GPR = "GPR"          # an ordinary load or store
    IFETCH = "IFETCH"    # an instruction fetch
    AT = "AT"            # an address translation instruction
    DC = "DC"            # a data cache maintenance instruction
    TTW = "TTW"          # a translation table walk (stage-2 lookup of a stage-1 table)


@hex_repr(decimal=("el",))
@dataclass(frozen=True)
class AccessDescriptor:
    """The access being translated.

    el: the Exception level whose permissions apply (0 for EL0 and for AT S1E0*).
    pan: the PAN check is in force (PSTATE.PAN=1 for a load/store, or AT S1E1RP/WP
    executed with PSTATE.PAN=1).
    walk_of: for a table-walk access (TTW), the access being translated (ASL keeps the
    original access in the fault record, so its syndrome describes that access).
    exclusive: a Load/Store Exclusive (ASL accdesc.exclusive, CreateAccDescExLDST).
    atomicop: an atomic read-modify-write (FEAT_LSE; ASL accdesc.atomicop,
    CreateAccDescAtomicOp): it reads and writes, so it needs read and write permission;
    write is True for it.
    aligned: the address is aligned to the access size (the ASL passes `aligned` beside
    the AccessDescriptor to AArch64.FullTranslate; an unaligned data access to Device
    memory takes an Alignment fault, AArch64.S1HasAlignmentFault/S2HasAlignmentFault).
    """

    acctype: AccessType
    el: int
    write: bool = False
    pan: bool = False
    walk_of: AccessDescriptor | None = None
    any_access: bool = False   # AT S1E1A/S1E2A (ASL ATAccess_Any): no permission check
    exclusive: bool = False
    atomicop: bool = False
    aligned: bool = True

    def is_ifetch(self) -> bool:
        """Return whether this is an instruction fetch."""
        return self.acctype is AccessType.IFETCH

    def is_cache_maintenance_or_at(self) -> bool:
        """Return whether faults of this access (or of its table walk) report ESR_ELx.CM=1."""
        return self.original().acctype in (AccessType.AT, AccessType.DC)

    def original(self) -> AccessDescriptor:
        """Return the access whose translation this is (itself unless a table walk)."""
        return self.walk_of if self.walk_of is not None else self


def check_access_el(el: int) -> int:
    """Return el if an access can come from it in the modelled (Non-secure) regimes."""
    if el not in (0, 1, 2):
        raise InputError(f"el={shorten(el)}: an access comes from EL0, EL1 or EL2 "
                         "(the EL whose permissions apply)")
    return el


def acc_gpr(el: int, write: bool, pan: bool = False, aligned: bool = True
            ) -> AccessDescriptor:
    """Return a load (write=False) or store at el (ASL CreateAccDescGPR)."""
    check_access_el(el)
    return AccessDescriptor(AccessType.GPR, el, write, pan, aligned=aligned)


def acc_exldst(el: int, write: bool, pan: bool = False) -> AccessDescriptor:
    """Return a Load-Exclusive (write=False) or Store-Exclusive at el
    (ASL CreateAccDescExLDST)."""
    check_access_el(el)
    return AccessDescriptor(AccessType.GPR, el, write, pan, exclusive=True)


def acc_atomicop(el: int, pan: bool = False) -> AccessDescriptor:
    """Return an atomic read-modify-write at el (ASL CreateAccDescAtomicOp: read and write)."""
    check_access_el(el)
    return AccessDescriptor(AccessType.GPR, el, True, pan, atomicop=True)


def acc_ifetch(el: int) -> AccessDescriptor:
    """Return an instruction fetch at el (ASL CreateAccDescIFetch)."""
    check_access_el(el)
    return AccessDescriptor(AccessType.IFETCH, el)


def acc_at(el: int, write: bool, pan: bool = False, any_access: bool = False
           ) -> AccessDescriptor:
    """Return the access of an AT instruction (ASL CreateAccDescAT).

    any_access: AT S1E1A/S1E2A (FEAT_ATS1A, ATAccess_Any), which read no permission.
    """
    check_access_el(el)
    return AccessDescriptor(AccessType.AT, el, write, pan, any_access=any_access)


def access_pieces(address: int, size: int, page_size: int) -> list[tuple[int, int]]:
    """Return the (address, length) of each page an access of size bytes touches, in order.

    An access that crosses a page boundary is one access whose bytes translate
    separately: ASL Mem (the unaligned branch) reads byte 0 at address and byte i at
    address+i, each through its own translation (MemSingle[address+i, 1, ...]), so the
    first fault is that of the lowest-addressed byte that faults, and the fault reports
    that byte's address: the first byte of the second page when only the second page
    faults. Pieces are the runs of bytes that share a page (one translation each).

    ASL: Mem_with_type (the unaligned-access loop, as read in its AArch32 form), MemSingle.
    """
    if size < 1:
        raise InputError(f"size={shorten(size)}: an access is at least one byte")
    out = []
    end = address + size
    while address < end:
        n = min(end, (address & ~(page_size - 1)) + page_size) - address
        out.append((address, n))
        address += n
    return out
