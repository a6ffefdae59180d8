"""The readable timeline of a run report (the same dicts the JSON output carries)."""

from __future__ import annotations

from typing import Any


def timeline_lines(report: dict[str, Any], trace: bool = False) -> list[str]:
    """Return the report as text: one block per step, then the summary and failures."""
    out = [f"scenario {report['name']} ({report['scenario']})"]
    if report["description"]:
        out.append(f"  {report['description']}")
    for r in report["steps"]:
        out += step_lines(r, trace)
    out += summary_lines(report["summary"])
    if report["failures"]:
        out.append(f"FAILED: {len(report['failures'])} expectation(s)/invariant(s) broken")
        out += [f"  {f}" for f in report["failures"]]
    else:
        out.append("OK: every expectation and invariant holds")
    return out


def step_lines(r: dict[str, Any], trace: bool) -> list[str]:
    """Return one step's lines."""
    head = f"[line {r['line']:>3}] {r['summary']}"
    if r.get("outcome"):
        head += f" -> {r['outcome']}"
    if r.get("pa"):
        head += f" (PA {r['pa']})"
    if r.get("guest_fault"):
        head += f" ({r['guest_fault']}, the guest's own exception)"
    out = [head]
    if r["note"]:
        out.append(f"    # {r['note']}")
    for f in r["faults"]:
        a = f["abort"]
        out.append(f"    abort: {a['class']} ESR {a['esr']} FAR {a['far']} HPFAR {a['hpfar']} "
                   f"IPA {a['ipa']}: {a['fsc_name']}"
                   f"{', S1PTW' if a['s1ptw'] else ''}{', write' if a['write'] else ''}")
        out += [f"      {s['step']}: {s['decision']}" for s in f["steps"]]
        out += [f"      ~ {e}" for e in f["events"]]
        out.append(f"      => {f['result_text']}")
    out += [f"    ~ {e}" for e in r["events"]]
    if trace:
        out += [f"    . {e}" for e in r.get("trace", [])]
    out += [f"    EXPECTATION FAILED: {m}" for m in r["expect"]]
    out += [f"    INVARIANT BROKEN: {m}" for m in r["invariants"]]
    return out


def summary_lines(s: dict[str, Any]) -> list[str]:
    """Return the summary's lines."""
    maps = ", ".join(f"{n} x {k}" for k, n in s["mappings"].items()) or "none"
    dirty = ", ".join(f"slot {k}: {n}" for k, n in s["dirty_pages"].items()) or "no logging"
    res = ", ".join(f"{k} {n}" for k, n in s["results"].items()) or "none"
    return ["summary:", f"  stage-2 mappings: {maps}", f"  dirty pages: {dirty}",
            f"  faults: {s['faults']} ({res})", f"  mmu_invalidate_seq: {s['mmu_invalidate_seq']}"]
