"""The real-KVM campaign without booting: what it draws always plans, how differences are
grouped, and its JSON document."""

from __future__ import annotations

import hashlib
import random
import tempfile
from pathlib import Path

from hypothesis import given, settings

from s2mmu.cli.real_cmd import campaign_json, campaign_text
from s2mmu.cli.schemas import validate
from s2mmu.real.boot import Mode
from s2mmu.real.campaign import (
    REAL_KVM,
    CampaignReport,
    CampaignRequest,
    ScenarioVerdict,
    classify,
    generated,
    write_reproducers,
)
from s2mmu.real.diff import Aspect, Difference, DiffReport
from s2mmu.real.plan import GuestStep, HostStep, make_plan
from s2mmu.scenario.generate import FULL, random_scenario
from s2mmu.scenario.schema import load_scenario
from tests.scenario.strategies import Generated, Outcome, judge, scenarios


@settings(deadline=None, derandomize=True, database=None, max_examples=150)
@given(scenarios(frozenset(), reach=REAL_KVM))
def test_every_drawn_scenario_is_one_the_vmm_expresses(gen: Generated) -> None:
    plan = make_plan(load_scenario("g.toml", gen.text))  # Unsupported would be a defect
    assert plan.steps and gen.failing_event is None and not gen.known


def test_the_campaign_draws_guest_and_host_steps_and_both_zero_page_settings() -> None:
    plans = [make_plan(generated(seed, 12)[1]) for seed in range(60)]
    assert any(isinstance(s, GuestStep) for p in plans for s in p.steps)
    assert any(isinstance(s, HostStep) for p in plans for s in p.steps)
    assert {p.thp_zero_page for p in plans} == {False, True}


def test_the_full_reach_draws_as_before() -> None:
    """FULL keeps the fuzzers' draws (seeds 0..49 give the files the generator gave before
    it took a Reach), so reproducer seeds stay valid."""
    texts = "".join(random_scenario(random.Random(s), reach=FULL).text for s in range(50))
    assert hashlib.sha256(texts.encode()).hexdigest()[:16] == "a95684afdccd9f19"
    assert "thp_zero_page" not in texts


def diff(name: str, *diffs: Difference) -> DiffReport:
    return DiffReport(name, "6.1.0-57-arm64", "v6.1", (), tuple(diffs))


def report(verdicts: tuple[ScenarioVerdict, ...]) -> CampaignReport:
    return CampaignReport(CampaignRequest(len(verdicts), 7, Mode.NVHE, 2), "6.1.0-57-arm64",
                          "v6.1", verdicts, (), 1.5, classify(verdicts))


A = Difference(4, Aspect.FAULTS, "write Translation L3 @0x40001000",
               "write Translation L1 @0x40001000")
B = Difference(9, Aspect.FAULTS, "write Translation L3 @0x40088000",
               "write Translation L1 @0x40088000")
C = Difference(2, Aspect.ANSWER, "completed", "error EFAULT")


def test_differences_are_classed_with_numbers_blanked_once_per_scenario() -> None:
    vs = (ScenarioVerdict(7, "a", diff("a", A, B)), ScenarioVerdict(8, "b", diff("b")),
          ScenarioVerdict(9, "c", diff("c", C, B)))
    classes = classify(vs)
    assert [(c.aspect, c.count, c.first_seed) for c in classes] == [
        (Aspect.FAULTS, 2, 7), (Aspect.ANSWER, 1, 9)]
    assert classes[0].key == ("faults: model write Translation LN @N; "
                              "real write Translation LN @N")
    r = report(vs)
    assert r.agreeing == 1 and [v.agrees for v in vs] == [False, True, False]


def test_campaign_json_follows_its_schema_and_names_the_reproducers(tmp_path: Path) -> None:
    vs = (ScenarioVerdict(7, "name = \"a\"\n", diff("a", A)), ScenarioVerdict(8, "b", diff("b")))
    r = report(vs)
    paths = write_reproducers(r, tmp_path)
    assert [p.read_text() for p in paths.values()] == ["name = \"a\"\n"]
    doc = campaign_json(r, paths)
    validate(doc)
    assert doc["disagreeing_seeds"] == [7] and doc["classes"][0]["reproducer"].endswith(
        "real-nvhe-seed7.toml")
    lines = campaign_text(r, paths)
    assert lines[2] == ("scenarios agreeing at every step: 1/2 (50.0%); steps agreeing: "
                        "0/0 (0.00%)")


@settings(deadline=None, derandomize=True, database=None, max_examples=40)
@given(scenarios(frozenset(), reach=REAL_KVM))
def test_what_the_campaign_draws_runs_clean_on_the_model(gen: Generated) -> None:
    """The huge zero page and read-only hugetlb pages keep every invariant (the fuzz
    suite's FULL reach never sets thp_zero_page)."""
    with tempfile.TemporaryDirectory() as tmp:
        verdict = judge(gen, f"{tmp}/g.toml")
    assert verdict.outcome is Outcome.OK, verdict
