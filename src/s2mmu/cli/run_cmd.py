"""The run and demo commands: load a scenario, run it, print the timeline or JSON.

Text, JSON and HTML are three renderers of the same run records
(s2mmu.scenario.render_text, render_json, s2mmu.cli.html).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any

import click

from s2mmu.arch.dump import AddrRange, PermFilter, parse_addr_range, parse_perm_filter
from s2mmu.arch.errors import InputError
from s2mmu.arch.inputs import one_line
from s2mmu.cli.dump_cmd import dump_json, render_text
from s2mmu.cli.output import console, print_json, progress
from s2mmu.nested.profile import kernel_profile
from s2mmu.pgtable.dump import kvm_pte_sw_annotation
from s2mmu.scenario.records import Run, StepRecord, World
from s2mmu.scenario.render_json import demo_json, run_json
from s2mmu.scenario.render_text import shows_outcome, step_summary, timeline_lines
from s2mmu.scenario.runner import StepHook, run_scenario, step_count
from s2mmu.scenario.schema import Scenario, ScenarioError, load_scenario
from s2mmu.scenario.stage2 import Stage2After, Stage2Recorder, parse_step_number

DEMOS = ("demo.toml", "demo_nofwb.toml")
PKVM_DEMOS = ("pkvm_donate_data_abort.toml", "pkvm_donate_sea.toml",
              "pkvm_donate_data_abort_unmapped.toml", "pkvm_donate_sea_unmapped.toml",
              "pkvm_relax_v6_18.toml", "pkvm_relax_v6_19.toml")
"""demo --pkvm: seed 002 under both host-abort policies, without and with the donated page
unmapped from the host's direct map; seed 000 under the profiles before and after the fix."""
NESTED_DEMOS = ("nested_demo.toml",)
"""demo --nested: an L1 guest hypervisor, its L2, KVM's shadow stage 2 (issue 10)."""
PROGRESS_STEPS = 200
"""A scenario with more steps shows a progress bar (on a terminal only)."""


HTML_STAGE2_DUMPS = 100
"""The HTML page keeps the stage 2 of at most this many changing steps (the first ones)."""


def run_quietly(path: str, trace: bool, text: str | None = None,
                hooks: Sequence[StepHook] = (), scn: Scenario | None = None) -> Run:
    """Load and run a scenario, with a progress bar on a terminal for big ones.

    hooks: called after each step (s2mmu.scenario.runner.StepHook); scn: the scenario
    already loaded from path. Raises ScenarioError for a malformed file (found while
    checking, or while building the world or playing the timeline).
    """
    scn = scn if scn is not None else load_scenario(path, text)
    total = step_count(scn)

    def run_with(extra: Sequence[StepHook]) -> Run:
        every = [*hooks, *extra]

        def on_step(step: StepRecord, world: World) -> None:
            for hook in every:
                hook(step, world)
        return run_scenario(scn, trace, on_step=on_step if every else None)

    if total < PROGRESS_STEPS:
        return run_with(())
    with progress(f"run {scn.name}", total=total) as bar:
        return run_with((lambda step, world: bar.advance(),))


@dataclass(frozen=True)
class DumpRequest:
    """What --dump-after asks for: the steps (checked against the scenario) and filters."""

    steps: tuple[int, ...]
    rng: AddrRange | None
    keep: PermFilter | None
    perm_text: str | None

    def recorder(self) -> Stage2Recorder:
        """Return the runner hook that dumps the stage 2 after the requested steps."""
        return Stage2Recorder(frozenset(self.steps), self.rng, self.keep)


def dump_request(scn: Scenario, after: Sequence[str], range_text: str | None,
                 perm_text: str | None, option: str = "--dump-after") -> DumpRequest:
    """Return the dumps asked for; raise InputError for a step the run does not have."""
    total = step_count(scn)
    steps = tuple(sorted({parse_step_number(text, total, option) for text in after}))
    if not steps and (range_text is not None or perm_text is not None):
        raise InputError("--range and --perm filter a stage-2 dump: give --dump-after N too")
    rng = parse_addr_range(range_text) if range_text is not None else None
    keep = parse_perm_filter(perm_text) if perm_text is not None else None
    return DumpRequest(steps, rng, keep, perm_text)


def scenario_stage2(path: str, after: str, range_text: str | None,
                    perm_text: str | None) -> tuple[Run, DumpRequest, Stage2After]:
    """Run a scenario and return the stage 2 after one step (`s2mmu dump --scenario`).

    The same path as `s2mmu run --dump-after`; raises InputError (a ScenarioError for a
    malformed file) for bad input.
    """
    scn = load_scenario(path)
    req = dump_request(scn, [after], range_text, perm_text, option="--after")
    wanted = req.recorder()
    run = run_quietly(path, False, None, [wanted], scn)
    (dump,) = wanted.dumps
    return run, req, dump


def kvm_sw_note(sw: int) -> str:
    """Return host KVM's meaning of a leaf's software bits (scenarios run host KVM)."""
    return kvm_pte_sw_annotation(sw)


def stage2_heading(after: Stage2After) -> str:
    """Return the line that introduces the stage 2 after a step."""
    step = after.step
    outcome = f" -> {step.outcome.value}" if shows_outcome(step) else ""
    return f"stage 2 after #{step.index} [line {step.line}] {step_summary(step)}{outcome}"


def stage2_lines(dumps: Sequence[Stage2After]) -> list[str]:
    """Return the stage-2 dumps as text: a heading, then the ptdump-style lines, per step."""
    out: list[str] = []
    for after in dumps:
        out += ["", stage2_heading(after), *render_text(after.dump, kvm_sw_note)]
    return out


def stage2_json(run: Run, req: DumpRequest, dumps: Sequence[Stage2After]) -> list[dict[str, Any]]:
    """Return the run document's stage2_after field: one s2mmu.dump/1 document per step."""
    return [{"index": d.step.index, "line": d.step.line, "do": d.step.event.do,
             "heading": stage2_heading(d),
             "dump": dump_json(d.dump, req.rng, req.perm_text, kvm_sw_note,
                               {"scenario": run.scenario.path, "after": d.step.index})}
            for d in dumps]


def print_timeline(run: Run, trace: bool) -> None:
    """Print a run's text timeline."""
    console().print("\n".join(timeline_lines(run, trace)), markup=False, highlight=False)


def run_file(path: str, as_json: bool, trace: bool, text: str | None = None,
             html: str | None = None, dump_after: Sequence[str] = (),
             range_text: str | None = None, perm_text: str | None = None,
             profile: str | None = None) -> int:
    """Run a scenario file and print it; return the exit status (0 ok, 1 failed, 2 malformed).

    profile: a kernel release overriding the file's [kvm] profile (unknown: status 2).
    html: also write the run as an HTML page there (all or nothing; a path that cannot
    be written is one line and status 2, with nothing printed), with the stage 2 after
    each step that changed it. dump_after: also print the stage 2 after these steps
    ('#N', 'N' or 'last'), filtered by range_text and perm_text as `s2mmu dump` filters.
    """
    try:
        scn = load_scenario(path, text)
        if profile is not None:
            scn = replace(scn, profile=kernel_profile(profile))
        req = dump_request(scn, dump_after, range_text, perm_text)
        wanted = req.recorder()
        changes = Stage2Recorder(changed_only=True, limit=HTML_STAGE2_DUMPS)
        run = run_quietly(path, trace, text, [wanted] + ([changes] if html else []), scn)
    except InputError as e:  # a ScenarioError too
        click.echo(f"s2mmu: error: {one_line(str(e))}", err=True)
        return 2
    if html is not None:
        from s2mmu.cli.html import run_html
        from s2mmu.cli.svg import write_atomic

        try:
            write_atomic(html, run_html(run, trace, changes))
        except OSError as e:
            click.echo(one_line(f"s2mmu: error: --html {html}: cannot write: "
                                f"{e.strerror or e}"), err=True)
            return 2
    if as_json:
        doc = run_json(run, trace)
        if req.steps:
            doc["stage2_after"] = stage2_json(run, req, wanted.dumps)
        print_json(doc)
    else:
        print_timeline(run, trace)
        if wanted.dumps:
            console().print("\n".join(stage2_lines(wanted.dumps)), markup=False,
                            highlight=False)
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
