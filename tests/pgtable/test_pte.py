"""Descriptor bits and level arithmetic (asm/kvm_pgtable.h)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s2mmu.pgtable.pte import (
    KVM_INVALID_PTE_LOCKED,
    KVM_PGTABLE_LAST_LEVEL,
    KVM_PTE_LEAF_ATTR_LO_S2_AF,
    granule,
    kvm_granule_size,
    kvm_init_invalid_leaf_owner,
    kvm_init_table_pte,
    kvm_init_valid_leaf_pte,
    kvm_level_supports_block_mapping,
    kvm_phys_to_pte,
    kvm_pte_table,
    kvm_pte_to_phys,
    kvm_pte_valid,
    stage2_pte_is_locked,
)

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40


@pytest.mark.parametrize(
    ("page_shift", "sizes"),
    [
        (12, {3: 4 * KiB, 2: 2 * MiB, 1: 1 * GiB, 0: 512 * GiB}),
        (14, {3: 16 * KiB, 2: 32 * MiB, 1: 64 * GiB, 0: 128 * TiB}),
        (16, {3: 64 * KiB, 2: 512 * MiB, 1: 4 * TiB}),
    ],
)
def test_each_level_maps_the_granule_sizes_of_the_arm_arm(page_shift: int, sizes: dict) -> None:
    g = granule(page_shift)
    assert {lvl: kvm_granule_size(lvl, g) for lvl in sizes} == sizes


@pytest.mark.parametrize(("page_shift", "first_block"), [(12, 1), (14, 2), (16, 2)])
def test_kvm_uses_blocks_from_level_1_with_4k_and_level_2_otherwise(
    page_shift: int, first_block: int
) -> None:
    g = granule(page_shift)
    assert [lvl for lvl in range(4) if kvm_level_supports_block_mapping(lvl, g)] == list(
        range(first_block, 4)
    )


def test_granule_rejects_unknown_page_sizes() -> None:
    with pytest.raises(ValueError, match="12, 14 or 16"):
        granule(13)


def test_invalid_entries_are_never_tables() -> None:
    assert not kvm_pte_table(0b10, 1)
    assert not kvm_pte_valid(KVM_INVALID_PTE_LOCKED)


def test_a_last_level_descriptor_is_never_a_table_even_with_bit_1_set() -> None:
    g = granule(12)
    page = kvm_init_valid_leaf_pte(0x1000, 0, KVM_PGTABLE_LAST_LEVEL, g)
    assert page & 0b11 == 0b11
    assert not kvm_pte_table(page, KVM_PGTABLE_LAST_LEVEL)
    assert kvm_pte_table(kvm_init_table_pte(0x5000, g), 2)


def test_a_block_has_bit_1_clear_and_a_page_has_it_set() -> None:
    g = granule(12)
    assert kvm_init_valid_leaf_pte(0x20_0000, 0, 2, g) & 0b11 == 0b01
    assert kvm_init_valid_leaf_pte(0x1000, 0, 3, g) & 0b11 == 0b11


def test_leaf_keeps_only_attribute_fields_of_attr() -> None:
    g = granule(12)
    pte = kvm_init_valid_leaf_pte(0x1000, KVM_PTE_LEAF_ATTR_LO_S2_AF | 0xFFFF_F000, 3, g)
    assert pte == 0x1000 | KVM_PTE_LEAF_ATTR_LO_S2_AF | 0b11


@given(st.integers(0, (1 << 48) - 1).map(lambda x: x & ~0xFFF))
def test_4k_output_address_round_trips(pa: int) -> None:
    g = granule(12)
    assert kvm_pte_to_phys(kvm_phys_to_pte(pa, g), g) == pa


@given(st.integers(0, (1 << 52) - 1).map(lambda x: x & ~0xFFFF))
def test_64k_52bit_output_address_round_trips_through_bits_15_12(pa: int) -> None:
    g = granule(16)
    pte = kvm_phys_to_pte(pa, g)
    assert (pte >> 12) & 0xF == pa >> 48
    assert kvm_pte_to_phys(pte, g) == pa


def test_counted_means_non_zero_and_locked_means_invalid_with_bit_10() -> None:
    from s2mmu.pgtable.table import kvm_pgtable_pte_is_counted

    assert not kvm_pgtable_pte_is_counted(None, 0, 3)
    assert kvm_pgtable_pte_is_counted(None, kvm_init_invalid_leaf_owner(1), 3)
    assert stage2_pte_is_locked(KVM_INVALID_PTE_LOCKED)
    assert not stage2_pte_is_locked(KVM_INVALID_PTE_LOCKED | 1)


def test_owner_annotation_lives_in_bits_9_2() -> None:
    assert kvm_init_invalid_leaf_owner(1) == 1 << 2


def test_owner_annotation_reads_back_as_the_typed_owner() -> None:
    from s2mmu.pgtable.pte import (
        KVM_INVALID_PTE_LOCKED,
        KVM_MAX_OWNER_ID,
        PkvmComponentId,
        kvm_invalid_pte_owner,
    )

    assert KVM_MAX_OWNER_ID == 255
    for owner in (
        PkvmComponentId.PKVM_ID_HYP,
        PkvmComponentId.PKVM_ID_FFA,
        PkvmComponentId.PKVM_ID_GUEST,
    ):
        pte = kvm_init_invalid_leaf_owner(owner)
        assert pte == int(owner) << 2
        assert kvm_invalid_pte_owner(pte) is owner
    assert kvm_invalid_pte_owner(0) is None
    assert kvm_invalid_pte_owner(KVM_INVALID_PTE_LOCKED) is None
    assert kvm_invalid_pte_owner(0x4000_0000 | 0b11 | 1 << 2) is None


def test_unknown_owner_id_is_a_model_error() -> None:
    import pytest

    from s2mmu.pgtable.pte import kvm_invalid_pte_owner

    with pytest.raises(ValueError):
        kvm_invalid_pte_owner(kvm_init_invalid_leaf_owner(200))
