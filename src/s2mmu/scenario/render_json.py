"""The run as JSON: schema ``s2mmu.run/2`` (and ``s2mmu.demo/1``, every demo run in one
document), rendered from the same records and sentences as the text timeline.

Each typed value keeps its type's name and its fields, with addresses, PAs, IPAs, HVAs,
ESR/FAR/HPFAR values and dirty pages as hex strings and sizes as "4K"/"2M"/"1G"; each
also carries the sentence the text timeline shows for it. The schemas live in
s2mmu/cli/schemas/ (s2mmu.run.2.json, s2mmu.demo.1.json).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from functools import singledispatch
from typing import Any

from s2mmu.arch.faults import FaultRecord
from s2mmu.kvm.abort import (
    GuestAbort,
    kvm_is_write_fault,
    kvm_vcpu_abt_iss1tw,
    kvm_vcpu_get_fault_ipa,
    kvm_vcpu_trap_get_fault,
)
from s2mmu.kvm.dirty import SlotPage
from s2mmu.kvm.fault import Decision
from s2mmu.kvm.memslot import Memslot
from s2mmu.pkvm.errno import errname as pkvm_errname
from s2mmu.scenario.kvm_events import GuestFaulted, KvmSummary
from s2mmu.scenario.pkvm_events import (
    POLICY_NAMES,
    HostAccessed,
    NotRun,
    PkvmSummary,
    Returned,
    access_result,
)
from s2mmu.scenario.records import Broken, Failure, FaultStep, Run, StepRecord
from s2mmu.scenario.render_text import (
    abort_class,
    access_outcome_text,
    decision_text,
    event_text,
    fault_counts,
    fault_result_text,
    fsc_name,
    guest_fault_text,
    invariant_text,
    mismatch_text,
    prot_str,
    returned_text,
    size_name,
    step_summary,
)

RUN_SCHEMA = "s2mmu.run/2"
DEMO_SCHEMA = "s2mmu.demo/1"

HEX_FIELDS = frozenset({"ipa", "pa", "hva", "gpa", "va", "far", "esr", "hpfar", "start",
                        "page", "pages", "first_page", "esr_iss", "fsc", "stage1_tables",
                        "pfn", "gfn", "phys", "addr", "xt", "par", "fast_par", "l2_ipa",
                        "tables", "ia", "oa", "next_table", "s2_leaf", "leaf", "now"})
"""Fields whose integers are addresses, register values or page numbers: hex strings."""
SIZE_FIELDS = frozenset({"size", "vma_pagesize"})
"""Fields whose integers are sizes in bytes: "4K", "2M", "1G"."""


def value(name: str, v: Any) -> Any:
    """Return a field's value as JSON: hex for addresses, size names for sizes, enum values,
    dataclasses as {"type": name, fields...}."""
    if v is None or isinstance(v, bool | str | float):
        return v
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, enum.Enum):
        return v.value if isinstance(v.value, str | int) else v.name
    if isinstance(v, int):
        if name in HEX_FIELDS:
            return hex(v)
        if name in SIZE_FIELDS:
            return size_name(v)
        if name == "prot":
            return prot_str(v)
        return v
    if isinstance(v, list | tuple | frozenset):
        return [value(name, x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): value(name, x) for k, x in v.items()}
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return record(v)
    return str(v)


def record(obj: Any) -> dict[str, Any]:
    """Return a frozen dataclass as {"type": its class name, each field as JSON}."""
    out: dict[str, Any] = {"type": type(obj).__name__}
    for f in dataclasses.fields(obj):
        if f.name in ("key_lines", "where", "table", "index", "expects", "note", "do"):
            continue
        out[f.name] = value(f.name, getattr(obj, f.name))
    return out


@singledispatch
def result_json(result: Any) -> dict[str, Any]:
    """Return a step's typed result as JSON (registered per type; default: its fields, or
    {"type", "value"} for a plain value)."""
    if dataclasses.is_dataclass(result):
        return record(result)
    return {"type": type(result).__name__, "value": value("value", result)}


@result_json.register
def _(r: GuestFaulted) -> dict[str, Any]:
    f: FaultRecord = r.fault
    return {"type": "GuestFaulted", "statuscode": f.statuscode.value, "level": f.level,
            "text": guest_fault_text(r)}


@result_json.register
def _(r: HostAccessed) -> dict[str, Any]:
    return {"type": "HostAccessed", "result": access_result(r.outcome).value,
            "outcome": record(r.outcome), "text": access_outcome_text(r.outcome)}


@result_json.register
def _(r: Returned) -> dict[str, Any]:
    return {**record(r), "errno": pkvm_errname(r.ret), "text": returned_text(r)}


@result_json.register
def _(r: NotRun) -> dict[str, Any]:
    return {**record(r), "text": returned_text(r)}


def abort_json(a: GuestAbort) -> dict[str, Any]:
    """Return the abort's registers and decoded fields."""
    fsc = kvm_vcpu_trap_get_fault(a)
    return {"esr": hex(a.esr), "far": hex(a.far), "hpfar": hex(a.hpfar), "class": abort_class(a),
            "fsc": hex(fsc), "fsc_name": fsc_name(a), "s1ptw": kvm_vcpu_abt_iss1tw(a),
            "write": kvm_is_write_fault(a), "ipa": hex(kvm_vcpu_get_fault_ipa(a))}


def decision_json(d: Decision) -> dict[str, Any]:
    """Return one decision: its step's kernel name, its type and values, its sentence."""
    return {"step": d.step, **record(d), "text": decision_text(d)}


def slot_page_json(p: SlotPage) -> dict[str, Any]:
    """Return a dirtied page as {slot, page}."""
    return {"slot": p.slot, "page": hex(p.page)}


def fault_json(f: FaultStep) -> dict[str, Any]:
    """Return one fault: the abort, the decisions, the mapping, the result, the events."""
    h = f.handled
    m = h.mapping
    return {"abort": abort_json(f.abort),
            "decisions": [decision_json(d) for d in h.decisions],
            "mapping": None if m is None else {
                "op": m.op.value, "ipa": hex(m.ipa), "size": size_name(m.size), "pa": hex(m.pa),
                "prot": prot_str(m.prot)},
            "result": {"outcome": f.outcome.value, **record(h.result),
                       "text": fault_result_text(f)},
            "dirtied": [slot_page_json(p) for p in h.dirtied],
            "events": [event_text(e) for e in f.events]}


def step_json(s: StepRecord, trace: bool = False) -> dict[str, Any]:
    """Return one step."""
    doc: dict[str, Any] = {
        "index": s.index, "line": s.line, "do": s.event.do, "note": s.event.note,
        "summary": step_summary(s), "outcome": s.outcome.value, "event": record(s.event),
        "result": None if s.result is None else result_json(s.result),
        "faults": [fault_json(f) for f in s.faults],
        "events": [event_text(e) for e in s.events],
        "expectations": [mismatch_text(m) for m in s.mismatches],
        "invariants": [invariant_json(v) for v in s.invariants],
        "expected_broken": [invariant_json(v) for v in s.meant]}
    if trace:
        doc["trace"] = [event_text(e) for e in s.trace]
    return doc


def invariant_json(v: Any) -> dict[str, Any]:
    """Return a broken invariant: its type and values (if typed) and its words."""
    name = v.invariant if isinstance(v, Broken) else None
    what = v.violation if isinstance(v, Broken) else v
    typed = record(what) if dataclasses.is_dataclass(what) else {"type": type(what).__name__}
    return {**typed, "invariant": name, "text": invariant_text(v)}


def failure_json(f: Failure) -> dict[str, Any]:
    """Return one failure: the step's number, kind and line, and what broke."""
    kind = "expectation" if f.is_expectation else "invariant"
    text = mismatch_text(f.what) if f.is_expectation else invariant_text(f.what)
    name = f.what.invariant if isinstance(f.what, Broken) else None
    return {"index": f.step.index, "do": f.step.event.do, "line": f.step.line, "kind": kind,
            "invariant": name, "message": text}


def memslot_json(s: Memslot) -> dict[str, Any]:
    """Return a memslot."""
    return {"id": s.id, "gpa": hex(s.base_gfn << 12), "size": size_name(s.npages << 12),
            "hva": hex(s.userspace_addr), "flags": hex(s.flags)}


@singledispatch
def summary_json(summary: Any) -> Any:
    """Return a layer's summary (registered per type; default: its value as JSON)."""
    return value("summary", summary)


@summary_json.register
def _(s: KvmSummary) -> dict[str, Any]:
    return {"mappings": {size_name(k): n for k, n in sorted(s.mappings.items(), reverse=True)},
            "dirty_pages": {str(k): n for k, n in s.dirty_pages.items()},
            "mmu_invalidate_seq": s.mmu_invalidate_seq,
            "memslots": [memslot_json(m) for m in s.memslots], "table_pages": s.table_pages}


@summary_json.register
def _(s: PkvmSummary) -> dict[str, Any]:
    return {"profile": s.profile, "policy": POLICY_NAMES[s.policy],
            "pages": {"host": s.host_pages, "shared": s.shared_pages, "hyp": s.hyp_pages,
                      "guests": s.guest_pages},
            "guests": list(s.guests), "dirty_marks": s.dirty_marks,
            "direct_map_holes": s.direct_map_holes, "panicked_at": s.panicked_at}


def run_json(run: Run, trace: bool = False) -> dict[str, Any]:
    """Return the run as one s2mmu.run/2 document."""
    counts = fault_counts(run)
    scn = run.scenario
    return {"schema": RUN_SCHEMA, "scenario": scn.path, "name": scn.name,
            "description": scn.description, "profile": scn.profile.name, "ok": run.ok,
            "failures": [failure_json(f) for f in run.failures],
            "summary": {"faults": sum(counts.values()), "results": counts,
                        "layers": {k: summary_json(v) for k, v in run.summaries.items()}},
            "steps": [step_json(s, trace) for s in run.steps]}


def demo_json(runs: list[Run], trace: bool = False) -> dict[str, Any]:
    """Return every demo run as one s2mmu.demo/1 document."""
    return {"schema": DEMO_SCHEMA, "ok": all(r.ok for r in runs),
            "runs": [run_json(r, trace) for r in runs]}
