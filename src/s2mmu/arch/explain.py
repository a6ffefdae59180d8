"""One translation, recorded whole, and explained level by level.

:func:`trace_translation` runs a translation (ASL AArch64.FullTranslate through
s2mmu.arch.translate) and keeps everything it read and wrote in a
:class:`TranslationRun`: the walk parameters, every descriptor read in hardware order,
the result, the PAR_EL1 an AT instruction would report, the abort a fault is taken as
(ESR/FAR/HPFAR), and the descriptor words the hardware wrote. :func:`explain_lines`
renders it as typed lines (:class:`ExplainLine`: a kind, an indent and the text), in the
style of the kernel's ptdump and crash's vtop; :func:`explain_text` joins them. The
command line prints these lines (colouring them by kind); a notebook calls
``run.explain()`` on the result of ``s2mmu.translate``.

The text is built whole before anything is printed, and never raises for a register
state the walk accepts: parameters the walk would refuse (TxSZ out of range, SL0 that
does not fit T0SZ) are named, with the fault the walk reports, and no table address is
computed from them.

>>> from s2mmu.arch.access import acc_gpr
>>> from s2mmu.arch.features import qemu_7_2_max
>>> from s2mmu.arch.memory import PhysMem
>>> from s2mmu.arch.state import Regime, SysRegs
>>> from s2mmu.arch.translate import Env
>>> regs = SysRegs(HCR_EL2=0x80000001, VTCR_EL2=0xA0)   # SL0=2 with T0SZ=32: no walk
>>> run = trace_translation(regs, Regime.EL10, 0x1000, acc_gpr(1, False),
...                         Env(PhysMem(), qemu_7_2_max()), given={"HCR_EL2", "VTCR_EL2"})
>>> print(explain_text(run))  # doctest: +ELLIPSIS
VA 0x1000 EL1 read in the EL1&0 regime
  SCTLR_EL1 not given: 0x30d00800 (M=0), stage 1 off
  VTTBR_EL2 not given: 0x0
  stage 1 off: the VA is the output address (SCTLR_EL1.M=0)
  stage 2: VTTBR_EL2, 4KB granule, T0SZ=32, SL0=0b10: SL0 does not fit T0SZ (an IPA of ...
FAULT stage 2: Translation fault, level 0 (FSC 0x04) IPA=0x1000: VTCR_EL2.SL0: an IPA ...
  taken to EL2: ESR_EL2=0x92000004 FAR_EL2=0x1000 HPFAR_EL2=0x10
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import Enum

from s2mmu.arch.access import AccessDescriptor
from s2mmu.arch.access_op import AccessResult, Atomic, Fetched, Loaded, Stored
from s2mmu.arch.at import AtException, AtOp, AtResult, ParResult, encode_par
from s2mmu.arch.attrs import MemoryAttributes
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
from s2mmu.arch.memory import MemoryWrite
from s2mmu.arch.params import (
    S1TTWParams,
    S2TTWParams,
    clamp_txsz,
    get_s1_ttw_params,
    get_s2_ttw_params,
    s2_inconsistent_sl,
    s2_invalid_sl,
    stage2_enabled,
    txsz_faults,
)
from s2mmu.arch.perms import (
    S1Perms,
    perm_field,
    s1_permissions,
    s2_permissions,
    s2_pi_index,
    s2_po_index,
)
from s2mmu.arch.registers import PAR_EL1_FAULT, PAR_EL1_OK
from s2mmu.arch.reprs import hex_repr
from s2mmu.arch.state import Regime, SysRegs
from s2mmu.arch.syndrome import TakenAbort, taken_abort
from s2mmu.arch.sysreg import RegView
from s2mmu.arch.translate import (
    AddressDescriptor,
    Env,
    combine_attrs,
    full_translate,
    s1_attrs,
    s1_disabled_output,
    s1_output_attrs,
    s1_setup,
    s2_only_attrs,
    s2_setup,
    s2_txsz_fault,
)
from s2mmu.arch.walk import TTWState, WalkStep

AP_S1 = {0b00: "RW/--", 0b01: "RW/RW", 0b10: "RO/--", 0b11: "RO/RO"}
S2AP = {0b00: "none", 0b01: "RO", 0b10: "WO", 0b11: "RW"}


# ---------------------------------------------------------------- the record

@hex_repr()
@dataclass(frozen=True)
class TranslationRun:
    """One translation and everything it read and wrote.

    given: the registers the caller set (the others took SysRegs' defaults, MMUs off).
    steps: every descriptor read, in hardware order (stage-2 reads of a stage-1 table's
    IPA come before the stage-1 read they serve). par: PAR_EL1 as an AT instruction
    would report this result. abort: for a fault, the exception it is taken as.
    writes: the descriptor words the hardware changed (AF, dirty state).
    """

    va: int
    access: AccessDescriptor
    regime: Regime
    regs: SysRegs
    given: frozenset[str]
    stage1_only: bool
    s1p: S1TTWParams
    s2p: S2TTWParams | None
    steps: tuple[WalkStep, ...]
    result: AddressDescriptor | FaultRecord
    par: int
    abort: TakenAbort | None
    writes: tuple[MemoryWrite, ...]
    env: Env


def trace_translation(regs: SysRegs, regime: Regime, va: int, access: AccessDescriptor,
                      env: Env, stage1_only: bool = False,
                      given: set[str] | frozenset[str] | None = None) -> TranslationRun:
    """Translate va and record the run: parameters, reads, result, syndrome, writes.

    given: the registers the caller set (None: all of them, as for a SysRegs built by
    hand). ASL: AArch64.FullTranslate (s2mmu.arch.translate.full_translate).
    """
    first_write = len(env.mem.hw_writes)
    trace: list[WalkStep] = []
    result = full_translate(regs, regime, va, access, env, stage1_only=stage1_only, trace=trace)
    return record_run(regs, regime, va, access, env, trace, result, stage1_only, given,
                      env.mem.hw_writes[first_write:])


def record_run(regs: SysRegs, regime: Regime, va: int, access: AccessDescriptor, env: Env,
               steps: Sequence[WalkStep], result: AddressDescriptor | FaultRecord,
               stage1_only: bool = False, given: set[str] | frozenset[str] | None = None,
               writes: Sequence[MemoryWrite] = ()) -> TranslationRun:
    """Return the record of a translation already made (its trace and result).

    The walk parameters, PAR_EL1 and the abort are derived here, from the registers.
    """
    s1p = get_s1_ttw_params(regs, regime, va, env.fs, env.choices)
    walks_s2 = stage2_enabled(regs, regime) and (s1p.mmu_on or not stage1_only)
    s2p = get_s2_ttw_params(regs, env.fs, env.choices) if walks_s2 else None
    abort = (taken_abort(result, va, access.el, regs.tge())
             if isinstance(result, FaultRecord) else None)
    names = frozenset(SysRegs.names()) if given is None else frozenset(given)
    return TranslationRun(va, access, regime, regs, names, stage1_only, s1p, s2p,
                          tuple(steps), result, encode_par(result, env), abort,
                          tuple(writes), env)


# ---------------------------------------------------------------- typed lines

class LineKind(Enum):
    """What an explanation line says (the command line colours by kind)."""

    INPUT = "input"            # the address, the access, the regime
    NOTE = "note"              # a register that was not given, a control that changed attributes
    PARAMS = "params"          # a stage's walk parameters
    NESTED = "nested"          # heads the stage-2 walk of a stage-1 table's (or the output) IPA
    DESCRIPTOR = "descriptor"  # one descriptor read
    INVALID = "invalid"        # one descriptor read that is invalid
    DETAIL = "detail"          # what a descriptor adds: table controls, permissions, attributes
    RESULT = "result"          # the output address and attributes
    FAULT = "fault"            # the fault
    SYNDROME = "syndrome"      # ESR/FAR/HPFAR of the abort
    WRITE = "write"            # a descriptor word the hardware wrote


@dataclass(frozen=True)
class ExplainLine:
    """One line of an explanation: its kind, indent, text, and whether it belongs to the
    stage-2 walk of a stage-1 table (drawn dimmed)."""

    kind: LineKind
    text: str
    indent: int = 0
    nested: bool = False

    def render(self) -> str:
        """Return the line as text, indented."""
        return " " * self.indent + self.text


def access_name(a: AccessDescriptor) -> str:
    """Return an access as 'EL1 read (PAN)'."""
    kind = "fetch" if a.is_ifetch() else ("write" if a.write else "read")
    return f"EL{a.el} {kind}" + (" (PAN)" if a.pan else "")


def headline(run: TranslationRun) -> str:
    """Return the first line: the address, the access and the regime."""
    return f"VA {run.va:#x} {access_name(run.access)} in the {run.regime.value} regime"


def explain_lines(run: TranslationRun, walk: bool = True,
                  result: bool = True) -> tuple[ExplainLine, ...]:
    """Return the explanation of run: what was given, the walk (if walk), the result.

    Without walk: the head line, the notes, the result, the abort and the writes.
    Without result: no result or abort lines (an AT instruction reports its own).
    """
    out = [ExplainLine(LineKind.INPUT, headline(run))]
    out += [ExplainLine(LineKind.NOTE, n, 2) for n in register_notes(run)]
    if walk:
        out += params_lines(run)
        out += walk_lines(run)
    out += [ExplainLine(LineKind.NOTE, n, 2) for n in attribute_notes(run)]
    if result:
        out += result_lines(run)
    out += [ExplainLine(LineKind.WRITE, f"hardware wrote PA {w.pa:#x}: {w.before:#x} -> "
                        f"{w.after:#x}", 2) for w in run.writes]
    return tuple(out)


def explain_text(run: TranslationRun, walk: bool = True) -> str:
    """Return the explanation of run as text, one line per ExplainLine."""
    return "\n".join(line.render() for line in explain_lines(run, walk))


# ---------------------------------------------------------------- notes

def _sctlr(run: TranslationRun) -> str:
    return "SCTLR_EL1" if run.regime is Regime.EL10 else "SCTLR_EL2"


def _used_registers(run: TranslationRun) -> list[str]:
    """Return the registers the walk read besides SCTLR and HCR, in walk order."""
    el = "EL1" if run.regime is Regime.EL10 else "EL2"
    names = []
    p = run.s1p
    if p.mmu_on:
        names += [f"TCR_{el}", f"MAIR_{el}", f"TTBR{p.varange.value}_{el}"]
        names += [n for n, on in ((f"PIR_{el}", p.pie),
                                  (f"PIRE0_{el}", p.pie and p.regime.has_el0()),
                                  (f"POR_{el}", p.poe), ("POR_EL0", p.e0poe)) if on]
    if run.s2p is not None:
        names += ["VTCR_EL2", "VTTBR_EL2"]
        names += [n for n, on in (("S2PIR_EL2", run.s2p.s2pie), ("S2POR_EL1", run.s2p.s2poe))
                  if on]
    return names


def register_notes(run: TranslationRun) -> list[str]:
    """Return a note for each register the translation depends on that was not given.

    Registers not given take SysRegs' defaults (shared/formats/at-case.md: MMUs off).
    """
    out = []
    regs = run.regs
    sctlr = _sctlr(run)
    if sctlr not in run.given:
        value = getattr(regs, sctlr)
        state = "on" if bit(value, 0) else "off"
        out.append(f"{sctlr} not given: {value:#x} (M={bit(value, 0)}), stage 1 {state}")
    if run.regime is Regime.EL10 and "HCR_EL2" not in run.given:
        out.append(f"HCR_EL2 not given: {regs.HCR_EL2:#x} (VM={bit(regs.HCR_EL2, 0)}), "
                   f"stage 2 {'on' if run.s2p is not None else 'off'}")
    for name in _used_registers(run):
        if name not in run.given:
            out.append(f"{name} not given: {getattr(regs, name):#x}")
    return out


def _s1_output(run: TranslationRun, controls: bool) -> MemoryAttributes | None:
    """Return the stage-1 output attributes of a successful run, with or without the
    SCTLR_ELx.C/I controls (ASL AArch64.S1Translate's attribute step)."""
    r = run.result
    if not isinstance(r, AddressDescriptor):
        return None
    if not run.s1p.mmu_on:
        got = s1_disabled_output(run.s1p, run.va, run.access, run.env)
        return got.memattrs if isinstance(got, AddressDescriptor) else None
    if r.s1 is None:
        return None
    under_s2 = run.s2p is not None and not run.env.choices.s1_effective_shareability
    return s1_output_attrs(s1_attrs(r.s1, run.s1p, run.env), run.s1p, run.access, under_s2,
                           controls=controls)


def attribute_notes(run: TranslationRun) -> list[str]:
    """Return a note for each control that changed the result's attributes.

    SCTLR_ELx.C=0 (data to Normal memory) and SCTLR_ELx.I=0 (fetches) make stage 1's
    attributes Normal Non-cacheable; with stage 1 off, HCR_EL2.DC=1 makes data Normal
    Write-Back instead of Device-nGnRnE; HCR_EL2.CD=1 and HCR_EL2.ID=1 do the same as
    C and I at stage 2. ASL: AArch64.S1Translate, AArch64.S1DisabledOutput,
    AArch64.S2Translate (attribute steps).
    """
    r = run.result
    if not isinstance(r, AddressDescriptor):
        return []
    out = []
    sctlr, fetch = _sctlr(run), run.access.is_ifetch()
    before, after = _s1_output(run, False), _s1_output(run, True)
    if not run.s1p.mmu_on:
        if run.s1p.dc:
            out.append("HCR_EL2.DC=1: with stage 1 off, accesses are Normal Write-Back "
                       "Non-shareable (not Device-nGnRnE)")
        elif fetch:
            cache = "Write-Through" if run.s1p.sctlr_i else "Non-cacheable"
            out.append(f"{sctlr}.I={int(run.s1p.sctlr_i)}: with stage 1 off, fetches are "
                       f"Normal {cache}")
    elif before is not None and after is not None and before != after:
        why = (f"{sctlr}.I=0" if fetch and not run.s1p.sctlr_i else
               "a fetch from Device memory" if fetch else f"{sctlr}.C=0")
        out.append(f"{why} changed the stage-1 attributes: {before.describe()} -> "
                   f"{after.describe()}")
    if run.s2p is not None and r.s2 is not None and after is not None and not run.stage1_only:
        s2_before = combine_attrs(after, r.s2, run.s2p, run.access, run.env, controls=False)
        s2_after = combine_attrs(after, r.s2, run.s2p, run.access, run.env, controls=True)
        if s2_before != s2_after:
            why = ("HCR_EL2.ID=1" if fetch and run.s2p.id else
                   "a fetch from stage-2 Device memory" if fetch else "HCR_EL2.CD=1")
            out.append(f"{why} changed the stage-2 attributes: {s2_before.describe()} -> "
                       f"{s2_after.describe()}")
    return out


# ---------------------------------------------------------------- parameters

def params_lines(run: TranslationRun) -> list[ExplainLine]:
    """Return the walk parameters each stage was read into (GetS1TTWParams/GetS2TTWParams).

    A TxSZ out of range, or an SL0 that does not fit T0SZ, is named (the walk faults at
    level 0 before reading a descriptor) and no table address is derived from it.
    """
    out = [ExplainLine(LineKind.PARAMS, s1_params_text(run.s1p, run.env, _sctlr(run)), 2)]
    if run.s2p is not None:
        out.append(ExplainLine(LineKind.PARAMS, s2_params_text(run.s2p, run.env), 2))
    return out


def s1_walk_params(p: S1TTWParams, env: Env) -> S1TTWParams | str:
    """Return the stage-1 parameters the walk uses (TxSZ clamped), or why it cannot walk.

    ASL: AArch64.S1TxSZFaults (a TxSZ out of range faults at level 0, or is clamped as
    ImplChoices says).
    """
    lo, hi = p.txsz_range(env.fs)
    if txsz_faults(p.txsz, lo, hi, env.fs.has("FEAT_LVA"), env.choices):
        return f"T{p.varange.value}SZ={p.txsz} is outside {lo}..{hi}"
    return replace(p, txsz=clamp_txsz(p.txsz, lo, hi))


def s2_walk_params(p: S2TTWParams, env: Env) -> S2TTWParams | str:
    """Return the stage-2 parameters the walk uses (T0SZ clamped), or why it cannot walk.

    ASL: AArch64.S2TxSZFaults, AArch64.S2InvalidSL, AArch64.S2InconsistentSL (each faults
    at level 0 before any descriptor is read).
    """
    why = s2_txsz_fault(p, env)
    if why:
        return why
    lo, hi = p.txsz_range(env.fs)
    q = replace(p, txsz=clamp_txsz(p.txsz, lo, hi))
    bad = s2_invalid_sl(q.tgx, q.sl0, q.sl2, q.ds, env.fs)
    if bad:
        return f"VTCR_EL2.SL0={p.sl0:#04b}: {bad}"
    bad = s2_inconsistent_sl(q.tgx, q.startlevel(), q.txsz)
    if bad:
        return f"SL0 does not fit T0SZ ({bad})"
    return q


def s1_params_text(p: S1TTWParams, env: Env, sctlr: str) -> str:
    """Return the stage-1 walk parameters in one line."""
    if not p.mmu_on:
        why = f"{sctlr}.M=0" if not p.dc else "HCR_EL2.DC=1"
        return f"stage 1 off: the VA is the output address ({why})"
    el = "EL1" if p.regime is Regime.EL10 else "EL2"
    sz = f"T{p.varange.value}SZ"
    head = f"stage 1: TTBR{p.varange.value}_{el}, {p.tgx.value}KB granule, "
    q = s1_walk_params(p, env)
    if isinstance(q, str):
        return head + f"{q}: no walk"
    clamped = f", used as {q.txsz}" if q.txsz != p.txsz else ""
    return (head + f"{q.iasize()}-bit input ({sz}={p.txsz}{clamped}), start level "
            f"{q.startlevel()}, table at {s1_setup(q, env).base_address():#x}, {p.ps}-bit "
            f"output, HA={int(p.ha)} HD={int(p.hd)} HPD={int(p.hpd)} WXN={int(p.wxn)} "
            f"TBI={int(p.tbi)}{' DS=1' if p.ds else ''}{' EE=1' if p.ee else ''}"
            f"{' PIE=1' if p.pie else ''}{' POE=1' if p.poe else ''}"
            f"{' E0POE=1' if p.e0poe else ''}{' HAFT=1' if p.haft else ''}")


def s2_params_text(p: S2TTWParams, env: Env) -> str:
    """Return the stage-2 walk parameters in one line."""
    head = f"stage 2: VTTBR_EL2, {p.tgx.value}KB granule, "
    sl = f"SL0={p.sl0:#04b}{f' SL2={p.sl2}' if p.ds else ''}"
    q = s2_walk_params(p, env)
    if isinstance(q, str):
        return head + f"T0SZ={p.txsz}, {sl}: {q}: no walk"
    clamped = f", used as {q.txsz}" if q.txsz != p.txsz else ""
    return (head + f"{q.iasize()}-bit IPA (T0SZ={p.txsz}{clamped}), start level "
            f"{q.startlevel()} ({sl}), table at {s2_setup(q, env).base_address():#x}, "
            f"{p.ps}-bit output, HA={int(p.ha)} HD={int(p.hd)} FWB={int(p.fwb)}"
            f"{' DS=1' if p.ds else ''}{' S2PIE=1' if p.s2pie else ''}"
            f"{' S2POE=1' if p.s2poe else ''}{' HAFT=1' if p.haft else ''}")


# ---------------------------------------------------------------- the walk

def walk_lines(run: TranslationRun) -> list[ExplainLine]:
    """Return the walk level by level with what accumulates along it.

    Each descriptor: stage and level, table address [index], the PA read when it
    differs, the descriptor and its meaning. After a stage-1 table descriptor, the
    hierarchical controls ORed so far (ASL AArch64.S1ApplyTablePerms; ignored with HPD);
    after a leaf, the permissions and attributes it gives (ASL
    AArch64.S1DirectBasePermissions, S1DecodeMemAttrs; AArch64.S2DirectBasePermissions,
    S2DecodeMemAttrs). Stage-2 lookups of a stage-1 table come indented before it.
    """
    out: list[ExplainLine] = []
    two_stage = run.s1p.mmu_on and run.s2p is not None
    tables: list[Table] = []
    pending: list[WalkStep] = []
    for s in run.steps:
        if two_stage and s.stage == 2:
            pending.append(s)
            continue
        if pending:
            out.append(ExplainLine(LineKind.NESTED, "stage 2 of the stage-1 table IPA "
                                   f"{s.descaddress:#x}:", 4, nested=True))
            out += s2_walk_lines(pending, run, indent=2, nested=True)
            pending = []
        out.append(step_line(s))
        if s.stage == 1:
            out += [ExplainLine(LineKind.DETAIL, d, 11)
                    for d in s1_details(s, tables, run.s1p, run.env)]
        else:
            out += [ExplainLine(LineKind.DETAIL, d, 11)
                    for d in s2_leaf_details(s, run.s2p, run.env)]
    if pending:
        s1_steps = [x for x in run.steps if x.stage == 1]
        leaf = s1_steps[-1].decoded if s1_steps else None
        what = ("the output IPA" if isinstance(leaf, Block | Page)
                else "the next stage-1 table IPA")
        out.append(ExplainLine(LineKind.NESTED, f"stage 2 of {what}:", 4))
        out += s2_walk_lines(pending, run, indent=2, nested=False)
    return out


def step_line(s: WalkStep, indent: int = 0, nested: bool = False) -> ExplainLine:
    """Return one descriptor read: level, table address [index], descriptor, meaning."""
    pa = f" @PA {s.paddress:#x}" if s.paddress != s.descaddress else ""
    kind = LineKind.INVALID if isinstance(s.decoded, Invalid) else LineKind.DESCRIPTOR
    return ExplainLine(kind, f"S{s.stage} L{s.level:<2} {s.table_base:#x}[{s.index}]{pa}: "
                       f"{s.raw:#018x}  {describe_descriptor(s.decoded, s.stage)}",
                       2 + indent, nested)


def s2_walk_lines(steps: list[WalkStep], run: TranslationRun, indent: int,
                  nested: bool) -> list[ExplainLine]:
    """Return a stage-2 walk's lines, with the leaf's permissions and attributes."""
    out = []
    for s in steps:
        out.append(step_line(s, indent, nested))
        out += [ExplainLine(LineKind.DETAIL, d, 11 + indent, nested)
                for d in s2_leaf_details(s, run.s2p, run.env)]
    return out


def s1_details(s: WalkStep, tables: list[Table], p: S1TTWParams, env: Env) -> list[str]:
    """Return what a stage-1 descriptor adds to the walk: table controls, or the leaf's result.

    tables collects the table descriptors seen so far (the walk's hierarchical controls).
    """
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
            return [f"hierarchical controls so far: {acc}{note}"]
        case Block() | Page():
            leaf = s.decoded
            state = TTWState(1, leaf, tuple(tables), s.paddress, ())
            perms = s1_permissions(state, p)
            idx = attrindx(s.raw)
            mair = bits(p.mair, 8 * idx + 7, 8 * idx)
            attrs = s1_attrs(state, p, env)
            pr, pw, px, ur, uw, ux = perms.effective()
            el0 = f", EL0 {rwx(ur, uw, ux)}" if p.regime.has_el0() else ""
            wxn = " (WXN=1: no execute where writable)" if p.wxn and not p.pie else ""
            return [f"permissions: privileged {rwx(pr, pw, px)}{el0}{wxn}",
                    *s1_extension_lines(perms, p),
                    f"attributes: MAIR Attr{idx}={mair:#04x} = {attrs.describe()} "
                    "(before SCTLR_ELx.C/I and any stage 2)"]
    return []


def s1_extension_lines(perms: S1Perms, p: S1TTWParams) -> list[str]:
    """Return how FEAT_S1PIE/S1POE made a stage-1 leaf's permissions (none when off)."""
    out = []
    if p.pie and perms.pi is not None:
        el0 = (f", PIRE0 Perm{perms.pi}={perm_field(p.pire0, perms.pi):#06b}"
               if p.regime.has_el0() else "")
        wxn = " (WXN)" if perms.pwxn or perms.uwxn else ""
        out.append(f"PIE: PIIndex={perms.pi:#06b}: PIR Perm{perms.pi}="
                   f"{perm_field(p.pir, perms.pi):#06b}{el0}{wxn}; base privileged "
                   f"{rwx(perms.pr, perms.pw, perms.px)}"
                   + (f", EL0 {rwx(perms.ur, perms.uw, perms.ux)}" if el0 else ""))
    if perms.poi is not None:
        parts = [f"{who} {rwx(bool(v & 1), bool(v & 4), bool(v & 2))}"
                 for who, on, v in (("privileged", perms.pov, perms.po),
                                    ("EL0", perms.uov, perms.uo)) if on]
        out.append(f"overlay: POIndex={perms.poi}: " + ", ".join(parts))
    return out


def s2_leaf_details(s: WalkStep, p: S2TTWParams | None, env: Env) -> list[str]:
    """Return a stage-2 leaf's permissions and attributes (before the stage-1 combination)."""
    if p is None or not isinstance(s.decoded, Block | Page):
        return []
    state = TTWState(2, s.decoded, (), s.paddress, ())
    perms = s2_permissions(state, p, env.fs.has("FEAT_XNX"))
    attrs = s2_only_attrs(state, p, env)
    ext = []
    if p.s2pie:
        pi = s2_pi_index(s.raw)
        ext.append(f"S2PIE: PIIndex={pi:#06b}: S2PIR_EL2 Perm{pi}={perm_field(p.s2pir, pi):#06b}"
                   + (" (MRO)" if perms.mro else ""))
    if p.s2poe:
        poi = s2_po_index(s.raw)
        ext.append(f"S2POE: POIndex={poi}: S2POR_EL1 Perm{poi}={perm_field(p.s2por, poi):#06b}")
    r, w, px, ux = perms.effective()
    return [f"stage-2 permissions: {rwx(r, w, False)[:2]}, execute at "
            f"EL1 {'yes' if px else 'no'}, EL0 {'yes' if ux else 'no'}", *ext,
            f"attributes: MemAttr={s2_memattr(s.raw):#06b} = {attrs.describe()}"
            f"{' (FWB=1: combined with stage 1)' if p.fwb else ''}"]


# ---------------------------------------------------------------- the result

def result_lines(run: TranslationRun) -> list[ExplainLine]:
    """Return the result: the output address and attributes, or the fault and its abort."""
    r = run.result
    if isinstance(r, AddressDescriptor):
        return [ExplainLine(LineKind.RESULT, f"-> {r.paddress:#x}  {r.memattrs.describe()}")]
    out = [ExplainLine(LineKind.FAULT, "FAULT " + describe_fault(r))]
    a = run.abort
    if a is not None:
        el = f"EL{a.taken_to}"
        hp = f" HPFAR_EL2={a.hpfar:#x}" if a.hpfar is not None else ""
        out.append(ExplainLine(LineKind.SYNDROME, f"taken to {el}: ESR_{el}={a.esr:#x} "
                               f"FAR_{el}={a.far:#x}{hp}", 2))
    return out


# ---------------------------------------------------------------- descriptors and faults

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


def descriptor_kind(d: Descriptor) -> str:
    """Return a descriptor's kind: table, block, page or invalid."""
    match d:
        case Table():
            return "table"
        case Block():
            return "block"
        case Page():
            return "page"
    return "invalid"


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


def rwx(r: bool, w: bool, x: bool) -> str:
    """Return permissions as 'RW-'."""
    return ("R" if r else "-") + ("W" if w else "-") + ("X" if x else "-")


def describe_fault(f: FaultRecord) -> str:
    """Return one line describing a fault record."""
    stage = "stage 2" if f.secondstage else "stage 1"
    where = " on the stage-1 table walk" if f.s2fs1walk else ""
    ipa = f" IPA={f.ipaddress:#x}" if f.ipaddress is not None else ""
    return (f"{stage}{where}: {FSC_NAMES.get(fsc(f), '?')} (FSC {fsc(f):#04x}){ipa}"
            + (f": {f.reason}" if f.reason else ""))


# ---------------------------------------------------------------- AT instructions

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


def describe_at(result: AtResult) -> str:
    """Return what an AT instruction did: PAR_EL1 field by field, or the exception."""
    if isinstance(result, ParResult):
        return f"PAR_EL1={result.par:#018x}  {describe_par(result.par)}"
    return exception_text(result.taken_to, result.esr, result.far, result.hpfar,
                          result.reason)


def describe_access(result: AccessResult) -> str:
    """Return what a real access did: the value loaded, stored or read by an atomic, the
    instruction fetched, or the exception taken (with the fault's reason)."""
    match result:
        case Loaded():
            return f"loaded {result.value:#018x} from PA {result.result.paddress:#x}"
        case Stored():
            status = "" if result.status is None else f" (status {result.status})"
            return f"stored {result.value:#018x} at PA {result.result.paddress:#x}{status}"
        case Atomic():
            return f"atomic read {result.value:#018x} at PA {result.result.paddress:#x}"
        case Fetched():
            return f"fetched {result.insn:#010x} from PA {result.result.paddress:#x}"
    return exception_text(result.taken_to, result.esr, result.far, result.hpfar,
                          "" if result.fault is None else describe_fault(result.fault))


def exception_text(taken_to: int, esr: int, far: int | None, hpfar: int | None,
                   why: str) -> str:
    """Return an exception an instruction took: EL, ESR with its EC, FAR, HPFAR, why."""
    text = f"exception to EL{taken_to}: ESR={esr:#x} (EC={bits(esr, 31, 26):#x})"
    if far is not None:
        text += f" FAR={far:#x}"
    if hpfar is not None:
        text += f" HPFAR_EL2={hpfar:#x}"
    return f"{text}: {why}" if why else text


def at_headline(op: AtOp, va: int, el: int, pan: bool) -> str:
    """Return 'AT S1E1R 0x400000 at EL1 PAN=0'."""
    return f"AT {op.name} {va:#x} at EL{el} PAN={int(pan)}"


def explain_at_lines(op: AtOp, va: int, el: int, pan: bool, run: TranslationRun | None,
                     result: AtResult, walk: bool = True) -> tuple[ExplainLine, ...]:
    """Return an AT instruction explained: its translation (run; None when UNDEFINED),
    then PAR_EL1 or the exception it took."""
    out = [ExplainLine(LineKind.INPUT, at_headline(op, va, el, pan))]
    if run is not None:
        out += [replace(x, indent=x.indent + 2) for x in explain_lines(run, walk, result=False)]
    faulted = isinstance(result, AtException) or bit(result.par, 0)
    out.append(ExplainLine(LineKind.FAULT if faulted else LineKind.RESULT, describe_at(result)))
    return tuple(out)
