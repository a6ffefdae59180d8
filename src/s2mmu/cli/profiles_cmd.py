"""`s2mmu profiles`: the kernel releases the model can follow, and every knob's value.

One renderer pair (text table, s2mmu.profiles/1 JSON) over the profile records of
s2mmu.nested.profile (which holds the page-table library's knobs, the fault path's
walker flags and the AT emulation's knob, by release).
"""

from __future__ import annotations

from typing import Any

import click

from s2mmu.cli.output import console, print_json
from s2mmu.nested.profile import (
    AT_KNOBS,
    CURRENT,
    KERNEL_PROFILES,
    KernelProfile,
    all_knobs,
    value_of,
)
from s2mmu.pgtable.callers import access_fault_walk_flags, fault_walk_flags, walk_flag_names
from s2mmu.pgtable.profile import COVERS_FROM, EagainRule, Knob, NestedExecRule

SCHEMA = "s2mmu.profiles/1"


def stands_for(name: str) -> str:
    """Return the releases a profile stands for, like "v6.3..v6.11"."""
    names = list(COVERS_FROM)
    first = COVERS_FROM[name]
    later = [COVERS_FROM[n] for n in names[names.index(name) + 1:]]
    start = "..." if first == (0, 0) else f"v{first[0]}.{first[1]}"
    if not later:
        return f"{start}.."
    nxt = later[0]
    last = f"v{nxt[0]}.{nxt[1] - 1}"
    if start == "...":
        return f"..{last}"
    return start if start == last else f"{start}..{last}"


NESTED_EXEC_TEXT = {NestedExecRule.DESC_BIT54: "bit54", NestedExecRule.XNX_XN_DROPPED: "xn-dropped",
                    NestedExecRule.XNX: "xnx"}
"""The table's short names of the nested exec rules."""


def value_json(v: object) -> object:
    """Return a knob value as JSON holds it (an enum rule by its member name)."""
    return v.name if isinstance(v, EagainRule | NestedExecRule) else v


def value_text(v: object) -> str:
    """Return a knob value as the table shows it."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, EagainRule):
        return {"ANY_ERROR_STOPS": "any-error"}.get(v.name, v.name)
    if isinstance(v, NestedExecRule):
        return NESTED_EXEC_TEXT[v]
    return str(v)


def layer_of(knob: Knob) -> str:
    """Return the layer that holds a knob."""
    return "nested" if knob in AT_KNOBS else "pgtable"


def change_text(knob: Knob) -> str:
    """Return a knob's history: release, commit (or "not pinned" and what was observed),
    title."""
    return "; ".join(f"{c.release} {c.commit or 'commit not pinned'}"
                     + (f" \"{c.title}\"" if c.title else "")
                     + (f" (observed: {c.observed})" if c.observed else "")
                     for c in knob.changes)


def table_lines() -> list[str]:
    """Return the releases x knobs table, the fault-path flags and each knob's history."""
    profiles = list(KERNEL_PROFILES.values())
    rows: list[tuple[str, list[str]]] = [("stands for", [stands_for(p.name) for p in profiles])]
    rows += [(k.name, [value_text(value_of(p, k)) for p in profiles]) for k in all_knobs()]
    rows += [("fault: map, relax_perms", [walk_flag_names(fault_walk_flags(p.pgtable))
                                          for p in profiles]),
             ("access fault: mkyoung", [walk_flag_names(access_fault_walk_flags(p.pgtable))
                                        for p in profiles])]
    head = ["knob", *(p.name + ("*" if p is CURRENT else "") for p in profiles)]
    width = [max(len(head[0]), *(len(r[0]) for r in rows))]
    width += [max(len(head[i + 1]), *(len(r[1][i]) for r in rows)) for i in range(len(profiles))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, width, strict=True)).rstrip()

    out = [line(head)] + [line([name, *vals]) for name, vals in rows]
    out += ["", "* the default (the current code); select with [kvm] profile = \"NAME\" or "
            "--profile NAME", "", "knob history:"]
    out += [f"  {k.name}: {change_text(k)}" for k in all_knobs()]
    return out


def profile_json(p: KernelProfile) -> dict[str, Any]:
    """Return one release's entry of the s2mmu.profiles/1 document."""
    return {"name": p.name, "stands_for": stands_for(p.name), "default": p is CURRENT,
            "knobs": {k.name: value_json(value_of(p, k)) for k in all_knobs()},
            "fault_walk_flags": walk_flag_names(fault_walk_flags(p.pgtable)),
            "access_fault_walk_flags": walk_flag_names(access_fault_walk_flags(p.pgtable))}


def profiles_doc() -> dict[str, Any]:
    """Return the s2mmu.profiles/1 document."""
    return {"schema": SCHEMA, "default": CURRENT.name,
            "profiles": [profile_json(p) for p in KERNEL_PROFILES.values()],
            "knobs": [{"name": k.name, "layer": layer_of(k), "rule": k.rule,
                       "changes": [{"release": c.release, "commit": c.commit, "title": c.title,
                                    "observed": c.observed} for c in k.changes]}
                      for k in all_knobs()]}


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON (schema s2mmu.profiles/1).")
def profiles(as_json: bool) -> None:
    """List the kernel releases the model follows (--profile NAME) and their rules."""
    if as_json:
        print_json(profiles_doc())
    else:
        console().print("\n".join(table_lines()), markup=False, highlight=False)
