"""What a run gives back: typed step records, the running world, the run itself.

A step record holds the event as parsed, its outcome (an enum), the faults KVM handled
with their typed decisions, the typed result of the step (a memslot change, a dirty log,
an ioctl refusal ...), the TLBI/CMO events, and the expectations and invariants it broke.
Text, JSON and HTML are three renderers of these records (render_text, render_json and
s2mmu.cli.html); a library user gets the same records.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from s2mmu.kvm.abort import (
    Error,
    GuestAbort,
    GuestResult,
    HwpoisonSignal,
    InjectedAbort,
    InjectedS2Fault,
    InjectKind,
    MmioExit,
    NisvExit,
    Resumed,
    ResumeReason,
)
from s2mmu.kvm.fault import AbortOutcome
from s2mmu.scenario.schema import Event, Expectation, Scenario

T = TypeVar("T")


class Outcome(enum.Enum):
    """How a step ended; the values are the names `expect = "..."` uses."""

    COMPLETED = "completed"
    GUEST_FAULT = "guest-fault"
    RESUMED = "resumed"
    RETRY = "retry"
    MMIO = "mmio"
    NISV = "nisv"
    SEA_DABT = "sea-dabt"
    SEA_PABT = "sea-pabt"
    SIZE_FAULT = "size-fault"
    SERROR = "serror"
    HWPOISON = "hwpoison"
    L1_S2_FAULT = "l1-s2-fault"
    """A fault of the guest hypervisor's stage 2 injected into L1 (nested)."""
    ERROR = "error"
    DONE = "done"
    """A step that is not a guest access and succeeded."""


INJECTED = {InjectKind.DABT: Outcome.SEA_DABT, InjectKind.PABT: Outcome.SEA_PABT,
            InjectKind.SIZE: Outcome.SIZE_FAULT, InjectKind.SERROR: Outcome.SERROR}


def result_outcome(r: GuestResult) -> Outcome:
    """Return the outcome a guest-visible result of kvm_handle_guest_abort counts as."""
    match r:
        case Resumed(reason=ResumeReason.RETRY):
            return Outcome.RETRY
        case Resumed():
            return Outcome.RESUMED
        case MmioExit():
            return Outcome.MMIO
        case NisvExit():
            return Outcome.NISV
        case InjectedAbort(kind=kind):
            return INJECTED[kind]
        case HwpoisonSignal():
            return Outcome.HWPOISON
        case InjectedS2Fault():
            return Outcome.L1_S2_FAULT
        case Error():
            return Outcome.ERROR
    raise AssertionError(r)


@dataclass(frozen=True)
class FaultStep:
    """One stage-2 abort and how KVM handled it: the abort as the hardware reported it,
    kvm_handle_guest_abort's outcome (result, typed decisions, mapping, pages dirtied),
    and the TLBI/CMO events it issued."""

    abort: GuestAbort
    handled: AbortOutcome
    events: tuple[Any, ...] = ()

    @property
    def outcome(self) -> Outcome:
        """Return what the result counts as."""
        return result_outcome(self.handled.result)


@dataclass(frozen=True)
class Mismatch:
    """An expectation that did not hold, with what was found instead."""

    expectation: Expectation
    got: Any


@dataclass
class StepDraft:
    """A step while it runs: the run function fills faults and result; layers add events."""

    index: int
    event: Event
    outcome: Outcome = Outcome.DONE
    result: object | None = None
    faults: list[FaultStep] = field(default_factory=list)
    events: tuple[Any, ...] = ()
    trace: tuple[Any, ...] = ()
    broken: tuple[Broken, ...] = ()


@dataclass(frozen=True)
class Broken:
    """A registered invariant that did not hold after a step: its registered name, and the
    layer's typed violation (what was seen)."""

    invariant: str
    violation: Any


@dataclass(frozen=True)
class StepRecord:
    """One step of the run: memslot creations and timeline events share one numbering.

    index: 1, 2, ... in run order (the number the text, the JSON, the HTML and the failure
    list all use); result: the step's typed result (None when there is nothing to say).
    """

    index: int
    event: Event
    outcome: Outcome
    result: object | None
    faults: tuple[FaultStep, ...]
    events: tuple[Any, ...]
    mismatches: tuple[Mismatch, ...]
    invariants: tuple[Any, ...]
    """Broken records from the runner (a step built elsewhere may hold bare violations)."""
    trace: tuple[Any, ...] = ()
    meant: tuple[Broken, ...] = ()
    """Invariants the step broke as its expect_broken said it would (not failures)."""

    @property
    def line(self) -> int:
        """Return the line of the scenario file the step came from."""
        return self.event.where.line

    @property
    def ok(self) -> bool:
        """Return whether every expectation and invariant held after the step."""
        return not self.mismatches and not self.invariants


def freeze(draft: StepDraft, mismatches: list[Mismatch], invariants: list[Any],
           meant: tuple[Broken, ...] = ()) -> StepRecord:
    """Return the record of a finished step."""
    return StepRecord(draft.index, draft.event, draft.outcome, draft.result,
                      tuple(draft.faults), draft.events, tuple(mismatches), tuple(invariants),
                      draft.trace, meant)


class World:
    """The running scenario's state: one part per layer (host, VM and vCPUs for kvm)."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self._parts: dict[type, object] = {}

    def add(self, part: object) -> None:
        """Add a layer's part (one per type)."""
        assert type(part) not in self._parts, type(part)
        self._parts[type(part)] = part

    def has(self, kind: type) -> bool:
        """Return whether a part of the given type was added."""
        return kind in self._parts

    def part(self, kind: type[T]) -> T:
        """Return the part of the given type."""
        part = self._parts[kind]
        assert isinstance(part, kind)
        return part


@dataclass(frozen=True)
class Failure:
    """A broken expectation (a Mismatch) or invariant (the layer's typed violation) after a
    step."""

    step: StepRecord
    what: Any

    @property
    def is_expectation(self) -> bool:
        """Return whether an expectation (not an invariant) broke."""
        return isinstance(self.what, Mismatch)


@dataclass(frozen=True)
class Run:
    """A finished run: the scenario, every step, each layer's summary, the final world."""

    scenario: Scenario
    steps: tuple[StepRecord, ...]
    summaries: Mapping[str, object]
    world: World = field(compare=False, repr=False)

    @property
    def failures(self) -> list[Failure]:
        """Return every broken expectation and invariant, in step order."""
        out: list[Failure] = []
        for s in self.steps:
            out += [Failure(s, m) for m in s.mismatches]
            out += [Failure(s, m) for m in s.invariants]
        return out

    @property
    def ok(self) -> bool:
        """Return whether every expectation and invariant held."""
        return all(s.ok for s in self.steps)

    def faults(self) -> list[FaultStep]:
        """Return every fault handled, in order."""
        return [f for s in self.steps for f in s.faults]
