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
from s2mmu.arch.params import S1TTWParams, S2TTWParams
from s2mmu.arch.perms import s1_direct_permissions, s2_direct_permissions
from s2mmu.arch.regdecode import RegisterDecode
from s2mmu.arch.registers import PAR_EL1_FAULT, PAR_EL1_OK
from s2mmu.arch.state import Regime
from s2mmu.arch.sysreg import RegView
from s2mmu.arch.translate import (
    AddressDescriptor,
    Env,
    s1_attrs,
    s1_setup,
    s2_only_attrs,
    s2_setup,
)
from s2mmu.arch.walk import TTWState, WalkStep

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


def rwx(r: bool, w: bool, x: bool) -> str:
    """Return permissions as 'RW-'."""
    return ("R" if r else "-") + ("W" if w else "-") + ("X" if x else "-")


def params_lines(s1p: S1TTWParams, s2p: S2TTWParams | None, env: Env) -> Text:
    """Return the walk parameters each stage was read into (GetS1TTWParams/GetS2TTWParams)."""
    out = Text()
    if not s1p.mmu_on:
        out.append("  stage 1 off: the VA is the output address (SCTLR_ELx.M=0, or "
                   "HCR_EL2.DC/TGE for EL1&0)\n")
    else:
        el = "EL1" if s1p.regime is Regime.EL10 else "EL2"
        sz = f"T{s1p.varange.value}SZ"
        out.append(
            f"  stage 1: TTBR{s1p.varange.value}_{el}, {s1p.tgx.value}KB granule, "
            f"{s1p.iasize()}-bit input ({sz}={s1p.txsz}), start level {s1p.startlevel()}, "
            f"table at {s1_setup(s1p, env).base_address():#x}, {s1p.ps}-bit output, "
            f"HA={int(s1p.ha)} HD={int(s1p.hd)} HPD={int(s1p.hpd)} WXN={int(s1p.wxn)} "
            f"TBI={int(s1p.tbi)}{' DS=1' if s1p.ds else ''}{' EE=1' if s1p.ee else ''}\n")
    if s2p is not None:
        out.append(
            f"  stage 2: VTTBR_EL2, {s2p.tgx.value}KB granule, {s2p.iasize()}-bit IPA "
            f"(T0SZ={s2p.txsz}), start level {s2p.startlevel()} (SL0={s2p.sl0:#04b}"
            f"{f' SL2={s2p.sl2}' if s2p.ds else ''}), table at "
            f"{s2_setup(s2p, env).base_address():#x}, {s2p.ps}-bit output, "
            f"HA={int(s2p.ha)} HD={int(s2p.hd)} FWB={int(s2p.fwb)}{' DS=1' if s2p.ds else ''}\n")
    return out


def explain_walk(steps: list[WalkStep], s1p: S1TTWParams, s2p: S2TTWParams | None,
                 env: Env) -> Text:
    """Return the walk level by level with what accumulates along it (translate --explain).

    Each descriptor: stage and level, table address [index], the PA read when it
    differs, the descriptor and its meaning. After a stage-1 table descriptor, the
    hierarchical controls ORed so far (ASL AArch64.S1ApplyTablePerms; ignored with HPD);
    after a leaf, the permissions and attributes it gives (ASL
    AArch64.S1DirectBasePermissions, S1DecodeMemAttrs; AArch64.S2DirectBasePermissions,
    S2DecodeMemAttrs). Stage-2 lookups of a stage-1 table come indented before it.
    """
    out = params_lines(s1p, s2p, env)
    s1_steps = [x for x in steps if x.stage == 1]
    two_stage = s1p.mmu_on and s2p is not None
    tables: list[Table] = []
    pending: list[WalkStep] = []
    for s in steps:
        if two_stage and s.stage == 2:
            pending.append(s)
            continue
        if pending:
            out.append(f"    stage 2 of the stage-1 table IPA {s.descaddress:#x}:\n", style="dim")
            out.append(s2_lines(pending, s2p, env, indent="    ", style="dim"))
            pending = []
        out.append(step_line(s), style="red" if isinstance(s.decoded, Invalid) else "")
        if s.stage == 1:
            out.append(s1_accumulated(s, tables, s1p, env))
        elif not isinstance(s.decoded, Invalid | Table):
            out.append(s2_leaf_lines(s, s2p, env, ""))
    if pending:
        leaf = s1_steps[-1].decoded if s1_steps else None
        what = ("the output IPA" if isinstance(leaf, Block | Page)
                else "the next stage-1 table IPA")
        out.append(f"    stage 2 of {what}:\n")
        out.append(s2_lines(pending, s2p, env, indent="    "))
    return out


def step_line(s: WalkStep, indent: str = "") -> str:
    """Return one descriptor read: level, table address [index], descriptor, meaning."""
    pa = f" @PA {s.paddress:#x}" if s.paddress != s.descaddress else ""
    return (f"  {indent}S{s.stage} L{s.level:<2} {s.table_base:#x}[{s.index}]{pa}: "
            f"{s.raw:#018x}  {describe_descriptor(s.decoded, s.stage)}\n")


def s2_lines(steps: list[WalkStep], s2p: S2TTWParams | None, env: Env, indent: str,
             style: str = "") -> Text:
    """Return a stage-2 walk's lines, with the leaf's permissions and attributes."""
    out = Text()
    for s in steps:
        out.append(step_line(s, indent), style="red" if isinstance(s.decoded, Invalid) else style)
        if isinstance(s.decoded, Block | Page):
            out.append(s2_leaf_lines(s, s2p, env, indent), style=style)
    return out


def s1_accumulated(s: WalkStep, tables: list[Table], p: S1TTWParams, env: Env) -> str:
    """Return what a stage-1 descriptor adds to the walk: table controls, or the leaf's result.

    tables collects the table descriptors seen so far (the walk's hierarchical controls).
    """
    pad = " " * 9
    match s.decoded:
        case Table():
            tables.append(s.decoded)
            apt = uxt = pxt = 0
            for t in tables:  # ORed as ASL AArch64.S1ApplyTablePerms does
                apt |= ap_table(t.raw)
                uxt |= uxn_table(t.raw)
                pxt |= pxn_table(t.raw)
            if p.regime.has_two_ranges():
                acc = f"APTable={apt:#04b} UXNTable={uxt} PXNTable={pxt}"
            else:
                acc = f"APTable={apt:#04b} XNTable={uxt}"
            note = " (ignored: HPD=1)" if p.hpd else ""
            return f"{pad}hierarchical controls so far: {acc}{note}\n"
        case Block() | Page():
            leaf = s.decoded
            assert isinstance(leaf, Block | Page)
            state = TTWState(1, leaf, tuple(tables), s.paddress, ())
            perms = s1_direct_permissions(state, p)
            mair = bits(p.mair, 8 * attrindx(s.raw) + 7, 8 * attrindx(s.raw))
            attrs = s1_attrs(state, p, env)
            el0 = f", EL0 {rwx(perms.ur, perms.uw, perms.ux)}" if p.regime.has_el0() else ""
            return (f"{pad}permissions: privileged {rwx(perms.pr, perms.pw, perms.px)}{el0}"
                    f"{' (WXN=1: no execute where writable)' if p.wxn else ''}\n"
                    f"{pad}attributes: MAIR Attr{attrindx(s.raw)}={mair:#04x} = "
                    f"{attrs.describe()} (before SCTLR_ELx.C/I and any stage 2)\n")
    return ""


def s2_leaf_lines(s: WalkStep, p: S2TTWParams | None, env: Env, indent: str) -> str:
    """Return a stage-2 leaf's permissions and attributes (before the stage-1 combination)."""
    if p is None or not isinstance(s.decoded, Block | Page):
        return ""
    state = TTWState(2, s.decoded, (), s.paddress, ())
    perms = s2_direct_permissions(state, env.fs.has("FEAT_XNX"), p.ha, p.hd)
    attrs = s2_only_attrs(state, p, env)
    pad = " " * 9 + indent
    return (f"{pad}stage-2 permissions: {rwx(perms.r, perms.w, False)[:2]}, execute at "
            f"EL1 {'yes' if perms.px else 'no'}, EL0 {'yes' if perms.ux else 'no'}\n"
            f"{pad}attributes: MemAttr={s2_memattr(s.raw):#06b} = {attrs.describe()}"
            f"{' (FWB=1: combined with stage 1)' if p.fwb else ''}\n")


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


def register_table(decoded: RegisterDecode, name: str, features: str) -> RichTable:
    """Return every bit range of a decoded register value (s2mmu.cli.decode_render)."""
    from s2mmu.cli.decode_render import register_text

    return register_text(name, decoded, features)


def console() -> Console:
    """Return the console output goes to (see s2mmu.cli.output: no wrap when piped)."""
    from s2mmu.cli import output

    return output.console()
