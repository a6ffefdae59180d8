"""Hypothesis strategies that write scenario files, and the fuzzers' oracle.

The generators live in s2mmu.scenario.generate (the real-KVM campaign draws from them too);
this module adds the hypothesis front end (shrinkable draws) and judges a generated
scenario's run.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from hypothesis import strategies as st

from s2mmu.scenario.generate import (
    FULL,
    Generated,
    Known,
    Reach,
    generate,
    random_scenario,
)

__all__ = ["FULL", "Generated", "HypothesisDraw", "Known", "Outcome", "Reach", "Verdict",
           "judge", "random_scenario", "scenarios"]

T = TypeVar("T")


class HypothesisDraw:
    """Choices drawn from hypothesis: shrinkable, replayable from its database or seed."""

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw

    def integers(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi))

    def choice(self, items: Sequence[T]) -> T:
        return self.draw(st.sampled_from(items))

    def boolean(self) -> bool:
        return self.draw(st.booleans())

    def subset(self, items: Sequence[T]) -> list[T]:
        return self.draw(st.lists(st.sampled_from(items), unique=True))

    def int_set(self, lo: int, hi: int, max_size: int) -> set[int]:
        return self.draw(st.sets(st.integers(lo, hi), max_size=max_size))


def scenarios(allow: frozenset[Known] = frozenset(Known), max_events: int = 12,
              reach: Reach = FULL) -> st.SearchStrategy[Generated]:
    """Return the hypothesis strategy of whole scenarios (see generate)."""
    return st.composite(lambda draw: generate(HypothesisDraw(draw), allow, max_events,
                                              reach))()


# -- the oracle -----------------------------------------------------------------------------------

class Outcome(enum.Enum):
    """What running a generated scenario gave, judged against what it asked for."""

    OK = "ok"
    EXPECTED_FAILURE = "expected failure"
    UNEXPECTED_FAILURE = "unexpected invariant/expectation failure"
    MISSED_FAILURE = "asked-for failure not reported"
    REFUSED = "valid scenario refused (exit 2)"
    NOT_REFUSED = "out-of-range value not refused"
    TRACEBACK = "traceback"
    NONDETERMINISM = "nondeterminism"


@dataclass(frozen=True)
class Verdict:
    """The outcome, and a key naming its failure class (for reproducers), and the detail."""

    outcome: Outcome
    key: str
    detail: str


def failure_class(message: str) -> str:
    """Return a failure message with its numbers blanked: one key per class."""
    import re

    text = message.split(": ", 1)[-1] if message.startswith("step ") else message
    return re.sub(r"0x[0-9a-f]+|\d+", "N", text)[:120]


def traceback_class(exc_info: object) -> str:
    """Return 'Type at file:function' of the innermost s2mmu frame of an exception."""
    import traceback

    _, exc, tb = exc_info  # type: ignore[misc]
    frames = [f for f in traceback.extract_tb(tb) if "/s2mmu/" in f.filename] or \
        traceback.extract_tb(tb)
    last = frames[-1]
    return f"{type(exc).__name__} at {last.filename.rsplit('/s2mmu/', 1)[-1]}:{last.name}"


def judge(gen: Generated, path: str) -> Verdict:
    """Run gen (written at path) as `run FILE` twice and `run FILE --json`; judge it."""
    import json

    from click.testing import CliRunner

    from s2mmu.cli.main import cli

    with open(path, "w", encoding="utf-8") as f:
        f.write(gen.text)
    results = [CliRunner().invoke(cli, args) for args in
               (["run", path], ["run", path], ["run", path, "--json"])]
    for r in results:
        if r.exception is not None and not isinstance(r.exception, SystemExit):
            return Verdict(Outcome.TRACEBACK, traceback_class(r.exc_info),
                           f"{type(r.exception).__name__}: {r.exception}")
    first, second, js = results
    if gen.must_refuse:
        return _judge_refusal(first)
    if (first.stdout, first.stderr, first.exit_code) != \
            (second.stdout, second.stderr, second.exit_code):
        return Verdict(Outcome.NONDETERMINISM, "text output differs between runs", "")
    if js.exit_code == 2 or first.exit_code == 2:
        err = (js.stderr or first.stderr).strip()
        return Verdict(Outcome.REFUSED, failure_class(err.rsplit(": ", 1)[-1]), err)
    failures = [_failure_text(f) for f in json.loads(js.stdout)["failures"]]
    if js.exit_code != first.exit_code or js.exit_code != (1 if failures else 0):
        return Verdict(Outcome.NONDETERMINISM, "exit status differs between text and --json",
                       "")
    want = _asked_step(gen)
    if Known.PERM_ABORT_WARN in gen.known:
        failures = [f for f in failures if MEMCACHE_WARN not in f]
    unexpected = [f for f in failures if gen.failing_event is None or not f.startswith(want)
                  or f.startswith(want + "(line ") and "): invariant: " in f]
    if unexpected:
        return Verdict(Outcome.UNEXPECTED_FAILURE, failure_class(unexpected[0]), unexpected[0])
    if gen.failing_event is not None and not failures:
        return Verdict(Outcome.MISSED_FAILURE, "asked-for failure not reported", want)
    if gen.failing_event is not None:
        return Verdict(Outcome.EXPECTED_FAILURE, "", failures[0])
    return Verdict(Outcome.OK, "", "")


MEMCACHE_WARN = "invariant: warn: WARN_ON(!mc->nobjs) in kvm_mmu_memory_cache_alloc"
"""The failure Known.PERM_ABORT_WARN lets pass."""


def _failure_text(f: dict[str, object]) -> str:
    """Return a run/2 failure record as the text timeline prints it (an expectation's
    message as is, an invariant's prefixed 'invariant: ' so it never passes for the
    asked-for one)."""
    kind = "" if f["kind"] == "expectation" else f"{f['kind']}: "
    return f"step #{f['index']} {f['do']} (line {f['line']}): {kind}{f['message']}"


def _judge_refusal(r: object) -> Verdict:
    """Judge a run that must refuse its file: exit 2, one line, nothing on stdout."""
    code, out, err = r.exit_code, r.stdout, r.stderr  # type: ignore[attr-defined]
    if code == 2 and out == "" and err.startswith("s2mmu: error: ") and err.count("\n") == 1:
        return Verdict(Outcome.OK, "", err)
    return Verdict(Outcome.NOT_REFUSED, f"exit {code}", (err or out).strip()[-300:])


def _asked_step(gen: Generated) -> str:
    """Return the failure-text prefix of the step carrying the impossible expectation
    (run/2 numbers steps from 1, the [[memslot]] tables first, then the events)."""
    import tomllib

    if gen.failing_event is None:
        return ""
    data = tomllib.loads(gen.text)
    index = len(data.get("memslot", [])) + gen.failing_event + 1
    return f"step #{index} {data['event'][gen.failing_event]['do']} "
