"""The run and demo commands: load a scenario, run it, print the timeline or JSON.

Text, JSON and HTML are three renderers of the same run records
(s2mmu.scenario.render_text, render_json, s2mmu.cli.html).
"""

from __future__ import annotations

import sys
from importlib import resources

import click

from s2mmu.arch.inputs import one_line
from s2mmu.cli.output import console, print_json, progress
from s2mmu.scenario.records import Run
from s2mmu.scenario.render_json import demo_json, run_json
from s2mmu.scenario.render_text import timeline_lines
from s2mmu.scenario.runner import run_scenario, step_count
from s2mmu.scenario.schema import ScenarioError, load_scenario

DEMOS = ("demo.toml", "demo_nofwb.toml")
PKVM_DEMOS = ("pkvm_donate_data_abort.toml", "pkvm_donate_sea.toml",
              "pkvm_donate_data_abort_unmapped.toml", "pkvm_donate_sea_unmapped.toml",
              "pkvm_relax_v6_3.toml", "pkvm_relax_v6_19.toml")
"""demo --pkvm: seed 002 under both host-abort policies, without and with the donated page
unmapped from the host's direct map; seed 000 under the profiles before and after the fix."""
PROGRESS_STEPS = 200
"""A scenario with more steps shows a progress bar (on a terminal only)."""


def run_quietly(path: str, trace: bool, text: str | None = None) -> Run:
    """Load and run a scenario, with a progress bar on a terminal for big ones.

    Raises ScenarioError for a malformed file (found while checking, or while building
    the world or playing the timeline).
    """
    scn = load_scenario(path, text)
    total = step_count(scn)
    if total < PROGRESS_STEPS:
        return run_scenario(scn, trace)
    with progress(f"run {scn.name}", total=total) as bar:
        return run_scenario(scn, trace, on_step=lambda step, world: bar.advance())


def print_timeline(run: Run, trace: bool) -> None:
    """Print a run's text timeline."""
    console().print("\n".join(timeline_lines(run, trace)), markup=False, highlight=False)


def run_file(path: str, as_json: bool, trace: bool, text: str | None = None,
             html: str | None = None) -> int:
    """Run a scenario file and print it; return the exit status (0 ok, 1 failed, 2 malformed).

    html: also write the run as an HTML page there (all or nothing; a path that cannot
    be written is one line and status 2, with nothing printed).
    """
    try:
        run = run_quietly(path, trace, text)
    except ScenarioError as e:
        click.echo(f"s2mmu: error: {one_line(str(e))}", err=True)
        return 2
    if html is not None:
        from s2mmu.cli.html import run_html
        from s2mmu.cli.svg import write_atomic

        try:
            write_atomic(html, run_html(run, trace))
        except OSError as e:
            click.echo(one_line(f"s2mmu: error: --html {html}: cannot write: "
                                f"{e.strerror or e}"), err=True)
            return 2
    if as_json:
        print_json(run_json(run, trace))
    else:
        print_timeline(run, trace)
    return 0 if run.ok else 1


def demo_text(name: str) -> str:
    """Return a built-in demo scenario's text."""
    return resources.files("s2mmu.scenario.data").joinpath(name).read_text()


def run_demo(as_json: bool, trace: bool, names: tuple[str, ...] = DEMOS) -> None:
    """Run built-in demo scenarios (by default: FWB host, then no-FWB host; PKVM_DEMOS for
    demo --pkvm); exit with the worst status.

    --json prints one s2mmu.demo/1 document holding every run.
    """
    runs = []
    for name in names:
        try:
            runs.append(run_quietly(f"<built-in {name}>", trace, demo_text(name)))
        except ScenarioError as e:
            click.echo(f"s2mmu: error: {e}", err=True)
            sys.exit(2)
    if as_json:
        print_json(demo_json(runs, trace))
    else:
        for run in runs:
            print_timeline(run, trace)
            click.echo("")
    sys.exit(0 if all(r.ok for r in runs) else 1)
