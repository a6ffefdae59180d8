"""`s2mmu dump`: a whole stage 1 or stage 2 as merged ranges, as the kernel's ptdump prints.

The records come from s2mmu.arch.dump (a KvmPgtable goes through
s2mmu.pgtable.dump.kvm_pgtable_stage2_dump); this module only renders them: text lines
in the style of arch/arm64/mm/ptdump.c and KVM's debugfs stage2_page_tables, and one
JSON document (schema s2mmu.dump/1).

Kernel: arch/arm64/mm/ptdump.c (note_page: "0x%016lx-0x%016lx", the size in the largest
unit that divides it, the level, then one token per attribute; "---[ name ]---" markers),
arch/arm64/kvm/ptdump.c (stage2_pte_bits: R, W, px/PXN ux/UXN, AF, BLK).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from s2mmu.arch.atcase import AtCase, load_memory, parse_cases
from s2mmu.arch.attrs import Cacheability, CacheHints, MemoryAttributes, MemType
from s2mmu.arch.bits import bit
from s2mmu.arch.dump import (
    AddrRange,
    DumpFault,
    DumpRange,
    DumpRegion,
    LeafKind,
    PermFilter,
    S1LeafAttrs,
    S2LeafAttrs,
    TableDump,
    dump_s1,
    dump_s2,
    el_permissions,
    parse_addr_range,
    parse_perm_filter,
)
from s2mmu.arch.errors import InputError
from s2mmu.arch.features import PRESETS
from s2mmu.arch.params import get_s1_ttw_params, get_s2_ttw_params, stage2_enabled
from s2mmu.arch.state import Regime, SysRegs, regime_for
from s2mmu.arch.translate import Env
from s2mmu.cli.output import console, print_json
from s2mmu.pgtable.dump import kvm_pte_sw_annotation

SCHEMA = "s2mmu.dump/1"

# sw (bits [58:55] as a 4-bit value) -> a note for the line, e.g. KVM's or pKVM's meaning.
SwNote = Callable[[int], str]

UNITS = "KMGTPE"


def size_text(size: int) -> str:
    """Return a size as ptdump prints it: the largest unit (K, M, G...) that divides it."""
    delta, unit = size >> 10, 0
    while delta and not delta & 1023 and unit + 1 < len(UNITS):
        delta, unit = delta >> 10, unit + 1
    if size < 1024:
        return f"{size}B"
    return f"{delta}{UNITS[unit]}"


def el_names(dump: TableDump) -> tuple[str, str | None]:
    """Return the names of the two permission sets: privileged EL and EL0 (or None)."""
    if dump.stage == 2:
        return "EL1", "EL0"
    if dump.regime is Regime.EL2:
        return "EL2", None
    return ("EL2" if dump.regime is Regime.EL20 else "EL1"), "EL0"


def rwx(r: bool, w: bool, x: bool) -> str:
    """Return 'RWX' with '-' for each permission missing."""
    return ("R" if r else "-") + ("W" if w else "-") + ("X" if x else "-")


def hint_text(h: CacheHints) -> str:
    """Return one cache level's attributes: NC, WT-RA, WB-RAWA, WB-RAWA-T..."""
    if h.attrs is Cacheability.NC:
        return "NC"
    alloc = ("RA" if h.ra else "") + ("WA" if h.wa else "")
    return h.attrs.name + ("-" + alloc if alloc else "") + ("-T" if h.transient else "")


def memattr_text(m: MemoryAttributes | None) -> str:
    """Return memory attributes without the shareability (a column of its own)."""
    if m is None:
        return "stage-1 attributes"
    if m.memtype is MemType.DEVICE:
        return f"Device-{m.device.name}"
    return f"Normal{'-Tagged' if m.tagged else ''} i{hint_text(m.inner)} o{hint_text(m.outer)}"


def perm_tokens(dump: TableDump, r: DumpRange) -> str:
    """Return the permission columns: KVM's R W px/PXN ux/UXN at stage 2, RWX per EL at stage 1."""
    a = r.attrs
    if isinstance(a, S2LeafAttrs):
        p = a.perms
        return (f"{'R' if p.r else ' '} {'W' if p.w else ' '} "
                f"{'px ' if p.px else 'PXN'} {'ux ' if p.ux else 'UXN'}")
    priv, el0 = el_names(dump)
    (pr, pw, px), (ur, uw, ux) = el_permissions(a)
    text = f"{priv}:{rwx(pr, pw, px)}"
    return text + (f" {el0}:{rwx(ur, uw, ux)}" if el0 else "")


def attr_tokens(r: DumpRange, sw_note: SwNote | None) -> str:
    """Return AF, DBM, CON, nG, the kind, shareability, memory attributes, software bits."""
    a = r.attrs
    flags = [("AF" if a.af else "  "), ("DBM" if a.dbm else "   "),
             ("CON" if a.contiguous else "   ")]
    if isinstance(a, S1LeafAttrs):
        flags.append("nG" if a.ng else "  ")
    flags.append("BLK" if a.kind is LeafKind.BLOCK else "PG ")
    flags.append(a.sh.name)
    if isinstance(a, S1LeafAttrs):
        flags.append(f"Attr{a.attrindx}={memattr_text(a.attrs)}")
    else:
        fwb = "FWB " if a.fwb else ""
        flags.append(f"{fwb}MemAttr={a.memattr:#x}={memattr_text(a.attrs)}")
    note = sw_note(a.sw) if sw_note is not None else ""
    if a.sw or note:
        flags.append(f"SW={a.sw:#06b}" + (f" {note}" if note else ""))
    return " ".join(flags)


def range_line(dump: TableDump, r: DumpRange, sw_note: SwNote | None) -> str:
    """Return one ptdump-style line for a merged range."""
    return (f"0x{r.start:016x}-0x{r.end:016x} {size_text(r.size()):>9} L{r.attrs.level} "
            f"-> 0x{r.oa:016x}  {perm_tokens(dump, r)}  {attr_tokens(r, sw_note)}")


def fault_line(f: DumpFault) -> str:
    """Return the line of an entry a walk would fault on (ptdump's F)."""
    return (f"0x{f.start:016x}-0x{f.end:016x} {size_text(f.end - f.start):>9} L{f.level} "
            f"F  descriptor {f.raw:#018x}: {f.reason}")


def region_header(region: DumpRegion) -> str:
    """Return the marker line that opens a region."""
    space = "IPA" if region.stage == 2 else "VA"
    head = (f"{region.name}: {space} 0x{region.start:x}-0x{region.end:x}, "
            f"{region.granule.value}K granule, start level {region.startlevel}, "
            f"table at {region.table:#x}")
    if region.disabled:
        head += f", not walked: {region.disabled}"
    return f"---[ {head} ]---"


def render_text(dump: TableDump, sw_note: SwNote | None = None) -> list[str]:
    """Return the dump as ptdump-style lines: markers, ranges and faults in address order."""
    lines = []
    for region in dump.regions:
        lines.append(region_header(region))
        items: list[tuple[int, str]] = [(r.start, range_line(dump, r, sw_note))
                                        for r in region.ranges]
        items += [(f.start, fault_line(f)) for f in region.faults]
        lines += [text for _, text in sorted(items, key=lambda item: item[0])]
        lines.append(f"---[ {region.name} end ]---")
    return lines


def hx(v: int) -> str:
    """Return v as a JSON hex string."""
    return f"{v:#x}"


def attrs_json(m: MemoryAttributes | None) -> dict[str, Any] | None:
    """Return decoded memory attributes as JSON (None: stage 1's pass through, FWB)."""
    if m is None:
        return None
    normal = m.memtype is MemType.NORMAL
    return {"memtype": m.memtype.value, "device": None if normal else m.device.name,
            "inner": hint_text(m.inner) if normal else None,
            "outer": hint_text(m.outer) if normal else None,
            "tagged": m.tagged, "text": memattr_text(m)}


def range_json(dump: TableDump, r: DumpRange, sw_note: SwNote | None) -> dict[str, Any]:
    """Return one merged range as JSON."""
    a = r.attrs
    priv, el0 = el_names(dump)
    perms = {}
    for name, (pr, pw, px) in zip((priv, el0), el_permissions(a), strict=True):
        if name is not None:
            perms[name] = {"r": pr, "w": pw, "x": px}
    doc: dict[str, Any] = {
        "start": hx(r.start), "end": hx(r.end), "size": hx(r.size()), "oa": hx(r.oa),
        "entries": r.entries, "level": a.level, "kind": a.kind.value, "perms": perms,
        "af": a.af, "dbm": a.dbm, "contiguous": a.contiguous, "sh": a.sh.name,
        "attrs": attrs_json(a.attrs), "sw": a.sw,
        "sw_note": sw_note(a.sw) if sw_note is not None else "",
    }
    if isinstance(a, S1LeafAttrs):
        doc.update(ng=a.ng, attrindx=a.attrindx)
    else:
        doc.update(memattr=hx(a.memattr), fwb=a.fwb)
    return doc


def dump_json(dump: TableDump, rng: AddrRange | None = None, perm: str | None = None,
              sw_note: SwNote | None = None, source: dict[str, Any] | None = None
              ) -> dict[str, Any]:
    """Return the dump as one s2mmu.dump/1 document."""
    return {
        "schema": SCHEMA,
        "stage": dump.stage,
        "regime": dump.regime.value if dump.regime is not None else None,
        "source": source or {},
        "filter": {"range": None if rng is None else {"start": hx(rng.start), "end": hx(rng.end)},
                   "perm": perm},
        "regions": [{
            "name": reg.name, "start": hx(reg.start), "end": hx(reg.end),
            "granule": f"{reg.granule.value}K", "startlevel": reg.startlevel,
            "table": hx(reg.table), "disabled": reg.disabled,
            "ranges": [range_json(dump, r, sw_note) for r in reg.ranges],
            "faults": [{"start": hx(f.start), "end": hx(f.end), "level": f.level,
                        "descriptor": hx(f.raw), "reason": f.reason} for f in reg.faults],
        } for reg in dump.regions],
    }


def pick_case(cases: list[AtCase], name: str | None, file: str) -> AtCase:
    """Return the case called name, or the first one."""
    if not cases:
        raise InputError(f"{file}: the case file holds no case")
    if name is None:
        return cases[0]
    for case in cases:
        if case.name == name:
            return case
    raise InputError(f"--case-name {name!r}: no such case in {file} "
                     f"(cases: {', '.join(c.name for c in cases)})")


def default_el(regs: SysRegs) -> int:
    """Return the EL whose stage-1 regime a dump shows: EL1's unless only EL2's MMU is on."""
    return 2 if bit(regs.SCTLR_EL2, 0) and not bit(regs.SCTLR_EL1, 0) else 1


def dump_case(case: AtCase, env: Env, stage: int | None, el: int | None,
              rng: AddrRange | None, keep: PermFilter | None) -> TableDump:
    """Return the dump of a case's stage 2, or of the stage-1 regime of el."""
    regs = case.regs
    if stage is None:
        stage = 2 if stage2_enabled(regs, Regime.EL10) else 1
    if stage == 2:
        if not stage2_enabled(regs, Regime.EL10):
            raise InputError(f"case {case.name!r}: stage 2 is off (HCR_EL2.VM=0 and DC=0); "
                             f"there is no stage 2 to dump")
        return dump_s2(get_s2_ttw_params(regs, env.fs, env.choices), env, rng, keep)
    regime = regime_for(el if el is not None else default_el(regs), regs)
    vas = [0, (1 << 64) - 1] if regime.has_two_ranges() else [0]
    params = [get_s1_ttw_params(regs, regime, va, env.fs, env.choices) for va in vas]
    s2 = (get_s2_ttw_params(regs, env.fs, env.choices)
          if stage2_enabled(regs, regime) else None)
    return dump_s1(params, env, s2, rng, keep)


@click.command()
@click.option("--case", "case_file", type=click.Path(dir_okay=False),
              help="An AT case file (shared/formats/at-case.md): registers and memory.")
@click.option("--case-name", help="The case to dump (default: the first).")
@click.option("--scenario", "scenario_file", type=click.Path(dir_okay=False),
              help="Instead of --case: run a scenario file and dump its VM's stage 2.")
@click.option("--after", metavar="N",
              help="With --scenario: the stage 2 after step #N as `s2mmu run` numbers it "
                   "('last' for the final state).")
@click.option("--stage", type=click.IntRange(1, 2),
              help="1 or 2 (default: 2 when HCR_EL2.VM=1, else 1).")
@click.option("--el", type=click.IntRange(1, 2),
              help="Stage 1: the regime of this EL (default: EL1&0 unless only SCTLR_EL2.M=1).")
@click.option("--range", "range_text", metavar="START-END",
              help="Only addresses in [START, END) (ranges are clipped at the edges).")
@click.option("--perm", "perm_text", metavar="RWX",
              help="Only ranges where one EL has all these permissions: r, w, x "
                   "(e.g. wx for W+X).")
@click.option("--pkvm", is_flag=True,
              help="Name software bits [56:55] as pKVM page states (else KVM's SW0..SW3).")
@click.option("--features", type=click.Choice(sorted(PRESETS)), default="qemu-max",
              show_default=True, help="Implemented features.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document (schema s2mmu.dump/1).")
def dump(case_file: str | None, case_name: str | None, scenario_file: str | None,
         after: str | None, stage: int | None, el: int | None, range_text: str | None,
         perm_text: str | None, pkvm: bool, features: str, as_json: bool) -> None:
    """Print a whole stage 1 or stage 2 as merged ranges, in the style of the kernel's ptdump."""
    from s2mmu.cli.main import input_errors, load_json

    if scenario_file is not None or after is not None:
        input_errors(_dump_scenario)(case_file, scenario_file, after, stage, el, range_text,
                                     perm_text, pkvm, as_json)
        return
    input_errors(_dump)(case_file, case_name, stage, el, range_text, perm_text, pkvm,
                        features, as_json, load_json)


def _dump_scenario(case_file: str | None, scenario_file: str | None, after: str | None,
                   stage: int | None, el: int | None, range_text: str | None,
                   perm_text: str | None, pkvm: bool, as_json: bool) -> None:
    """Dump the VM's stage 2 after one step of a scenario (the path of run --dump-after)."""
    from s2mmu.cli.run_cmd import scenario_stage2

    if case_file is not None or scenario_file is None:
        raise InputError("--after N goes with --scenario FILE, not --case"
                         if scenario_file is None else
                         "give one of --case FILE and --scenario FILE, not both")
    if after is None:
        raise InputError("--scenario FILE needs --after N (a step number as `s2mmu run` "
                         "prints it, or 'last')")
    if stage == 1 or el is not None:
        raise InputError("--scenario dumps the VM's stage 2: --stage 1 and --el do not apply")
    run, req, found = scenario_stage2(scenario_file, after, range_text, perm_text)

    def sw_note(sw: int) -> str:
        return kvm_pte_sw_annotation(sw, pkvm)

    source = {"scenario": scenario_file, "after": found.step.index}
    print_dump(found.dump, req.rng, perm_text, sw_note, source, as_json)


def _dump(case_file: str | None, case_name: str | None, stage: int | None, el: int | None,
          range_text: str | None, perm_text: str | None, pkvm: bool, features: str,
          as_json: bool, load_json: Callable[[str], Any]) -> None:
    if case_file is None:
        raise InputError("s2mmu dump needs --case FILE (an AT case file) or --scenario FILE")
    rng = parse_addr_range(range_text) if range_text is not None else None
    keep = parse_perm_filter(perm_text) if perm_text is not None else None
    case = pick_case(parse_cases(load_json(case_file)), case_name, case_file)
    env = Env(load_memory(case), PRESETS[features]())
    result = dump_case(case, env, stage, el, rng, keep)

    def sw_note(sw: int) -> str:
        return kvm_pte_sw_annotation(sw, pkvm)

    print_dump(result, rng, perm_text, sw_note, {"case_file": case_file, "case": case.name},
               as_json)


def print_dump(result: TableDump, rng: AddrRange | None, perm_text: str | None,
               sw_note: SwNote, source: dict[str, Any], as_json: bool) -> None:
    """Print a dump as one s2mmu.dump/1 document, or as ptdump-style lines."""
    if as_json:
        print_json(dump_json(result, rng, perm_text, sw_note, source))
        return
    out = console()
    wx = {r.start for r in result.ranges() if PermFilter(w=True, x=True)(r.attrs)}
    for line in render_text(result, sw_note):
        # colour (on a terminal only): W+X at one EL in red, like ptdump_check_wx's warning
        style = "bold red" if line.startswith("0x") and int(line[:18], 16) in wx else None
        out.print(line, markup=False, highlight=False, style=style)
