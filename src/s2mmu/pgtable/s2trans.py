"""The result of walking a guest hypervisor's stage 2: KVM's struct kvm_s2_trans.

It lives here, below both users: s2mmu.nested fills it (kvm_walk_nested_s2), and the
stage-2 fault path in s2mmu.kvm will read it (the nested fault context) without
importing the nested layer.

Kernel: arch/arm64/include/asm/kvm_nested.h (struct kvm_s2_trans and its accessors
kvm_s2_trans_output, _size, _esr, _readable, _writable, _exec_el0/_el1).
"""

from __future__ import annotations

from dataclasses import dataclass

from s2mmu.arch.descriptors import s2_xn
from s2mmu.arch.faults import FaultRecord
from s2mmu.pgtable.profile import NestedExecRule


@dataclass(frozen=True)
class KvmS2Trans:
    """One guest stage-2 translation: the output and what the leaf allows, or the fault.

    esr holds the fault status code (ESR_ELx.FSC, level included) when the walk
    faulted, 0 otherwise; fault is the same fault as a value. desc is the last
    descriptor read (0 if none was). block_size is the leaf's size, not the
    contiguous run's. exec_el1/exec_el0 are what the architecture makes of the leaf
    (AArch64.S2DirectBasePermissions); the fault path reads execute permission from
    desc instead, as the kernel does, through the accessors below and its release's
    rule. xnx is kvm_has_xnx(kvm) when the walk ran (the VM's ID_AA64MMFR1_EL1.XNX),
    the VM those accessors take beside the translation.
    """

    output: int
    block_size: int
    readable: bool
    writable: bool
    exec_el1: bool
    exec_el0: bool
    level: int
    desc: int
    esr: int = 0
    fault: FaultRecord | None = None
    xnx: bool = False


@dataclass(frozen=True)
class NestedWalkError:
    """The walk was refused or could not read the tables: a negative errno, no fault.

    KVM still injects a fault into the guest hypervisor for it: kvm_walk_nested_s2
    returns the errno with kvm_s2_trans_esr holding the abort's syndrome and FSC 0.
    """

    errno: str
    reason: str


def kvm_s2_trans_output(trans: KvmS2Trans) -> int:
    """Return the output address (kvm_s2_trans_output)."""
    return trans.output


def kvm_s2_trans_size(trans: KvmS2Trans) -> int:
    """Return the size of the leaf that mapped the input (kvm_s2_trans_size)."""
    return trans.block_size


def kvm_s2_trans_esr(trans: KvmS2Trans) -> int:
    """Return the fault status (kvm_s2_trans_esr)."""
    return trans.esr


def kvm_s2_trans_readable(trans: KvmS2Trans) -> bool:
    """Return whether L1's leaf allows reads (kvm_s2_trans_readable)."""
    return trans.readable


def kvm_s2_trans_writable(trans: KvmS2Trans) -> bool:
    """Return whether L1's leaf allows writes (kvm_s2_trans_writable)."""
    return trans.writable


def kvm_s2_trans_executable(trans: KvmS2Trans) -> bool:
    """Return whether desc bit 54 (XN[1]) is clear: executable at both ELs.

    Kernel: kvm_s2_trans_executable (kvm_nested.h up to v6.18; 6.12.118 as read).
    """
    return not trans.desc >> 54 & 1


def s2_trans_xn(trans: KvmS2Trans, rule: NestedExecRule) -> int:
    """Return XN[1:0] as the release's accessors see it.

    With FEAT_XNX in the VM, the field as written. Without it, XN[0] is dropped: the
    fixed code masks the extracted field with 0b10; d93febe2ed2e masked it with
    FIELD_PREP(XN, 0b10) = 0b10 << 53, which truncated to the u8 holding the field is 0,
    so the field always read 0b00 (executable at both ELs).
    """
    xn = s2_xn(trans.desc)
    if trans.xnx:
        return xn
    return 0 if rule is NestedExecRule.XNX_XN_DROPPED else xn & 0b10


def kvm_s2_trans_exec_el0(trans: KvmS2Trans, rule: NestedExecRule) -> bool:
    """Return whether L1's leaf lets EL0 execute (XN 0b00 or 0b01).

    Kernel: kvm_s2_trans_exec_el0 (kvm_nested.h from d93febe2ed2e, fixed by 49b32ddb87a3).
    """
    if rule is NestedExecRule.DESC_BIT54:
        return kvm_s2_trans_executable(trans)
    return s2_trans_xn(trans, rule) in (0b00, 0b01)


def kvm_s2_trans_exec_el1(trans: KvmS2Trans, rule: NestedExecRule) -> bool:
    """Return whether L1's leaf lets EL1 execute (XN 0b00 or 0b11).

    Kernel: kvm_s2_trans_exec_el1 (kvm_nested.h from d93febe2ed2e, fixed by 49b32ddb87a3).
    """
    if rule is NestedExecRule.DESC_BIT54:
        return kvm_s2_trans_executable(trans)
    return s2_trans_xn(trans, rule) in (0b00, 0b11)
