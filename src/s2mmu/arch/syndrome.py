"""The exception a translation fault of a load, store or fetch is taken as.

A FaultRecord says what went wrong; this module says where it goes and what the
syndrome registers hold: the EL it is taken to, ESR_ELx, FAR_ELx and, for a stage-2
fault taken to EL2, HPFAR_EL2 where the architecture sets it.

ASL: AArch64.Abort (route_to_el2: a stage-2 fault, or HCR_EL2.TGE=1, from EL0/EL1),
AArch64.DataAbort / AArch64.InstructionAbort, AArch64.FaultSyndrome, IPAValid.
"""

from __future__ import annotations

from dataclasses import dataclass

from s2mmu.arch.faults import FaultRecord, esr_abort, hpfar, reports_hpfar
from s2mmu.arch.reprs import hex_repr


@hex_repr(decimal=("taken_to",))
@dataclass(frozen=True)
class TakenAbort:
    """A Data or Instruction Abort as the syndrome registers report it.

    hpfar is None where HPFAR_EL2 is not written or UNKNOWN (stage-1 faults, a stage-2
    Permission fault on the access itself).
    """

    taken_to: int
    esr: int
    far: int
    hpfar: int | None


def abort_target_el(fault: FaultRecord, el: int, tge: bool) -> int:
    """Return the EL an abort from el is taken to (ASL AArch64.Abort, route_to_el2).

    From EL2 it stays at EL2; from EL0 or EL1 it goes to EL2 for a stage-2 fault or
    with HCR_EL2.TGE=1, otherwise to EL1.
    """
    if el >= 2 or fault.secondstage or tge:
        return 2
    return 1


def taken_abort(fault: FaultRecord, va: int, el: int, tge: bool = False) -> TakenAbort:
    """Return the abort that fault causes for an access to va executed at el.

    ASL: AArch64.Abort, AArch64.FaultSyndrome (ESR), FAR = the faulting VA, HPFAR_EL2
    when IPAValid (s2mmu.arch.faults.reports_hpfar).
    """
    target = abort_target_el(fault, el, tge)
    esr = esr_abort(fault, same_el=el == target)
    ipa = fault.ipaddress
    hp = hpfar(ipa) if target == 2 and ipa is not None and reports_hpfar(fault) else None
    far = fault.vaddress if fault.vaddress is not None else va
    return TakenAbort(target, esr, far, hp)
