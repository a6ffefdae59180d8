"""VTCR_EL2 and VTTBR_EL2 as KVM computes them for a stage-2 page table.

These let the architecture walker be pointed at a table the library built: the
VTCR_EL2 value KVM programs (T0SZ, SL0, TG0, SH0/ORGN0/IRGN0, PS, VS, HA) and the
VTTBR_EL2 value (BADDR, VMID, CnP). Only the non-LPA2 encodings are modelled.

Kernel: VTCR_EL2_* , VTCR_EL2_COMMON_BITS, VTCR_EL2_TGRAN, VTCR_EL2_TGRAN_SL0_BASE,
VTCR_EL2_LVLS_TO_SL0, VTCR_EL2_IPA, VTTBR_VMID_SHIFT, VTTBR_CNP_BIT (asm/kvm_arm.h);
stage2_pgtable_levels (asm/stage2_pgtable.h); ARM64_HW_PGTABLE_LEVELS
(asm/pgtable-hwdef.h); kvm_get_parange, kvm_get_parange_max (asm/kvm_pgtable.h);
kvm_get_vtcr, kvm_pgtable_stage2_pgd_size (arch/arm64/kvm/hyp/pgtable.c);
kvm_get_vttbr, kvm_phys_to_vttbr (asm/kvm_mmu.h).
"""

from __future__ import annotations

from s2mmu.arch.bits import bits, mask
from s2mmu.pgtable.caps import KvmCaps
from s2mmu.pgtable.pte import Granule, granule

VTCR_EL2_T0SZ_MASK = 0x3F
VTCR_EL2_SL0_SHIFT = 6
VTCR_EL2_SL0_MASK = 3 << VTCR_EL2_SL0_SHIFT
VTCR_EL2_IRGN0_WBWA = 1 << 8
VTCR_EL2_ORGN0_WBWA = 1 << 10
VTCR_EL2_SH0_INNER = 3 << 12
VTCR_EL2_TG0_4K = 0 << 14
VTCR_EL2_TG0_64K = 1 << 14
VTCR_EL2_TG0_16K = 2 << 14
VTCR_EL2_PS_SHIFT = 16
VTCR_EL2_VS_SHIFT = 19
VTCR_EL2_VS_8BIT = 0 << VTCR_EL2_VS_SHIFT
VTCR_EL2_VS_16BIT = 1 << VTCR_EL2_VS_SHIFT
VTCR_EL2_HA = 1 << 21
VTCR_EL2_RES1 = 1 << 31
VTCR_EL2_COMMON_BITS = (
    VTCR_EL2_SH0_INNER | VTCR_EL2_ORGN0_WBWA | VTCR_EL2_IRGN0_WBWA | VTCR_EL2_RES1
)

VTTBR_VMID_SHIFT = 48
VTTBR_CNP_BIT = 1 << 0

ID_AA64MMFR0_EL1_PARANGE_48 = 0b0101
ID_AA64MMFR0_EL1_PARANGE_52 = 0b0110
ID_AA64MMFR1_EL1_VMIDBITS_16 = 0b0010

_TGRAN = {12: VTCR_EL2_TG0_4K, 14: VTCR_EL2_TG0_16K, 16: VTCR_EL2_TG0_64K}


def vtcr_el2_tgran_sl0_base(g: Granule) -> int:
    """Return the SL0 value that encodes start level 0 (2 for 4K, 3 for 16K and 64K).

    Kernel: VTCR_EL2_TGRAN_SL0_BASE.
    """
    return 2 if g.page_shift == 12 else 3


def vtcr_el2_ipa(vtcr: int) -> int:
    """Return the IPA size in bits that VTCR_EL2.T0SZ gives.

    Kernel: VTCR_EL2_IPA.
    """
    return 64 - (vtcr & VTCR_EL2_T0SZ_MASK)


def vtcr_el2_start_level(vtcr: int, g: Granule) -> int:
    """Return the start level encoded by VTCR_EL2.SL0 for the granule.

    Kernel: __kvm_pgtable_stage2_init (start_level = VTCR_EL2_TGRAN_SL0_BASE - sl0).
    """
    return vtcr_el2_tgran_sl0_base(g) - ((vtcr & VTCR_EL2_SL0_MASK) >> VTCR_EL2_SL0_SHIFT)


def arm64_hw_pgtable_levels(va_bits: int, g: Granule) -> int:
    """Return how many levels translate va_bits.

    Kernel: ARM64_HW_PGTABLE_LEVELS.
    """
    return (va_bits - 4) // (g.page_shift - 3)


def stage2_pgtable_levels(ipa: int, g: Granule) -> int:
    """Return the stage-2 levels for an IPA size, using up to 16 concatenated PGD pages.

    Kernel: stage2_pgtable_levels.
    """
    return arm64_hw_pgtable_levels(ipa - 4, g)


def kvm_get_parange_max(g: Granule) -> int:
    """Return the largest PARange KVM uses (52 bits only with 64K pages, no LPA2).

    Kernel: kvm_get_parange_max.
    """
    return ID_AA64MMFR0_EL1_PARANGE_52 if g.page_shift == 16 else ID_AA64MMFR0_EL1_PARANGE_48


def kvm_get_parange(mmfr0: int, g: Granule) -> int:
    """Return ID_AA64MMFR0_EL1.PARange capped at what KVM supports.

    Kernel: kvm_get_parange.
    """
    return min(bits(mmfr0, 3, 0), kvm_get_parange_max(g))


def kvm_get_vtcr(
    mmfr0: int, mmfr1: int, phys_shift: int, g: Granule | None = None, caps: KvmCaps | None = None
) -> int:
    """Return the VTCR_EL2 value KVM programs for a guest IPA space of phys_shift bits.

    Kernel: kvm_get_vtcr.
    """
    g = g or granule()
    caps = caps or KvmCaps()
    vtcr = VTCR_EL2_COMMON_BITS | _TGRAN[g.page_shift]
    vtcr |= kvm_get_parange(mmfr0, g) << VTCR_EL2_PS_SHIFT
    vtcr |= (64 - phys_shift) & VTCR_EL2_T0SZ_MASK
    lvls = max(stage2_pgtable_levels(phys_shift, g), 2)
    vtcr |= (vtcr_el2_tgran_sl0_base(g) - (4 - lvls)) << VTCR_EL2_SL0_SHIFT
    if caps.hw_afdbm:
        vtcr |= VTCR_EL2_HA
    vmid_16 = bits(mmfr1, 7, 4) == ID_AA64MMFR1_EL1_VMIDBITS_16
    vtcr |= VTCR_EL2_VS_16BIT if vmid_16 else VTCR_EL2_VS_8BIT
    return vtcr


def kvm_phys_to_vttbr(pa: int, g: Granule) -> int:
    """Return the VTTBR_EL2.BADDR field for a PGD at pa (52-bit PA only with 64K pages).

    Kernel: kvm_phys_to_vttbr (phys_to_ttbr).
    """
    if g.page_shift == 16 and pa >> 48:
        return (pa & mask(47, 6)) | (bits(pa, 51, 48) << 2)
    return pa & mask(47, 1)


def kvm_get_vttbr(pgd: int, vmid: int, g: Granule | None = None, cnp: bool = False) -> int:
    """Return the VTTBR_EL2 value for a stage 2 whose PGD is at pgd.

    Kernel: kvm_get_vttbr.
    """
    g = g or granule()
    return kvm_phys_to_vttbr(pgd, g) | (vmid << VTTBR_VMID_SHIFT) | (VTTBR_CNP_BIT if cnp else 0)
