"""The invariant checker catches each kind of broken invariant, and only those."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s2mmu.pgtable import walk as walk_module
from s2mmu.pgtable.env import PgtableEnv, new_env, new_stage2
from s2mmu.pgtable.errno import EAGAIN, ENOMEM, ERANGE
from s2mmu.pgtable.events import TLBI_TTL_UNKNOWN, EventLog, TlbiVmidIpa, WalkReturn, Warn
from s2mmu.pgtable.inject import InjectedBug
from s2mmu.pgtable.invariants import (
    Checker,
    TreeModel,
    check_walk_return,
    leaf_change_allowed,
    linear_expectation,
    walk_ends,
)
from s2mmu.pgtable.profile import EagainRule
from s2mmu.pgtable.prot import KVM_PGTABLE_PROT_R, KVM_PGTABLE_PROT_RW
from s2mmu.pgtable.pte import kvm_pte_to_phys
from s2mmu.pgtable.stage2 import kvm_pgtable_stage2_map, kvm_pgtable_stage2_unmap
from s2mmu.pgtable.steps import Gen
from s2mmu.pgtable.table import KvmPgtable
from s2mmu.pgtable.tlb import __kvm_tlb_flush_vmid_ipa
from s2mmu.pgtable.walk import (
    KVM_PGTABLE_WALK_HANDLE_FAULT,
    KVM_PGTABLE_WALK_IGNORE_EAGAIN,
    KVM_PGTABLE_WALK_LEAF,
    KvmPgtableVisitCtx,
    KvmPgtableWalker,
    kvm_pgtable_walk,
)

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


# -- table-tlbi-level and walk-contract -------------------------------------------------------


def test_unmapping_a_table_with_a_level_hinted_tlbi_is_reported() -> None:
    env, pgt, checker = traced()
    pgt.ops.bugs = frozenset({InjectedBug.TABLE_TLBI_LEVEL_HINT})
    kvm_pgtable_stage2_unmap(pgt, 0, SZ_2M)
    broken = checker.after_step(3)  # the level-3 table goes, then the emptied level-2 one
    assert [v.rule for v in broken] == ["table-tlbi-level", "table-tlbi-level"]
    assert all(v.step == 3 for v in broken)
    assert "level-2 table entry" in broken[0].detail and "level hint 2" in broken[0].detail
    assert "level-1 table entry" in broken[1].detail and "level hint 1" in broken[1].detail


def test_unmapping_a_table_without_a_level_hint_keeps_the_rule() -> None:
    env, pgt, checker = traced()
    kvm_pgtable_stage2_unmap(pgt, 0, SZ_2M)
    assert TlbiVmidIpa(pgt.s2_mmu.vmid, 0, TLBI_TTL_UNKNOWN) in env.events.of_type(TlbiVmidIpa)
    assert checker.after_step(0) == []


def test_the_checker_traces_walk_returns() -> None:
    env, pgt, checker = traced()
    kvm_pgtable_stage2_unmap(pgt, 0, SZ_2M)
    walks = env.events.of_type(WalkReturn)
    assert walks and walks[-1].ret == 0 and walks[-1].visits > 0


@pytest.mark.parametrize(("rule", "flags", "ends"), [
    (EagainRule.ANY_ERROR_STOPS, 0, True),
    (EagainRule.HANDLE_FAULT, 0, False),
    (EagainRule.HANDLE_FAULT, KVM_PGTABLE_WALK_HANDLE_FAULT, True),
    (EagainRule.IGNORE_EAGAIN, 0, True),
    (EagainRule.IGNORE_EAGAIN, KVM_PGTABLE_WALK_IGNORE_EAGAIN, False),
])
def test_eagain_ends_a_walk_as_each_rule_says(rule: EagainRule, flags: int, ends: bool) -> None:
    assert walk_ends(flags, -EAGAIN, rule) is ends
    assert walk_ends(flags, -ENOMEM, rule)
    assert not walk_ends(flags, 0, rule)


@pytest.mark.parametrize(("ev", "rule", "ok"), [
    (WalkReturn(0, ((2, -EAGAIN),), 2, -EAGAIN), EagainRule.IGNORE_EAGAIN, True),
    (WalkReturn(0, ((2, -EAGAIN),), 5, -EAGAIN), EagainRule.IGNORE_EAGAIN, False),
    (WalkReturn(0, ((2, -EAGAIN),), 2, 0), EagainRule.IGNORE_EAGAIN, False),
    (WalkReturn(0, ((2, -EAGAIN),), 5, 0), EagainRule.HANDLE_FAULT, True),
    (WalkReturn(0, ((2, -EAGAIN),), 5, -EAGAIN), EagainRule.HANDLE_FAULT, False),
    (WalkReturn(KVM_PGTABLE_WALK_HANDLE_FAULT, ((2, -EAGAIN),), 2, -EAGAIN),
     EagainRule.HANDLE_FAULT, True),
    (WalkReturn(0, ((2, -EAGAIN), (4, -ENOMEM)), 4, -ENOMEM), EagainRule.HANDLE_FAULT, True),
    (WalkReturn(0, ((1, -ENOMEM),), 1, -ENOMEM), EagainRule.HANDLE_FAULT, True),
    (WalkReturn(0, (), 0, -ERANGE), EagainRule.IGNORE_EAGAIN, True),
    (WalkReturn(0, (), 3, -EAGAIN), EagainRule.IGNORE_EAGAIN, False),
])
def test_walk_returns_are_checked_against_the_contract(ev: WalkReturn, rule: EagainRule,
                                                      ok: bool) -> None:
    broken = check_walk_return(ev, rule)
    assert (broken == []) is ok
    assert all(v.rule == "walk-contract" for v in broken)


def test_a_walker_that_ignores_its_flags_breaks_the_contract(monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    env, pgt, checker = traced()

    def eagain(ctx: KvmPgtableVisitCtx, visit: int) -> Gen[int]:
        return -EAGAIN
        yield  # pragma: no cover

    walker = KvmPgtableWalker(eagain, None, KVM_PGTABLE_WALK_LEAF)
    assert kvm_pgtable_walk(pgt, 0, 4 * SZ_4K, walker) == -EAGAIN  # v6.19: ends at once
    assert checker.after_step(0) == []
    monkeypatch.setattr(walk_module, "kvm_pgtable_walk_continue", lambda w, r, rule: True)
    assert kvm_pgtable_walk(pgt, 0, 4 * SZ_4K, walker) == 0
    assert [v.rule for v in checker.after_step(1)] == ["walk-contract"]
