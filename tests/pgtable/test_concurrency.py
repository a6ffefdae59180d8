"""The deterministic scheduler and the explorer."""

from __future__ import annotations

from math import comb

import pytest

from s2mmu.pgtable.concurrency import (
    READ_LOCK,
    WRITE_LOCK,
    Op,
    World,
    explore,
    hw_set_access_flag,
    parse_schedule,
    replay,
    run_schedule,
)
from s2mmu.pgtable.env import new_env, new_stage2
from s2mmu.pgtable.events import EventLog
from s2mmu.pgtable.prot import KVM_PGTABLE_PROT_R
from s2mmu.pgtable.pte import KVM_PTE_LEAF_ATTR_LO_S2_AF
from s2mmu.pgtable.stage2 import kvm_pgtable_stage2_map, kvm_pgtable_stage2_test_clear_young
from s2mmu.pgtable.steps import Gen, Step
from s2mmu.pgtable.walk import kvm_pgtable_get_leaf

from .conftest import SZ_4K, memcache


def counter(n: int, log: list[str], name: str) -> Gen[int]:
    for i in range(n):
        yield Step("read", i * 8)
        log.append(name)
    return n


def scenario(a: int, b: int, locks: tuple[str | None, str | None] = (None, None)):  # type: ignore[no-untyped-def]
    def build() -> World:
        log: list[str] = []
        pgt = new_stage2(new_env(events=EventLog(trace_ptes=True)), 40)
        ops = [
            Op("A", lambda: counter(a, log, "A"), locks[0]),
            Op("B", lambda: counter(b, log, "B"), locks[1]),
        ]
        return World(pgt, ops, lambda ipa: None)

    return build


@pytest.mark.parametrize(("a", "b"), [(1, 1), (2, 3), (4, 4)])
def test_unbounded_exploration_runs_every_interleaving_once(a: int, b: int) -> None:
    ex = explore(scenario(a, b), max_preemptions=None)
    assert ex.complete and ex.ok
    assert ex.runs == comb(a + b, a)


def test_a_preemption_bound_of_zero_runs_each_operation_to_completion() -> None:
    assert explore(scenario(4, 4), max_preemptions=0).runs == 2


def test_preemption_bound_one_adds_one_switch_per_point() -> None:
    # AAABBB, BBBAAA, and A^k B^3 A^(3-k) or B^k A^3 B^(3-k) for k = 1, 2.
    assert explore(scenario(3, 3), max_preemptions=1).runs == 2 + 2 + 2


def test_a_write_lock_holder_is_never_interleaved() -> None:
    ex = explore(scenario(3, 3, (WRITE_LOCK, READ_LOCK)), max_preemptions=None)
    assert ex.runs == 2


def test_read_lock_holders_interleave() -> None:
    ex = explore(scenario(2, 2, (READ_LOCK, READ_LOCK)), max_preemptions=None)
    assert ex.runs == comb(4, 2)


def test_a_schedule_replays_to_the_same_steps() -> None:
    first = run_schedule(scenario(3, 2), "1 0 1 0 0")
    again = replay(scenario(3, 2), parse_schedule(first.schedule_text()))
    assert first.schedule == [1, 0, 1, 0, 0]
    assert again.steps == first.steps and again.results == [3, 2]


def test_a_schedule_that_names_a_finished_operation_is_refused() -> None:
    with pytest.raises(ValueError, match="not runnable"):
        run_schedule(scenario(1, 1), "0 0")


def test_the_default_order_keeps_running_the_last_operation() -> None:
    assert run_schedule(scenario(2, 2), "1").schedule == [1, 1, 0, 0]


def test_a_run_prints_its_steps_results_and_replay_line() -> None:
    text = run_schedule(scenario(1, 1)).format()
    assert "ops: 0=A, 1=B" in text
    assert "result 1 B: 1" in text
    assert text.endswith("replay: schedule = '0 1'")


def test_hardware_access_flag_update_sets_af_by_cas_once() -> None:
    env = new_env()
    pgt = new_stage2(env, 40)
    kvm_pgtable_stage2_map(pgt, 0, SZ_4K, 1 << 32, KVM_PGTABLE_PROT_R, memcache(env))
    kvm_pgtable_stage2_test_clear_young(pgt, 0, SZ_4K, True)
    from s2mmu.pgtable.steps import run

    assert run(hw_set_access_flag(pgt, 0)) == 1
    assert kvm_pgtable_get_leaf(pgt, 0).pte & KVM_PTE_LEAF_ATTR_LO_S2_AF
    assert run(hw_set_access_flag(pgt, 0)) == 0
    assert run(hw_set_access_flag(pgt, 1 << 30)) == -1
