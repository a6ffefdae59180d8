"""AT case files (shared/formats/at-case.md): parse, run on the model, emit the answer.

The same file is fed to s2mmu and to QEMU; the two answers are compared bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from s2mmu.arch.access_op import (
    AccessOp,
    AccessResult,
    Atomic,
    Fetched,
    Loaded,
    Stored,
    execute_access,
)
from s2mmu.arch.at import AtException, AtOp, ParResult, execute_at
from s2mmu.arch.errors import InputError
from s2mmu.arch.features import FeatureSet, qemu_7_2_max
from s2mmu.arch.inputs import int_of_text, shorten, shorten_hex
from s2mmu.arch.memory import PA_LIMIT, MemoryWrite, PhysMem
from s2mmu.arch.state import SysRegs
from s2mmu.arch.translate import Env

EL_NAMES = {"EL0": 0, "EL1": 1, "EL2": 2, "EL3": 3}


def parse_int(value: Any, where: str) -> int:
    """Return value as an int: a JSON number, or a string "0x..."/"123" with '_' allowed."""
    if isinstance(value, bool):
        raise InputError(f"{where}: expected an integer, got {shorten(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return int_of_text(value, where)
    raise InputError(f"{where}: expected an integer (number, \"0x...\" or \"123\"), "
                     f"got {shorten(value)}")


def parse_word(value: Any, where: str) -> int:
    """Return value as an int that fits in 64 bits (a descriptor or register value)."""
    v = parse_int(value, where)
    if not 0 <= v < 1 << 64:
        raise InputError(f"{where}: {shorten(value)} does not fit in 64 bits")
    return v


def parse_el(value: Any, where: str) -> int:
    """Return an exception level from "EL0"/"EL1"/"EL2"/"EL3" (EL0: accesses only)."""
    if isinstance(value, str) and value.upper() in EL_NAMES:
        return EL_NAMES[value.upper()]
    raise InputError(f"{where}: el must be EL0, EL1, EL2 or EL3, got {shorten(value)}")


def parse_pan(value: Any, where: str) -> bool:
    """Return PSTATE.PAN from 0/1 (or a boolean)."""
    v = int(value) if isinstance(value, bool) else parse_int(value, where)
    if v not in (0, 1):
        raise InputError(f"{where}: pan must be 0 or 1, got {shorten(value)}")
    return bool(v)


@dataclass(frozen=True)
class AtOpSpec:
    """One op of a case: an AT instruction, or a real access (value: what STR writes)."""

    op: AtOp | AccessOp
    va: int
    el: int
    pan: bool
    value: int = 0


@dataclass(frozen=True)
class MemChunk:
    """Bytes placed in physical memory before the case runs."""

    pa: int
    data: bytes


@dataclass(frozen=True)
class AtCase:
    """A machine state and the AT operations to run on it."""

    name: str
    regs: SysRegs
    memory: tuple[MemChunk, ...]
    ops: tuple[AtOpSpec, ...]
    extra: dict[str, Any] = field(default_factory=dict)
    given: frozenset[str] = frozenset()   # the registers the file sets (the others: defaults)


def _parse_memory(items: Any, where: str) -> tuple[MemChunk, ...]:
    if not isinstance(items, list):
        raise InputError(f"{where}.memory: expected a list, got {type(items).__name__}")
    out = []
    for i, item in enumerate(items):
        w = f"{where}.memory[{i}]"
        if not isinstance(item, dict) or "pa" not in item:
            raise InputError(f"{w}: expected an object with 'pa' and 'words' or 'bytes'")
        pa = parse_int(item["pa"], f"{w}.pa")
        if "words" in item:
            words = item["words"]
            if not isinstance(words, list):
                raise InputError(f"{w}.words: expected a list")
            data = b"".join(parse_word(x, f"{w}.words[{j}]").to_bytes(8, "little")
                            for j, x in enumerate(words))
        elif "bytes" in item:
            data = _parse_bytes(item["bytes"], f"{w}.bytes")
        else:
            raise InputError(f"{w}: needs 'words' or 'bytes'")
        if pa < 0 or pa + len(data) > PA_LIMIT:
            raise InputError(f"{w}: pa {shorten_hex(pa)} (+{len(data)} bytes) is outside "
                             "the 52-bit PA space")
        out.append(MemChunk(pa, data))
    return tuple(out)


def _parse_bytes(value: Any, where: str) -> bytes:
    if isinstance(value, str):
        try:
            return bytes.fromhex(value.replace(" ", "").replace("_", ""))
        except ValueError:
            raise InputError(f"{where}: not a hex string") from None
    if isinstance(value, list) and all(isinstance(b, int) and 0 <= b < 256 for b in value):
        return bytes(value)
    raise InputError(f"{where}: expected a hex string or a list of byte values")


def _parse_op(item: Any, where: str, el: int, pan: bool) -> AtOpSpec:
    if isinstance(item, list):
        if len(item) != 2:
            raise InputError(f"{where}: a list op is [\"OP\", va]")
        item = {"op": item[0], "va": item[1]}
    if not isinstance(item, dict) or "op" not in item or "va" not in item:
        raise InputError(f"{where}: expected an object with 'op' and 'va'")
    if not isinstance(item["op"], str):
        raise InputError(f"{where}.op: expected a string")
    va = parse_int(item["va"], f"{where}.va")
    if not 0 <= va < 1 << 64:
        raise InputError(f"{where}.va: {shorten_hex(va)} is not a 64-bit address")
    try:
        op = parse_op_name(item["op"])
    except InputError as e:
        raise InputError(f"{where}.op: {e}") from None
    value = parse_word(item.get("value", 0), f"{where}.value")
    op_el = parse_el(item["el"], f"{where}.el") if "el" in item else el
    if isinstance(op, AtOp) and op_el == 0:
        raise InputError(f"{where}.el: el must be EL1, EL2 or EL3, got 'EL0' (EL0 is for "
                         "accesses: LDR, STR, FETCH)")
    return AtOpSpec(op, va, op_el,
                    parse_pan(item["pan"], f"{where}.pan") if "pan" in item else pan, value)


def parse_op_name(name: str) -> AtOp | AccessOp:
    """Return the access (LDR, STR, FETCH, LDXR, ...) or AT operation called name."""
    if name.strip().upper() in AccessOp.__members__:
        return AccessOp.parse(name)
    return AtOp.parse(name)


def parse_case(obj: Any, where: str = "case") -> AtCase:
    """Return the AtCase of one case object."""
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected an object, got {type(obj).__name__}")
    name = obj.get("name", where)
    if not isinstance(name, str):
        raise InputError(f"{where}.name: expected a string, got {shorten(name)}")
    where = f"case {shorten(name)}"
    el = parse_el(obj.get("el", "EL2"), f"{where}.el")
    pan = parse_pan(obj.get("pan", 0), f"{where}.pan")
    regs_in = obj.get("regs", {})
    if not isinstance(regs_in, dict):
        raise InputError(f"{where}.regs: expected an object")
    values = {k: parse_int(v, f"{where}.regs.{k}") for k, v in regs_in.items()}
    if "HCR_EL2" in values:
        values["HCR_EL2"] |= 1 << 31  # HCR_EL2.RW is always 1 (AArch64 EL1)
    try:
        regs = SysRegs.from_mapping(values)
    except InputError as e:
        raise InputError(f"{where}.regs: {e}") from None
    ops_in = obj.get("ops", [])
    if not isinstance(ops_in, list):
        raise InputError(f"{where}.ops: expected a list")
    ops = tuple(_parse_op(o, f"{where}.ops[{i}]", el, pan) for i, o in enumerate(ops_in))
    memory = _parse_memory(obj.get("memory", []), where)
    known = ("name", "el", "pan", "regs", "memory", "ops")
    extra = {k: v for k, v in obj.items() if k not in known}
    return AtCase(name, regs, memory, ops, extra, frozenset(values))


def parse_cases(obj: Any) -> list[AtCase]:
    """Return the cases of a file: one case, a list of cases, or {"cases": [...]}."""
    if isinstance(obj, dict) and "cases" in obj:
        obj = obj["cases"]
        if not isinstance(obj, list):
            raise InputError(f"cases: expected a list of cases, got {type(obj).__name__}")
    if isinstance(obj, dict):
        return [parse_case(obj)]
    if isinstance(obj, list):
        return [parse_case(c, f"cases[{i}]") for i, c in enumerate(obj)]
    raise InputError(f"an AT case file holds an object or a list, got {type(obj).__name__}")


def load_memory(case: AtCase) -> PhysMem:
    """Return a physical memory holding the case's memory chunks."""
    mem = PhysMem()
    for chunk in case.memory:
        mem.write_bytes(chunk.pa, chunk.data)
    return mem


def hx(v: int) -> str:
    """Return v as the format's plain hex string."""
    return f"{v:#x}"


OpResult = ParResult | AtException | AccessResult


def op_result_json(spec: AtOpSpec, result: OpResult | int) -> dict[str, Any]:
    """Return one op's output object in the at-case.md format (an int: PAR_EL1 alone, as
    the batch engine answers an AT that wrote it)."""
    out: dict[str, Any] = {"op": spec.op.name, "va": hx(spec.va), "el": f"EL{spec.el}",
                           "pan": int(spec.pan)}
    match result:
        case int():
            out.update(outcome="par", PAR_EL1=f"{result:#018x}")
            return out
        case ParResult():
            out.update(outcome="par", PAR_EL1=f"{result.par:#018x}")
            return out
        case Loaded():
            out.update(outcome="load", value=f"{result.value:#018x}")
            return out
        case Stored():
            out.update(outcome="store", value=f"{result.value:#018x}")
            if result.status is not None:
                out["status"] = hx(result.status)
            return out
        case Atomic():
            out.update(outcome="atomic", value=f"{result.value:#018x}")
            return out
        case Fetched():
            out.update(outcome="fetch", insn=f"{result.insn:#010x}")
            return out
    out.update(outcome="exception", taken_to=f"EL{result.taken_to}", ESR=hx(result.esr))
    if result.far is not None:
        out["FAR"] = hx(result.far)
    if result.hpfar is not None:
        out["HPFAR_EL2"] = hx(result.hpfar)
    return out


def run_case_detailed(case: AtCase, features: FeatureSet | None = None
                      ) -> tuple[list[OpResult], PhysMem, list[int]]:
    """Run every op of case in order on one memory; return the results, the memory and,
    per hardware write in mem.hw_writes, the index of the op that made it."""
    mem = load_memory(case)
    env = Env(mem, features or qemu_7_2_max())
    results: list[OpResult] = []
    writers: list[int] = []
    for i, spec in enumerate(case.ops):
        results.append(execute_op(spec, case.regs, env))
        writers += [i] * (len(mem.hw_writes) - len(writers))
    return results, mem, writers


def execute_op(spec: AtOpSpec, regs: SysRegs, env: Env) -> OpResult:
    """Execute one op of a case: an AT instruction or a real access."""
    if isinstance(spec.op, AccessOp):
        return execute_access(spec.op, spec.va, spec.el, spec.pan, spec.value, regs, env)
    return execute_at(spec.op, spec.va, spec.el, spec.pan, regs, env)


def memory_change_json(w: MemoryWrite, op: int) -> dict[str, Any]:
    """Return one hardware write as the format spells it: little-endian memory words,
    and the index of the op that made it."""
    before, after = w.as_le_words()
    return {"pa": hx(w.pa), "before": hx(before), "after": hx(after), "op": op}


BATCH_MIN = 8
"""A run of at least this many consecutive AT ops with the same op, EL and PAN goes through
the batch engine (s2mmu.arch.batch.at_batch), which answers exactly as one-by-one does."""


def run_case_outcomes(case: AtCase, features: FeatureSet | None = None
                      ) -> tuple[list[OpResult | int], PhysMem, list[int]]:
    """Run every op of case in order on one memory, as run_case_detailed does.

    Runs of BATCH_MIN or more consecutive AT ops with the same (op, el, pan) are answered
    by the batch engine (a PAR_EL1 value, or the exception); the rest one by one. Either
    way the answers, the descriptor updates and which op made each are those of executing
    the ops in program order.
    """
    from s2mmu.arch.batch import at_batch
    mem = load_memory(case)
    env = Env(mem, features or qemu_7_2_max())
    out: list[OpResult | int] = []
    writers: list[int] = []
    ops = case.ops
    keys = [(o.op, o.el, o.pan) for o in ops]
    i = 0
    while i < len(ops):
        j = i + 1
        while j < len(ops) and keys[j] == keys[i]:
            j += 1
        spec = ops[i]
        if j - i >= BATCH_MIN and isinstance(spec.op, AtOp):
            got = at_batch(spec.op, [o.va for o in ops[i:j]], spec.el, spec.pan, case.regs,
                           env)
            values: list[OpResult | int] = list(got.par.tolist())
            for k, e in enumerate(got.exceptions):
                if e is not None:
                    values[k] = e
            out.extend(values)
            writers += [i + lane for lane in got.write_lanes]
        else:
            for k in range(i, j):
                out.append(execute_op(ops[k], case.regs, env))
                writers += [k] * (len(mem.hw_writes) - len(writers))
        i = j
    return out, mem, writers


def run_case(case: AtCase, features: FeatureSet | None = None) -> dict[str, Any]:
    """Run case on the model and return its output object (at-case.md)."""
    results, mem, writers = run_case_outcomes(case, features)
    return {
        "name": case.name,
        "ops": [op_result_json(s, r) for s, r in zip(case.ops, results, strict=True)],
        "memory_changes": [memory_change_json(w, i)
                           for w, i in zip(mem.hw_writes, writers, strict=True)],
    }


def run_cases(obj: Any, features: FeatureSet | None = None) -> dict[str, Any]:
    """Parse a case file's JSON and return {"cases": [...]} with the model's answers."""
    return {"cases": [run_case(c, features) for c in parse_cases(obj)]}
