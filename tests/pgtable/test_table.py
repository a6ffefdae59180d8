"""The page-table and MMU records."""

import pytest

from s2mmu.pgtable.table import KVM_PGTABLE_S2_IDMAP, KVM_PGTABLE_S2_NOFWB, KvmPgtable


def test_stage2_flag_values_are_the_kernels() -> None:
    assert (int(KVM_PGTABLE_S2_NOFWB), int(KVM_PGTABLE_S2_IDMAP)) == (1, 2)


def test_an_uninitialised_table_has_no_mm_ops_or_mmu() -> None:
    pgt = KvmPgtable()
    with pytest.raises(ValueError, match="not initialised"):
        _ = pgt.ops
    with pytest.raises(ValueError, match="not a stage-2"):
        _ = pgt.s2_mmu


def test_counted_rule_defaults_to_any_non_zero_entry_and_tables_always_count() -> None:
    from s2mmu.pgtable.pte import granule, kvm_init_table_pte
    from s2mmu.pgtable.table import KvmPgtable, kvm_pgtable_pte_is_counted

    plain = KvmPgtable()
    assert not kvm_pgtable_pte_is_counted(plain, 0, 3)
    assert kvm_pgtable_pte_is_counted(plain, 1 << 2, 3)
    nothing = KvmPgtable(pte_is_counted_cb=lambda pte, level: False)
    table = kvm_init_table_pte(0x1000, granule(12))
    assert kvm_pgtable_pte_is_counted(nothing, table, 2)
    assert not kvm_pgtable_pte_is_counted(nothing, table, 3)  # a page at the last level
    assert not kvm_pgtable_pte_is_counted(nothing, 0x4000_0000 | 0b01, 2)
