"""JSON renderers of the architecture's records: translate, at, demo --arch.

Each function turns a typed record (s2mmu.arch.explain.TranslationRun, AT results) into
the JSON its schema in s2mmu/cli/schemas describes; addresses, descriptors and register
values are hex strings. The text renderer of the same records is s2mmu.arch.explain.
"""

from __future__ import annotations

from typing import Any

from s2mmu.arch.at import AtResult
from s2mmu.arch.atcase import AtOpSpec, op_result_json
from s2mmu.arch.attrs import MemoryAttributes
from s2mmu.arch.explain import (
    TranslationRun,
    attribute_notes,
    describe_descriptor,
    descriptor_kind,
    register_notes,
    s1_walk_params,
    s2_walk_params,
)
from s2mmu.arch.faults import FSC_NAMES, FaultRecord, fsc
from s2mmu.arch.memory import MemoryWrite
from s2mmu.arch.params import S1TTWParams, S2TTWParams
from s2mmu.arch.translate import AddressDescriptor, Env, s1_setup, s2_setup


def hx(v: int) -> str:
    """Return v as a hex string."""
    return f"{v:#x}"


def access_kind(run: TranslationRun) -> str:
    """Return "read", "write" or "fetch"."""
    a = run.access
    return "fetch" if a.is_ifetch() else ("write" if a.write else "read")


def s1_params_json(p: S1TTWParams, env: Env) -> dict[str, Any]:
    """Return the stage-1 walk parameters."""
    el = "EL1" if p.regime.value == "EL1&0" else "EL2"
    out: dict[str, Any] = {"enabled": p.mmu_on, "ttbr": f"TTBR{p.varange.value}_{el}",
                           "granule_kb": p.tgx.value, "txsz": p.txsz, "output_bits": p.ps,
                           "ha": p.ha, "hd": p.hd, "hpd": p.hpd, "wxn": p.wxn, "tbi": p.tbi,
                           "ds": p.ds, "ee": p.ee, "mair": hx(p.mair), "ttb": hx(p.ttb),
                           "input_bits": None, "start_level": None, "table": None,
                           "no_walk": None}
    if not p.mmu_on:
        return out
    q = s1_walk_params(p, env)
    if isinstance(q, str):
        out["no_walk"] = q
        return out
    out.update(input_bits=q.iasize(), start_level=q.startlevel(),
               table=hx(s1_setup(q, env).base_address()))
    return out


def s2_params_json(p: S2TTWParams, env: Env) -> dict[str, Any]:
    """Return the stage-2 walk parameters."""
    out: dict[str, Any] = {"granule_kb": p.tgx.value, "t0sz": p.txsz, "sl0": p.sl0,
                           "sl2": p.sl2, "output_bits": p.ps, "ha": p.ha, "hd": p.hd,
                           "fwb": p.fwb, "ds": p.ds, "cd": p.cd, "id": p.id,
                           "ttb": hx(p.ttb), "input_bits": None, "start_level": None,
                           "table": None, "no_walk": None}
    q = s2_walk_params(p, env)
    if isinstance(q, str):
        out["no_walk"] = q
        return out
    out.update(input_bits=q.iasize(), start_level=q.startlevel(),
               table=hx(s2_setup(q, env).base_address()))
    return out


def steps_json(run: TranslationRun) -> list[dict[str, Any]]:
    """Return every descriptor read in hardware order."""
    two_stage = run.s1p.mmu_on and run.s2p is not None
    out = []
    for i, s in enumerate(run.steps):
        serves_s1 = two_stage and s.stage == 2 and any(
            x.stage == 1 for x in run.steps[i + 1:])
        out.append({"stage": s.stage, "level": s.level, "table": hx(s.table_base),
                    "index": s.index, "address": hx(s.descaddress), "pa": hx(s.paddress),
                    "descriptor": f"{s.raw:#018x}", "kind": descriptor_kind(s.decoded),
                    "meaning": describe_descriptor(s.decoded, s.stage),
                    "for_stage1_table": serves_s1})
    return out


def attrs_json(a: MemoryAttributes) -> dict[str, Any]:
    """Return memory attributes: type, shareability, and the one-line description."""
    return {"memtype": a.memtype.value, "shareability": a.shareability.name,
            "text": a.describe()}


def fault_json(f: FaultRecord) -> dict[str, Any]:
    """Return a fault record with its ASL field names and its FSC."""
    return {"statuscode": f.statuscode.value, "level": f.level,
            "secondstage": f.secondstage, "s2fs1walk": f.s2fs1walk,
            "fsc": hx(fsc(f)), "fsc_name": FSC_NAMES.get(fsc(f), "?"),
            "ipaddress": hx(f.ipaddress) if f.ipaddress is not None else None,
            "reason": f.reason}


def result_json(run: TranslationRun) -> dict[str, Any]:
    """Return the output address and attributes, or the fault with its syndrome."""
    r = run.result
    if isinstance(r, AddressDescriptor):
        return {"outcome": "translated", "pa": hx(r.paddress), "attributes":
                attrs_json(r.memattrs), "PAR": f"{run.par:#018x}"}
    a = run.abort
    assert a is not None
    return {"outcome": "fault", "fault": fault_json(r), "taken_to": f"EL{a.taken_to}",
            "ESR": hx(a.esr), "FAR": hx(a.far),
            "HPFAR": hx(a.hpfar) if a.hpfar is not None else None,
            "PAR": f"{run.par:#018x}"}


def writes_json(writes: tuple[MemoryWrite, ...] | list[MemoryWrite]) -> list[dict[str, str]]:
    """Return the hardware's descriptor writes (values as descriptors, not memory bytes)."""
    return [{"pa": hx(w.pa), "before": hx(w.before), "after": hx(w.after)} for w in writes]


def translation_json(run: TranslationRun) -> dict[str, Any]:
    """Return one translation: input, regime, parameters, walk, result, notes, writes."""
    return {
        "input": {"va": hx(run.va), "el": run.access.el, "access": access_kind(run),
                  "pan": run.access.pan, "stage1_only": run.stage1_only,
                  "regs": {k: hx(v) for k, v in run.regs.to_mapping().items()},
                  "given": sorted(run.given)},
        "regime": run.regime.value,
        "params": {"stage1": s1_params_json(run.s1p, run.env),
                   "stage2": s2_params_json(run.s2p, run.env) if run.s2p else None},
        "steps": steps_json(run),
        "result": result_json(run),
        "notes": register_notes(run) + attribute_notes(run),
        "hardware_writes": writes_json(run.writes),
    }


def translate_doc(run: TranslationRun, case: str | None, features: str) -> dict[str, Any]:
    """Return the s2mmu.translate/1 document."""
    doc = {"schema": "s2mmu.translate/1", **translation_json(run)}
    doc["input"] = {**doc["input"], "case": case, "features": features}
    return doc


def at_doc(answers: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the s2mmu.at/1 document: the at-case.md answer, carrying its schema name."""
    return {"schema": "s2mmu.at/1", "cases": answers}


def demo_at_json(title: str, spec: AtOpSpec, result: AtResult) -> dict[str, Any]:
    """Return one AT of the demo: its title and the at-case.md op answer."""
    return {"title": title, **op_result_json(spec, result)}
