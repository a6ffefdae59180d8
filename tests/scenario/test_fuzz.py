"""Generated scenarios: valid files load, hold their invariants, and run the same twice.

The generators (tests/scenario/strategies.py) write valid, consistent scenarios; the
properties: no traceback, exit 0, or exit 1 with failures only on the step that asked for
one; the same output on a second run. Derandomized and without a database, so CI sees the
same examples every time; bench/fuzz_campaign.py runs the same generators for longer.

FIXED lists the known failure classes (strategies.Known) whose fixes have landed: the
generators then produce their cases here too. Add a class when its xfail reproducer in
test_fuzz_found.py starts passing.
"""

from __future__ import annotations

import random
import tempfile
import tomllib

import pytest
from hypothesis import given, settings

from s2mmu.arch.errors import InputError
from s2mmu.scenario.schema import load_scenario
from tests.scenario.strategies import (
    Generated,
    Known,
    Outcome,
    judge,
    random_scenario,
    scenarios,
)

FIXED: frozenset[Known] = frozenset(Known)
CI = settings(deadline=None, derandomize=True, database=None)


@settings(CI, max_examples=150)
@given(scenarios(frozenset(Known)))
def test_generated_scenarios_are_valid_files(gen: Generated) -> None:
    if gen.must_refuse:
        with pytest.raises(InputError, match=r"\.pa: 0x[0-9a-f]+\+0x[0-9a-f]+ ends beyond the "
                           r"host's (usable )?4[48]-bit PA space \(\[host\] pa_bits"):
            load_scenario("generated.toml", gen.text)
        return
    scn = load_scenario("generated.toml", gen.text)
    assert len(scn.events) >= 1 and len(scn.setup) >= 1


@settings(CI, max_examples=60)
@given(scenarios(FIXED))
def test_generated_scenarios_hold_and_repeat(gen: Generated) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        verdict = judge(gen, f"{tmp}/generated.toml")
    assert verdict.outcome in (Outcome.OK, Outcome.EXPECTED_FAILURE), \
        f"{verdict.outcome.value}: {verdict.detail}\n{gen.text}"
    assert (verdict.outcome is Outcome.EXPECTED_FAILURE) == \
        (gen.failing_event is not None and not gen.must_refuse)


@settings(CI, max_examples=100)
@given(scenarios(frozenset()))
def test_cases_of_known_classes_are_left_out_unless_asked(gen: Generated) -> None:
    assert gen.known == frozenset()


def test_the_generators_reach_every_event_kind_and_vma_kind() -> None:
    from s2mmu.scenario.schema import load_layers

    seen_do: set[str] = set()
    seen_vma: set[str] = set()
    for seed in range(200):
        data = tomllib.loads(random_scenario(random.Random(seed)).text)
        seen_do |= {e["do"] for e in data["event"]}
        seen_vma |= {v.get("kind", "anon") for v in data["vma"]}
        seen_vma |= {e.get("kind", "anon") for e in data["event"] if e["do"] == "mmap"}
    kvm_kinds = {name for name, kind in load_layers().kinds.items()
                 if kind.type.__module__ == "s2mmu.scenario.kvm_events"}
    assert seen_do == kvm_kinds  # the generators write kvm-layer scenarios
    assert seen_vma == {"anon", "file", "hugetlb", "pfnmap"}


def test_the_campaign_front_end_is_replayable_from_its_seed() -> None:
    assert random_scenario(random.Random(7)).text == random_scenario(random.Random(7)).text
    assert random_scenario(random.Random(7)).text != random_scenario(random.Random(8)).text


def test_a_generated_failure_request_is_reported_on_its_step() -> None:
    gen = next(g for g in (random_scenario(random.Random(s), frozenset()) for s in range(100))
               if g.failing_event is not None)
    with tempfile.TemporaryDirectory() as tmp:
        verdict = judge(gen, f"{tmp}/generated.toml")
    assert verdict.outcome is Outcome.EXPECTED_FAILURE
    assert verdict.detail.startswith("step ") and (
        "expected mmu_invalidate_seq 1099511627776" in verdict.detail
        or "expected stage-2 leaves {'1G': 100000}" in verdict.detail)


def test_the_oracle_sees_a_wrong_expectation_that_was_not_asked_for() -> None:
    gen = random_scenario(random.Random(3), frozenset())
    bad = Generated(gen.text.replace('expect_error = "none"', 'expect_error = "EEXIST"', 1),
                    None, frozenset())
    with tempfile.TemporaryDirectory() as tmp:
        verdict = judge(bad, f"{tmp}/generated.toml")
    assert verdict.outcome is Outcome.UNEXPECTED_FAILURE
    assert "expected error EEXIST, got none" in verdict.detail
