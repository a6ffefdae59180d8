"""The ready-made races: every explored interleaving keeps every invariant under the
current and the v6.3 profiles, and the checker catches the races KVM's locking and RCU
exist to prevent."""

from __future__ import annotations

import pytest

from s2mmu.pgtable.concurrency import explore, replay, run_schedule
from s2mmu.pgtable.profile import CURRENT, V6_3, BehaviourProfile
from s2mmu.pgtable.races import (
    ALL_RACES,
    block_over_table_vs_walker,
    fault_vs_wrprotect,
    fault_walk_flags,
)
from s2mmu.pgtable.walk import KVM_PGTABLE_WALK_HANDLE_FAULT, KVM_PGTABLE_WALK_SHARED


@pytest.mark.parametrize("profile", [CURRENT, V6_3], ids=lambda p: p.name)
@pytest.mark.parametrize("race", sorted(ALL_RACES))
def test_every_interleaving_up_to_two_preemptions_keeps_the_invariants(
    race: str, profile: BehaviourProfile
) -> None:
    ex = explore(ALL_RACES[race](profile), max_preemptions=2)
    assert ex.complete, ex.failures[0].format() if ex.failures else "run limit"
    assert ex.ok


def test_two_faults_on_one_ipa_end_with_one_winner_and_one_eagain() -> None:
    ex = explore(ALL_RACES["same-ipa-faults"](CURRENT), max_preemptions=3)
    assert ex.complete and ex.ok
    assert ex.results == {(0, -11), (-11, 0)}


def test_wrprotect_without_the_mmu_lock_undoes_a_break_before_make() -> None:
    ex = explore(fault_vs_wrprotect(CURRENT, wrprotect_lock=None), max_preemptions=2)
    assert not ex.ok
    failure = ex.failures[0]
    assert [v.rule for v in failure.violations] == ["valid-to-valid"]
    again = replay(fault_vs_wrprotect(CURRENT, wrprotect_lock=None), failure.schedule_text())
    assert again.violations == failure.violations
    assert f"replay: schedule = '{failure.schedule_text()}'" in failure.format()


def _preempt_walker_inside_the_table(rcu: bool) -> list[str]:
    """vCPU1 walks down to the table, vCPU0 collapses it into a block, vCPU1 goes on."""
    for k in range(1, 8):
        run = run_schedule(block_over_table_vs_walker(CURRENT, rcu=rcu), [1] * k + [0])
        if run.violations:
            return [v.rule for v in run.violations]
    return []


def test_rcu_keeps_a_detached_table_alive_for_walkers_still_inside_it() -> None:
    assert _preempt_walker_inside_the_table(rcu=True) == []


def test_without_rcu_a_walker_reads_the_freed_table() -> None:
    assert _preempt_walker_inside_the_table(rcu=False) == ["freed-table"]


def test_fault_path_flags_follow_the_profile() -> None:
    assert fault_walk_flags(CURRENT) == KVM_PGTABLE_WALK_SHARED
    assert fault_walk_flags(V6_3) == KVM_PGTABLE_WALK_SHARED | KVM_PGTABLE_WALK_HANDLE_FAULT
