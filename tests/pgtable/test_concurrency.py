"""The deterministic scheduler and the explorer."""

from __future__ import annotations

from math import comb

import pytest

from s2mmu.pgtable.concurrency import (
    READ_LOCK,
    WRITE_LOCK,
    Footprint,
    Op,
    ScheduleError,
    World,
    explore,
    hw_set_access_flag,
    independent,
    parse_schedule,
    replay,
    run_schedule,
)
from s2mmu.pgtable.env import new_env, new_stage2
from s2mmu.pgtable.events import EventLog
from s2mmu.pgtable.prot import KVM_PGTABLE_PROT_R
from s2mmu.pgtable.pte import KVM_PTE_LEAF_ATTR_LO_S2_AF
from s2mmu.pgtable.stage2 import kvm_pgtable_stage2_map, kvm_pgtable_stage2_test_clear_young
from s2mmu.pgtable.steps import READ, WRITE, Gen, Step
from s2mmu.pgtable.table import KvmPgtable
from s2mmu.pgtable.walk import kvm_pgtable_get_leaf

from .conftest import SZ_4K, memcache


def writer(pgt: KvmPgtable, n: int, ptep: int) -> Gen[int]:
    """Write n invalid descriptors (2, 4, ...) to the word at ptep, one step each.

    The first write makes the entry counted, so it takes a reference on the table page.
    """
    for i in range(n):
        yield Step(WRITE, ptep)
        pgt.ops.write_pte(ptep, 2 * (i + 1))
        if i == 0:
            pgt.ops.get_page(ptep)
    return n


def reader(pgt: KvmPgtable, n: int, ptep: int) -> Gen[int]:
    """Read the word at ptep n times; return the sum of what was read."""
    total = 0
    for _ in range(n):
        yield Step(READ, ptep)
        total += pgt.ops.read_pte(ptep)
    return total


def words(*ops: tuple[str, int, int]):  # type: ignore[no-untyped-def]
    """Return a scenario of readers and writers of words in one table page."""

    def build() -> World:
        pgt = new_stage2(new_env(events=EventLog(trace_ptes=True)), 40)
        assert pgt.pgd is not None
        base = pgt.pgd + 0x800
        made = [Op(f"{kind}{k}", (lambda kind=kind, n=n, w=w: (writer if kind == "w" else reader)(
            pgt, n, base + 8 * w)), None) for k, (kind, n, w) in enumerate(ops)]
        return World(pgt, made, lambda ipa: None)

    return build


def test_reads_of_words_nobody_writes_are_explored_once_per_order_of_the_writes() -> None:
    full = explore(words(("r", 3, 0), ("r", 3, 1)), max_preemptions=None, reduce=False)
    reduced = explore(words(("r", 3, 0), ("r", 3, 1)), max_preemptions=None)
    assert full.runs == comb(6, 3)
    assert reduced.results == full.results and reduced.runs < full.runs


def test_a_reader_racing_a_writer_of_its_word_sees_every_value_with_or_without_reduction() -> None:
    full = explore(words(("r", 2, 0), ("w", 2, 0)), max_preemptions=None, reduce=False)
    reduced = explore(words(("r", 2, 0), ("w", 2, 0)), max_preemptions=None)
    assert reduced.results == full.results and full.ok
    assert {r[0] for r in full.results} == {0, 2, 4, 6, 8}


def test_a_reader_of_another_word_than_the_writer_is_cut_short() -> None:
    reduced = explore(words(("r", 2, 0), ("w", 2, 1)), max_preemptions=None)
    full = explore(words(("r", 2, 0), ("w", 2, 1)), max_preemptions=None, reduce=False)
    assert reduced.results == full.results == {(0, 2)} and reduced.ok
    assert reduced.blocked > 0 and reduced.runs < full.runs


def test_two_writers_are_never_reordered_away_even_on_different_words() -> None:
    full = explore(words(("w", 2, 0), ("w", 2, 1)), max_preemptions=None, reduce=False)
    reduced = explore(words(("w", 2, 0), ("w", 2, 1)), max_preemptions=None)
    assert reduced.runs == full.runs and reduced.blocked == 0


def test_independence_is_about_words_written() -> None:
    r0 = Footprint(frozenset({0}), frozenset(), False)
    r1 = Footprint(frozenset({8}), frozenset(), False)
    w0 = Footprint(frozenset({0}), frozenset({0}), False)
    w1 = Footprint(frozenset(), frozenset({8}), False)
    everything = Footprint(frozenset(), frozenset(), True)
    assert independent(r0, r1) and independent(r0, r0) and independent(r0, w1)
    assert not independent(r0, w0) and not independent(w0, w1)
    assert not independent(r1, everything) and not independent(everything, everything)


def test_a_run_limit_says_how_many_preemptions_were_covered() -> None:
    ex = explore(scenario(3, 3), max_preemptions=2, max_runs=2, reduce=False)
    assert not ex.complete and ex.runs == 2
    assert ex.covered_preemptions == 0 and ex.pending > 0
    assert explore(scenario(3, 3), max_preemptions=2).covered_preemptions == 2


def test_a_schedule_can_stop_where_it_ends() -> None:
    run = run_schedule(scenario(2, 2), "0 1", then_default=False)
    assert run.schedule == [0, 1] and run.finished == [False, False]


def test_a_schedule_naming_an_operation_that_cannot_run_says_which_entry() -> None:
    with pytest.raises(ScheduleError) as e:
        run_schedule(scenario(1, 1), "0 0 0")
    assert (e.value.entry, e.value.op, e.value.runnable) == (1, 0, [1])


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
    ex = explore(scenario(a, b), max_preemptions=None, reduce=False)
    assert ex.complete and ex.ok
    assert ex.runs == comb(a + b, a)


def test_a_preemption_bound_of_zero_runs_each_operation_to_completion() -> None:
    assert explore(scenario(4, 4), max_preemptions=0, reduce=False).runs == 2


def test_preemption_bound_one_adds_one_switch_per_point() -> None:
    # AAABBB, BBBAAA, and A^k B^3 A^(3-k) or B^k A^3 B^(3-k) for k = 1, 2.
    assert explore(scenario(3, 3), max_preemptions=1, reduce=False).runs == 2 + 2 + 2


def test_a_write_lock_holder_is_never_interleaved() -> None:
    ex = explore(scenario(3, 3, (WRITE_LOCK, READ_LOCK)), max_preemptions=None, reduce=False)
    assert ex.runs == 2


def test_read_lock_holders_interleave() -> None:
    ex = explore(scenario(2, 2, (READ_LOCK, READ_LOCK)), max_preemptions=None, reduce=False)
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
