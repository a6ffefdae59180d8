"""Scenario files parse into typed events through the registry; a new layer plugs in."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from s2mmu.cli.schemas import validate
from s2mmu.scenario.kvm_events import (
    AccessKind,
    ClearDirtyLog,
    ExpectOutcome,
    GuestAccess,
    HostOp,
    HostRace,
    SetMemslot,
)
from s2mmu.scenario.records import Broken, Mismatch, Outcome, StepDraft, World
from s2mmu.scenario.render_json import run_json
from s2mmu.scenario.render_text import timeline_lines
from s2mmu.scenario.runner import run_scenario
from s2mmu.scenario.schema import (
    REGISTRY,
    Checker,
    Event,
    EventKind,
    Expectation,
    ExpectationKind,
    Invariant,
    Item,
    Layer,
    ParseContext,
    ScenarioError,
    load_scenario,
)

BASE = """
[[vma]]
start = 0x7f0000000000
size = "4M"

[[memslot]]
id = 0
gpa = 0x40000000
size = "4M"
hva = 0x7f0000000000
"""


def test_events_are_frozen_dataclasses_of_their_kind_with_typed_fields() -> None:
    scn = load_scenario("t.toml", BASE + """
[[event]]
do = "write"
va = 0x1000
vcpu = 0
race = { do = "munmap", hva = 0x7f0000000000, size = "2M" }
expect = "retry"

[[event]]
do = "clear_dirty_log"
slot = 0
first_page = 0
num_pages = "1K"
pages = [0x10]
""")
    (slot,) = scn.setup
    assert isinstance(slot, SetMemslot) and slot.table == "memslot" and slot.do == "memslot"
    assert (slot.slot, slot.gpa, slot.size, slot.flags) == (0, 0x4000_0000, 4 << 20, ())
    access, clear = scn.events
    assert access == GuestAccess(do="write", table="event", index=0, where=access.where,
                                 access=AccessKind.WRITE, va=0x1000,
                                 race=HostRace(HostOp.MUNMAP, 0x7F00_0000_0000, 2 << 20),
                                 expects=(ExpectOutcome(Outcome.RETRY),))
    assert access.where.line == 12
    assert clear == ClearDirtyLog(do="clear_dirty_log", table="event", index=1,
                                  where=clear.where, slot=0, first_page=0, num_pages=1024,
                                  pages=(0x10,))
    with pytest.raises(AttributeError):
        access.va = 0  # type: ignore[misc]


def test_an_error_found_while_running_names_the_event_field() -> None:
    scn = load_scenario("t.toml", BASE + '\n[[event]]\ndo = "hwpoison"\nhva = 0x1000\n')
    with pytest.raises(ScenarioError, match=r"^t.toml:14: event\[0\].hva: no VMA at HVA 0x1000"):
        run_scenario(scn)


def test_unknown_kind_lists_every_registered_kind() -> None:
    with pytest.raises(ScenarioError) as e:
        load_scenario("t.toml", BASE + '\n[[event]]\ndo = "poke"\n')
    assert str(e.value).startswith("t.toml:13: event[0].do: must be one of abort, check, "
                                   "clear_dirty_log, dc, delete_memslot, dirty_log_disable")


# -- a new layer, defined here, plugs in without editing the runner -----------------------------


@dataclass
class Counter:
    """The new layer's world state."""

    value: int
    history: list[int] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class Tick(Event):
    """The new layer's event: add `by` to the counter."""

    by: int


@dataclass(frozen=True)
class ExpectCount(Expectation):
    count: int


def parse_counter(c: Checker, data: dict[str, Any], ctx: ParseContext) -> tuple[int, list[Event]]:
    table = c.keys("counter", None, data.get("counter", {}), {"start"})
    return c.size("counter", None, "start", table.get("start", 0)), []


def build_counter(world: World, start: int) -> None:
    world.add(Counter(start))


def parse_tick(it: Item, ctx: ParseContext) -> Tick:
    from s2mmu.scenario.schema import common_fields

    by = ctx.checker.size("event", it.index, "by", it.get("by", 1))
    return Tick(**common_fields(it), by=by)


def run_tick(world: World, ev: Tick, draft: StepDraft) -> Outcome:
    world.part(Counter).value += ev.by
    draft.result = world.part(Counter).value
    return Outcome.DONE


def check_count(world: World, e: ExpectCount, d: StepDraft) -> Mismatch | None:
    got = world.part(Counter).value
    return None if got == e.count else Mismatch(e, got)


def counter_below_ten(world: World) -> list[str]:
    v = world.part(Counter).value
    return [f"counter {v} reached 10"] if v >= 10 else []


@pytest.fixture
def counter_layer(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("layers", "kinds", "expectations", "invariants"):
        monkeypatch.setattr(REGISTRY, name, dict(getattr(REGISTRY, name)))
    REGISTRY.layer(Layer("counter", frozenset({"counter"}), parse_counter, build_counter,
                         summary=lambda world: world.part(Counter).value))
    REGISTRY.event_kind(EventKind("tick", Tick, frozenset({"by"}), parse_tick, run_tick,
                                  frozenset({"expect_count"})))
    REGISTRY.expectation(ExpectationKind(
        "expect_count", ExpectCount, lambda it: ExpectCount(it.get("expect_count")),
        check_count))
    REGISTRY.invariant(Invariant("counter-below-ten", counter_below_ten))
    yield


COUNTER = BASE + """
[counter]
start = 3

[[event]]
do = "tick"
by = 4
expect_count = 7

[[event]]
do = "tick"
by = 3
expect_count = 11
note = "the counter's own invariant breaks"

[[event]]
do = "write"
ipa = 0x40000000
expect = "completed"
"""


def test_a_new_layer_plugs_in_its_table_state_event_expectation_and_invariant(
        counter_layer: None) -> None:
    run = run_scenario(load_scenario("c.toml", COUNTER))
    first, second, third = run.steps[1:]
    assert isinstance(first.event, Tick) and first.event.by == 4
    assert (first.index, first.outcome, first.result, first.ok) == (2, Outcome.DONE, 7, True)
    assert second.mismatches == (Mismatch(ExpectCount(11), 10),)
    assert second.invariants == (Broken("counter-below-ten", "counter 10 reached 10"),)
    assert third.outcome is Outcome.COMPLETED  # the kvm layer runs beside it
    assert run.summaries["counter"] == 10
    assert [f.step.index for f in run.failures] == [3, 3, 4]
    text = "\n".join(timeline_lines(run))
    assert "#3  [line  20] tick\n    # the counter's own invariant breaks\n" \
           "    EXPECTATION FAILED: expected ExpectCount(count=11), got 10\n" \
           "    INVARIANT BROKEN: counter-below-ten: counter 10 reached 10" in text
    doc = run_json(run)
    validate(doc)
    assert doc["steps"][1]["event"] == {"type": "Tick", "by": 4}
    assert doc["summary"]["layers"]["counter"] == 10
    assert "  counter: 10" in text.splitlines()


def test_a_new_layer_keeps_the_file_line_field_messages(counter_layer: None) -> None:
    with pytest.raises(ScenarioError, match=r"^c.toml:13: counter.start: must be an integer"):
        load_scenario("c.toml", COUNTER.replace("start = 3", "start = true"))
    with pytest.raises(ScenarioError, match=r"^c.toml:18: event\[0\].expect: not a field of a "
                                            r"tick event \(known: by, do, expect_broken, "
                                            r"expect_count"):
        load_scenario("c.toml", COUNTER.replace("expect_count = 7", "expect = \"done\""))


@pytest.mark.parametrize("path", sorted(
    [*(Path(__file__).resolve().parents[1] / "scenarios").glob("*.toml"),
     *(Path(__file__).resolve().parents[2] / "src/s2mmu/scenario/data").glob("*.toml")]),
    ids=lambda p: p.stem)
def test_the_checker_finds_the_same_lines_as_locate(path: Path) -> None:
    from s2mmu.scenario.schema import locate

    text = path.read_text()
    c = Checker(str(path), text)
    for table in ("event", "vma", "memslot", "vcpu", "host", "vm", "absent"):
        for index in (None, 0, 1, 3, 40):
            for key in (None, "do", "ipa", "start", "size", "features", "ipa_bits", "expect"):
                assert c.line(table, index, key) == locate(text, table, index, key)
