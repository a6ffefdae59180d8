"""Run a checked scenario: build each layer's world, play the steps, check as it goes.

Data in, records out. Every registered layer builds its part of the world; the setup
steps its tables imply (the memslots) and the timeline's events run through the registry
(each event kind's run function), numbered in one sequence; after each step the step's
expectations and every registered invariant are checked. The model logic lives in the
layers below; the wording in render_text and render_json.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from s2mmu.nested.profile import kernel_profile
from s2mmu.scenario.records import Broken, Mismatch, Run, StepDraft, StepRecord, World, freeze
from s2mmu.scenario.schema import (
    REGISTRY,
    Event,
    ExpectBroken,
    Scenario,
    load_layers,
    load_scenario,
)

StepHook = Callable[[StepRecord, World], None]
"""Called after each step with its record and the world as the step left it."""


def run_step(world: World, event: Event, index: int, trace: bool = False) -> StepRecord:
    """Run one event through its registered kind and check what it expects."""
    layers = REGISTRY.layers.values()
    marks = {la.name: la.mark(world) for la in layers}
    draft = StepDraft(index, event)
    draft.outcome = REGISTRY.kind_of(event).run(world, event, draft)
    for la in layers:
        la.observe(world, marks[la.name], draft, trace)
    for la in layers:
        la.after(world, draft)
    draft.broken = tuple(Broken(inv.name, v) for inv in REGISTRY.invariants.values()
                         for v in inv.check(world))
    mismatches: list[Mismatch] = []
    for e in event.expects:
        m = REGISTRY.expectation_of(e).check(world, e, draft)
        if m is not None:
            mismatches.append(m)
    # An invariant the step means to break (expect_broken) is reported, not failed.
    meant = {e.invariant for e in event.expects if isinstance(e, ExpectBroken)}
    return freeze(draft, mismatches, [b for b in draft.broken if b.invariant not in meant],
                  tuple(b for b in draft.broken if b.invariant in meant))


def run_scenario(scenario: Scenario | str | Path, trace: bool = False,
                 on_step: StepHook | None = None, profile: str | None = None) -> Run:
    """Run a scenario (or the scenario file at a path); return the run's records.

    trace: keep every model event of each step; on_step: called after each step with its
    record and the world (for progress, or to look at the state a step left); profile: a
    kernel release ("v6.12") overriding the file's [kvm] profile (InputError naming the
    valid releases for an unknown one).
    """
    registry = load_layers()
    scn = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    if profile is not None:
        scn = replace(scn, profile=kernel_profile(profile))
    world = World(scn)
    for layer in registry.layers.values():
        layer.build(world, scn.config(layer.name))
    steps: list[StepRecord] = []

    def play(events: tuple[Event, ...]) -> None:
        for event in events:
            steps.append(run_step(world, event, len(steps) + 1, trace))
            if on_step is not None:
                on_step(steps[-1], world)

    play(scn.setup)
    for layer in registry.layers.values():
        layer.ready(world, scn.config(layer.name))
    play(scn.events)
    summaries = {la.name: s for la in registry.layers.values()
                 if la.summary is not None and (s := la.summary(world)) is not None}
    return Run(scn, tuple(steps), summaries, world)


def step_count(scenario: Scenario) -> int:
    """Return how many steps a run of the scenario takes."""
    return len(scenario.setup) + len(scenario.events)
