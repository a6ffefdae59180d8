"""Text and JSON renderers of `s2mmu decode`: a register value or a descriptor, field by field.

Both render the same records (s2mmu.arch.regdecode.RegisterDecode and
s2mmu.arch.descriptors.DescriptorView); every value is hex. The JSON document follows
the schema s2mmu.decode/1 (src/s2mmu/cli/schemas/s2mmu.decode.1.json).
"""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table as RichTable
from rich.text import Text

from s2mmu.arch.descriptors import DescKind, DescriptorView
from s2mmu.arch.regdecode import RegisterDecode
from s2mmu.arch.sysreg import FieldDecode

SCHEMA = "s2mmu.decode/1"


def bit_range(f: FieldDecode) -> str:
    """Return [hi] or [hi:lo]."""
    return f"[{f.hi}]" if f.hi == f.lo else f"[{f.hi}:{f.lo}]"


def fields_table(title: str, fields: tuple[FieldDecode, ...]) -> RichTable:
    """Return one row per bit range: name, bits, hex value, valid, meaning.

    A row that carries no information here (reserved, feature absent, syndrome not
    valid) says "no" under valid and is dimmed on a terminal.
    """
    t = RichTable(title=title)
    for col in ("field", "bits", "value", "valid", "meaning"):
        t.add_column(col)
    for f in fields:
        style = "" if f.valid else "dim"
        t.add_row(f.name, bit_range(f), f"{f.value:#x}", "yes" if f.valid else "no",
                  f.meaning, style=style)
    return t


def register_text(name: str, dec: RegisterDecode, features: str) -> RichTable:
    """Return a register's decode as a table titled with its name, value and layout."""
    layout = "" if dec.name == name else f", {dec.name} layout"
    return fields_table(f"{name} = {dec.value:#018x} (features {features}{layout})",
                        dec.fields)


def descriptor_text(view: DescriptorView, granule: str, ds: bool, features: str) -> Group:
    """Return a descriptor's form, addresses and summaries, then its field table."""
    form = f"stage {view.stage} level {view.level} {granule.upper()}" + (" DS=1" if ds else "")
    lines = [Text(f"{form} descriptor {view.raw:#018x}: {view.kind.value}"
                  + (f" ({view.why_invalid})" if view.why_invalid else ""))]
    if view.kind is DescKind.TABLE and view.address is not None:
        lines.append(Text(f"  next-level table: {view.address:#x}"))
    if view.kind in (DescKind.BLOCK, DescKind.PAGE) and view.address is not None:
        lines.append(Text(f"  output address: {view.address:#x}"))
        lines.append(Text(f"  attributes: {view.attributes}"))
        lines.append(Text(f"  permissions: {view.permissions}"))
    lines.append(Text(f"  software bits [58:55]: {view.software:#x}"))
    title = f"descriptor {view.raw:#018x} (features {features})"
    return Group(*lines, fields_table(title, view.fields))


def field_json(f: FieldDecode) -> dict[str, Any]:
    """Return one field as JSON (value in hex)."""
    return {"name": f.name, "hi": f.hi, "lo": f.lo, "value": f"{f.value:#x}",
            "meaning": f.meaning, "valid": f.valid}


def register_json(name: str, dec: RegisterDecode, features: str) -> dict[str, Any]:
    """Return the s2mmu.decode/1 document for a register value."""
    return {"schema": SCHEMA, "features": features, "register": name, "layout": dec.name,
            "value": f"{dec.value:#x}", "fields": [field_json(f) for f in dec.fields]}


def descriptor_json(view: DescriptorView, granule: str, ds: bool,
                    features: str) -> dict[str, Any]:
    """Return the s2mmu.decode/1 document for a translation table descriptor."""
    leaf = view.kind in (DescKind.BLOCK, DescKind.PAGE)
    table = view.kind is DescKind.TABLE
    desc = {
        "kind": view.kind.value, "level": view.level, "stage": view.stage,
        "granule": granule.upper(), "ds": ds,
        "output_address": f"{view.address:#x}" if leaf and view.address is not None else None,
        "next_table_address": (f"{view.address:#x}" if table and view.address is not None
                               else None),
        "attributes": view.attributes, "permissions": view.permissions,
        "software_bits": f"{view.software:#x}", "why_invalid": view.why_invalid,
    }
    return {"schema": SCHEMA, "features": features, "descriptor": desc,
            "value": f"{view.raw:#x}", "fields": [field_json(f) for f in view.fields]}
