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
