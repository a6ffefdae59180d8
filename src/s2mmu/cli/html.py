"""A scenario run as one self-contained HTML page: summary, results, then the timeline.

Built only from the run report (schema s2mmu.run/1, the dict `s2mmu run --json` prints),
so the page and the JSON cannot disagree; the report itself is embedded in the page as
`<script type="application/json" id="s2mmu-report">` for tools. One table row per event
with its outcome, coloured by outcome; each fault a `<details>` with the abort as the
hardware reported it, every user_mem_abort step and its decision, the mapping made, and
the TLBI/CMO events.

Written with the standard library's xml.etree.ElementTree (method="html"): it escapes
every text and attribute, and the page needs no template engine or other dependency.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

from s2mmu.scenario.report import summary_lines

E = ET.Element

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
"""


def add(parent: ET.Element, tag: str, text: str | None = None, cls: str | None = None,
        **attrs: str) -> ET.Element:
    """Append a child element with optional text and class."""
    el = ET.SubElement(parent, tag, {**({"class": cls} if cls else {}), **attrs})
    if text is not None:
        el.text = text
    return el


def step_id(r: dict[str, Any]) -> str:
    """Return the anchor of a step's row (the same 'do#index (line N)' the failures name)."""
    return f"step-{r['do']}-{r['index']}-line-{r['line']}"


def outcome_of(r: dict[str, Any]) -> str:
    """Return the outcome shown for a step: the access outcome, 'error', or 'done'."""
    if r.get("outcome"):
        return str(r["outcome"])
    return "error" if r.get("error") else "done"


def gfn_ranges(gfns: list[int]) -> str:
    """Return gfns as ranges: '0-1023, 1030 (1025 pages)', or 'none'."""
    if not gfns:
        return "none"
    runs: list[list[int]] = []
    for g in sorted(gfns):
        if runs and g == runs[-1][1] + 1:
            runs[-1][1] = g
        else:
            runs.append([g, g])
    parts = [f"{a}" if a == b else f"{a}-{b}" for a, b in runs]
    return f"{', '.join(parts)} ({len(gfns)} page{'s' if len(gfns) != 1 else ''})"


def report_html(report: dict[str, Any]) -> str:
    """Return the run report as a self-contained HTML page."""
    html = E("html", {"lang": "en"})
    head = add(html, "head")
    add(head, "meta", charset="utf-8")
    add(head, "title", f"s2mmu run: {report['name']}")
    add(head, "style", CSS)
    body = add(html, "body")
    header(body, report)
    timeline(body, report["steps"])
    data = json.dumps(report, indent=1).replace("</", "<\\/")
    add(body, "script", data, type="application/json", id="s2mmu-report")
    return "<!DOCTYPE html>\n" + ET.tostring(html, "unicode", method="html") + "\n"


def header(body: ET.Element, report: dict[str, Any]) -> None:
    """Add the title, the verdict, the failures and the summary."""
    add(body, "h1", f"scenario {report['name']}")
    add(body, "p", f"{report['scenario']} ({report['schema']})", "mono")
    if report["description"]:
        add(body, "p", report["description"], "note")
    failures = report["failures"]
    if failures:
        add(body, "p", f"FAILED: {len(failures)} expectation(s)/invariant(s) broken",
            "status failed", id="status")
        ul = add(body, "ul", cls="failures", id="failures")
        anchors = {f"step {r['do']}#{r['index']} (line {r['line']}): ": step_id(r)
                   for r in report["steps"]}
        for f in failures:
            li = add(ul, "li", cls="failure")
            target = next((a for p, a in anchors.items() if f.startswith(p)), None)
            if target is None:
                li.text = f
            else:
                add(li, "a", f, href=f"#{target}")
    else:
        add(body, "p", "OK: every expectation and invariant holds", "status ok", id="status")
    add(body, "h2", "Summary")
    s = report["summary"]
    t = add(body, "table", cls="summary", id="summary")
    for line in summary_lines(s)[1:]:
        name, _, value = line.strip().partition(": ")
        tr = add(t, "tr")
        add(tr, "th", name)
        add(tr, "td", value, "mono")
    slots = ", ".join(f"slot {m['id']}: IPA {m['gpa']}+{m['size']} flags {m['flags']:#x}"
                      for m in s["memslots"]) or "none"
    for name, value in (("memslots", slots), ("table pages", str(s["table_pages"]))):
        tr = add(t, "tr")
        add(tr, "th", name)
        add(tr, "td", value, "mono")


def timeline(body: ET.Element, steps: list[dict[str, Any]]) -> None:
    """Add the timeline: one row per event."""
    add(body, "h2", "Timeline")
    t = add(body, "table", cls="timeline", id="timeline")
    tr = add(add(t, "thead"), "tr")
    for h in ("#", "line", "event", "what", "outcome", "details"):
        add(tr, "th", h)
    tb = add(t, "tbody")
    for n, r in enumerate(steps, 1):
        step_row(tb, n, r)


def step_row(tb: ET.Element, n: int, r: dict[str, Any]) -> None:
    """Add one event's row: what happened, its outcome, and its faults and events."""
    out = outcome_of(r)
    broken = r["expect"] + r["invariants"]
    tr = add(tb, "tr", cls=f"event o-{out}" + (" failed" if broken else ""), id=step_id(r),
             **{"data-line": str(r["line"]), "data-do": r["do"], "data-outcome": out})
    add(tr, "td", str(n))
    add(tr, "td", str(r["line"]))
    add(tr, "td", r["do"], "mono")
    what = add(tr, "td", cls="what")
    add(what, "div", r["summary"], "mono")
    if r["note"]:
        add(what, "div", r["note"], "note")
    oc = add(tr, "td")
    add(oc, "span", out, f"badge o-{out}")
    details = add(tr, "td")
    if r.get("pa"):
        add(details, "div", f"PA {r['pa']}", "mono")
    if r.get("guest_fault"):
        add(details, "div", f"{r['guest_fault']} (the guest's own exception)")
    if r.get("error"):
        add(details, "div", f"error: {r['error']}", "broken")
    if r.get("dirty") is not None:
        add(details, "div", f"dirty gfns: {gfn_ranges(r['dirty'])}", "mono")
    for f in r["faults"]:
        fault_details(details, f)
    if r["events"]:
        ul = add(details, "ul", cls="events")
        for e in r["events"]:
            add(ul, "li", e, "tlbi")
    if r.get("trace"):
        d = add(details, "details", cls="trace")
        add(d, "summary", f"event stream ({len(r['trace'])})")
        ul = add(d, "ul", cls="events")
        for e in r["trace"]:
            add(ul, "li", e, "tlbi")
    for m in r["expect"]:
        add(details, "div", f"EXPECTATION FAILED: {m}", "broken expect-failed")
    for m in r["invariants"]:
        add(details, "div", f"INVARIANT BROKEN: {m}", "broken invariant-broken")


def fault_details(parent: ET.Element, f: dict[str, Any]) -> None:
    """Add one fault as <details>: the abort, user_mem_abort's steps, mapping, events."""
    a = f["abort"]
    d = add(parent, "details", cls=f"fault o-{f['result']}")
    add(d, "summary", f"{a['class']} {a['fsc_name']} at IPA {a['ipa']}"
        f"{' (S1PTW)' if a['s1ptw'] else ''} => {f['result_text']}")
    dl = add(d, "dl", cls="abort")
    for key, value in (("ESR_EL2", a["esr"]), ("FAR_EL2", a["far"]), ("HPFAR_EL2", a["hpfar"]),
                       ("class", a["class"]), ("FSC", f"{a['fsc']} {a['fsc_name']}"),
                       ("S1PTW", str(int(a["s1ptw"]))), ("write", str(int(a["write"]))),
                       ("IPA", a["ipa"])):
        add(dl, "dt", key)
        add(dl, "dd", value)
    ol = add(d, "ol", cls="steps")
    for s in f["steps"]:
        li = add(ol, "li")
        add(li, "code", s["step"])
        add(li, "span", f": {s['decision']}")
    m = f["mapping"]
    if m is not None:
        add(d, "div", f"mapping: {m['op']} IPA {m['ipa']} {m['size']} -> PA {m['pa']} "
            f"{m['prot']}", "mono mapping")
    if f["dirtied"]:
        add(d, "div", f"dirtied gfns: {gfn_ranges(f['dirtied'])}", "mono")
    if f["events"]:
        ul = add(d, "ul", cls="events")
        for e in f["events"]:
            add(ul, "li", e, "tlbi")
    add(d, "div", f"=> {f['result_text']}", f"badge o-{f['result']}")
