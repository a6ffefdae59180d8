"""Run AT cases on QEMU and on the model, compare op by op, report agreement.

Both sides get the same case file. QEMU's side may add `harness_memory` (descriptor
words its prechecks updated before the ops ran, see qemu.py); those words are appended
to the case's memory before the model runs it, so that both sides start from the same
memory. Every op is then compared field by field (outcome, PAR_EL1, taken_to, ESR, FAR,
HPFAR_EL2, as integers), and each case's memory_changes as a list. A difference that an
entry of divergences.DIVERGENCES explains is reported as that divergence, never as
agreement; any other difference is a mismatch.

The model side is `s2mmu.arch.atcase` (parse_cases, run_case), imported when first used,
or any callable with the same contract (tests use that to check the comparison itself).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s2mmu.arch.features import FeatureSet
from s2mmu.arch.inputs import load_json
from s2mmu.conformance.casefile import HarnessCase, case_objects, parse_cases
from s2mmu.conformance.divergences import (
    OpEvidence,
    classify,
    divergence_named,
    explain_memory,
)
from s2mmu.conformance.qemu import QemuAt, QemuConfig
from s2mmu.conformance.target import QemuTarget

ModelSide = Callable[[Mapping[str, Any]], Mapping[str, Any]]
"""Run one case object on the model and return its answer (at-case.md "Output")."""

ANSWER_KEYS = ("op", "va", "el", "pan", "outcome", "PAR_EL1", "taken_to", "ESR", "FAR",
               "HPFAR_EL2", "value", "insn")
INT_KEYS = frozenset({"va", "pan", "PAR_EL1", "ESR", "FAR", "HPFAR_EL2", "value", "insn"})
NOT_RUN = frozenset({"skipped", "harness_error"})

AGREE = "agree"
DIVERGENCE = "divergence"
MISMATCH = "mismatch"
NOT_RUN_VERDICT = "not_run"


class ModelUnavailable(RuntimeError):
    """The model side (s2mmu.arch.atcase) cannot be imported."""


def model_answer(case_obj: Mapping[str, Any],
                 features: FeatureSet | None = None) -> Mapping[str, Any]:
    """Run one case object on the model (s2mmu.arch.atcase), with the features of the QEMU
    it is compared with (default: QEMU 7.2's -cpu max preset)."""
    try:
        from s2mmu.arch import atcase
    except ImportError as error:
        raise ModelUnavailable(f"the model side is not available: {error}") from None
    cases = atcase.parse_cases(case_obj)
    return atcase.run_case(cases[0], features)


def model_with(features: FeatureSet | None) -> ModelSide:
    """Return the model side running with a QEMU's features (cpu_id.model_features)."""
    return lambda case_obj: model_answer(case_obj, features)


# --- Normal forms ---------------------------------------------------------------------------


def normal_op(answer: Mapping[str, Any]) -> dict[str, Any]:
    """Return an op answer's compared fields, integers as integers."""
    out: dict[str, Any] = {}
    for key in ANSWER_KEYS:
        if key in answer:
            value = answer[key]
            out[key] = int(str(value), 0) if key in INT_KEYS else value
    return out


def normal_changes(answer: Mapping[str, Any]) -> list[tuple[int, int, int]]:
    """Return a case answer's memory_changes as sorted (pa, before, after) integers.

    The probe sees which words each op changed, not the order of the writes inside one
    AT instruction, and the format has no op index; so changes compare as a multiset.
    Successive changes of one word still compare in order, through their before/after
    values.
    """
    return sorted(net_changes(answer.get("memory_changes", [])))


def net_changes(changes: Sequence[Mapping[str, Any]]) -> list[tuple[int, int, int]]:
    """Return changes as (pa, before, after), successive writes of one word by one op
    merged into one: the probe scans memory after each op, so it sees an op's net change
    (a STXR's LDXR sets the access flag, its store the dirty state, in one op)."""
    out: list[tuple[int, int, int]] = []
    last: dict[tuple[Any, int], int] = {}
    for c in changes:
        pa, before, after = (int(str(c["pa"]), 0), int(str(c["before"]), 0),
                             int(str(c["after"]), 0))
        key = (c.get("op"), pa)
        if key in last and key[0] is not None and out[last[key]][2] == before:
            out[last[key]] = (pa, out[last[key]][1], after)
            continue
        last[key] = len(out)
        out.append((pa, before, after))
    return [c for c in out if c[1] != c[2]]


def model_case_object(case: HarnessCase, qemu: Mapping[str, Any]) -> dict[str, Any]:
    """Return the case object the model runs: QEMU's harness_memory appended."""
    obj = dict(case.source)
    obj["memory"] = list(obj.get("memory", [])) + list(qemu.get("harness_memory", []))
    return obj


# --- Verdicts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpComparison:
    """One op: both answers and the verdict (agree, divergence, mismatch, not_run)."""

    index: int
    qemu: Mapping[str, Any]
    model: Mapping[str, Any]
    verdict: str
    divergence: str | None = None


@dataclass(frozen=True)
class CaseComparison:
    """One case: its ops, its memory changes' verdict, both answers."""

    case: HarnessCase
    ops: tuple[OpComparison, ...]
    memory_verdict: str
    qemu: Mapping[str, Any]
    model: Mapping[str, Any]

    @property
    def family(self) -> str:
        """Return the case's family ("file" for hand-written cases)."""
        return self.case.family


def compare_op(case: HarnessCase, index: int, qemu: Mapping[str, Any],
               model: Mapping[str, Any], series: str = "7.2") -> OpComparison:
    """Compare one op's answers and classify any difference by QEMU `series`' departures."""
    if qemu.get("outcome") in NOT_RUN:
        return OpComparison(index, qemu, model, NOT_RUN_VERDICT)
    if normal_op(qemu) == normal_op(model):
        return OpComparison(index, qemu, model, AGREE)
    divergence = classify(OpEvidence(case, case.ops[index], qemu, model, index, series), series)
    if divergence is not None:
        return OpComparison(index, qemu, model, DIVERGENCE, divergence.name)
    return OpComparison(index, qemu, model, MISMATCH)


def memory_verdict(case: HarnessCase, ops: Sequence[OpComparison], qemu: Mapping[str, Any],
                   model: Mapping[str, Any], series: str = "7.2") -> str:
    """Compare memory_changes op by op; a difference is explained only for its own op.

    Changes carry the index of the op that made them ("op"). An op's differing changes
    are a divergence only when explain_memory recognises QEMU's AT dirty-state update on
    that op's leaves, or when the op's own answer is a divergence under which QEMU walks
    differently (Divergence.changes_walk). A later op whose only extra change is exactly
    a write QEMU made early, at such an explained op, is that divergence's consequence;
    anything else is a mismatch.
    """
    if qemu.get("skipped") or qemu.get("memory_changes_dropped") or \
            any(op.verdict == NOT_RUN_VERDICT for op in ops):
        return NOT_RUN_VERDICT
    if normal_changes(qemu) == normal_changes(model):
        return AGREE
    q, m = changes_by_op(qemu), changes_by_op(model)
    earlier: set[tuple[int, int, int]] = set()   # QEMU's writes an explained op made early
    for index in sorted(set(q) | set(m), key=lambda i: -1 if i is None else i):
        qi, mi = q.get(index, []), m.get(index, [])
        if qi == mi:
            continue
        if op_memory_explained(case, ops, index, qi, mi, series):
            earlier |= set(qi) - set(mi)
            continue
        late = set(mi) - set(qi)
        if qi == sorted(set(mi) - late) and late and late <= earlier:
            earlier -= late     # the model makes the write QEMU made at an explained op
            continue
        return MISMATCH
    return DIVERGENCE


def changes_by_op(answer: Mapping[str, Any]) -> dict[int | None, list[tuple[int, int, int]]]:
    """Return an answer's memory changes grouped by the op that made them (None: unknown)."""
    grouped: dict[int | None, list[Mapping[str, Any]]] = {}
    for change in answer.get("memory_changes", []):
        index = change.get("op")
        key = int(str(index), 0) if index is not None else None
        grouped.setdefault(key, []).append(change)
    return {key: sorted(net_changes(value)) for key, value in grouped.items()}


def op_memory_explained(case: HarnessCase, ops: Sequence[OpComparison], index: int | None,
                        qemu: list[tuple[int, int, int]],
                        model: list[tuple[int, int, int]], series: str = "7.2") -> bool:
    """Return whether a divergence explains op `index`'s different memory changes."""
    if index is None or not 0 <= index < len(ops):
        return False
    op = ops[index]
    if op.divergence is not None and divergence_named(op.divergence).changes_walk:
        return True
    ev = OpEvidence(case, case.ops[index], op.qemu, op.model, index, series)
    return explain_memory(ev, qemu, model, series) is not None


def model_error_answer(case: HarnessCase, error: Exception) -> dict[str, Any]:
    """Return a model answer standing for an exception the model raised."""
    reason = f"model raised {type(error).__name__}: {error}"
    return {"name": case.name, "memory_changes": [],
            "ops": [{"outcome": "model_error", "reason": reason} for _ in case.ops]}


def run_model(case: HarnessCase, qemu: Mapping[str, Any], model: ModelSide) -> Mapping[str, Any]:
    """Run the model on a case, turning its exceptions (not ModelUnavailable) into answers."""
    try:
        return model(model_case_object(case, qemu))
    except ModelUnavailable:
        raise
    except Exception as error:  # noqa: BLE001 - a model bug is a mismatch, not a crash
        return model_error_answer(case, error)


def compare_case(case: HarnessCase, qemu: Mapping[str, Any], model: ModelSide,
                 series: str = "7.2") -> CaseComparison:
    """Run the model on one case and compare it with the answer of QEMU `series`."""
    answer = run_model(case, qemu, model)
    model_ops = list(answer.get("ops", []))
    model_ops += [{"outcome": "missing"}] * (len(case.ops) - len(model_ops))
    ops = tuple(compare_op(case, i, qemu["ops"][i], model_ops[i], series)
                for i in range(len(case.ops)))
    return CaseComparison(case=case, ops=ops,
                          memory_verdict=memory_verdict(case, ops, qemu, answer, series),
                          qemu=qemu, model=answer)


def compare_cases(objs: Sequence[Mapping[str, Any]], config: QemuConfig | None = None,
                  model: ModelSide = model_answer, series: str = "7.2") -> Report:
    """Run case objects on both sides and compare them (QEMU `series`' departures excused)."""
    cases = parse_cases(list(objs))
    answers = QemuAt(config or QemuConfig()).run(cases)
    return Report(tuple(compare_case(case, qemu, model, series)
                        for case, qemu in zip(cases, answers, strict=True)))


# --- The report ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Tally:
    """Op counts by verdict, for one family or overall."""

    counts: Counter[str] = field(default_factory=Counter)

    @property
    def compared(self) -> int:
        """Return the ops that count towards agreement (agree + mismatch)."""
        return self.counts[AGREE] + self.counts[MISMATCH]

    @property
    def agreement(self) -> float:
        """Return agreeing ops over compared ops, as a percentage (100 if none)."""
        return 100.0 * self.counts[AGREE] / self.compared if self.compared else 100.0


@dataclass(frozen=True)
class Report:
    """All comparisons of a run, and the QEMU they were made against (None: the default)."""

    cases: tuple[CaseComparison, ...]
    target: QemuTarget | None = None

    def ops(self) -> list[tuple[CaseComparison, OpComparison]]:
        """Return every (case, op) pair."""
        return [(case, op) for case in self.cases for op in case.ops]

    def tally(self, family: str | None = None) -> Tally:
        """Return op counts by verdict, for one family or all."""
        tally = Tally()
        for case, op in self.ops():
            if family is None or case.family == family:
                tally.counts[op.verdict] += 1
        return tally

    def families(self) -> list[str]:
        """Return the families present, in first-seen order."""
        return list(dict.fromkeys(case.family for case in self.cases))

    def divergences(self) -> Counter[str]:
        """Return the number of ops per intended divergence."""
        return Counter(op.divergence for _, op in self.ops() if op.divergence)

    def memory(self) -> Counter[str]:
        """Return the number of cases per memory_changes verdict."""
        return Counter(case.memory_verdict for case in self.cases)

    def mismatches(self) -> list[tuple[CaseComparison, OpComparison | None]]:
        """Return unexplained mismatches: (case, op), or (case, None) for memory changes."""
        found: list[tuple[CaseComparison, OpComparison | None]] = [
            (case, op) for case, op in self.ops() if op.verdict == MISMATCH]
        found += [(case, None) for case in self.cases if case.memory_verdict == MISMATCH]
        return found

    def harness_errors(self) -> list[tuple[CaseComparison, OpComparison]]:
        """Return ops QEMU could not run because of the harness (not legitimate skips)."""
        return [(case, op) for case, op in self.ops()
                if op.qemu.get("outcome") == "harness_error"]

    def ok(self) -> bool:
        """Return whether there is no unexplained mismatch and no harness error."""
        return not self.mismatches() and not self.harness_errors()


# --- Minimal replayable mismatch files -------------------------------------------------------


def reduced_case(case: HarnessCase, ops: Sequence[int], note: str) -> dict[str, Any]:
    """Return the case object with only some of its ops."""
    obj = dict(case.source)
    source_ops = list(case.source.get("ops", []))
    obj["ops"] = [source_ops[i] for i in ops]
    obj["name"] = f"{case.name}-{note}"
    return obj


def candidates(case: HarnessCase, op: OpComparison | None) -> list[dict[str, Any]]:
    """Return reductions of a mismatching case, smallest first."""
    if op is None:
        return [reduced_case(case, range(len(case.ops)), "memory")]
    found = [reduced_case(case, [op.index], f"op{op.index}")]
    if op.index:
        found.append(reduced_case(case, range(op.index + 1), f"ops0-{op.index}"))
    return found


def still_mismatches(comparison: CaseComparison, op: OpComparison | None) -> bool:
    """Return whether a reduced case reproduces the mismatch it was cut for."""
    if op is None:
        return comparison.memory_verdict == MISMATCH
    return comparison.ops[-1].verdict == MISMATCH


def write_mismatches(report: Report, directory: Path, config: QemuConfig | None = None,
                     model: ModelSide = model_answer, series: str = "7.2") -> list[Path]:
    """Write each mismatch as the smallest case file that reproduces it; return the files."""
    directory.mkdir(parents=True, exist_ok=True)
    pending = [(case, op, cands) for case, op in report.mismatches()
               for cands in [candidates(case.case, op)]]
    flat = [cand for _, _, cands in pending for cand in cands]
    replayed = iter(compare_cases(flat, config, model, series).cases if flat else ())
    written: list[Path] = []
    for case, op, cands in pending:
        results = [next(replayed) for _ in cands]
        chosen = next((cand for cand, res in zip(cands, results, strict=True)
                       if still_mismatches(res, op)), reduced_case(case.case, range(len(case.ops)),
                                                                   "full"))
        chosen["expect"] = {"qemu": op.qemu if op else case.qemu.get("memory_changes"),
                            "model": op.model if op else case.model.get("memory_changes")}
        path = directory / f"{chosen['name']}.json"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(chosen, indent=1) + "\n")
        os.replace(tmp, path)
        written.append(path)
    return written


def load_case_file(path: Path) -> list[Mapping[str, Any]]:
    """Read a case file's case objects, with a one-line message for bad input.

    Every check of the input layer applies (s2mmu.arch.inputs: depth, digits, lengths).
    """
    obj = load_json(path)
    return case_objects(obj)


# --- Departures across QEMU versions -------------------------------------------------------


@dataclass(frozen=True)
class DepartureAcross:
    """How one departure of a reference QEMU shows on another, over the cases both ran
    identically: its ops there agree with the model (the departure is gone), still show
    it, were not run (the other QEMU crashed, say), or differ otherwise (another departure).
    `example`: the first op where it is gone, with both answers."""

    name: str
    reference_ops: int
    gone: int
    kept: int
    not_run: int
    other: int
    example: tuple[CaseComparison, OpComparison, OpComparison] | None


def departures_across(reference: Report, other: Report) -> list[DepartureAcross]:
    """Return, per departure seen in `reference`, what `other` answers on the same ops.

    Cases pair by name and only when their case objects are equal (a generator drawing a
    feature only one QEMU has changes the case, which then proves nothing).
    """
    by_name = {case.case.name: case for case in other.cases}
    tally: dict[str, list[int]] = {}
    examples: dict[str, tuple[CaseComparison, OpComparison, OpComparison]] = {}
    for case in reference.cases:
        twin = by_name.get(case.case.name)
        if twin is None or dict(twin.case.source) != dict(case.case.source):
            continue
        for ref_op, op in zip(case.ops, twin.ops, strict=True):
            if ref_op.divergence is None:
                continue
            counts = tally.setdefault(ref_op.divergence, [0, 0, 0, 0, 0])
            counts[0] += 1
            if op.verdict == AGREE:
                counts[1] += 1
                examples.setdefault(ref_op.divergence, (case, ref_op, op))
            elif op.divergence == ref_op.divergence:
                counts[2] += 1
            elif op.verdict == NOT_RUN_VERDICT:
                counts[3] += 1
            else:
                counts[4] += 1
    return [DepartureAcross(name, c[0], c[1], c[2], c[3], c[4], examples.get(name))
            for name, c in sorted(tally.items(), key=lambda kv: -kv[1][0])]
