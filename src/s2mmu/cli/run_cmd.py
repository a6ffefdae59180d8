"""The run and demo commands: load a scenario, run it, print the timeline or JSON."""

from __future__ import annotations

import json
import sys
from importlib import resources

import click

from s2mmu.arch.inputs import one_line
from s2mmu.scenario.report import timeline_lines
from s2mmu.scenario.runner import run_scenario
from s2mmu.scenario.schema import ScenarioError, load_scenario

DEMOS = ("demo.toml", "demo_nofwb.toml")


def run_file(path: str, as_json: bool, trace: bool, text: str | None = None,
             html: str | None = None) -> int:
    """Run a scenario file and print it; return the exit status (0 ok, 1 failed, 2 malformed).

    html: also write the report as an HTML page there (all or nothing; a path that cannot
    be written is one line and status 2, with nothing printed).
    """
    try:
        report = run_scenario(load_scenario(path, text), trace)
    except ScenarioError as e:  # found while checking, or while building the world
        click.echo(f"s2mmu: error: {one_line(str(e))}", err=True)
        return 2
    if html is not None:
        from s2mmu.cli.html import report_html
        from s2mmu.cli.svg import write_atomic

        try:
            write_atomic(html, report_html(report))
        except OSError as e:
            click.echo(one_line(f"s2mmu: error: --html {html}: cannot write: "
                                f"{e.strerror or e}"), err=True)
            return 2
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo("\n".join(timeline_lines(report, trace)))
    return 0 if report["ok"] else 1


def demo_text(name: str) -> str:
    """Return a built-in demo scenario's text."""
    return resources.files("s2mmu.scenario.data").joinpath(name).read_text()


def run_demo(as_json: bool, trace: bool) -> None:
    """Run the built-in demo scenarios (FWB host, then no-FWB host); exit with the worst status."""
    status = 0
    for name in DEMOS:
        status = max(status, run_file(f"<built-in {name}>", as_json, trace, demo_text(name)))
        if not as_json:
            click.echo("")
    sys.exit(status)
