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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from s2mmu.pgtable.errno import errname
from s2mmu.pgtable.events import DcacheCleanInvalPoc, Dsb, IcacheInvalPou, Isb, PteWrite
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


@dataclass(frozen=True)
class Footprint:
    """What one transition touched: the descriptor words it read and wrote, or everything.

    Besides descriptors, a table page's refcount and RCU's state count as words (see
    _Recorder).

    touches_all marks a transition that did anything else to shared state (allocated or
    freed a page, recorded an event an invariant reads other than its own descriptor write
    (a TLBI, a page allocation, a use after free, a WARN), or
    accessed more than one word at a time): it is dependent with every other transition.
    Taking or dropping the mmu_lock is not a dependency: it only decides whether an
    operation may start, and an operation that sleeps has always started (its first
    transition, which takes the lock, never sleeps: see explore()).
    """

    reads: frozenset[int]
    writes: frozenset[int]
    touches_all: bool


def independent(a: Footprint, b: Footprint) -> bool:
    """Return whether two transitions of different operations commute.

    Reads commute with reads and with writes to other words. Two writes never count as
    independent, even to different words: the checker's history (pending breaks, tables
    awaiting a TLBI) depends on the order it sees descriptor writes in.
    """
    if a.touches_all or b.touches_all:
        return False
    if a.writes and b.writes:
        return False
    return not (a.writes & b.reads) and not (b.writes & a.reads)


# Events no invariant reads (cache maintenance and barriers): their order is free.
_UNCHECKED_EVENTS = (Dsb, Isb, DcacheCleanInvalPoc, IcacheInvalPou)

# Words standing for shared state that is not memory: negative, so never a descriptor.
_RCU_WORD = -8


def _refcount_word(addr: int, page_size: int) -> int:
    """Return the word standing for the refcount of the page holding addr."""
    return -16 - (addr & ~(page_size - 1))


class _Recorder:
    """Records the footprint of each transition by watching the world's shared state.

    It wraps, on this world's instances only, the memory accessors, the page pool, the
    refcount helpers and RCU; the checker's own reads happen outside a transition and
    are not recorded. A page's refcount and RCU's state count as words of their own
    (negative addresses); allocating or freeing a page touches everything.
    """

    def __init__(self, world: World) -> None:
        self.active = False
        self.reads: set[int] = set()
        self.writes: set[int] = set()
        self.touches_all = False
        ops = world.pgt.ops
        self.events = ops.events
        self._wrap_memory(ops.mem)
        for obj, names in ((ops.pool, ("alloc_page", "alloc_pages_exact", "free")),
                           (ops.mem, ("free_page",))):
            for name in names:
                setattr(obj, name, self._everything(getattr(obj, name)))
        for name, writes in (("get_page", True), ("put_page", True), ("page_count", False)):
            setattr(ops, name, self._refcount(getattr(ops, name), ops.g.page_size, writes))
        if ops.rcu is not None:
            for name, writes in (("read_lock", False), ("read_unlock", True),
                                 ("call_rcu", True)):
                setattr(ops.rcu, name, self._rcu(getattr(ops.rcu, name), writes))

    def _everything(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if self.active:
                self.touches_all = True
            return fn(*args, **kwargs)

        return wrapper

    def _refcount(self, fn: Callable[[int], Any], page_size: int, writes: bool) -> Any:
        """Wrap a refcount helper: it reads (or updates) the word standing for the page's count."""

        def wrapper(addr: int) -> Any:
            if self.active:
                (self.writes if writes else self.reads).add(_refcount_word(addr, page_size))
            return fn(addr)

        return wrapper

    def _rcu(self, fn: Callable[..., Any], writes: bool) -> Callable[..., Any]:
        """Wrap an RCU entry point: entering a read-side section only adds a reader, so
        it reads the RCU word; leaving one (which may run callbacks) and call_rcu write it."""

        def wrapper(*args: Any) -> Any:
            if self.active:
                (self.writes if writes else self.reads).add(_RCU_WORD)
            return fn(*args)

        return wrapper

    def _wrap_memory(self, mem: Any) -> None:
        read64, read_bytes, write_bytes = mem.read64, mem.read_bytes, mem.write_bytes

        def rec_read64(pa: int, big_endian: bool = False) -> int:
            if self.active:
                self.reads.add(pa & ~7)
            return int(read64(pa, big_endian))

        def rec_read_bytes(pa: int, size: int) -> bytes:
            if self.active:
                if size <= 8 and (pa & ~7) == ((pa + size - 1) & ~7):
                    self.reads.add(pa & ~7)
                else:
                    self.touches_all = True
            return bytes(read_bytes(pa, size))

        def rec_write_bytes(pa: int, data: bytes) -> None:
            if self.active:
                if len(data) <= 8 and (pa & ~7) == ((pa + len(data) - 1) & ~7):
                    self.writes.add(pa & ~7)
                else:
                    self.touches_all = True
            write_bytes(pa, data)

        mem.read64, mem.read_bytes, mem.write_bytes = rec_read64, rec_read_bytes, rec_write_bytes

    def begin(self, pending: Step | None) -> int:
        """Start recording a transition that performs the access pending."""
        self.active, self.touches_all = True, False
        self.reads, self.writes = set(), set()
        if pending is not None:
            (self.reads if pending.access == READ else self.writes).add(pending.pa & ~7)
        return len(self.events)

    def end(self, seen: int) -> Footprint:
        """Stop recording; return the footprint of the transition."""
        self.active = False
        for ev in self.events.since(seen):
            if isinstance(ev, _UNCHECKED_EVENTS):
                continue
            if not (isinstance(ev, PteWrite) and ev.pa & ~7 in self.writes):
                self.touches_all = True
        return Footprint(frozenset(self.reads), frozenset(self.writes), self.touches_all)


Sleep = dict[int, Footprint]


@dataclass
class RunResult:
    """What one schedule did: the steps taken, the results, the violations found.

    blocked says the run stopped early without a violation because every remaining
    choice was either asleep (equivalent to a schedule explored elsewhere) or over the
    preemption bound; its results are partial and are not an outcome.
    """

    names: list[str]
    schedule: list[int]
    steps: list[tuple[int, Step]]
    results: list[Any]
    violations: list[Violation]
    choices: list[tuple[list[int], int | None]] = field(default_factory=list, repr=False)
    footprints: list[Footprint | None] = field(default_factory=list, repr=False)
    sleeping: list[Sleep] = field(default_factory=list, repr=False)
    preemptions: int = 0
    blocked: bool = False
    finished: list[bool] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Return whether no invariant was broken."""
        return not self.violations

    def schedule_text(self) -> str:
        """Return the schedule in the form replay() and parse_schedule() accept."""
        return " ".join(str(i) for i in self.schedule)

    def result_text(self, i: int) -> str:
        """Return operation i's result as a kernel reader spells it (errno names)."""
        r = self.results[i]
        if r is None:
            return "did not return (the run stopped at the violation)"
        if isinstance(r, int) and not isinstance(r, bool):
            return errname(r)
        return repr(r)

    def format(self) -> str:
        """Return a readable trace: the steps, the results, the violations, the replay."""
        lines = [f"ops: {', '.join(f'{i}={n}' for i, n in enumerate(self.names))}"]
        for k, (op, step) in enumerate(self.steps):
            lines.append(f"{k:4d}  {op} {self.names[op]:<16} {step.access:<5} {step.pa:#x}")
        for i in range(len(self.results)):
            lines.append(f"result {i} {self.names[i]}: {self.result_text(i)}")
        lines += [f"VIOLATION {v}" for v in self.violations]
        lines.append(f"replay: schedule = {self.schedule_text()!r}")
        return "\n".join(lines)


class ScheduleError(ValueError):
    """A schedule names an operation that cannot take the next step there."""

    def __init__(self, entry: int, op: int, runnable: list[int]) -> None:
        super().__init__(f"schedule step {entry}: operation {op} is not runnable {runnable}")
        self.entry, self.op, self.runnable = entry, op, runnable


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

    def step(
        self, i: int, recorder: _Recorder | None = None
    ) -> tuple[Step | None, Footprint | None]:
        """Resume operation i for one access; return that access and its footprint."""
        gen = self.gens[i]
        seen = recorder.begin(None) if recorder is not None else 0
        if gen is None:
            gen = self._start(i)
            pending = self._advance(i, gen)
            if pending is None:
                return None, recorder.end(seen) if recorder is not None else None
        else:
            pending = self.pending[i]
        if recorder is not None and pending is not None:
            (recorder.reads if pending.access == READ else recorder.writes).add(pending.pa & ~7)
        self.pending[i] = self._advance(i, gen)
        fp = recorder.end(seen) if recorder is not None else None
        return pending, fp

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


def _is_preemption(choice: tuple[list[int], int | None], i: int) -> bool:
    runnable, prev = choice
    return prev is not None and prev != i and prev in runnable


@dataclass
class _Plan:
    """How a run is driven: a forced prefix, then the default order under the bound.

    sleep is the sleep set in force when the last prefix entry is taken; with a
    recorder, the default order never takes an operation that is asleep.
    """

    prefix: list[int]
    sleep: Sleep = field(default_factory=dict)
    bound: int | None = None
    recorder: bool = False
    prefix_only: bool = False


def _default_choice(runnable: list[int], prev: int | None, sleep: Sleep) -> int | None:
    """Return the next operation: the last one if it can go on, else the lowest awake."""
    awake = [i for i in runnable if i not in sleep]
    if not awake:
        return None
    return prev if prev in awake else awake[0]


def _execute(world: World, plan: _Plan, check: bool) -> RunResult:
    """Run the world once under plan, checking the invariants after each step."""
    runner = _Runner(world)
    recorder = _Recorder(world) if plan.recorder else None
    checker = Checker(
        world.pgt, world.expected_pa, check_refcount=lambda: not runner.exclusive_in_flight()
    )
    out = RunResult([op.name for op in world.ops], [], [], runner.results, [])
    prev: int | None = None
    sleep: Sleep = {}
    while not out.violations and (runnable := runner.runnable()):
        k = len(out.schedule)
        if k < len(plan.prefix):
            i = plan.prefix[k]
            if i not in runnable:
                raise ScheduleError(k, i, runnable)
            if k == len(plan.prefix) - 1:
                sleep = dict(plan.sleep)
        elif plan.prefix_only:
            break
        else:
            choice = _default_choice(runnable, prev, sleep)
            if choice is None:
                out.blocked = True
                break
            cost = out.preemptions + _is_preemption((runnable, prev), choice)
            if plan.bound is not None and cost > plan.bound:
                out.blocked = True
                break
            i = choice
        out.choices.append((runnable, prev))
        out.sleeping.append(sleep)
        out.preemptions += _is_preemption((runnable, prev), i)
        step, fp = runner.step(i, recorder)
        out.footprints.append(fp)
        if fp is not None and sleep:
            sleep = {j: f for j, f in sleep.items() if independent(f, fp)}
        out.schedule.append(i)
        prev = i
        if step is not None:
            out.steps.append((i, step))
        if check:
            out.violations += checker.after_step(len(out.steps) - 1)
    out.finished = list(runner.done)
    if check and not out.violations and all(runner.done):
        for final in world.final_checks:
            out.violations += final(world, runner.results)
    return out


def run_schedule(
    scenario: Scenario, schedule: list[int] | str = "", check: bool = True,
    then_default: bool = True,
) -> RunResult:
    """Run the scenario once, following schedule and then the default order.

    The default order keeps running the last operation while it can, else the lowest
    runnable index. A schedule may be given as printed by RunResult.schedule_text().
    With then_default=False the run stops where the schedule ends (RunResult.finished
    says which operations returned). Raises ScheduleError for an entry naming an
    operation that cannot run there; entries after the run has ended are ignored.
    """
    if isinstance(schedule, str):
        schedule = parse_schedule(schedule)
    return _execute(scenario(), _Plan(schedule, prefix_only=not then_default), check)


replay = run_schedule


@dataclass
class Exploration:
    """The outcome of exploring a scenario's schedules.

    runs counts the schedules executed; blocked how many of them stopped early as
    equivalent to a schedule explored elsewhere (sleep-set reduction). results holds the
    distinct outcomes (each operation's return value, in order; None for an operation a
    violation stopped). When the run limit stops the exploration, every schedule with
    at most covered_preemptions preemptions was explored and pending schedules remain.
    """

    runs: int = 0
    failures: list[RunResult] = field(default_factory=list)
    complete: bool = True
    results: set[tuple[Any, ...]] = field(default_factory=set)
    blocked: int = 0
    covered_preemptions: int | None = None
    pending: int = 0

    @property
    def ok(self) -> bool:
        """Return whether every explored schedule kept every invariant."""
        return not self.failures


_Item = tuple[int, int, list[int], int, int, Sleep]


def explore(
    scenario: Scenario,
    max_preemptions: int | None = 2,
    max_runs: int = 20_000,
    stop_at_first: bool = True,
    reduce: bool = True,
    on_run: Callable[[Exploration], None] | None = None,
) -> Exploration:
    """Run the scenario under every schedule with at most max_preemptions preemptions.

    Schedules are tried in order of how many preemptions they need (iterative context
    bounding), so a failure is found with as few preemptions as possible.
    max_preemptions=None explores every interleaving. Stops at the first failure unless
    stop_at_first is False; stops (complete=False) after max_runs schedules.

    reduce turns on a sleep-set reduction: a schedule that preempts an operation and
    later resumes it, where its pending transition commutes (see :func:`independent`)
    with everything that ran in between, is equivalent to the schedule that let it take
    that transition first, which costs no more preemptions; such a run stops as soon as
    the only ways on are asleep. Every reachable state within the bound is still
    visited, so the distinct outcomes and the violations are those of the full
    exploration. Operations must share state only through the world's memory, page
    pool, refcounts, RCU and event log (true of every kvm_pgtable operation).
    """
    out = Exploration()
    queue: list[_Item] = [(0, 0, [], 0, -1, {})]
    seq = itertools.count(1)
    while queue:
        if out.runs >= max_runs:
            out.complete = False
            out.covered_preemptions = queue[0][0] - 1
            out.pending = len(queue)
            break
        _, _, parent, k, alt, sleep = heapq.heappop(queue)
        prefix = parent[:k] + [alt] if alt >= 0 else []
        plan = _Plan(prefix, sleep, max_preemptions, reduce)
        result = _execute(scenario(), plan, True)
        out.runs += 1
        if result.blocked:
            out.blocked += 1
        else:
            out.results.add(tuple(result.results))
        if result.violations:
            out.failures.append(result)
            if stop_at_first:
                out.complete = False
                break
        _push_alternatives(result, len(prefix), max_preemptions, queue, seq)
        if on_run is not None:
            on_run(out)
    if out.complete:
        out.covered_preemptions = max_preemptions
    return out


def _push_alternatives(
    result: RunResult,
    start: int,
    max_preemptions: int | None,
    queue: list[_Item],
    seq: Iterator[int],
) -> None:
    """Queue the other choices at every node the run decided by the default order.

    A sibling taken after the default child, where the default child let the last
    operation go on, puts that operation's transition to sleep (when it commutes).
    """
    schedule, choices = result.schedule, result.choices
    before = [0]
    for k, i in enumerate(schedule):
        before.append(before[-1] + _is_preemption(choices[k], i))
    for k in range(len(schedule) - 1, start - 1, -1):
        runnable, prev = choices[k]
        chosen, asleep, fp = schedule[k], result.sleeping[k], result.footprints[k]
        for alt in reversed(runnable):
            if alt == chosen or alt in asleep:
                continue
            cost = before[k] + _is_preemption(choices[k], alt)
            if max_preemptions is not None and cost > max_preemptions:
                continue
            sleep = dict(asleep)
            if fp is not None and prev == chosen and not fp.touches_all:
                sleep[chosen] = fp
            heapq.heappush(queue, (cost, next(seq), schedule, k, alt, sleep))


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
