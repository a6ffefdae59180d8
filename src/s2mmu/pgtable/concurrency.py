"""A deterministic scheduler for concurrent page-table operations, and an explorer.

Operations are the library's stepped generators (``kvm_pgtable_stage2_map.steps(...)``):
each pauses before every descriptor read, write and compare-and-swap. A *schedule* is
the list of operation indices resumed, one descriptor access per entry. The runner
resumes operations in schedule order, honours the mmu_lock mode each operation holds
for its whole run (a fault takes it for read, an MMU notifier or wrprotect for write,
the hardware walker not at all), and checks the invariants of
:mod:`s2mmu.pgtable.invariants` after every step.

The explorer enumerates schedules, re-running the scenario from scratch for each one
(stateless model checking), fewest preemptions first. A bound on preemptions
(switching away from an operation that could have continued) keeps the count
polynomial; with no bound it enumerates every interleaving. A failing run prints as a
replayable schedule.

Kernel: the concurrency contract of stage2_try_set_pte / stage2_try_break_pte (shared
walkers race with cmpxchg and back off with -EAGAIN), kvm_pgtable_walk_begin/end (RCU),
and the mmu_lock usage of arch/arm64/kvm/mmu.c (faults under read_lock, unmap,
wrprotect and split under write_lock).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from s2mmu.pgtable.errno import errname
from s2mmu.pgtable.invariants import Checker, ExpectedPa, Violation
from s2mmu.pgtable.pte import (
    KVM_PTE_LEAF_ATTR_LO_S2_AF,
    kvm_granule_shift,
    kvm_pte_table,
    kvm_pte_to_phys,
    kvm_pte_valid,
)
from s2mmu.pgtable.steps import CAS, READ, Gen, Step
from s2mmu.pgtable.table import KvmPgtable
from s2mmu.pgtable.walk import kvm_pgd_page_idx

READ_LOCK = "read"
WRITE_LOCK = "write"

_SEQ = itertools.count()


@dataclass(frozen=True)
class Op:
    """One concurrent operation: a name, a generator factory, and the lock it holds."""

    name: str
    start: Callable[[], Gen[Any]]
    lock: str | None = READ_LOCK


FinalCheck = Callable[["World", list[Any]], list[Violation]]


@dataclass
class World:
    """One fresh instance of a scenario: the table, the operations, and what must hold.

    expected_pa(ipa) gives the output address a valid leaf for ipa must have (None: no
    expectation). final_checks run once every operation has returned, with the results.
    """

    pgt: KvmPgtable
    ops: list[Op]
    expected_pa: ExpectedPa
    final_checks: list[FinalCheck] = field(default_factory=list)


Scenario = Callable[[], World]


@dataclass
class RunResult:
    """What one schedule did: the steps taken, the results, the violations found."""

    names: list[str]
    schedule: list[int]
    steps: list[tuple[int, Step]]
    results: list[Any]
    violations: list[Violation]
    choices: list[tuple[list[int], int | None]] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        """Return whether no invariant was broken."""
        return not self.violations

    def schedule_text(self) -> str:
        """Return the schedule in the form replay() and parse_schedule() accept."""
        return " ".join(str(i) for i in self.schedule)

    def format(self) -> str:
        """Return a readable trace: the steps, the results, the violations, the replay."""
        lines = [f"ops: {', '.join(f'{i}={n}' for i, n in enumerate(self.names))}"]
        for k, (op, step) in enumerate(self.steps):
            lines.append(f"{k:4d}  {op} {self.names[op]:<16} {step.access:<5} {step.pa:#x}")
        for i, r in enumerate(self.results):
            if r is None:
                shown = "did not return (the run stopped at the violation)"
            elif isinstance(r, int) and not isinstance(r, bool):
                shown = errname(r)
            else:
                shown = repr(r)
            lines.append(f"result {i} {self.names[i]}: {shown}")
        lines += [f"VIOLATION {v}" for v in self.violations]
        lines.append(f"replay: schedule = {self.schedule_text()!r}")
        return "\n".join(lines)


def parse_schedule(text: str) -> list[int]:
    """Return the schedule written by RunResult.schedule_text()."""
    return [int(tok) for tok in text.split()]


class _Runner:
    """Resumes the world's operations one access at a time, with the mmu_lock rules."""

    def __init__(self, world: World) -> None:
        self.world = world
        n = len(world.ops)
        self.gens: list[Gen[Any] | None] = [None] * n
        self.done = [False] * n
        self.results: list[Any] = [None] * n
        self.readers: set[int] = set()
        self.writer: int | None = None
        self.pending: dict[int, Step | None] = {}

    def runnable(self) -> list[int]:
        """Return the operations that may take the next step."""
        out = []
        for i, op in enumerate(self.world.ops):
            if self.done[i]:
                continue
            if self.gens[i] is not None or op.lock is None:
                out.append(i)
            elif op.lock == READ_LOCK and self.writer is None:
                out.append(i)
            elif op.lock == WRITE_LOCK and self.writer is None and not self.readers:
                out.append(i)
        return out

    def exclusive_in_flight(self) -> bool:
        """Return whether a write-lock holder is mid-operation (states are transient)."""
        return self.writer is not None

    def step(self, i: int) -> Step | None:
        """Resume operation i for one access; return that access (None if none left)."""
        gen = self.gens[i]
        if gen is None:
            gen = self._start(i)
            pending = self._advance(i, gen)
            if pending is None:
                return None
        else:
            pending = self.pending[i]
        self.pending[i] = self._advance(i, gen)
        return pending

    def _start(self, i: int) -> Gen[Any]:
        op = self.world.ops[i]
        if op.lock == READ_LOCK:
            self.readers.add(i)
        elif op.lock == WRITE_LOCK:
            self.writer = i
        gen = op.start()
        self.gens[i] = gen
        return gen

    def _advance(self, i: int, gen: Gen[Any]) -> Step | None:
        try:
            return next(gen)
        except StopIteration as stop:
            self.results[i] = stop.value
            self.done[i] = True
            self.readers.discard(i)
            if self.writer == i:
                self.writer = None
            return None


def _choose(schedule: list[int], k: int, runnable: list[int], prev: int | None) -> int:
    """Return step k's operation: the schedule's, else the last one if it can go on."""
    if k < len(schedule):
        if schedule[k] not in runnable:
            raise ValueError(
                f"schedule step {k}: operation {schedule[k]} is not runnable {runnable}"
            )
        return schedule[k]
    return prev if prev is not None and prev in runnable else runnable[0]


def _execute(world: World, schedule: list[int], check: bool) -> RunResult:
    """Run the world once under schedule (then the default order), checking each step."""
    runner = _Runner(world)
    checker = Checker(
        world.pgt, world.expected_pa, check_refcount=lambda: not runner.exclusive_in_flight()
    )
    out = RunResult([op.name for op in world.ops], [], [], runner.results, [])
    prev: int | None = None
    while not out.violations and (runnable := runner.runnable()):
        i = _choose(schedule, len(out.schedule), runnable, prev)
        out.choices.append((runnable, prev))
        step = runner.step(i)
        out.schedule.append(i)
        prev = i
        if step is not None:
            out.steps.append((i, step))
        if check:
            out.violations += checker.after_step(len(out.steps) - 1)
    if check and not out.violations and all(runner.done):
        for final in world.final_checks:
            out.violations += final(world, runner.results)
    return out


def run_schedule(
    scenario: Scenario, schedule: list[int] | str = "", check: bool = True
) -> RunResult:
    """Run the scenario once, following schedule and then the default order.

    The default order keeps running the last operation while it can, else the lowest
    runnable index. A schedule may be given as printed by RunResult.schedule_text().
    """
    if isinstance(schedule, str):
        schedule = parse_schedule(schedule)
    return _execute(scenario(), schedule, check)


replay = run_schedule


@dataclass
class Exploration:
    """The outcome of exploring a scenario's schedules."""

    runs: int = 0
    failures: list[RunResult] = field(default_factory=list)
    complete: bool = True
    results: set[tuple[Any, ...]] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        """Return whether every explored schedule kept every invariant."""
        return not self.failures


def _is_preemption(choice: tuple[list[int], int | None], i: int) -> bool:
    runnable, prev = choice
    return prev is not None and prev != i and prev in runnable


def explore(
    scenario: Scenario,
    max_preemptions: int | None = 2,
    max_runs: int = 20_000,
    stop_at_first: bool = True,
) -> Exploration:
    """Run the scenario under every schedule with at most max_preemptions preemptions.

    Schedules are tried in order of how many preemptions they need (iterative context
    bounding), so a failure is found with as few preemptions as possible.
    max_preemptions=None explores every interleaving. Stops at the first failure unless
    stop_at_first is False; stops (complete=False) after max_runs schedules.
    """
    out = Exploration()
    queue: list[tuple[int, int, list[int]]] = [(0, 0, [])]
    while queue:
        if out.runs >= max_runs:
            out.complete = False
            break
        _, _, prefix = heapq.heappop(queue)
        result = _execute(scenario(), prefix, True)
        out.runs += 1
        out.results.add(tuple(result.results))
        if result.violations:
            out.failures.append(result)
            if stop_at_first:
                out.complete = False
                break
        _push_alternatives(result, len(prefix), max_preemptions, queue)
    return out


def _push_alternatives(
    result: RunResult,
    start: int,
    max_preemptions: int | None,
    queue: list[tuple[int, int, list[int]]],
) -> None:
    schedule, choices = result.schedule, result.choices
    before = [0]
    for k, i in enumerate(schedule):
        before.append(before[-1] + _is_preemption(choices[k], i))
    for k in range(len(schedule) - 1, start - 1, -1):
        for alt in reversed(choices[k][0]):
            if alt == schedule[k]:
                continue
            cost = before[k] + _is_preemption(choices[k], alt)
            if max_preemptions is None or cost <= max_preemptions:
                heapq.heappush(queue, (cost, next(_SEQ), schedule[:k] + [alt]))


def hw_set_access_flag(pgt: KvmPgtable, ipa: int) -> Gen[int]:
    """Walk stage 2 like the hardware with VTCR_EL2.HA and set AF in the leaf by CAS.

    Returns 1 if AF was set, 0 if already set or the CAS lost, -1 on a translation fault.
    This is the architecture's hardware update, here only as a racer for KVM's walkers.
    """
    ops = pgt.ops
    g = ops.g
    if pgt.pgd is None:
        return -1
    level = pgt.start_level
    table = pgt.pgd + kvm_pgd_page_idx(pgt, ipa) * g.page_size
    while True:
        ptep = table + ((ipa >> kvm_granule_shift(level, g)) & (g.ptrs_per_pte - 1)) * 8
        yield Step(READ, ptep)
        pte = ops.mem.read64(ptep)
        if not kvm_pte_valid(pte):
            return -1
        if kvm_pte_table(pte, level):
            table, level = kvm_pte_to_phys(pte, g), level + 1
            continue
        if pte & KVM_PTE_LEAF_ATTR_LO_S2_AF:
            return 0
        yield Step(CAS, ptep)
        return 1 if ops.cas_pte(ptep, pte, pte | KVM_PTE_LEAF_ATTR_LO_S2_AF) else 0
