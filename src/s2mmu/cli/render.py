"""Human-readable rendering of architectural results: walks, faults, PAR, registers.

Modelled on the kernel's ptdump and crash's vtop: one line per level, the descriptor,
what it means, and where the walk went next.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from s2mmu.arch import explain
from s2mmu.arch.access_op import AccessException, AccessResult
from s2mmu.arch.at import AtException, ParResult
from s2mmu.arch.bits import bit
from s2mmu.arch.descriptors import Invalid
from s2mmu.arch.explain import (  # noqa: F401  (re-exported: other renderers use them)
    AP_S1,
    S2AP,
    ExplainLine,
    LineKind,
    describe_descriptor,
    describe_fault,
    describe_par,
    leaf_fields_s1,
    leaf_fields_s2,
    rwx,
)
from s2mmu.arch.faults import FaultRecord
from s2mmu.arch.regdecode import RegisterDecode
from s2mmu.arch.translate import AddressDescriptor
from s2mmu.arch.walk import WalkStep


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


def describe_result(r: AddressDescriptor | FaultRecord) -> Text:
    """Return a coloured one-line summary of a translation result."""
    if isinstance(r, FaultRecord):
        return Text("FAULT " + describe_fault(r), style="bold red")
    return Text(f"-> {r.paddress:#x}  {r.memattrs.describe()}", style="bold green")


def describe_at(result: ParResult | AtException | AccessResult) -> Text:
    """Return an AT result, or a real access's, as coloured text (s2mmu.arch.explain
    describe_at, describe_access)."""
    if isinstance(result, ParResult):
        style = "red" if bit(result.par, 0) else "green"
        return Text(explain.describe_at(result), style=style)
    if isinstance(result, AtException):
        return Text(explain.describe_at(result), style="magenta")
    style = "magenta" if isinstance(result, AccessException) else "green"
    return Text(explain.describe_access(result), style=style)


STYLES = {LineKind.INVALID: "red", LineKind.RESULT: "bold green", LineKind.FAULT: "bold red",
          LineKind.SYNDROME: "red", LineKind.NOTE: "yellow"}


def explain_text(lines: tuple[ExplainLine, ...]) -> Text:
    """Return explanation lines (rendered by s2mmu.arch.explain) coloured by kind."""
    out = Text()
    for line in lines:
        style = STYLES.get(line.kind, "")
        if line.nested and line.kind is not LineKind.INVALID:
            style = "dim"
        out.append(line.render() + "\n", style=style)
    return out


def register_table(decoded: RegisterDecode, name: str, features: str) -> RichTable:
    """Return every bit range of a decoded register value (s2mmu.cli.decode_render)."""
    from s2mmu.cli.decode_render import register_text

    return register_text(name, decoded, features)


def console() -> Console:
    """Return the console output goes to (see s2mmu.cli.output: no wrap when piped)."""
    from s2mmu.cli import output

    return output.console()
