"""KVM's abstract protection set and its conversion to and from descriptor bits.

A ``KvmPgtableProt`` says what a mapping allows (R, W, PX, UX; X = PX | UX), its memory
type (Normal cacheable by default, DEVICE, NORMAL_NC) and four software bits. Stage 2
and hyp stage 1 encode it differently; the stage-2 MemAttr field also depends on
whether FEAT_S2FWB is used (``stage2_has_fwb``).

Kernel: enum kvm_pgtable_prot, KVM_PGTABLE_PROT_RW/RWX, PAGE_HYP* (asm/kvm_pgtable.h);
MT_S2_*, MT_S2_FWB_*, MT_NORMAL, MT_NORMAL_NC, MT_DEVICE_nGnRE (asm/memory.h);
PAGE_S2_MEMATTR (asm/kvm_pgtable.h); stage2_has_fwb, stage2_set_xn_attr,
stage2_set_prot_attr, kvm_pgtable_stage2_pte_prot, hyp_set_prot_attr,
kvm_pgtable_hyp_pte_prot, stage2_pte_cacheable, stage2_pte_executable
(arch/arm64/kvm/hyp/pgtable.c).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from s2mmu.arch.bits import bits
from s2mmu.pgtable.caps import KvmCaps
from s2mmu.pgtable.errno import EINVAL
from s2mmu.pgtable.pte import (
    KVM_PTE_LEAF_ATTR_HI_S1_GP,
    KVM_PTE_LEAF_ATTR_HI_S1_XN,
    KVM_PTE_LEAF_ATTR_HI_S2_XN,
    KVM_PTE_LEAF_ATTR_HI_SW,
    KVM_PTE_LEAF_ATTR_LO_S1_AF,
    KVM_PTE_LEAF_ATTR_LO_S1_AP,
    KVM_PTE_LEAF_ATTR_LO_S1_SH_IS,
    KVM_PTE_LEAF_ATTR_LO_S2_AF,
    KVM_PTE_LEAF_ATTR_LO_S2_MEMATTR,
    KVM_PTE_LEAF_ATTR_LO_S2_S2AP_R,
    KVM_PTE_LEAF_ATTR_LO_S2_S2AP_W,
    KVM_PTE_LEAF_ATTR_LO_S2_SH_IS,
    kvm_pte_valid,
)
from s2mmu.pgtable.table import KVM_PGTABLE_S2_NOFWB

if TYPE_CHECKING:
    from s2mmu.pgtable.table import KvmPgtable


class KvmPgtableProt(enum.IntFlag):
    """Page-table permissions and attributes (values as in the kernel)."""

    PX = 1 << 0
    UX = 1 << 1
    X = PX | UX
    W = 1 << 2
    R = 1 << 3
    DEVICE = 1 << 4
    NORMAL_NC = 1 << 5
    SW0 = 1 << 55
    SW1 = 1 << 56
    SW2 = 1 << 57
    SW3 = 1 << 58


KVM_PGTABLE_PROT_PX = KvmPgtableProt.PX
KVM_PGTABLE_PROT_UX = KvmPgtableProt.UX
KVM_PGTABLE_PROT_X = KvmPgtableProt.X
KVM_PGTABLE_PROT_W = KvmPgtableProt.W
KVM_PGTABLE_PROT_R = KvmPgtableProt.R
KVM_PGTABLE_PROT_DEVICE = KvmPgtableProt.DEVICE
KVM_PGTABLE_PROT_NORMAL_NC = KvmPgtableProt.NORMAL_NC
KVM_PGTABLE_PROT_SW0 = KvmPgtableProt.SW0
KVM_PGTABLE_PROT_SW1 = KvmPgtableProt.SW1
KVM_PGTABLE_PROT_SW2 = KvmPgtableProt.SW2
KVM_PGTABLE_PROT_SW3 = KvmPgtableProt.SW3
KVM_PGTABLE_PROT_RW = KvmPgtableProt.R | KvmPgtableProt.W
KVM_PGTABLE_PROT_RWX = KVM_PGTABLE_PROT_RW | KvmPgtableProt.X

# Plain ints for the hot path (IntFlag arithmetic is slow); same values.
_PROT_PX, _PROT_UX = int(KvmPgtableProt.PX), int(KvmPgtableProt.UX)
_PROT_X, _PROT_R, _PROT_W = int(KvmPgtableProt.X), int(KvmPgtableProt.R), int(KvmPgtableProt.W)
_PROT_DEVICE, _PROT_NORMAL_NC = int(KvmPgtableProt.DEVICE), int(KvmPgtableProt.NORMAL_NC)
_S2_NOFWB = int(KVM_PGTABLE_S2_NOFWB)

PAGE_HYP = KVM_PGTABLE_PROT_RW
PAGE_HYP_EXEC = KvmPgtableProt.R | KvmPgtableProt.X
PAGE_HYP_RO = KvmPgtableProt.R
PAGE_HYP_DEVICE = PAGE_HYP | KvmPgtableProt.DEVICE

# Stage-2 MemAttr[3:0] values without and with FEAT_S2FWB (asm/memory.h).
MT_S2_NORMAL = 0xF
MT_S2_NORMAL_NC = 0x5
MT_S2_DEVICE_nGnRE = 0x1
MT_S2_FWB_NORMAL = 6
MT_S2_FWB_NORMAL_NC = 5
MT_S2_FWB_DEVICE_nGnRE = 1

# Stage-1 MAIR indices the hypervisor uses (asm/memory.h).
MT_NORMAL = 0
MT_NORMAL_TAGGED = 1
MT_NORMAL_NC = 2
MT_DEVICE_nGnRnE = 3
MT_DEVICE_nGnRE = 4

_MEMATTR = {
    "NORMAL": (MT_S2_NORMAL, MT_S2_FWB_NORMAL),
    "NORMAL_NC": (MT_S2_NORMAL_NC, MT_S2_FWB_NORMAL_NC),
    "DEVICE_nGnRE": (MT_S2_DEVICE_nGnRE, MT_S2_FWB_DEVICE_nGnRE),
}


def page_s2_memattr(attr: str, has_fwb: bool) -> int:
    """Return the stage-2 MemAttr field (in place, bits 5:2) for a memory type.

    Kernel: PAGE_S2_MEMATTR.
    """
    return _MEMATTR[attr][1 if has_fwb else 0] << 2


def stage2_has_fwb(pgt: KvmPgtable) -> bool:
    """Return whether this stage 2 uses the FEAT_S2FWB encoding.

    Kernel: stage2_has_fwb.
    """
    if not pgt.ops.caps.stage2_fwb:
        return False
    return not pgt.flags & _S2_NOFWB


def kvm_s2_memattr(pgt: KvmPgtable, attr: str) -> int:
    """Return the MemAttr bits for a memory type in this stage 2.

    Kernel: KVM_S2_MEMATTR.
    """
    return page_s2_memattr(attr, stage2_has_fwb(pgt))


def stage2_set_xn_attr(prot: int, caps: KvmCaps) -> tuple[int, int]:
    """Return (0, the XN[1:0] field in place) for prot's PX/UX, or (-EINVAL, 0).

    Without FEAT_XNX, PX and UX must agree.

    Kernel: stage2_set_xn_attr.
    """
    prot = int(prot)
    px = bool(prot & _PROT_PX)
    ux = bool(prot & _PROT_UX)
    if not caps.xnx and px != ux:
        return -EINVAL, 0
    if px and ux:
        xn = 0b00
    elif ux:
        xn = 0b01
    elif not px:
        xn = 0b10
    else:
        xn = 0b11
    return 0, xn << 53


def stage2_set_prot_attr(pgt: KvmPgtable, prot: int) -> tuple[int, int]:
    """Return (0, the stage-2 leaf attributes for prot) or (-EINVAL, 0).

    DEVICE and NORMAL_NC exclude each other and exclude execute permission.

    Kernel: stage2_set_prot_attr.
    """
    prot = int(prot)
    memtype = prot & (_PROT_DEVICE | _PROT_NORMAL_NC)
    if memtype == _PROT_DEVICE | _PROT_NORMAL_NC:
        return -EINVAL, 0
    if memtype == _PROT_DEVICE:
        if prot & _PROT_X:
            return -EINVAL, 0
        attr = kvm_s2_memattr(pgt, "DEVICE_nGnRE")
    elif memtype == _PROT_NORMAL_NC:
        if prot & _PROT_X:
            return -EINVAL, 0
        attr = kvm_s2_memattr(pgt, "NORMAL_NC")
    else:
        attr = kvm_s2_memattr(pgt, "NORMAL")
    r, xn = stage2_set_xn_attr(prot, pgt.ops.caps)
    if r:
        return r, 0
    attr |= xn
    if prot & _PROT_R:
        attr |= KVM_PTE_LEAF_ATTR_LO_S2_S2AP_R
    if prot & _PROT_W:
        attr |= KVM_PTE_LEAF_ATTR_LO_S2_S2AP_W
    attr |= KVM_PTE_LEAF_ATTR_LO_S2_SH_IS << 8
    attr |= KVM_PTE_LEAF_ATTR_LO_S2_AF
    attr |= prot & KVM_PTE_LEAF_ATTR_HI_SW
    return 0, attr


def kvm_pgtable_stage2_pte_prot(pte: int) -> KvmPgtableProt:
    """Return the permissions and software bits of a stage-2 leaf.

    The memory type is not reported (the kernel does not either).

    Kernel: kvm_pgtable_stage2_pte_prot.
    """
    prot = KvmPgtableProt(pte & KVM_PTE_LEAF_ATTR_HI_SW)
    if not kvm_pte_valid(pte):
        return prot
    if pte & KVM_PTE_LEAF_ATTR_LO_S2_S2AP_R:
        prot |= KvmPgtableProt.R
    if pte & KVM_PTE_LEAF_ATTR_LO_S2_S2AP_W:
        prot |= KvmPgtableProt.W
    xn = bits(pte, 54, 53)
    if xn == 0b00:
        prot |= KvmPgtableProt.PX | KvmPgtableProt.UX
    elif xn == 0b01:
        prot |= KvmPgtableProt.UX
    elif xn == 0b11:
        prot |= KvmPgtableProt.PX
    return prot


def stage2_pte_cacheable(pgt: KvmPgtable, pte: int) -> bool:
    """Return whether a valid stage-2 leaf maps Normal cacheable memory.

    Kernel: stage2_pte_cacheable.
    """
    memattr = pte & KVM_PTE_LEAF_ATTR_LO_S2_MEMATTR
    return kvm_pte_valid(pte) and memattr == kvm_s2_memattr(pgt, "NORMAL")


def stage2_pte_executable(pte: int) -> bool:
    """Return whether a valid stage-2 leaf allows execution at EL1 and EL0.

    Kernel: stage2_pte_executable.
    """
    return kvm_pte_valid(pte) and not pte & KVM_PTE_LEAF_ATTR_HI_S2_XN


def kvm_pte_leaf_attr_lo_s1_ap_ro(caps: KvmCaps) -> int:
    """Return the stage-1 AP value for read-only hyp mappings (2 with hVHE, else 3).

    Kernel: KVM_PTE_LEAF_ATTR_LO_S1_AP_RO.
    """
    return 2 if caps.hvhe else 3


def kvm_pte_leaf_attr_lo_s1_ap_rw(caps: KvmCaps) -> int:
    """Return the stage-1 AP value for read-write hyp mappings (0 with hVHE, else 1).

    Kernel: KVM_PTE_LEAF_ATTR_LO_S1_AP_RW.
    """
    return 0 if caps.hvhe else 1


def hyp_set_prot_attr(prot: int, caps: KvmCaps) -> tuple[int, int]:
    """Return (0, the hyp stage-1 leaf attributes for prot) or (-EINVAL, 0).

    Hyp mappings must be readable; executable ones must be neither writable nor device.

    Kernel: hyp_set_prot_attr.
    """
    prot = int(prot)
    device = bool(prot & KVM_PGTABLE_PROT_DEVICE)
    attr = (MT_DEVICE_nGnRE if device else MT_NORMAL) << 2
    if prot & KVM_PGTABLE_PROT_W:
        ap = kvm_pte_leaf_attr_lo_s1_ap_rw(caps)
    else:
        ap = kvm_pte_leaf_attr_lo_s1_ap_ro(caps)
    if not prot & KVM_PGTABLE_PROT_R:
        return -EINVAL, 0
    if prot & KVM_PGTABLE_PROT_X:
        if prot & KVM_PGTABLE_PROT_W or device:
            return -EINVAL, 0
        if caps.bti_kernel:
            attr |= KVM_PTE_LEAF_ATTR_HI_S1_GP
    else:
        attr |= KVM_PTE_LEAF_ATTR_HI_S1_XN
    attr |= ap << 6
    attr |= KVM_PTE_LEAF_ATTR_LO_S1_SH_IS << 8
    attr |= KVM_PTE_LEAF_ATTR_LO_S1_AF
    attr |= prot & KVM_PTE_LEAF_ATTR_HI_SW
    return 0, attr


def kvm_pgtable_hyp_pte_prot(pte: int, caps: KvmCaps) -> KvmPgtableProt:
    """Return the permissions and software bits of a hyp stage-1 leaf.

    Kernel: kvm_pgtable_hyp_pte_prot.
    """
    prot = KvmPgtableProt(pte & KVM_PTE_LEAF_ATTR_HI_SW)
    if not kvm_pte_valid(pte):
        return prot
    if not pte & KVM_PTE_LEAF_ATTR_HI_S1_XN:
        prot |= KvmPgtableProt.X
    ap = (pte & KVM_PTE_LEAF_ATTR_LO_S1_AP) >> 6
    if ap == kvm_pte_leaf_attr_lo_s1_ap_ro(caps):
        prot |= KvmPgtableProt.R
    elif ap == kvm_pte_leaf_attr_lo_s1_ap_rw(caps):
        prot |= KvmPgtableProt.R | KvmPgtableProt.W
    return prot
