"""A scenario run as one self-contained HTML page: summary, results, then the timeline.

Rendered from the run's records with the same sentences as the text timeline
(s2mmu.scenario.render_text), so the page, the text and the JSON cannot disagree; the
s2mmu.run/2 document is embedded in the page as
`<script type="application/json" id="s2mmu-report">` for tools. One table row per event
with its outcome, coloured by outcome; each fault a `<details>` with the abort as the
hardware reported it, every user_mem_abort step and its decision, the mapping made, and
the TLBI/CMO events. A step that changed the VM's stage 2 carries a collapsed `<details
class="stage2">` with the stage 2 it left, as `s2mmu dump` prints it (the first
HTML_STAGE2_DUMPS changing steps, each cut at DUMP_LINES lines, so big runs stay small).

Written with the standard library's xml.etree.ElementTree (method="html"): it escapes
every text and attribute, and the page needs no template engine or other dependency.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from s2mmu.cli.dump_cmd import render_text as dump_lines
from s2mmu.kvm.abort import kvm_is_write_fault, kvm_vcpu_abt_iss1tw, kvm_vcpu_get_fault_ipa
from s2mmu.kvm.dirty import SlotPage
from s2mmu.kvm.errno import errname
from s2mmu.scenario.kvm_events import (
    AccessCompleted,
    DirtyLog,
    GuestFaulted,
    IoctlRefused,
    KvmSummary,
)
from s2mmu.scenario.records import FaultStep, Run, StepRecord
from s2mmu.scenario.render_json import run_json
from s2mmu.scenario.render_text import (
    abort_class,
    decision_text,
    event_text,
    failure_text,
    fault_result_text,
    fsc_name,
    guest_fault_text,
    invariant_text,
    mapping_text,
    mismatch_text,
    size_name,
    step_summary,
    summary_lines,
    verdict_lines,
)
from s2mmu.scenario.stage2 import Stage2Recorder

E = ET.Element

DUMP_LINES = 200
"""A step's stage-2 dump in the page shows at most this many lines."""

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
code, .mono, td.summary { font-family: ui-monospace, 'DejaVu Sans Mono', monospace; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; }
.status { font-weight: bold; padding: 0.4em 0.8em; border-radius: 4px; display: inline-block; }
.status.ok { background: #d8efd2; color: #1b5e20; }
.status.failed { background: #fbd5d5; color: #b71c1c; }
ul.failures li { color: #b71c1c; }
table { border-collapse: collapse; }
table.summary td, table.summary th { padding: 2px 10px; text-align: left; }
table.timeline { width: 100%; }
table.timeline th, table.timeline td { border-bottom: 1px solid #ddd; padding: 4px 6px;
  vertical-align: top; text-align: left; }
tr.event > td:first-child { border-left: 6px solid #ccc; }
tr.failed > td { background: #fff0f0; }
.badge { display: inline-block; padding: 0 6px; border-radius: 3px; background: #eee;
  font-size: 0.9em; white-space: nowrap; }
.o-done { --c: #bbb; --b: #eee; }
.o-completed, .o-resumed { --c: #2e7d32; --b: #d8efd2; }
.o-retry { --c: #8d6e00; --b: #fff3c4; }
.o-mmio, .o-nisv { --c: #1e5aa8; --b: #dce8f7; }
.o-guest-fault { --c: #b56a12; --b: #fbe3c2; }
.o-sea-dabt, .o-sea-pabt, .o-size-fault, .o-serror, .o-hwpoison { --c: #8e24aa; --b: #f1dff5; }
.o-error { --c: #c62828; --b: #fbd5d5; }
.badge[class*=" o-"] { background: var(--b); color: var(--c); }
tr.event[class*=" o-"] > td:first-child { border-left-color: var(--c); }
details.fault { margin: 4px 0; border-left: 3px solid var(--c, #999); padding-left: 8px; }
details.fault > summary { cursor: pointer; }
details dl { display: grid; grid-template-columns: max-content auto; gap: 0 12px; margin: 4px 0; }
details dt { color: #666; }
details dd { margin: 0; font-family: ui-monospace, 'DejaVu Sans Mono', monospace; }
ol.steps, ul.events { margin: 4px 0; padding-left: 1.6em; }
.note { color: #555; font-style: italic; }
.broken { color: #b71c1c; font-weight: bold; }
.tlbi { color: #555; font-family: ui-monospace, 'DejaVu Sans Mono', monospace; }
details.stage2 { margin: 4px 0; border-left: 3px solid #1e5aa8; padding-left: 8px; }
details.stage2 > summary { cursor: pointer; }
pre.dump { font-size: 12px; margin: 4px 0; white-space: pre; overflow-x: auto; }
"""


def add(parent: ET.Element, tag: str, text: str | None = None, cls: str | None = None,
        **attrs: str) -> ET.Element:
    """Append a child element with optional text and class."""
    el = ET.SubElement(parent, tag, {**({"class": cls} if cls else {}), **attrs})
    if text is not None:
        el.text = text
    return el


def step_id(step: StepRecord) -> str:
    """Return the anchor of a step's row: its number, as the failure list names it."""
    return f"step-{step.index}"


def pages_ranges(pages: tuple[int, ...] | list[int]) -> str:
    """Return slot-relative pages as hex ranges: '0x0-0x3ff, 0x406 (1025 pages)'."""
    if not pages:
        return "none"
    runs: list[list[int]] = []
    for g in sorted(pages):
        if runs and g == runs[-1][1] + 1:
            runs[-1][1] = g
        else:
            runs.append([g, g])
    parts = [f"{a:#x}" if a == b else f"{a:#x}-{b:#x}" for a, b in runs]
    return f"{', '.join(parts)} ({len(pages)} page{'s' if len(pages) != 1 else ''})"


def dirtied_text(pages: tuple[SlotPage, ...]) -> str:
    """Return the pages a fault dirtied, grouped by slot."""
    slots = sorted({p.slot for p in pages})
    return "; ".join(f"slot {s} pages {pages_ranges([p.page for p in pages if p.slot == s])}"
                     for s in slots)


def run_html(run: Run, trace: bool = False, stage2: Stage2Recorder | None = None) -> str:
    """Return the run as a self-contained HTML page.

    stage2: a recorder that watched the run for stage-2 changes (changed_only); each step
    it kept gets its dump, each step it dropped past its limit a note.
    """
    html = E("html", {"lang": "en"})
    head = add(html, "head")
    add(head, "meta", charset="utf-8")
    add(head, "title", f"s2mmu run: {run.scenario.name}")
    add(head, "style", CSS)
    body = add(html, "body")
    header(body, run)
    timeline(body, run, trace, stage2)
    data = json.dumps(run_json(run, trace), indent=1).replace("</", "<\\/")
    add(body, "script", data, type="application/json", id="s2mmu-report")
    return "<!DOCTYPE html>\n" + ET.tostring(html, "unicode", method="html") + "\n"


def header(body: ET.Element, run: Run) -> None:
    """Add the title, the verdict, the failures and the summary."""
    scn = run.scenario
    add(body, "h1", f"scenario {scn.name}")
    add(body, "p", f"{scn.path} (s2mmu.run/2)", "mono")
    if scn.description:
        add(body, "p", scn.description, "note")
    failures = run.failures
    verdict = verdict_lines(run)[0]
    if failures:
        add(body, "p", verdict, "status failed", id="status")
        ul = add(body, "ul", cls="failures", id="failures")
        for f in failures:
            li = add(ul, "li", cls="failure")
            add(li, "a", failure_text(f), href=f"#{step_id(f.step)}")
    else:
        add(body, "p", verdict, "status ok", id="status")
    add(body, "h2", "Summary")
    t = add(body, "table", cls="summary", id="summary")
    rows = [line.strip().partition(": ") for line in summary_lines(run)[1:]]
    kvm = run.summaries.get("kvm")
    if isinstance(kvm, KvmSummary):
        slots = ", ".join(f"slot {m.id}: IPA {m.base_gfn << 12:#x}+{size_name(m.npages << 12)} "
                          f"flags {m.flags:#x}" for m in kvm.memslots) or "none"
        rows += [("memslots", "", slots), ("table pages", "", str(kvm.table_pages))]
    for name, _, value in rows:
        tr = add(t, "tr")
        add(tr, "th", name)
        add(tr, "td", value, "mono")


def timeline(body: ET.Element, run: Run, trace: bool,
             stage2: Stage2Recorder | None = None) -> None:
    """Add the timeline: one row per step, numbered as the text and the JSON number it."""
    add(body, "h2", "Timeline")
    t = add(body, "table", cls="timeline", id="timeline")
    tr = add(add(t, "thead"), "tr")
    for h in ("#", "line", "event", "what", "outcome", "details"):
        add(tr, "th", h)
    tb = add(t, "tbody")
    for step in run.steps:
        details = step_row(tb, step, trace)
        if stage2 is not None:
            stage2_details(details, step, stage2)


def stage2_details(parent: ET.Element, step: StepRecord, stage2: Stage2Recorder) -> None:
    """Add the stage 2 a step left, if the step changed it (collapsed), as dump lines."""
    after = stage2.of(step.index)
    if after is None:
        if stage2.was_dropped(step.index):
            add(parent, "div", f"stage 2 changed (not shown: the page keeps the first "
                f"{stage2.limit} changes; s2mmu run FILE --dump-after {step.index})",
                "note stage2-dropped")
        return
    lines = dump_lines(after.dump)
    n = sum(1 for _ in after.dump.ranges())
    d = add(parent, "details", cls="stage2", **{"data-after": str(step.index)})
    add(d, "summary", f"stage 2 after #{step.index}: {n} range{'s' if n != 1 else ''} "
        f"(changed)")
    shown = lines if len(lines) <= DUMP_LINES else lines[:DUMP_LINES]
    add(d, "pre", "\n".join(shown), "dump")
    if len(lines) > DUMP_LINES:
        add(d, "div", f"{len(lines) - DUMP_LINES} more lines: s2mmu run FILE "
            f"--dump-after {step.index}", "note")


def step_row(tb: ET.Element, step: StepRecord, trace: bool) -> ET.Element:
    """Add one step's row: what happened, its outcome, and its faults and events.

    Return the row's details cell.
    """
    out = step.outcome.value
    tr = add(tb, "tr", cls=f"event o-{out}" + ("" if step.ok else " failed"), id=step_id(step),
             **{"data-index": str(step.index), "data-line": str(step.line),
                "data-do": step.event.do, "data-outcome": out})
    add(tr, "td", str(step.index))
    add(tr, "td", str(step.line))
    add(tr, "td", step.event.do, "mono")
    what = add(tr, "td", cls="what")
    add(what, "div", step_summary(step), "mono")
    if step.event.note:
        add(what, "div", step.event.note, "note")
    oc = add(tr, "td")
    add(oc, "span", out, f"badge o-{out}")
    details = add(tr, "td")
    r = step.result
    if isinstance(r, AccessCompleted):
        add(details, "div", f"PA {r.pa:#x}", "mono")
    if isinstance(r, GuestFaulted):
        add(details, "div", f"{guest_fault_text(r)} (the guest's own exception)")
    if isinstance(r, IoctlRefused):
        add(details, "div", f"error: {errname(r.errno)}", "broken")
    if isinstance(r, DirtyLog):
        add(details, "div", f"dirty pages: slot {r.slot} pages {pages_ranges(r.pages)}", "mono")
    for f in step.faults:
        fault_details(details, f)
    if step.events:
        ul = add(details, "ul", cls="events")
        for e in step.events:
            add(ul, "li", event_text(e), "tlbi")
    if trace and step.trace:
        d = add(details, "details", cls="trace")
        add(d, "summary", f"event stream ({len(step.trace)})")
        ul = add(d, "ul", cls="events")
        for e in step.trace:
            add(ul, "li", event_text(e), "tlbi")
    for m in step.mismatches:
        add(details, "div", f"EXPECTATION FAILED: {mismatch_text(m)}", "broken expect-failed")
    for v in step.invariants:
        add(details, "div", f"INVARIANT BROKEN: {invariant_text(v)}", "broken invariant-broken")
    return details


def fault_details(parent: ET.Element, f: FaultStep) -> None:
    """Add one fault as <details>: the abort, user_mem_abort's steps, mapping, events."""
    a = f.abort
    result = f.outcome.value
    s1ptw = kvm_vcpu_abt_iss1tw(a)
    ipa = f"{kvm_vcpu_get_fault_ipa(a):#x}"
    d = add(parent, "details", cls=f"fault o-{result}")
    add(d, "summary", f"{abort_class(a)} {fsc_name(a)} at IPA {ipa}"
        f"{' (S1PTW)' if s1ptw else ''} => {fault_result_text(f)}")
    dl = add(d, "dl", cls="abort")
    for key, value in (("ESR_EL2", f"{a.esr:#x}"), ("FAR_EL2", f"{a.far:#x}"),
                       ("HPFAR_EL2", f"{a.hpfar:#x}"), ("class", abort_class(a)),
                       ("FSC", f"{a.esr & 0x3F:#04x} {fsc_name(a)}"),
                       ("S1PTW", str(int(s1ptw))), ("write", str(int(kvm_is_write_fault(a)))),
                       ("IPA", ipa)):
        add(dl, "dt", key)
        add(dl, "dd", value)
    ol = add(d, "ol", cls="steps")
    for dec in f.handled.decisions:
        li = add(ol, "li")
        add(li, "code", dec.step)
        add(li, "span", f": {decision_text(dec)}")
    m = mapping_text(f)
    if m is not None:
        add(d, "div", f"mapping: {m}", "mono mapping")
    if f.handled.dirtied:
        add(d, "div", f"dirtied: {dirtied_text(f.handled.dirtied)}", "mono")
    if f.events:
        ul = add(d, "ul", cls="events")
        for e in f.events:
            add(ul, "li", event_text(e), "tlbi")
    add(d, "div", f"=> {fault_result_text(f)}", f"badge o-{result}")
