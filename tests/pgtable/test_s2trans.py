"""struct kvm_s2_trans and its accessors."""

import pytest

from s2mmu.arch.access import acc_gpr
from s2mmu.arch.descriptors import Page
from s2mmu.arch.faults import Fault, FaultRecord
from s2mmu.arch.perms import s2_direct_permissions
from s2mmu.arch.walk import TTWState
from s2mmu.pgtable.profile import NestedExecRule
from s2mmu.pgtable.s2trans import (
    KvmS2Trans,
    kvm_s2_trans_esr,
    kvm_s2_trans_exec_el0,
    kvm_s2_trans_exec_el1,
    kvm_s2_trans_executable,
    kvm_s2_trans_output,
    kvm_s2_trans_size,
)

DESC_BIT54, XN_DROPPED, XNX = (NestedExecRule.DESC_BIT54, NestedExecRule.XNX_XN_DROPPED,
                               NestedExecRule.XNX)


def test_accessors_read_the_fields():
    t = KvmS2Trans(0x4000_0123, 0x20_0000, True, False, True, False, 2, 0x4000_0741)
    assert kvm_s2_trans_output(t) == 0x4000_0123
    assert kvm_s2_trans_size(t) == 0x20_0000
    assert kvm_s2_trans_esr(t) == 0 and t.fault is None


def test_a_fault_carries_its_fsc_and_record():
    rec = FaultRecord(Fault.ACCESS_FLAG, 3, acc_gpr(1, False), secondstage=True)
    t = KvmS2Trans(0, 0, False, False, False, False, 3, 0x3, esr=0b001011, fault=rec)
    assert kvm_s2_trans_esr(t) == 0b001011 and t.fault.level == 3


# Execute permission as each release's accessors read L1's XN[1:0] (bits 54:53):
# (rule, VM has FEAT_XNX, XN) -> (EL1 may execute, EL0 may execute). The expected values
# are the kernel's: 6.12.118's kvm_s2_trans_executable (bit 54 only, both ELs);
# d93febe2ed2e's kvm_s2_trans_exec_el1/_el0, whose FIELD_PREP(XN, 0b10) mask is 0 in the
# u8 holding the field; 49b32ddb87a3's, masking with 0b10.
EXEC = [
    (DESC_BIT54, False, 0b00, (True, True)), (DESC_BIT54, False, 0b01, (True, True)),
    (DESC_BIT54, False, 0b10, (False, False)), (DESC_BIT54, False, 0b11, (False, False)),
    (DESC_BIT54, True, 0b01, (True, True)), (DESC_BIT54, True, 0b11, (False, False)),
    (XN_DROPPED, False, 0b00, (True, True)), (XN_DROPPED, False, 0b01, (True, True)),
    (XN_DROPPED, False, 0b10, (True, True)), (XN_DROPPED, False, 0b11, (True, True)),
    (XN_DROPPED, True, 0b00, (True, True)), (XN_DROPPED, True, 0b01, (False, True)),
    (XN_DROPPED, True, 0b10, (False, False)), (XN_DROPPED, True, 0b11, (True, False)),
    (XNX, False, 0b00, (True, True)), (XNX, False, 0b01, (True, True)),
    (XNX, False, 0b10, (False, False)), (XNX, False, 0b11, (False, False)),
    (XNX, True, 0b00, (True, True)), (XNX, True, 0b01, (False, True)),
    (XNX, True, 0b10, (False, False)), (XNX, True, 0b11, (True, False)),
]


@pytest.mark.parametrize(("rule", "xnx", "xn", "expected"), EXEC)
def test_exec_accessors_per_release(rule, xnx, xn, expected):
    t = KvmS2Trans(0, 4096, True, True, False, False, 3, 0x7C3 | xn << 53, xnx=xnx)
    assert (kvm_s2_trans_exec_el1(t, rule), kvm_s2_trans_exec_el0(t, rule)) == expected


def test_the_fixed_rule_agrees_with_the_architecture():
    # With or without FEAT_XNX, 49b32ddb87a3's decoding is AArch64.S2DirectBasePermissions'.
    for xnx in (False, True):
        for xn in range(4):
            raw = 0x7C3 | xn << 53
            state = TTWState(2, Page(raw, 3, 0), (), 0, ())
            perms = s2_direct_permissions(state, xnx, False, False)
            t = KvmS2Trans(0, 4096, True, True, perms.px, perms.ux, 3, raw, xnx=xnx)
            assert kvm_s2_trans_exec_el1(t, XNX) == perms.px
            assert kvm_s2_trans_exec_el0(t, XNX) == perms.ux


def test_bit54_is_executable_for_both_els():
    assert kvm_s2_trans_executable(KvmS2Trans(0, 4096, True, True, True, True, 3, 1 << 53))
    assert not kvm_s2_trans_executable(KvmS2Trans(0, 4096, True, True, True, True, 3, 1 << 54))
