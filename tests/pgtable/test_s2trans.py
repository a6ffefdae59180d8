"""struct kvm_s2_trans and its accessors."""

from s2mmu.arch.access import acc_gpr
from s2mmu.arch.faults import Fault, FaultRecord
from s2mmu.pgtable.s2trans import (
    KvmS2Trans,
    kvm_s2_trans_esr,
    kvm_s2_trans_output,
    kvm_s2_trans_size,
)


def test_accessors_read_the_fields():
    t = KvmS2Trans(0x4000_0123, 0x20_0000, True, False, True, False, 2, 0x4000_0741)
    assert kvm_s2_trans_output(t) == 0x4000_0123
    assert kvm_s2_trans_size(t) == 0x20_0000
    assert kvm_s2_trans_esr(t) == 0 and t.fault is None


def test_a_fault_carries_its_fsc_and_record():
    rec = FaultRecord(Fault.ACCESS_FLAG, 3, acc_gpr(1, False), secondstage=True)
    t = KvmS2Trans(0, 0, False, False, False, False, 3, 0x3, esr=0b001011, fault=rec)
    assert kvm_s2_trans_esr(t) == 0b001011 and t.fault.level == 3
