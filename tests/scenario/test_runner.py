"""The runner: expect_broken turns a step's invariant report into an expectation."""

from __future__ import annotations

from importlib import resources

import pytest

from s2mmu.scenario.render_text import timeline_lines, verdict_lines
from s2mmu.scenario.runner import run_scenario
from s2mmu.scenario.schema import ScenarioError, load_scenario

RELAX = "pkvm_guest_relax.toml"


def relax_text() -> str:
    return resources.files("s2mmu.scenario.data").joinpath(RELAX).read_text()


def test_a_meant_break_is_reported_but_not_a_failure() -> None:
    r = run_scenario(load_scenario(RELAX, relax_text()))
    assert r.ok
    step = r.steps[3]
    assert step.invariants == () and [b.invariant for b in step.meant] == ["dirty-writable"]
    text = "\n".join(timeline_lines(r))
    assert "invariant broken, as expected: dirty-writable: IPA 0x40001000" in text


def test_a_meant_break_that_does_not_happen_is_a_mismatch() -> None:
    r = run_scenario(load_scenario(RELAX, relax_text()), profile="v6.19")
    assert not r.ok
    assert any("expected the step to break the dirty-writable invariant, got none broken"
               in line for line in verdict_lines(r))


def test_an_unknown_invariant_is_a_one_line_error_listing_them() -> None:
    text = relax_text().replace('expect_broken = "dirty-writable"',
                                'expect_broken = "dirty-writeable"')
    with pytest.raises(ScenarioError) as e:
        run_scenario(load_scenario(RELAX, text))
    msg = str(e.value)
    assert "expect_broken: 'dirty-writeable' is not an invariant (known: " in msg
    assert "dirty-writable" in msg and "\n" not in msg
