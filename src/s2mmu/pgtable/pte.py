"""KVM's descriptor bits and level arithmetic, as asm/kvm_pgtable.h defines them.

These are KVM's own names for the VMSAv8-64 descriptor fields (KVM_PTE_*), written once
here. A ``kvm_pte_t`` is a plain int. The translation granule (the kernel's compile-time
PAGE_SHIFT) is a :class:`Granule` value so 4K, 16K and 64K hosts can be modelled; LPA2
(52-bit output with 4K/16K) is not modelled.

The encodings are those of v6.19. Later mainline kernels (7.x) keep the invalid-entry
type in bits 63:60 (KVM_INVALID_PTE_TYPE_MASK, with KVM_INVALID_PTE_TYPE_LOCKED) instead
of the bit-10 KVM_INVALID_PTE_LOCKED used here, and annotate entries with
kvm_pgtable_stage2_annotate() instead of an owner id in bits 9:2.

Kernel: arch/arm64/include/asm/kvm_pgtable.h (KVM_PTE_*, KVM_PGTABLE_LAST_LEVEL,
KVM_PGTABLE_MIN_BLOCK_LEVEL, kvm_pte_valid, kvm_pte_to_phys, kvm_phys_to_pte,
kvm_granule_shift, kvm_granule_size, kvm_level_supports_block_mapping);
arch/arm64/kvm/hyp/pgtable.c (kvm_pte_table, kvm_init_table_pte, kvm_init_valid_leaf_pte,
kvm_init_invalid_leaf_owner, stage2_pte_is_locked; stage2_pte_is_counted is in table.py).
"""

from __future__ import annotations

import enum
from functools import cache
from typing import NamedTuple

from s2mmu.arch.bits import U64, bits, mask

KVM_PGTABLE_FIRST_LEVEL = -1
KVM_PGTABLE_LAST_LEVEL = 3

KVM_PTE_VALID = 1 << 0

KVM_PTE_TYPE = 1 << 1
KVM_PTE_TYPE_BLOCK = 0
KVM_PTE_TYPE_PAGE = 1
KVM_PTE_TYPE_TABLE = 1

KVM_PTE_ADDR_51_48 = mask(15, 12)

KVM_PHYS_INVALID = U64

KVM_PTE_LEAF_ATTR_LO = mask(11, 2)

KVM_PTE_LEAF_ATTR_LO_S1_ATTRIDX = mask(4, 2)
KVM_PTE_LEAF_ATTR_LO_S1_AP = mask(7, 6)
KVM_PTE_LEAF_ATTR_LO_S1_SH = mask(9, 8)
KVM_PTE_LEAF_ATTR_LO_S1_SH_IS = 3
KVM_PTE_LEAF_ATTR_LO_S1_AF = 1 << 10

KVM_PTE_LEAF_ATTR_LO_S2_MEMATTR = mask(5, 2)
KVM_PTE_LEAF_ATTR_LO_S2_S2AP_R = 1 << 6
KVM_PTE_LEAF_ATTR_LO_S2_S2AP_W = 1 << 7
KVM_PTE_LEAF_ATTR_LO_S2_SH = mask(9, 8)
KVM_PTE_LEAF_ATTR_LO_S2_SH_IS = 3
KVM_PTE_LEAF_ATTR_LO_S2_AF = 1 << 10

KVM_PTE_LEAF_ATTR_HI = mask(63, 50)
KVM_PTE_LEAF_ATTR_HI_SW = mask(58, 55)
KVM_PTE_LEAF_ATTR_HI_S1_XN = 1 << 54
KVM_PTE_LEAF_ATTR_HI_S2_XN = mask(54, 53)
KVM_PTE_LEAF_ATTR_HI_S1_GP = 1 << 50

KVM_PTE_LEAF_ATTR_S2_PERMS = (
    KVM_PTE_LEAF_ATTR_LO_S2_S2AP_R | KVM_PTE_LEAF_ATTR_LO_S2_S2AP_W | KVM_PTE_LEAF_ATTR_HI_S2_XN
)

KVM_INVALID_PTE_OWNER_MASK = mask(9, 2)
KVM_MAX_OWNER_ID = KVM_INVALID_PTE_OWNER_MASK >> 2
"""FIELD_MAX(KVM_INVALID_PTE_OWNER_MASK), 255: the bound since the 2022 pgtable.c change
that let pKVM annotate for more owners than the hypervisor (it was 1 before)."""


class PkvmComponentId(enum.IntEnum):
    """Who an invalid-entry annotation says owns the page (the owner id in bits 9:2).

    PKVM_ID_HOST (0) is the page-table owner itself and is never written as an
    annotation: a host stage-2 entry of 0 is "host, not yet mapped". PKVM_ID_FFA came
    with pKVM's FF-A proxy (v6.4); PKVM_ID_GUEST, one id for every guest, with
    donation to protected guests.

    Kernel: enum pkvm_component_id (arch/arm64/kvm/hyp/include/nvhe/mem_protect.h).
    """

    PKVM_ID_HOST = 0
    PKVM_ID_HYP = 1
    PKVM_ID_FFA = 2
    PKVM_ID_GUEST = 3

# An invalid entry with this bit set marks a break-before-make in progress.
KVM_INVALID_PTE_LOCKED = 1 << 10


class Granule(NamedTuple):
    """The host translation granule: what the kernel fixes at build time as PAGE_SHIFT."""

    page_shift: int
    page_size: int
    ptrs_per_pte: int
    min_block_level: int
    addr_mask: int


@cache
def granule(page_shift: int = 12) -> Granule:
    """Return the granule record for a 4K (12), 16K (14) or 64K (16) host.

    Kernel: KVM_PGTABLE_MIN_BLOCK_LEVEL (1 for 4K, else 2); KVM_PTE_ADDR_MASK.
    """
    if page_shift not in (12, 14, 16):
        raise ValueError(f"page_shift must be 12, 14 or 16 (4K/16K/64K), not {page_shift}")
    return Granule(
        page_shift=page_shift,
        page_size=1 << page_shift,
        ptrs_per_pte=1 << (page_shift - 3),
        min_block_level=1 if page_shift == 12 else 2,
        addr_mask=mask(47, page_shift),
    )


def kvm_granule_shift(level: int, g: Granule) -> int:
    """Return log2 of the size mapped by one entry at level.

    Kernel: kvm_granule_shift (ARM64_HW_PGTABLE_LEVEL_SHIFT).
    """
    return (g.page_shift - 3) * (4 - level) + 3


def kvm_granule_size(level: int, g: Granule) -> int:
    """Return the size mapped by one entry at level.

    Kernel: kvm_granule_size.
    """
    return 1 << kvm_granule_shift(level, g)


def kvm_level_supports_block_mapping(level: int, g: Granule) -> bool:
    """Return whether KVM may put a block (or page) at level.

    Kernel: kvm_level_supports_block_mapping.
    """
    return level >= g.min_block_level


def kvm_pte_valid(pte: int) -> bool:
    """Return whether the descriptor's valid bit is set.

    Kernel: kvm_pte_valid.
    """
    return bool(pte & KVM_PTE_VALID)


def kvm_pte_table(pte: int, level: int) -> bool:
    """Return whether pte is a valid table descriptor (never at the last level).

    Kernel: kvm_pte_table.
    """
    if level == KVM_PGTABLE_LAST_LEVEL:
        return False
    if not pte & KVM_PTE_VALID:
        return False
    return bool(pte & KVM_PTE_TYPE)


def kvm_pte_to_phys(pte: int, g: Granule) -> int:
    """Return the output address held in pte (bits 51:48 in 15:12 with 64K pages).

    Kernel: kvm_pte_to_phys (the non-LPA2 branch).
    """
    pa = pte & g.addr_mask
    if g.page_shift == 16:
        pa |= bits(pte, 15, 12) << 48
    return pa


def kvm_phys_to_pte(pa: int, g: Granule) -> int:
    """Return the descriptor address field for pa.

    Kernel: kvm_phys_to_pte (the non-LPA2 branch).
    """
    pte = pa & g.addr_mask
    if g.page_shift == 16:
        pte |= bits(pa, 51, 48) << 12
    return pte


def kvm_init_table_pte(childp: int, g: Granule) -> int:
    """Return a valid table descriptor pointing at the table page childp.

    Kernel: kvm_init_table_pte.
    """
    return kvm_phys_to_pte(childp, g) | KVM_PTE_TYPE | KVM_PTE_VALID


def kvm_init_valid_leaf_pte(pa: int, attr: int, level: int, g: Granule) -> int:
    """Return a valid block (or page, at the last level) descriptor for pa with attr.

    Kernel: kvm_init_valid_leaf_pte.
    """
    pte = kvm_phys_to_pte(pa, g)
    pte |= attr & (KVM_PTE_LEAF_ATTR_LO | KVM_PTE_LEAF_ATTR_HI)
    if level == KVM_PGTABLE_LAST_LEVEL:
        pte |= KVM_PTE_TYPE
    return pte | KVM_PTE_VALID


def kvm_init_invalid_leaf_owner(owner_id: int) -> int:
    """Return an invalid descriptor annotating the page as owned by owner_id.

    Kernel: kvm_init_invalid_leaf_owner.
    """
    return (owner_id << 2) & KVM_INVALID_PTE_OWNER_MASK


def kvm_invalid_pte_owner(pte: int) -> PkvmComponentId | None:
    """Return the owner an invalid entry's annotation names, None if it names none.

    None for a valid entry, an empty one (0: the table owner's, not yet mapped) and the
    locked entry of a break-before-make. An owner id outside PkvmComponentId is a
    model error (ValueError): no kernel the profiles cover writes one.

    Kernel: kvm_init_invalid_leaf_owner (the inverse, FIELD_GET of
    KVM_INVALID_PTE_OWNER_MASK).
    """
    if pte & KVM_PTE_VALID or pte & KVM_INVALID_PTE_LOCKED:
        return None
    owner = (pte & KVM_INVALID_PTE_OWNER_MASK) >> 2
    if owner == 0:
        return None
    return PkvmComponentId(owner)


def stage2_pte_is_locked(pte: int) -> bool:
    """Return whether the entry is the locked invalid entry of a break-before-make.

    Kernel: stage2_pte_is_locked.
    """
    return not pte & KVM_PTE_VALID and bool(pte & KVM_INVALID_PTE_LOCKED)
