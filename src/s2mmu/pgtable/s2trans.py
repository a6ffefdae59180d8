"""The result of walking a guest hypervisor's stage 2: KVM's struct kvm_s2_trans.

It lives here, below both users: s2mmu.nested fills it (kvm_walk_nested_s2), and the
stage-2 fault path in s2mmu.kvm will read it (the nested fault context) without
importing the nested layer.

Kernel: arch/arm64/include/asm/kvm_nested.h (struct kvm_s2_trans and its accessors
kvm_s2_trans_output, _size, _esr, _readable, _writable, _exec_el0/_el1).
"""

from __future__ import annotations

from dataclasses import dataclass

from s2mmu.arch.faults import FaultRecord


@dataclass(frozen=True)
class KvmS2Trans:
    """One guest stage-2 translation: the output and what the leaf allows, or the fault.

    esr holds the fault status code (ESR_ELx.FSC, level included) when the walk
    faulted, 0 otherwise; fault is the same fault as a value. desc is the last
    descriptor read (0 if none was). block_size is the leaf's size, not the
    contiguous run's.
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
