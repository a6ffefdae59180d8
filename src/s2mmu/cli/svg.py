"""Draw a translation walk as SVG: the nested-walk grid of a two-stage translation.

Rows are the stage-1 descriptor reads; before each, on the same row, the stage-2 walk
that translated the IPA of that stage-1 descriptor (one cell per stage-2 level); a last
row holds the stage-2 walk of the output IPA. Cells are numbered in the order the
hardware reads them (the order of the walk trace), coloured by what the descriptor is,
and the read that faulted is red with the fault. A stage-1-only (or stage-2-only) walk
is one row. The leaf's permissions and attributes go in a side note.

Written with the standard library's xml.etree.ElementTree: the picture is rectangles,
lines and text, which ElementTree writes as well-formed, escaped XML, and the tests read
it back with the same module. A drawing library (svgwrite, drawsvg) would be a runtime
dependency that adds nothing here.
"""

from __future__ import annotations

import os
import secrets
import textwrap
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from s2mmu.arch.descriptors import Block, Descriptor, Invalid, Page, Table
from s2mmu.arch.explain import describe_descriptor, describe_fault, s1_details, s2_leaf_details
from s2mmu.arch.faults import FSC_NAMES, FaultRecord, fsc
from s2mmu.arch.params import S1TTWParams, S2TTWParams
from s2mmu.arch.syndrome import TakenAbort
from s2mmu.arch.translate import AddressDescriptor, Env
from s2mmu.arch.walk import WalkStep

SVG_NS = "http://www.w3.org/2000/svg"
FONT = "DejaVu Sans Mono, Menlo, Consolas, monospace"
CHAR_W = 6.7          # width of one 11px monospace character, for wrapping
CELL_W, CELL_H = 212, 118
GAP_X, GAP_Y = 30, 26
LABEL_W = 176
NOTE_W = 430
TOP = 96

# kind -> (fill, stroke)
COLOURS = {
    "table": ("#dce8f7", "#3d6fb0"),
    "block": ("#fbe3c2", "#b56a12"),
    "page": ("#d8efd2", "#2e7d32"),
    "invalid": ("#e6e6e6", "#777777"),
    "fault": ("#fbd5d5", "#c62828"),
}


@dataclass(frozen=True)
class Cell:
    """One descriptor read: its number in hardware order and the trace step."""

    n: int
    step: WalkStep


@dataclass(frozen=True)
class Row:
    """A row of the grid: reads placed by level (stage 2 in a nested walk), then the
    stage-1 read they served (nested walks only)."""

    label: tuple[str, ...]
    cells: tuple[Cell, ...]
    s1: Cell | None


def kind(d: Descriptor) -> str:
    """Return a descriptor's kind: table, block, page or invalid."""
    match d:
        case Table():
            return "table"
        case Block():
            return "block"
        case Page():
            return "page"
    return "invalid"


def walk_rows(steps: list[WalkStep], out_ipa: int | None = None) -> list[Row]:
    """Group the walk trace into grid rows, keeping the read order.

    A two-stage walk (stage-1 and stage-2 reads) gives one row per stage-1 read, led by
    the stage-2 reads that translated its IPA, then a row for the stage-2 walk of the
    output IPA (out_ipa, when known), or of the next stage-1 table's IPA when stage 2
    faulted on it. Any other walk is one row.
    """
    cells = [Cell(i + 1, s) for i, s in enumerate(steps)]
    stages = {s.stage for s in steps}
    if not steps:
        return [Row(("no descriptor read", "(translation off)"), (), None)]
    if stages != {1, 2}:
        return [Row((f"stage {min(stages, default=1)}", "walk"), tuple(cells), None)]
    rows: list[Row] = []
    pending: list[Cell] = []
    for c in cells:
        if c.step.stage == 2:
            pending.append(c)
            continue
        rows.append(Row((f"S1 L{c.step.level} descriptor", f"at IPA {c.step.descaddress:#x}"),
                        tuple(pending), c))
        pending = []
    if pending:
        rows.append(Row(final_label(rows, out_ipa), tuple(pending), None))
    return rows


def final_label(rows: list[Row], out_ipa: int | None) -> tuple[str, ...]:
    """Return the label of the last stage-2 row: the output IPA, or the next table's IPA."""
    leaf = rows[-1].s1.step.decoded if rows and rows[-1].s1 is not None else None
    if isinstance(leaf, Block | Page):
        return ("output IPA", f"{out_ipa:#x}" if out_ipa is not None else f"in {leaf.oa:#x}")
    if isinstance(leaf, Table):
        return ("next S1 table", f"at IPA {leaf.next_base:#x}")
    return ("stage 2", "walk")


def fault_step(steps: list[WalkStep], result: AddressDescriptor | FaultRecord) -> int | None:
    """Return the index of the read the fault belongs to, or None (a fault before any read).

    The fault is the last read's when that read is at the fault's stage and level.
    """
    if not isinstance(result, FaultRecord) or not steps:
        return None
    last = steps[-1]
    stage = 2 if result.secondstage else 1
    if last.stage == stage and last.level == result.level:
        return len(steps) - 1
    return None


def fault_name(f: FaultRecord) -> str:
    """Return the fault's short name: 'S2 Translation fault, level 3'."""
    return f"S{2 if f.secondstage else 1} {FSC_NAMES.get(fsc(f), '?')}"


class Picture:
    """An SVG document being drawn."""

    def __init__(self, width: float, height: float, title: str) -> None:
        ET.register_namespace("", SVG_NS)
        self.root = ET.Element("svg", {
            "xmlns": SVG_NS, "version": "1.1", "width": f"{width:.0f}",
            "height": f"{height:.0f}", "viewBox": f"0 0 {width:.0f} {height:.0f}",
            "font-family": FONT, "font-size": "11"})
        ET.SubElement(self.root, "title").text = title
        ET.SubElement(self.root, "rect", {"width": "100%", "height": "100%", "fill": "white"})
        defs = ET.SubElement(self.root, "defs")
        marker = ET.SubElement(defs, "marker", {
            "id": "arrow", "viewBox": "0 0 10 10", "refX": "9", "refY": "5",
            "markerWidth": "7", "markerHeight": "7", "orient": "auto-start-reverse"})
        ET.SubElement(marker, "path", {"d": "M 0 0 L 10 5 L 0 10 z", "fill": "#555"})

    def text(self, parent: ET.Element, x: float, y: float, s: str, **attrs: str) -> ET.Element:
        """Add one line of text at (x, y) (baseline)."""
        t = ET.SubElement(parent, "text", {"x": f"{x:.1f}", "y": f"{y:.1f}", **attrs})
        t.text = s
        return t

    def lines(self, parent: ET.Element, x: float, y: float, lines: list[str],
              step: float = 14, **attrs: str) -> float:
        """Add lines of text downwards from (x, y); return the y after the last."""
        for line in lines:
            self.text(parent, x, y, line, **attrs)
            y += step
        return y


def wrap(s: str, width_px: float) -> list[str]:
    """Return s wrapped to lines that fit width_px of 11px monospace."""
    return textwrap.wrap(s, max(int(width_px / CHAR_W), 8), break_long_words=True) or [""]


def draw_cell(pic: Picture, x: float, y: float, c: Cell, fault: FaultRecord | None) -> None:
    """Draw one descriptor read: number, stage and level, address, value, kind (and fault)."""
    s = c.step
    k = "fault" if fault is not None else kind(s.decoded)
    fill, stroke = COLOURS[k]
    g = ET.SubElement(pic.root, "g", {
        "class": f"read kind-{kind(s.decoded)}" + (" fault" if fault is not None else ""),
        "id": f"read-{c.n}", "data-n": str(c.n), "data-stage": str(s.stage),
        "data-level": str(s.level), "data-paddress": f"{s.paddress:#x}",
        "data-raw": f"{s.raw:#018x}"})
    ET.SubElement(g, "title").text = (
        f"read {c.n}: S{s.stage} L{s.level} {s.table_base:#x}[{s.index}] PA {s.paddress:#x}: "
        f"{s.raw:#018x} {describe_descriptor(s.decoded, s.stage)}")
    ET.SubElement(g, "rect", {"x": f"{x}", "y": f"{y}", "width": f"{CELL_W}",
                              "height": f"{CELL_H}", "rx": "6", "fill": fill, "stroke": stroke,
                              "stroke-width": "2.5" if fault is not None else "1.2"})
    ET.SubElement(g, "circle", {"cx": f"{x + 14}", "cy": f"{y + 14}", "r": "10",
                                "fill": stroke})
    pic.text(g, x + 14, y + 18, str(c.n), fill="white", **{"text-anchor": "middle",
                                                          "font-weight": "bold",
                                                          "class": "n"})
    pic.text(g, x + 30, y + 18, f"S{s.stage} L{s.level}", **{"font-weight": "bold"})
    pic.text(g, x + CELL_W - 8, y + 18, kind(s.decoded), fill=stroke,
             **{"text-anchor": "end", "class": "kind"})
    space = "IPA " if s.paddress != s.descaddress else ""
    body = [f"{space}{s.table_base:#x}[{s.index}]", f"PA {s.paddress:#x}", f"{s.raw:#018x}"]
    y2 = pic.lines(g, x + 8, y + 36, body)
    meaning = (f"-> {s.decoded.next_base:#x}" if isinstance(s.decoded, Table)
               else f"-> {s.decoded.oa:#x}" if isinstance(s.decoded, Block | Page)
               else f"({s.decoded.why})" if isinstance(s.decoded, Invalid) else "")
    if fault is None:
        pic.lines(g, x + 8, y2, wrap(meaning, CELL_W - 16)[:2], fill="#333")
        return
    bold = {"fill": COLOURS["fault"][1], "font-weight": "bold", "class": "fault-text"}
    pic.lines(g, x + 8, y2, wrap(fault_name(fault), CELL_W - 16)[:2], 14, **bold)


def arrow(pic: Picture, points: list[tuple[float, float]], dashed: bool = False) -> None:
    """Draw a polyline arrow through points."""
    attrs = {"points": " ".join(f"{px:.1f},{py:.1f}" for px, py in points), "fill": "none",
             "stroke": "#555", "stroke-width": "1.2", "marker-end": "url(#arrow)",
             "class": "order"}
    if dashed:
        attrs["stroke-dasharray"] = "4 3"
    ET.SubElement(pic.root, "polyline", attrs)


def final_leaves(steps: list[WalkStep]) -> list[WalkStep]:
    """Return the leaves that made the result: the stage-1 leaf, then the last stage-2 leaf
    read after it (the output IPA's), leaving out the stage-2 leaves of table IPAs."""
    s1_leaf = [i for i, s in enumerate(steps) if s.stage == 1 and isinstance(s.decoded,
                                                                              Block | Page)]
    after = s1_leaf[0] if s1_leaf else -1
    if any(s.stage == 1 for s in steps) and not s1_leaf:
        return []
    s2_leaf = [i for i, s in enumerate(steps) if i > after and s.stage == 2
               and isinstance(s.decoded, Block | Page)]
    return [steps[i] for i in (*s1_leaf, *s2_leaf[-1:])]


def note_lines(steps: list[WalkStep], result: AddressDescriptor | FaultRecord,
               s1p: S1TTWParams | None, s2p: S2TTWParams | None, env: Env | None,
               abort: TakenAbort | None = None) -> list[str]:
    """Return the side note: the result (a fault with the ESR/FAR/HPFAR it is taken
    with), then each leaf's permissions and attributes."""
    if isinstance(result, FaultRecord):
        out = ["FAULT", describe_fault(result)]
        if abort is not None:
            el = f"EL{abort.taken_to}"
            out.append(f"taken to {el}: ESR_{el}={abort.esr:#x} FAR_{el}={abort.far:#x}"
                       + (f" HPFAR_EL2={abort.hpfar:#x}" if abort.hpfar is not None else ""))
        out.append("")
    else:
        out = [f"-> PA {result.paddress:#x}", result.memattrs.describe(), ""]
    tables = [s.decoded for s in steps if s.stage == 1 and isinstance(s.decoded, Table)]
    for s in final_leaves(steps):
        out.append(f"S{s.stage} L{s.level} leaf: {describe_descriptor(s.decoded, s.stage)}")
        if s.stage == 1 and s1p is not None and env is not None:
            out += s1_details(s, list(tables), s1p, env)
        elif s.stage == 2 and env is not None:
            out += s2_leaf_details(s, s2p, env)
        out.append("")
    return out


def output_ipa(va: int, steps: list[WalkStep], s1p: S1TTWParams | None) -> int | None:
    """Return the IPA the stage-1 leaf gives va (None without the stage-1 parameters)."""
    leaf = next((s.decoded for s in reversed(steps) if s.stage == 1), None)
    if s1p is None or not isinstance(leaf, Block | Page):
        return None
    return leaf.oa | (va & (s1p.tgx.block_size(leaf.level) - 1))


def walk_svg(title: str, va: int, steps: list[WalkStep],
             result: AddressDescriptor | FaultRecord, s1p: S1TTWParams | None = None,
             s2p: S2TTWParams | None = None, env: Env | None = None,
             abort: TakenAbort | None = None) -> str:
    """Return the SVG picture of a walk (the trace full_translate recorded) and its result.

    s1p, s2p and env (optional) add the leaves' permissions and attributes to the note;
    abort adds the syndrome a fault is taken with (ESR, FAR, HPFAR_EL2).
    """
    rows = walk_rows(steps, output_ipa(va, steps, s1p))
    nested = any(r.s1 is not None for r in rows)
    col_stage = 2 if nested or {s.stage for s in steps} == {2} else 1
    levels = sorted({c.step.level for r in rows for c in r.cells} or {0})
    levels = list(range(levels[0], 4))
    cols = len(levels) + (1 if nested else 0)
    grid_w = LABEL_W + cols * (CELL_W + GAP_X)
    notes = note_lines(steps, result, s1p, s2p, env, abort)
    wrapped = [w for line in notes for w in (wrap(line, NOTE_W - 24) if line else [""])]
    fault_at = fault_step(steps, result)
    stray_fault = isinstance(result, FaultRecord) and fault_at is None
    grid_h = max(len(rows), 1) * (CELL_H + GAP_Y) + (60 if stray_fault else 0)
    height = TOP + max(grid_h, 30 + 15 * len(wrapped)) + 20
    pic = Picture(grid_w + NOTE_W + 20, height, title)
    pic.text(pic.root, 16, 26, title, **{"font-size": "15", "font-weight": "bold"})
    pic.text(pic.root, 16, 46, f"{len(steps)} descriptor reads, numbered in the order the "
             "hardware makes them" + ("; each row: the stage-2 walk of a stage-1 "
                                      "descriptor's IPA, then that descriptor" if nested else ""),
             fill="#444")
    legend(pic, 16, 60)
    col_x = {lvl: LABEL_W + i * (CELL_W + GAP_X) for i, lvl in enumerate(levels)}
    s1_x = LABEL_W + len(levels) * (CELL_W + GAP_X)
    header_y = TOP - 4
    for lvl, x in col_x.items():
        pic.text(pic.root, x + CELL_W / 2, header_y, f"stage {col_stage}, level {lvl}",
                 fill="#444",
                 **{"text-anchor": "middle"})
    if nested:
        ET.SubElement(pic.root, "rect", {"x": f"{s1_x - 8}", "y": f"{TOP + 4}",
                                         "width": f"{CELL_W + 16}",
                                         "height": f"{len(rows) * (CELL_H + GAP_Y) - 8}",
                                         "fill": "#f3eefa", "rx": "8"})
        pic.text(pic.root, s1_x + CELL_W / 2, header_y, "stage-1 descriptor",
                 fill="#444", **{"text-anchor": "middle"})
    fault = result if isinstance(result, FaultRecord) else None
    centres: dict[int, tuple[float, float]] = {}
    for i, row in enumerate(rows):
        y = TOP + 10 + i * (CELL_H + GAP_Y)
        pic.lines(pic.root, 12, y + 30, list(row.label), 15, fill="#333")
        for c in (*row.cells, *((row.s1,) if row.s1 is not None else ())):
            x = s1_x if c is row.s1 else col_x[c.step.level]
            draw_cell(pic, x, y, c, fault if fault_at == c.n - 1 else None)
            centres[c.n] = (x, y)
    order_arrows(pic, centres)
    if stray_fault and fault is not None:
        y = TOP + 10 + len(rows) * (CELL_H + GAP_Y)
        g = ET.SubElement(pic.root, "g", {"class": "fault stray"})
        ET.SubElement(g, "rect", {"x": f"{LABEL_W}", "y": f"{y}", "width": f"{2 * CELL_W}",
                                  "height": "40", "rx": "6", "fill": COLOURS["fault"][0],
                                  "stroke": COLOURS["fault"][1], "stroke-width": "2.5"})
        pic.text(g, LABEL_W + 8, y + 24, f"{fault_name(fault)} (no descriptor read)",
                 fill=COLOURS["fault"][1], **{"font-weight": "bold", "class": "fault-text"})
    note_x = grid_w + 10
    g = ET.SubElement(pic.root, "g", {"class": "note"})
    ET.SubElement(g, "rect", {"x": f"{note_x}", "y": f"{TOP + 4}", "width": f"{NOTE_W}",
                              "height": f"{24 + 15 * len(wrapped)}", "rx": "6",
                              "fill": "#fffbe6", "stroke": "#c9b458"})
    y = TOP + 24
    for i, line in enumerate(wrapped):
        pic.text(g, note_x + 12, y + 15 * i, line,
                 **({"font-weight": "bold"} if i == 0 else {}))
    ET.indent(pic.root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(pic.root, "unicode") + "\n"


def legend(pic: Picture, x: float, y: float) -> None:
    """Draw the colour key."""
    for name, (fill, stroke) in COLOURS.items():
        ET.SubElement(pic.root, "rect", {"x": f"{x}", "y": f"{y}", "width": "14",
                                         "height": "12", "fill": fill, "stroke": stroke})
        pic.text(pic.root, x + 20, y + 10, name)
        x += 40 + CHAR_W * len(name)


def order_arrows(pic: Picture, at: dict[int, tuple[float, float]]) -> None:
    """Join each read to the next one: straight along a row, bent down to the next row."""
    for n in sorted(at):
        if n + 1 not in at:
            continue
        (x0, y0), (x1, y1) = at[n], at[n + 1]
        if y0 == y1 and x1 > x0:
            arrow(pic, [(x0 + CELL_W, y0 + CELL_H / 2), (x1, y1 + CELL_H / 2)])
        else:
            mid = y0 + CELL_H + GAP_Y / 2
            arrow(pic, [(x0 + CELL_W / 2, y0 + CELL_H), (x0 + CELL_W / 2, mid),
                        (x1 + CELL_W / 2, mid), (x1 + CELL_W / 2, y1)], dashed=True)


def write_atomic(path: str, text: str) -> None:
    """Write text to path all or nothing: a temporary file beside it, then a rename.

    A failure (no such directory, no permission, path is a directory or empty, an
    existing file that is not writable) raises OSError and leaves no file behind; the
    temporary file is created with mode 0666 less the umask, as open() would create
    path itself.
    """
    target = Path(path)
    if not target.name or target.is_dir():
        raise IsADirectoryError(21, "not a file path", path)
    if target.exists() and not os.access(target, os.W_OK):
        raise PermissionError(13, "the file is not writable", path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
