"""Read AT case files (shared/formats/at-case.md) into what the QEMU probe executes.

The conformance harness parses case files itself, without the model's parser, so that
the two sides of a comparison share nothing but the file. Each case becomes a frozen
`HarnessCase`: the complete register set (defaults applied, HCR_EL2.RW forced to 1),
memory as 8-byte aligned little-endian words, and the ops with their EL and PAN.

Rules: at-case.md "Input" (integers as numbers or "0x"/decimal strings with "_",
`words` little-endian, `bytes` raw, defaults for registers not given).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from s2mmu.arch.errors import InputError
from s2mmu.arch.inputs import shorten, too_many_digits

AT_OPS: tuple[str, ...] = (
    "S1E0R", "S1E0W", "S1E1R", "S1E1W", "S1E1RP", "S1E1WP",
    "S1E2R", "S1E2W", "S12E0R", "S12E0W", "S12E1R", "S12E1W",
)
"""AT operations in the probe's table order (the op code is the index)."""

ACCESS_OPS: tuple[str, ...] = ("LDR", "STR", "FETCH", "LDXR", "LDAXR", "STXR", "LDADD",
                                "SWP", "CAS")
"""Real accesses (at-case.md "Accesses"), after the AT ops in the probe's tables."""

WRITING_OPS: tuple[str, ...] = ("STR", "STXR", "LDADD", "SWP", "CAS")
"""Accesses that write their data (X4: what they store or add)."""

ATOMIC_OPS: tuple[str, ...] = ("LDADD", "SWP", "CAS")
"""FEAT_LSE atomics: their answer is the value read, outcome "atomic"."""

OPS: tuple[str, ...] = AT_OPS + ACCESS_OPS
ACCESS_ELS = (0, 1, 2)
"""The ELs the probe executes accesses at."""

REGISTERS: tuple[str, ...] = (
    "SCTLR_EL1", "TCR_EL1", "MAIR_EL1", "TTBR0_EL1", "TTBR1_EL1", "AMAIR_EL1",
    "CONTEXTIDR_EL1", "HCR_EL2", "VTCR_EL2", "VTTBR_EL2", "SCTLR_EL2", "TCR_EL2",
    "TTBR0_EL2", "TTBR1_EL2", "MAIR_EL2", "CONTEXTIDR_EL2", "HCRX_EL2",
)
"""Registers a case may set, in the probe's load order (probe.S load_regs)."""

REGISTER_DEFAULTS: Mapping[str, int] = {
    "SCTLR_EL1": 0x30D00800,
    "SCTLR_EL2": 0x30C50830,
    "HCR_EL2": 0x80000000,
    "VTCR_EL2": 0x80000000,
    "TCR_EL2": 0x80800000,
}
"""Values of registers a case does not give (MMUs off); all others are 0."""

HCR_EL2_RW = 1 << 31
ELS: Mapping[str, int] = {"EL0": 0, "EL1": 1, "EL2": 2, "EL3": 3}
U64_MAX = (1 << 64) - 1


@dataclass(frozen=True)
class AtOp:
    """One AT instruction: operation, address, the EL it executes at, PSTATE.PAN."""

    op: str
    va: int
    el: int
    pan: int
    value: int = 0

    @property
    def code(self) -> int:
        """Return the op's index in the probe's AT tables."""
        return OPS.index(self.op)

    @property
    def is_access(self) -> bool:
        """Return whether the op is a real access (LDR, STR, FETCH), not an AT."""
        return self.op in ACCESS_OPS


@dataclass(frozen=True)
class HarnessCase:
    """A case as the probe runs it; `source` is the case object as it was read."""

    name: str
    regs: Mapping[str, int]
    words: tuple[tuple[int, int], ...]
    ops: tuple[AtOp, ...]
    stub_va_el1: int | None
    stub_va_el2: int | None
    family: str
    source: Mapping[str, Any]


def parse_int(value: Any, what: str) -> int:
    """Read an integer given as a JSON number or a "0x..."/decimal string.

    Rules: at-case.md "Integers may be JSON numbers or strings ... `_` separators allowed".
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InputError(f"{what}: an integer must be a number or a string, got {shorten(value)}")
    if isinstance(value, int):
        number = value
    else:
        text = value.strip().replace("_", "").lower()
        digits = text[2:] if text.startswith("0x") else text
        why = too_many_digits(digits, text[:2] if digits is not text else "")
        if why:
            raise InputError(f"{what}: {why}")
        try:
            number = int(text, 16) if text.startswith("0x") else int(text, 10)
        except ValueError:
            raise InputError(f"{what}: not an integer: {shorten(value)}") from None
    if not 0 <= number <= U64_MAX:
        raise InputError(f"{what}: {shorten(value)} is outside 0..2^64-1")
    return number


def case_objects(obj: Any) -> list[Mapping[str, Any]]:
    """Return the case objects of a file: one case, a list, or {"cases": [...]}."""
    if isinstance(obj, Mapping) and "cases" in obj:
        obj = obj["cases"]
    if isinstance(obj, Mapping):
        return [obj]
    if isinstance(obj, list) and all(isinstance(item, Mapping) for item in obj):
        return list(obj)
    raise InputError("case file: expected a case object, a list of cases or {\"cases\": [...]}")


def parse_cases(obj: Any) -> list[HarnessCase]:
    """Parse a case file's JSON value into harness cases."""
    return [parse_case(item, index) for index, item in enumerate(case_objects(obj))]


def parse_case(obj: Mapping[str, Any], index: int) -> HarnessCase:
    """Parse one case object."""
    name = str(obj.get("name", f"case{index}"))
    where = f"case {shorten(name)}"
    el = parse_el(obj.get("el", "EL2"), where)
    pan = parse_pan(obj.get("pan", 0), where)
    harness = obj.get("harness", {})
    if not isinstance(harness, Mapping):
        raise InputError(f"{where}: harness must be an object, got {shorten(harness)}")
    return HarnessCase(
        name=name,
        regs=parse_regs(obj.get("regs", {}), where),
        words=parse_memory(obj.get("memory", []), where),
        ops=tuple(parse_op(op, i, el, pan, where) for i, op in enumerate(obj.get("ops", []))),
        stub_va_el1=optional_int(harness.get("stub_va_el1"), f"{where}: harness.stub_va_el1"),
        stub_va_el2=optional_int(harness.get("stub_va_el2"), f"{where}: harness.stub_va_el2"),
        family=str(obj.get("family", "file")),
        source=obj,
    )


def optional_int(value: Any, what: str) -> int | None:
    """Read an integer that may be absent."""
    return None if value is None else parse_int(value, what)


def parse_el(value: Any, where: str) -> int:
    """Read an exception level name (EL0 for accesses, EL1, EL2 or EL3)."""
    if value not in ELS:
        raise InputError(f"{where}: el must be one of EL0, EL1, EL2, EL3, got {shorten(value)}")
    return ELS[value]


def parse_pan(value: Any, where: str) -> int:
    """Read a PSTATE.PAN value (0 or 1)."""
    pan = parse_int(value, f"{where}: pan")
    if pan > 1:
        raise InputError(f"{where}: pan must be 0 or 1, got {shorten(value)}")
    return pan


def parse_regs(obj: Any, where: str) -> dict[str, int]:
    """Read the registers, apply defaults and force HCR_EL2.RW (at-case.md)."""
    if not isinstance(obj, Mapping):
        raise InputError(f"{where}: regs must be an object, got {shorten(obj)}")
    regs = {name: REGISTER_DEFAULTS.get(name, 0) for name in REGISTERS}
    for name, value in obj.items():
        if name not in regs:
            raise InputError(f"{where}: unknown register {shorten(name)} "
                             f"(known: {', '.join(REGISTERS)})")
        regs[name] = parse_int(value, f"{where}: {name}")
    regs["HCR_EL2"] |= HCR_EL2_RW
    return regs


def parse_op(obj: Any, index: int, el: int, pan: int, where: str) -> AtOp:
    """Read one op: {"op", "va", "el"?, "pan"?} or ["OP", va]."""
    what = f"{where}: op {index}"
    if isinstance(obj, list) and len(obj) == 2:
        obj = {"op": obj[0], "va": obj[1]}
    if not isinstance(obj, Mapping):
        raise InputError(f"{what}: expected an object or [\"OP\", va], got {shorten(obj)}")
    name = obj.get("op")
    if name not in OPS:
        raise InputError(f"{what}: unknown AT operation {shorten(name)} (known: "
                         f"{', '.join(AT_OPS)}; accesses: {', '.join(ACCESS_OPS)})")
    if "va" not in obj:
        raise InputError(f"{what}: missing va")
    op = AtOp(
        op=name,
        va=parse_int(obj["va"], f"{what}: va"),
        el=parse_el(obj["el"], what) if "el" in obj else el,
        pan=parse_pan(obj["pan"], what) if "pan" in obj else pan,
        value=parse_int(obj.get("value", 0), f"{what}: value"),
    )
    if op.is_access and op.el not in ACCESS_ELS:
        raise InputError(f"{what}: the probe executes {name} at EL0, EL1 or EL2, not EL{op.el}")
    if not op.is_access and op.el == 0:
        raise InputError(f"{what}: an AT instruction executes at EL1, EL2 or EL3, not EL0")
    return op


def parse_memory(obj: Any, where: str) -> tuple[tuple[int, int], ...]:
    """Read memory entries into sorted, non-zero, aligned little-endian 64-bit words.

    Later entries overwrite earlier ones byte by byte; bytes not given are zero.
    """
    if not isinstance(obj, list):
        raise InputError(f"{where}: memory must be a list, got {shorten(obj)}")
    image: dict[int, bytearray] = {}
    for index, entry in enumerate(obj):
        pa, data = memory_entry_bytes(entry, f"{where}: memory {index}")
        for offset, byte in enumerate(data):
            address = pa + offset
            image.setdefault(address & ~7, bytearray(8))[address & 7] = byte
    words = ((pa, int.from_bytes(data, "little")) for pa, data in sorted(image.items()))
    return tuple((pa, value) for pa, value in words if value)


def memory_entry_bytes(entry: Any, what: str) -> tuple[int, bytes]:
    """Return one memory entry's physical address and bytes."""
    if not isinstance(entry, Mapping) or "pa" not in entry:
        raise InputError(f"{what}: expected {{\"pa\": ..., \"words\"|\"bytes\": ...}}")
    pa = parse_int(entry["pa"], f"{what}: pa")
    if "words" in entry:
        words = entry["words"]
        if not isinstance(words, list):
            raise InputError(f"{what}: words must be a list, got {shorten(words)}")
        data = b"".join(parse_int(w, f"{what}: word").to_bytes(8, "little") for w in words)
    elif "bytes" in entry:
        data = parse_bytes(entry["bytes"], what)
    else:
        raise InputError(f"{what}: needs words or bytes")
    if pa + len(data) > 1 << 52:
        raise InputError(f"{what}: pa {pa:#x} + {len(data)} bytes exceeds the 52-bit PA space")
    return pa, data


def parse_bytes(value: Any, what: str) -> bytes:
    """Read raw bytes given as a hex string or a list of integers."""
    if isinstance(value, str):
        try:
            return bytes.fromhex(value.replace("_", "").replace(" ", ""))
        except ValueError:
            raise InputError(f"{what}: bytes is not a hex string: {shorten(value)}") from None
    if isinstance(value, list):
        data = [parse_int(b, f"{what}: byte") for b in value]
        if any(b > 0xFF for b in data):
            raise InputError(f"{what}: a byte is above 0xff in {shorten(value)}")
        return bytes(data)
    raise InputError(f"{what}: bytes must be a hex string or a list, got {shorten(value)}")


def el_name(el: int) -> str:
    """Return "EL0", "EL1", "EL2" or "EL3"."""
    return f"EL{el}"


def ops_of(cases: Sequence[HarnessCase]) -> int:
    """Return the number of ops in some cases."""
    return sum(len(case.ops) for case in cases)
