"""`s2mmu race`: explore the interleavings of a ready-made stage-2 race.

Each race (s2mmu.pgtable.races) is a few concurrent kvm_pgtable operations; the
explorer (s2mmu.pgtable.concurrency) interleaves them one descriptor access at a time,
checks the invariants after every step, and prints a failing run as a replayable
schedule. The bound (preemptions, --max-runs) is printed before exploring; a run the
limit stops is marked INCOMPLETE on the first and last lines of its result, with the
number of preemptions it covered in full. --json prints one s2mmu.race/1 document.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click

from s2mmu.arch.errors import InputError
from s2mmu.cli.output import console, print_json, progress
from s2mmu.pgtable.concurrency import (
    Exploration,
    RunResult,
    Scenario,
    ScheduleError,
    World,
    explore,
    run_schedule,
)
from s2mmu.pgtable.inject import InjectedBug
from s2mmu.pgtable.invariants import Violation
from s2mmu.pgtable.profile import CURRENT, PROFILES, profile_names
from s2mmu.pgtable.races import ALL_RACES as PGTABLE_RACES
from s2mmu.pkvm.races import PKVM_RACES

ALL_RACES = {**PGTABLE_RACES, **PKVM_RACES}
"""Every race `s2mmu race` knows: the stage-2 library's, then pKVM's."""

SCHEMA = "s2mmu.race/1"
# An operation index longer than this many digits is out of range whatever the race.
_MAX_DIGITS = 6


def _shown(text: str, limit: int = 60) -> str:
    """Return text quoted, cut short if it is long (a bad schedule can be huge)."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def parse_replay(text: str, name: str, n_ops: int) -> list[int]:
    """Return the schedule text names, or raise InputError saying what is wrong.

    A schedule is the operation indices a failing run prints, separated by spaces;
    each must be an operation of the race (0..n_ops-1).
    """
    tokens = text.split()
    if not tokens:
        raise InputError(f"--replay {_shown(text)} is empty: give the schedule a failing run "
                         "prints (operation indices separated by spaces)")
    if not all(tok.isdecimal() and tok.isascii() for tok in tokens):
        raise InputError(f"--replay expects operation indices separated by spaces, "
                         f"got {_shown(text)}")
    for entry, tok in enumerate(tokens):
        if len(tok) > _MAX_DIGITS or int(tok) >= n_ops:
            raise InputError(f"--replay {_shown(text)} is not a schedule of {name}: entry "
                             f"{entry} names operation {_shown(tok, 20)[1:-1]}, but its "
                             f"operations are 0..{n_ops - 1}")
    return [int(tok) for tok in tokens]


def replay_schedule(scenario: Scenario, text: str, name: str) -> RunResult:
    """Run the schedule text names exactly as written, or raise InputError.

    The schedule must take the run to its end: every operation returned, or a
    violation stopped it; and it may not go on after that.
    """
    n_ops = len(scenario().ops)
    schedule = parse_replay(text, name, n_ops)
    head = f"--replay {_shown(text)} is not a schedule of {name}"
    try:
        result = run_schedule(scenario, schedule, then_default=False)
    except ScheduleError as e:
        runnable = ", ".join(str(i) for i in e.runnable) or "none"
        raise InputError(f"{head}: entry {e.entry} names operation {e.op}, which cannot run "
                         f"there (runnable: {runnable})") from None
    taken = len(result.schedule)
    if taken < len(schedule):
        why = "a violation stopped it" if result.violations else "every operation returned"
        raise InputError(f"{head}: it has {len(schedule)} entries but the run ends after "
                         f"{taken} ({why})")
    if not result.violations and not all(result.finished):
        left = ", ".join(f"{i}={n}" for i, n in enumerate(result.names)
                         if not result.finished[i])
        raise InputError(f"{head}: it ends after {taken} entries with operations {left} "
                         "unfinished and no violation; give the whole schedule a failing "
                         "run prints")
    return result


@click.command()
@click.argument("name", required=False, type=click.Choice(sorted(ALL_RACES)))
@click.option("--profile", "profile_name", metavar="RELEASE", default=CURRENT.name,
              show_default=True,
              help="Kernel release whose rules the walks follow (`s2mmu profiles` lists "
                   "them).")
@click.option("--preemptions", type=click.IntRange(0, 8), default=2, show_default=True,
              help="Explore every schedule with at most this many preemptions.")
@click.option("--max-runs", type=click.IntRange(1, 1_000_000), default=2_000, show_default=True,
              help="Stop after this many schedules (the result says it is incomplete).")
@click.option("--no-reduction", is_flag=True,
              help="Run every schedule in the bound, even those equivalent to one explored "
                   "(the sleep-set reduction finds the same outcomes and violations).")
@click.option("--replay", "replay_text", metavar="SCHEDULE",
              help="Run one schedule (as a failing run prints it) and show its steps.")
@click.option("--inject", "inject", multiple=True,
              type=click.Choice([b.value for b in InjectedBug]),
              help="Give the page-table library this bug (repeatable), to see the "
                   "invariants catch it.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON document (schema s2mmu.race/1).")
def race(name: str | None, profile_name: str, preemptions: int, max_runs: int,
         no_reduction: bool, replay_text: str | None, inject: tuple[str, ...],
         as_json: bool) -> None:
    """Explore the interleavings of a stage-2 race, or list the races."""
    if name is None and replay_text is not None:
        _fail("--replay needs the race NAME whose schedule it is")
    if name is None:
        for race_name, factory in sorted(ALL_RACES.items()):
            doc = (factory.__doc__ or "").strip().splitlines()[0]
            click.echo(f"{race_name:28} {doc}")
        return
    if profile_name not in PROFILES:
        _fail(f"unknown kernel profile {profile_name!r} (known: {profile_names()})")
    scenario = with_bugs(ALL_RACES[name](PROFILES[profile_name]),
                         frozenset(InjectedBug(b) for b in inject))
    if replay_text is not None:
        try:
            result = replay_schedule(scenario, replay_text, name)
        except InputError as e:
            _fail(str(e))
        if as_json:
            print_json({**replay_doc(name, profile_name, result), "inject": sorted(inject)})
        else:
            console().print(result.format())
        sys.exit(0 if result.ok else 1)
    default = run_schedule(scenario, check=False)
    bound = Bound(preemptions, max_runs, not no_reduction, len(default.names),
                  len(default.steps))
    out = console()
    if not as_json:
        out.print(header(name, profile_name, default, bound))
    with progress(f"race {name}", total=max_runs) as bar:
        found = explore(scenario, max_preemptions=preemptions, max_runs=max_runs,
                        reduce=bound.reduce, on_run=lambda _: bar.advance())
    if as_json:
        print_json({**exploration_doc(name, profile_name, default.names, bound, found),
                    "inject": sorted(inject)})
    else:
        out.print("\n".join(result_lines(found, bound)))
    sys.exit(0 if found.ok else 1)


def with_bugs(scenario: Scenario, bugs: frozenset[InjectedBug]) -> Scenario:
    """Return the race with its library told to have bugs (the race itself if none)."""
    if not bugs:
        return scenario

    def build() -> World:
        world = scenario()
        world.pgt.ops.bugs = bugs
        return world

    return build


def _fail(message: str) -> NoReturn:
    click.echo(f"s2mmu: error: {message}", err=True)
    sys.exit(2)


class Bound:
    """What an exploration was asked to cover, and the size of the problem."""

    def __init__(self, preemptions: int, max_runs: int, reduce: bool, ops: int,
                 steps: int) -> None:
        self.preemptions, self.max_runs, self.reduce = preemptions, max_runs, reduce
        self.ops, self.steps = ops, steps


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def header(name: str, profile: str, default: RunResult, bound: Bound) -> str:
    """Return the lines printed before exploring: the race's size and the bound."""
    ops = ", ".join(f"{i}={n}" for i, n in enumerate(default.names))
    how = "sleep-set reduction" if bound.reduce else "no reduction"
    return (f"race {name}, profile {profile}: {_plural(bound.ops, 'operation')} ({ops}), "
            f"{_plural(bound.steps, 'step')} in the default order\n"
            f"bound: every schedule with at most {_plural(bound.preemptions, 'preemption')}, "
            f"{how}; stops after {_plural(bound.max_runs, 'schedule')} (--max-runs) and then "
            f"says INCOMPLETE")


def incomplete_line(found: Exploration, bound: Bound) -> str:
    """Return the INCOMPLETE line: what the run limit left covered and uncovered."""
    covered = found.covered_preemptions if found.covered_preemptions is not None else -1
    if covered < 0:
        done = "not even every schedule without preemption was explored"
    else:
        done = f"every schedule with at most {_plural(covered, 'preemption')} was explored"
    rest = (f"{covered + 1}" if covered + 1 == bound.preemptions
            else f"{covered + 1}..{bound.preemptions}")
    return (f"INCOMPLETE: stopped at --max-runs {bound.max_runs}; {done}; schedules with "
            f"{rest} preemptions were not all explored ({found.pending} queued)")


def result_lines(found: Exploration, bound: Bound) -> list[str]:
    """Return the result: counts, then every invariant held or the first failure."""
    limited = not found.complete and not found.failures
    lines = [incomplete_line(found, bound)] if limited else []
    cut = f" ({found.blocked} cut short as equivalent to one explored)" if bound.reduce else ""
    lines.append(f"{_plural(found.runs, 'schedule')} explored{cut}, "
                 f"{len(found.results)} distinct outcomes")
    for outcome in sorted(found.results, key=repr):
        lines.append("  outcome: " + ", ".join(_result_text(r) for r in outcome))
    if found.failures:
        lines.append(found.failures[0].format())
        return lines
    if limited:
        lines.append("no invariant broken in the schedules explored")
        lines.append(incomplete_line(found, bound))
    else:
        lines.append("every invariant held")
    return lines


def _result_text(r: Any) -> str:
    """Return one operation's result in an outcome (errno names; None: did not return)."""
    if r is None:
        return "did not return"
    return RunResult([""], [], [], [r], []).result_text(0)


def violation_doc(v: Violation, schedule: str) -> dict[str, Any]:
    """Return one violation as JSON: its step, invariant, message and replay schedule."""
    return {"step": v.step, "invariant": v.rule, "message": v.detail, "schedule": schedule}


def exploration_doc(name: str, profile: str, names: list[str], bound: Bound,
                    found: Exploration) -> dict[str, Any]:
    """Return an exploration as one s2mmu.race/1 document."""
    return {
        "schema": SCHEMA,
        "mode": "explore",
        "race": name,
        "profile": profile,
        "operations": names,
        "default_steps": bound.steps,
        "bound": {"preemptions": bound.preemptions, "max_runs": bound.max_runs},
        "reduction": "sleep-sets" if bound.reduce else "none",
        "schedules_explored": found.runs,
        "cut_short_as_equivalent": found.blocked,
        "complete": found.complete,
        "stopped_at": ("violation" if found.failures else
                       "max-runs" if not found.complete else None),
        "covered_preemptions": found.covered_preemptions,
        "queued_schedules": found.pending,
        "outcomes": sorted(([_result_text(r) for r in outcome] for outcome in found.results),
                           key=repr),
        "violations": [violation_doc(v, f.schedule_text())
                       for f in found.failures for v in f.violations],
        "ok": found.ok,
    }


def replay_doc(name: str, profile: str, result: RunResult) -> dict[str, Any]:
    """Return a replayed schedule as one s2mmu.race/1 document, with its trace."""
    return {
        "schema": SCHEMA,
        "mode": "replay",
        "race": name,
        "profile": profile,
        "operations": result.names,
        "schedule": result.schedule_text(),
        "steps": [{"step": k, "operation": op, "access": step.access, "pa": f"{step.pa:#x}"}
                  for k, (op, step) in enumerate(result.steps)],
        "results": [result.result_text(i) for i in range(len(result.results))],
        "violations": [violation_doc(v, result.schedule_text()) for v in result.violations],
        "ok": result.ok,
    }
