"""VTCR_EL2 and VTTBR_EL2 as KVM programs them (field positions from the Arm ARM:
T0SZ 5:0, SL0 7:6, IRGN0 9:8, ORGN0 11:10, SH0 13:12, TG0 15:14, PS 18:16, VS 19, HA 21,
RES1 31; VTTBR BADDR 47:1, VMID 63:48, CnP 0)."""

import pytest

from s2mmu.arch.bits import bit, bits
from s2mmu.pgtable.caps import KvmCaps
from s2mmu.pgtable.pte import granule
from s2mmu.pgtable.stage2 import kvm_pgtable_stage2_pgd_size
from s2mmu.pgtable.vtcr import (
    kvm_get_vtcr,
    kvm_get_vttbr,
    stage2_pgtable_levels,
    vtcr_el2_ipa,
    vtcr_el2_start_level,
)

PARANGE_48 = 0b0101
VMID16 = 0b0010 << 4


@pytest.mark.parametrize(
    ("page_shift", "ipa", "sl0", "start", "tg0", "pgd_pages"),
    [
        (12, 40, 0b01, 1, 0b00, 2),
        (12, 48, 0b10, 0, 0b00, 1),
        (12, 44, 0b10, 0, 0b00, 1),
        (12, 32, 0b00, 2, 0b00, 4),
        (14, 40, 0b01, 2, 0b10, 16),
        (16, 40, 0b01, 2, 0b01, 1),
        (16, 48, 0b10, 1, 0b01, 1),
    ],
)
def test_vtcr_fields_and_concatenated_pgd(
    page_shift: int, ipa: int, sl0: int, start: int, tg0: int, pgd_pages: int
) -> None:
    g = granule(page_shift)
    vtcr = kvm_get_vtcr(PARANGE_48, VMID16, ipa, g)
    assert bits(vtcr, 5, 0) == 64 - ipa
    assert bits(vtcr, 7, 6) == sl0
    assert bits(vtcr, 15, 14) == tg0
    assert (bits(vtcr, 9, 8), bits(vtcr, 11, 10), bits(vtcr, 13, 12)) == (1, 1, 3)
    assert bits(vtcr, 18, 16) == PARANGE_48
    assert bit(vtcr, 19) == 1 and bit(vtcr, 21) == 1 and bit(vtcr, 31) == 1
    assert vtcr_el2_ipa(vtcr) == ipa
    assert vtcr_el2_start_level(vtcr, g) == start
    assert kvm_pgtable_stage2_pgd_size(vtcr, g) == pgd_pages * g.page_size


def test_vtcr_uses_at_least_two_levels() -> None:
    g = granule(12)
    assert stage2_pgtable_levels(25, g) == 1
    assert vtcr_el2_start_level(kvm_get_vtcr(PARANGE_48, VMID16, 25, g), g) == 2


def test_parange_is_capped_at_48_bits_without_64k_pages() -> None:
    assert bits(kvm_get_vtcr(0b0110, 0, 40, granule(12)), 18, 16) == 0b0101
    assert bits(kvm_get_vtcr(0b0110, 0, 40, granule(16)), 18, 16) == 0b0110


def test_8bit_vmid_and_no_hardware_af_clear_vs_and_ha() -> None:
    vtcr = kvm_get_vtcr(PARANGE_48, 0, 40, granule(12), KvmCaps(hw_afdbm=False))
    assert bit(vtcr, 19) == 0 and bit(vtcr, 21) == 0


def test_vttbr_holds_baddr_vmid_and_cnp() -> None:
    assert kvm_get_vttbr(0x8000_2000, 5, cnp=True) == 0x8000_2000 | 5 << 48 | 1


def test_vttbr_baddr_with_52bit_pa_moves_bits_51_48_to_5_2() -> None:
    assert kvm_get_vttbr(0xA_0000_0001_0000, 0, granule(16)) == 0x1_0000 | 0xA << 2
