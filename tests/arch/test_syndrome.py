"""Where a translation fault of a load, store or fetch is taken, and its syndrome."""

from __future__ import annotations

from s2mmu.arch.access import acc_gpr, acc_ifetch
from s2mmu.arch.faults import Fault, FaultRecord, as_stage2
from s2mmu.arch.syndrome import TakenAbort, abort_target_el, taken_abort


def s1_fault(el: int = 1, write: bool = False) -> FaultRecord:
    return FaultRecord(Fault.TRANSLATION, 3, acc_gpr(el, write), vaddress=0x1000)


def test_stage1_fault_from_el1_goes_to_el1_same_el_without_hpfar() -> None:
    assert taken_abort(s1_fault(write=True), 0x1000, 1) == TakenAbort(1, 0x96000047, 0x1000,
                                                                     None)


def test_stage1_fault_from_el0_goes_to_el1_as_a_lower_el_abort() -> None:
    assert taken_abort(s1_fault(el=0), 0x1000, 0).esr == 0x92000007


def test_tge_routes_el0_stage1_faults_to_el2() -> None:
    assert abort_target_el(s1_fault(el=0), 0, tge=True) == 2


def test_stage2_fault_goes_to_el2_with_hpfar() -> None:
    f = as_stage2(FaultRecord(Fault.TRANSLATION, 1, acc_gpr(1, False), vaddress=0x1000),
                  0x4000_1000, s1ptw=False)
    a = taken_abort(f, 0x1000, 1)
    assert (a.taken_to, a.esr, a.far, a.hpfar) == (2, 0x92000005, 0x1000, 0x400010)


def test_stage2_permission_fault_has_no_valid_hpfar() -> None:
    f = as_stage2(FaultRecord(Fault.PERMISSION, 3, acc_gpr(1, True), vaddress=0x1000),
                  0x4000_1000, s1ptw=False)
    assert taken_abort(f, 0x1000, 1).hpfar is None


def test_fetch_fault_is_an_instruction_abort() -> None:
    f = FaultRecord(Fault.PERMISSION, 3, acc_ifetch(2), vaddress=0x2000)
    assert taken_abort(f, 0x2000, 2) == TakenAbort(2, 0x8600000F, 0x2000, None)


def test_repr_is_hex() -> None:
    assert repr(TakenAbort(2, 0x92000005, 0x1000, None)) == \
        "TakenAbort(taken_to=2, esr=0x92000005, far=0x1000, hpfar=None)"
