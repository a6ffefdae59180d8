"""`s2mmu race`: explore the interleavings of a ready-made stage-2 race.

Each race (s2mmu.pgtable.races) is a few concurrent kvm_pgtable operations; the
explorer (s2mmu.pgtable.concurrency) interleaves them one descriptor access at a time,
checks the invariants after every step, and prints a failing run as a replayable
schedule.
"""

from __future__ import annotations

import sys

import click

from s2mmu.arch.errors import InputError
from s2mmu.pgtable.concurrency import explore, parse_schedule, run_schedule
from s2mmu.pgtable.profile import CURRENT, PROFILES
from s2mmu.pgtable.races import ALL_RACES as PGTABLE_RACES
from s2mmu.pkvm.races import PKVM_RACES

ALL_RACES = {**PGTABLE_RACES, **PKVM_RACES}
"""Every race `s2mmu race` knows: the stage-2 library's, then pKVM's."""


def parse_replay(text: str) -> list[int]:
    """Return a schedule string as printed by a failing run, or raise InputError."""
    try:
        return parse_schedule(text)
    except ValueError:
        raise InputError(f"--replay expects operation indices separated by spaces, "
                         f"got {text!r}") from None


@click.command()
@click.argument("name", required=False, type=click.Choice(sorted(ALL_RACES)))
@click.option("--profile", "profile_name", type=click.Choice(sorted(PROFILES)),
              default=CURRENT.name, show_default=True,
              help="Kernel behaviour profile (the walker's error rule and the map fixes).")
@click.option("--preemptions", type=click.IntRange(0, 8), default=2, show_default=True,
              help="Explore every schedule with at most this many preemptions.")
@click.option("--max-runs", type=click.IntRange(1, 1_000_000), default=2_000, show_default=True,
              help="Stop after this many schedules (the result says it is incomplete).")
@click.option("--replay", "replay_text", metavar="SCHEDULE",
              help="Run one schedule (as a failing run prints it) and show its steps.")
def race(name: str | None, profile_name: str, preemptions: int, max_runs: int,
         replay_text: str | None) -> None:
    """Explore the interleavings of a stage-2 race, or list the races."""
    if name is None and replay_text is not None:
        click.echo("s2mmu: error: --replay needs the race NAME whose schedule it is", err=True)
        sys.exit(2)
    if name is None:
        for race_name, factory in sorted(ALL_RACES.items()):
            doc = (factory.__doc__ or "").strip().splitlines()[0]
            click.echo(f"{race_name:28} {doc}")
        return
    scenario = ALL_RACES[name](PROFILES[profile_name])
    if replay_text is not None:
        try:
            result = run_schedule(scenario, parse_replay(replay_text))
        except InputError as e:
            click.echo(f"s2mmu: error: {e}", err=True)
            sys.exit(2)
        except ValueError as e:
            click.echo(f"s2mmu: error: --replay {replay_text!r} is not a schedule of {name}: "
                       f"{e}", err=True)
            sys.exit(2)
        click.echo(result.format())
        sys.exit(0 if result.ok else 1)
    found = explore(scenario, max_preemptions=preemptions, max_runs=max_runs)
    click.echo(f"race {name}, profile {profile_name}: {found.runs} schedules with at most "
               f"{preemptions} preemptions, {len(found.results)} distinct outcomes")
    if found.ok:
        scope = "" if found.complete else f" (incomplete: stopped at --max-runs {max_runs})"
        click.echo(f"every invariant held{scope}")
        return
    click.echo(found.failures[0].format())
    sys.exit(1)
