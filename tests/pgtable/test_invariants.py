"""The invariant checker catches each kind of broken invariant, and only those."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s2mmu.pgtable.env import PgtableEnv, new_env, new_stage2
from s2mmu.pgtable.events import EventLog, Warn
from s2mmu.pgtable.invariants import Checker, TreeModel, leaf_change_allowed, linear_expectation
from s2mmu.pgtable.prot import KVM_PGTABLE_PROT_R, KVM_PGTABLE_PROT_RW
from s2mmu.pgtable.pte import kvm_pte_to_phys
from s2mmu.pgtable.stage2 import kvm_pgtable_stage2_map, kvm_pgtable_stage2_unmap
from s2mmu.pgtable.table import KvmPgtable
from s2mmu.pgtable.tlb import __kvm_tlb_flush_vmid_ipa

from .conftest import SZ_2M, SZ_4K, memcache

PA = 0x1_0000_0000


def traced() -> tuple[PgtableEnv, KvmPgtable, Checker]:
    env = new_env(events=EventLog(trace_ptes=True))
    pgt = new_stage2(env, 40)
    kvm_pgtable_stage2_map(pgt, 0, SZ_4K, PA, KVM_PGTABLE_PROT_RW, memcache(env))
    return env, pgt, Checker(pgt, linear_expectation(0, PA, 1 << 30))


def ptep_of(pgt: KvmPgtable, ipa: int) -> int:
    return next(e.ptep for e in TreeModel(pgt).entries() if e.ipa == ipa and e.level == 3)


def rules(checker: Checker) -> list[str]:
    return [v.rule for v in checker.after_step(0)]


def test_correct_operations_keep_every_invariant() -> None:
    env, pgt, checker = traced()
    mc = memcache(env)
    kvm_pgtable_stage2_map(pgt, SZ_2M, SZ_2M, PA + SZ_2M, KVM_PGTABLE_PROT_RW, mc)
    kvm_pgtable_stage2_map(pgt, SZ_2M + SZ_4K, SZ_4K, PA + SZ_2M + SZ_4K, KVM_PGTABLE_PROT_R, mc)
    kvm_pgtable_stage2_map(pgt, SZ_2M, SZ_2M, PA + SZ_2M, KVM_PGTABLE_PROT_RW, mc)
    kvm_pgtable_stage2_unmap(pgt, 0, 1 << 40)
    kvm_pgtable_stage2_map(pgt, 0, SZ_4K, PA, KVM_PGTABLE_PROT_RW, mc)
    assert checker.after_step(0) == []


def test_a_wrong_output_address_is_reported() -> None:
    env, pgt, checker = traced()
    kvm_pgtable_stage2_map(pgt, SZ_4K, SZ_4K, PA, KVM_PGTABLE_PROT_RW, memcache(env))
    assert rules(checker) == ["wrong-mapping"]


def test_changing_the_output_address_in_place_is_reported() -> None:
    _, pgt, checker = traced()
    ptep = ptep_of(pgt, 0)
    pgt.ops.write_pte(ptep, pgt.ops.read_pte(ptep) + SZ_4K)
    assert "valid-to-valid" in rules(checker)


def test_changing_permissions_in_place_is_allowed() -> None:
    _, pgt, checker = traced()
    ptep = ptep_of(pgt, 0)
    pgt.ops.write_pte(ptep, pgt.ops.read_pte(ptep) & ~(1 << 7))
    assert rules(checker) == []


def test_a_table_entry_never_changes_in_place() -> None:
    assert not leaf_change_allowed(0x1003, 0x2003, 2)
    assert leaf_change_allowed(0x1003, 0x1003, 2)


@pytest.mark.parametrize(("tlbi", "expected"), [(False, ["break-without-tlbi"]), (True, [])])
def test_making_a_broken_entry_live_needs_a_tlbi_in_between(
    tlbi: bool, expected: list[str]
) -> None:
    _, pgt, checker = traced()
    ptep = ptep_of(pgt, 0)
    old = pgt.ops.read_pte(ptep)
    pgt.ops.write_pte(ptep, 0)
    if tlbi:
        __kvm_tlb_flush_vmid_ipa(pgt.s2_mmu, 0, 3)
    pgt.ops.write_pte(ptep, old)
    assert rules(checker) == expected


def test_reusing_an_unlinked_table_page_before_a_tlbi_is_reported() -> None:
    env, pgt, checker = traced()
    l2 = next(e for e in TreeModel(pgt).entries() if e.level == 2)
    child = l2.pte & ~0xFFF & ((1 << 48) - 1)
    pgt.ops.write_pte(l2.ptep, 0)
    env.pool.free(child)
    assert pgt.ops.zalloc_page(memcache(env, 0)) == child  # host fallback allocation
    assert "reuse-before-tlbi" in rules(checker)


def test_reusing_a_table_page_below_an_unlinked_table_before_a_tlbi_is_reported() -> None:
    env, pgt, checker = traced()
    l1 = next(e for e in TreeModel(pgt).entries() if e.level == 1)
    l2 = next(e for e in TreeModel(pgt).entries() if e.level == 2)
    child, grandchild = (kvm_pte_to_phys(e.pte, env.g) for e in (l1, l2))
    pgt.ops.write_pte(l1.ptep, 0)
    env.pool.free(child)
    env.pool.free(grandchild)  # freed last, handed out first
    assert pgt.ops.zalloc_page(memcache(env, 0)) == grandchild
    assert "reuse-before-tlbi" in rules(checker)


def test_an_extra_reference_on_a_table_page_is_reported() -> None:
    _, pgt, checker = traced()
    pgt.ops.get_page(ptep_of(pgt, 0))
    assert rules(checker) == ["refcount"]


def test_freeing_a_reachable_table_and_reading_it_are_reported() -> None:
    _, pgt, checker = traced()
    ptep = ptep_of(pgt, 0)
    pgt.ops.put_page(ptep)
    pgt.ops.put_page(ptep)
    pgt.ops.read_pte(ptep)
    assert set(rules(checker)) == {"freed-table"}


def test_a_warn_is_a_violation() -> None:
    env, _, checker = traced()
    env.events.record(Warn("stage2_make_pte", "!stage2_pte_is_locked(*ctx->ptep)"))
    assert rules(checker) == ["warn"]


def test_violations_print_rule_step_and_detail() -> None:
    _, pgt, checker = traced()
    pgt.ops.get_page(ptep_of(pgt, 0))
    (v,) = checker.after_step(7)
    assert str(v).startswith("refcount after step 7: table page 0x")


@settings(max_examples=20, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(0, 1023), st.sampled_from([1, 3, 512])),
        max_size=12,
    )
)
def test_the_incremental_tree_equals_a_fresh_scan(ops: list[tuple[bool, int, int]]) -> None:
    env, pgt, checker = traced()
    mc = memcache(env, 40)
    for is_map, page, n in ops:
        ipa = page * SZ_4K
        if is_map:
            kvm_pgtable_stage2_map(pgt, ipa, n * SZ_4K, PA + ipa, KVM_PGTABLE_PROT_RW, mc)
        else:
            kvm_pgtable_stage2_unmap(pgt, ipa, n * SZ_4K)
        assert checker.after_step(0) == []
    fresh = TreeModel(pgt)
    assert checker.tree.ptes == fresh.ptes
    assert checker.tree.tables == fresh.tables
