"""Human-readable rendering of architectural results: walks, faults, PAR, registers.

Modelled on the kernel's ptdump and crash's vtop: one line per level, the descriptor,
what it means, and where the walk went next.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from s2mmu.arch.at import AtException, ParResult
from s2mmu.arch.bits import bit, bits
from s2mmu.arch.descriptors import (
    Block,
    Descriptor,
    Invalid,
    Page,
    Table,
    af,
    ap,
    ap_table,
    attrindx,
    contiguous,
    dbm,
    ng,
    pxn,
    pxn_table,
    s2_memattr,
    s2_xn,
    sh,
    uxn,
    uxn_table,
)
from s2mmu.arch.faults import FSC_NAMES, FaultRecord, fsc
from s2mmu.arch.registers import PAR_EL1_FAULT, PAR_EL1_OK
from s2mmu.arch.sysreg import RegView
from s2mmu.arch.translate import AddressDescriptor
from s2mmu.arch.walk import WalkStep

AP_S1 = {0b00: "RW/--", 0b01: "RW/RW", 0b10: "RO/--", 0b11: "RO/RO"}
S2AP = {0b00: "none", 0b01: "RO", 0b10: "WO", 0b11: "RW"}


def describe_descriptor(d: Descriptor, stage: int) -> str:
    """Return what a decoded descriptor means, in one line."""
    match d:
        case Invalid(why=why):
            return f"invalid ({why})"
        case Table(next_base=nb, raw=raw):
            if stage == 2:
                return f"table -> {nb:#x}"
            extra = []
            if ap_table(raw):
                extra.append(f"APTable={ap_table(raw):#04b}")
            if uxn_table(raw):
                extra.append("UXNTable")
            if pxn_table(raw):
                extra.append("PXNTable")
            return f"table -> {nb:#x}" + (" " + " ".join(extra) if extra else "")
        case Block(oa=oa, raw=raw) | Page(oa=oa, raw=raw):
            kind = "block" if isinstance(d, Block) else "page"
            fields = leaf_fields_s2(raw) if stage == 2 else leaf_fields_s1(raw)
            return f"{kind} -> {oa:#x} {fields}"
    return "?"


def leaf_fields_s1(raw: int) -> str:
    """Return a stage-1 leaf's attribute fields (AP shown as EL1/EL0)."""
    flags = [f"AttrIndx={attrindx(raw)}", f"AP={AP_S1[ap(raw)]}", f"SH={sh(raw):#04b}",
             f"AF={af(raw)}"]
    for name, v in (("nG", ng(raw)), ("DBM", dbm(raw)), ("Contig", contiguous(raw)),
                    ("PXN", pxn(raw)), ("UXN", uxn(raw))):
        if v:
            flags.append(name)
    return " ".join(flags)


def leaf_fields_s2(raw: int) -> str:
    """Return a stage-2 leaf's attribute fields."""
    flags = [f"MemAttr={s2_memattr(raw):#06b}", f"S2AP={S2AP[ap(raw)]}", f"SH={sh(raw):#04b}",
             f"AF={af(raw)}", f"XN={s2_xn(raw):#04b}"]
    if dbm(raw):
        flags.append("DBM")
    if contiguous(raw):
        flags.append("Contig")
    return " ".join(flags)


def walk_lines(steps: list[WalkStep]) -> Text:
    """Return the walk level by level.

    Each line: stage and level, the entry's address (table base [index], an IPA for a
    guest's stage 1), the physical address read, the descriptor and what it means.
    The stage-2 lookups that find a guest's stage-1 table are folded into one line
    ahead of the stage-1 entry they fetched.
    """
    out = Text()
    two_stage = any(x.stage == 1 for x in steps) and any(x.stage == 2 for x in steps)
    pending: list[WalkStep] = []
    for s in steps:
        if two_stage and s.stage == 2:
            pending.append(s)
            continue
        if pending:
            out.append(fold_s2(pending) + "\n", style="dim")
            pending = []
        style = "red" if isinstance(s.decoded, Invalid) else ""
        pa = f" @PA {s.paddress:#x}" if s.paddress != s.descaddress else ""
        out.append(f"  S{s.stage} L{s.level:<2} {s.table_base:#x}[{s.index}]{pa}: "
                   f"{s.raw:#018x}  {describe_descriptor(s.decoded, s.stage)}\n", style=style)
    if pending:
        out.append(fold_s2(pending, final=True) + "\n",
                   style="red" if isinstance(pending[-1].decoded, Invalid) else "")
    return out


def fold_s2(steps: list[WalkStep], final: bool = False) -> str:
    """Return one line summarising a stage-2 walk (of a stage-1 table, or the final IPA)."""
    last = steps[-1]
    levels = " ".join(f"L{s.level}" for s in steps)
    what = "output" if final else "table"
    return (f"      S2 {levels} for the {what} IPA: {last.raw:#018x}  "
            f"{describe_descriptor(last.decoded, 2)}")


def describe_fault(f: FaultRecord) -> str:
    """Return one line describing a fault record."""
    stage = "stage 2" if f.secondstage else "stage 1"
    where = " on the stage-1 table walk" if f.s2fs1walk else ""
    ipa = f" IPA={f.ipaddress:#x}" if f.ipaddress is not None else ""
    return (f"{stage}{where}: {FSC_NAMES.get(fsc(f), '?')} (FSC {fsc(f):#04x}){ipa}"
            + (f": {f.reason}" if f.reason else ""))


def describe_result(r: AddressDescriptor | FaultRecord) -> Text:
    """Return a coloured one-line summary of a translation result."""
    if isinstance(r, FaultRecord):
        return Text("FAULT " + describe_fault(r), style="bold red")
    return Text(f"-> {r.paddress:#x}  {r.memattrs.describe()}", style="bold green")


def describe_par(par: int) -> str:
    """Return PAR_EL1 decoded field by field."""
    spec = PAR_EL1_FAULT if bit(par, 0) else PAR_EL1_OK
    parts = []
    for name, _hi, _lo, v, meaning in RegView(spec, par).describe():
        if name.startswith("IMPDEF") or (v == 0 and name not in ("F", "PA")):
            continue
        if name == "PA":
            parts.append(f"PA={v << 12:#x}")
        elif name == "FST":
            parts.append(f"FST={v:#04x} ({FSC_NAMES.get(v, '?')})")
        else:
            parts.append(f"{name}={v:#x}" + (f" ({meaning})" if meaning else ""))
    return " ".join(parts)


def describe_at(result: ParResult | AtException) -> Text:
    """Return an AT result as coloured text."""
    if isinstance(result, ParResult):
        style = "red" if bit(result.par, 0) else "green"
        return Text(f"PAR_EL1={result.par:#018x}  {describe_par(result.par)}", style=style)
    ec = bits(result.esr, 31, 26)
    text = f"exception to EL{result.taken_to}: ESR={result.esr:#x} (EC={ec:#x})"
    if result.far is not None:
        text += f" FAR={result.far:#x}"
    if result.hpfar is not None:
        text += f" HPFAR_EL2={result.hpfar:#x}"
    if result.reason:
        text += f": {result.reason}"
    return Text(text, style="magenta")


def register_table(view: RegView) -> RichTable:
    """Return every field of a register view."""
    t = RichTable(title=f"{view.spec.name} = {view.value:#018x}")
    for col in ("field", "bits", "value", "meaning"):
        t.add_column(col)
    for name, hi, lo, v, meaning in view.describe():
        rng = f"[{hi}]" if hi == lo else f"[{hi}:{lo}]"
        t.add_row(name, rng, f"{v:#x}", meaning)
    if view.res0_violations():
        t.caption = f"RES0 bits set: {view.res0_violations():#x}"
    return t


def console() -> Console:
    """Return the console output goes to."""
    return Console(highlight=False)
