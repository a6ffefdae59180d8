"""The VM's stage 2 between steps: asked-for steps, or every step that changed it."""

from __future__ import annotations

from pathlib import Path

import pytest

from s2mmu.arch.dump import AddrRange, PermFilter
from s2mmu.arch.errors import InputError
from s2mmu.scenario.runner import run_scenario
from s2mmu.scenario.stage2 import Stage2Recorder, parse_step_number

STEPS = Path(__file__).resolve().parents[1] / "cli" / "data" / "stage2_steps.toml"
W = 0x4000_3000
X = 0x4000_5000


def test_step_numbers_are_the_timelines_with_or_without_hash() -> None:
    assert [parse_step_number(t, 4) for t in ("1", "#4", " 2 ", "last")] == [1, 4, 2, 4]


@pytest.mark.parametrize(("text", "steps", "message"), [
    ("0", 4, "--dump-after 0: no such step (the run has steps #1-#4, or 'last')"),
    ("5", 4, "--dump-after 5: no such step (the run has steps #1-#4, or 'last')"),
    ("-1", 4, "--dump-after -1: no such step (the run has steps #1-#4, or 'last')"),
    ("first", 4, "--dump-after first: no such step (the run has steps #1-#4, or 'last')"),
    ("1", 0, "--dump-after 1: no such step (the scenario has no step)"),
    ("last", 0, "--dump-after last: the scenario has no step"),
])
def test_a_step_the_run_does_not_have_is_bad_input(text: str, steps: int, message: str) -> None:
    with pytest.raises(InputError) as e:
        parse_step_number(text, steps)
    assert str(e.value) == message


def test_asked_steps_get_the_stage2_they_left_filtered() -> None:
    rec = Stage2Recorder(frozenset({1, 2, 4}))
    run_scenario(STEPS, on_step=rec)
    assert [d.step.index for d in rec.dumps] == [1, 2, 4]
    assert [[r.start for r in d.dump.ranges()] for d in rec.dumps] == [[], [W], [W, X]]
    assert all(d.changed is None for d in rec.dumps)
    only_x = Stage2Recorder(frozenset({4}), AddrRange(X, X + 0x1000))
    run_scenario(STEPS, on_step=only_x)
    assert [r.start for r in only_x.dumps[0].dump.ranges()] == [X]
    writable = Stage2Recorder(frozenset({4}), keep=PermFilter(w=True))
    run_scenario(STEPS, on_step=writable)
    # the fetched page is the shared zero page, mapped read-only
    assert [r.start for r in writable.dumps[0].dump.ranges()] == [W]


def test_watching_keeps_only_the_steps_that_changed_the_stage2() -> None:
    rec = Stage2Recorder(changed_only=True)
    run_scenario(STEPS, on_step=rec)
    # #1 creates the memslot (nothing mapped yet), #3 reads a page already mapped
    assert [(d.step.index, d.changed) for d in rec.dumps] == [(2, True), (4, True)]
    assert rec.of(3) is None and rec.of(4) is rec.dumps[1]


def test_changes_past_the_limit_are_counted_not_kept() -> None:
    rec = Stage2Recorder(changed_only=True, limit=1)
    run_scenario(STEPS, on_step=rec)
    assert [d.step.index for d in rec.dumps] == [2]
    assert rec.dropped == {4}
    assert rec.was_dropped(4) and not rec.was_dropped(3)
