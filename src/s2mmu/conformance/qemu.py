"""Execute AT case files on QEMU: build the probe, boot QEMU, feed cases, read answers.

The independent side of the conformance harness (issue 3). Debian 12's
`qemu-system-aarch64` (QEMU 7.2, `-M virt,virtualization=on,secure=on -cpu max`, TCG)
runs a bare-metal probe (probe/*.S, built here with Debian's binutils and cached by
source hash) that executes the real AT instructions at EL1, EL2 or EL3.

Transport, and why:
- In: one binary blob of many cases, placed in guest RAM by `-device loader` before the
  CPU starts. No device model, no protocol, no per-case round trip: the guest reads it.
- Out: one semihosting SYS_WRITE per case, to a host file the harness names in the
  blob. Semihosting writes the record with a single host write(2), costs one trap per
  case (not one per byte, as a UART would), and the file grows case by case, so the
  harness sees progress while the guest runs: a hung or crashed guest is detected by a
  stalled file or an exit status, costs exactly the first case without a record, and
  the run resumes after it in a fresh QEMU.
- QEMU is started fresh per batch; the boot (about 0.1 s) is the only fixed cost.

Physical layout (QEMU virt RAM starts at 0x40000000; `-m 4G` is free until touched):
the probe owns [0x40000000, 0x48000000): code, the stub page at 0x40010000, stack,
result buffer and the blob at 0x41000000. Case memory must lie in RAM outside that
region; a case that does not is skipped with the reason, never run.

Execution at EL1/EL2 with that EL's translation on needs the stub page mapped at
`harness.stub_va_el1/el2` (identity by default). Before such ops the probe runs AT at
EL3 on those addresses ("prechecks") so it never erets into code it cannot fetch; any
descriptor words those walks update (access flag) are reported as the case's
`harness_memory`, to be applied to the model's memory too.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from s2mmu.conformance.casefile import (
    ATOMIC_OPS,
    OPS,
    REGISTERS,
    WRITING_OPS,
    AtOp,
    HarnessCase,
    el_name,
)

PROBE_DIR = Path(__file__).with_name("probe")
PROBE_SOURCES = ("layout.inc", "probe.S", "stub.S", "probe.ld")
QEMU_BINARY = "qemu-system-aarch64"
AS_BINARY = "aarch64-linux-gnu-as"
LD_BINARY = "aarch64-linux-gnu-ld"


@dataclass(frozen=True)
class ProbeLayout:
    """Where the probe and the cases live in QEMU virt's physical memory."""

    ram_base: int = 0x4000_0000
    ram_size: int = 4 << 30
    reserved_base: int = 0x4000_0000
    reserved_end: int = 0x4800_0000
    stub_pa: int = 0x4001_0000
    stub_at_el1: int = 0x000
    stub_at_el2: int = 0x800
    stub_el0: int = 0x100
    stub_stxr: int = 0x0C0
    stub_el0_stxr: int = 0x150
    blob_addr: int = 0x4100_0000

    @property
    def ram_end(self) -> int:
        """Return the first address above RAM."""
        return self.ram_base + self.ram_size

    @property
    def blob_limit(self) -> int:
        """Return the largest blob, in bytes, that fits the reserved region."""
        return self.reserved_end - self.blob_addr


PROBE_LAYOUT = ProbeLayout()

BLOB_MAGIC = int.from_bytes(b"S2MMUAT1", "little")
RESULT_MAGIC = int.from_bytes(b"RSLT", "little")
PRECHECK_OP = 0xFFFF_FFFF_FFFF_FFFF
CASE_HEADER_WORDS = 25
RESULT_HEADER_WORDS = 10
MAX_OPS_PER_CASE = 100_000
"""Op records (48 bytes each) must leave room for memory changes in the 15 MiB result
buffer below the blob (layout.inc RESULT_END)."""
OP_RECORD_WORDS = 6
OP_ENTRY_WORDS = 8
"""An op in the blob: code, el, pan, va, value, three spare words (layout.inc)."""
CHANGE_WORDS = 4

KIND_PAR = 1
KIND_EXC_EL1 = 2
KIND_EXC_EL2 = 3
KIND_EL3_LOWER = 4
KIND_EL3_SELF = 5
KIND_NO_STUB = 6
KIND_ASYNC = 7
KIND_EXC_EL3 = 8
KIND_ACCESS = 9

ABORT_ECS = (0x20, 0x21, 0x24, 0x25)
LOWER_ABORT_ECS = (0x20, 0x24)


class HarnessUnavailable(RuntimeError):
    """QEMU or binutils is missing, or the probe does not build."""


def missing_tools() -> list[str]:
    """Return the names of the external tools the harness needs and cannot find."""
    return [tool for tool in (QEMU_BINARY, AS_BINARY, LD_BINARY) if shutil.which(tool) is None]


def unavailable_reason() -> str | None:
    """Return why QEMU conformance cannot run here, or None if it can."""
    missing = missing_tools()
    if not missing:
        return None
    return (f"missing {', '.join(missing)}: "
            "apt-get install -y qemu-system-arm binutils-aarch64-linux-gnu")


# --- The probe --------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """Return the cache directory: $S2MMU_CACHE_DIR, else $XDG_CACHE_HOME/s2mmu."""
    if "S2MMU_CACHE_DIR" in os.environ:
        return Path(os.environ["S2MMU_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "s2mmu"


def probe_hash() -> str:
    """Return a hash of the probe sources, which keys the cached ELF."""
    digest = hashlib.sha256()
    for name in PROBE_SOURCES:
        digest.update(name.encode() + b"\0" + (PROBE_DIR / name).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def probe_dir(cache_dir: Path | None) -> Path:
    """Return a writable directory for this probe build (a temp one if the cache is not)."""
    name = f"probe-{probe_hash()}"
    for base in (cache_dir or default_cache_dir(), Path(tempfile.gettempdir()) / "s2mmu-cache"):
        try:
            (base / name).mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        return base / name
    raise HarnessUnavailable("no writable directory to build the probe in")


def build_probe(cache_dir: Path | None = None) -> Path:
    """Return the probe ELF, assembling and linking it if it is not cached yet."""
    out_dir = probe_dir(cache_dir)
    elf = out_dir / "probe.elf"
    if elf.exists():
        return elf
    missing = missing_tools()
    if AS_BINARY in missing or LD_BINARY in missing:
        raise HarnessUnavailable(unavailable_reason() or "binutils missing")
    with tempfile.TemporaryDirectory(dir=out_dir) as work:
        objects = [assemble(PROBE_DIR / name, Path(work)) for name in ("probe.S", "stub.S")]
        linked = Path(work) / "probe.elf"
        run_tool([LD_BINARY, "-T", str(PROBE_DIR / "probe.ld"), "-o", str(linked), *objects])
        check_probe_symbols(linked)
        os.replace(linked, elf)
    return elf


def assemble(source: Path, work: Path) -> str:
    """Assemble one probe source into an object file in `work`."""
    obj = work / (source.stem + ".o")
    run_tool([AS_BINARY, "-I", str(PROBE_DIR), "-o", str(obj), str(source)])
    return str(obj)


def run_tool(argv: list[str]) -> None:
    """Run a build tool, raising HarnessUnavailable with its output if it fails."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise HarnessUnavailable(f"{argv[0]} failed: {done.stderr.strip()}")


def probe_symbols(elf: Path) -> dict[str, int]:
    """Return the probe ELF's symbol addresses, by name."""
    with elf.open("rb") as stream:
        table = ELFFile(stream).get_section_by_name(".symtab")
        if not isinstance(table, SymbolTableSection):
            raise HarnessUnavailable(f"{elf}: no symbol table")
        return {sym.name: sym["st_value"] for sym in table.iter_symbols() if sym.name}


def check_probe_symbols(elf: Path) -> None:
    """Check that the linked probe agrees with PROBE_LAYOUT."""
    symbols = probe_symbols(elf)
    layout = PROBE_LAYOUT
    expected = {
        "stub_base": layout.stub_pa,
        "at_table_el1": layout.stub_pa + layout.stub_at_el1,
        "at_table_el2": layout.stub_pa + layout.stub_at_el2,
        "el0_table": layout.stub_pa + layout.stub_el0,
        "el1_stxr": layout.stub_pa + layout.stub_at_el1 + layout.stub_stxr,
        "el2_stxr": layout.stub_pa + layout.stub_at_el2 + layout.stub_stxr,
        "el0_stxr": layout.stub_pa + layout.stub_el0_stxr,
        "BLOB_ADDR_SYM": layout.blob_addr,
        "STUB_PA_SYM": layout.stub_pa,
        "_start": layout.ram_base,
    }
    for name, value in expected.items():
        if symbols.get(name) != value:
            raise HarnessUnavailable(f"probe symbol {name} is {symbols.get(name)}, "
                                     f"PROBE_LAYOUT expects {value:#x}")


# --- Preparing cases --------------------------------------------------------------------


@dataclass(frozen=True)
class Precheck:
    """An AT run at EL3 on a stub address before lower-EL ops: it must give the stub."""

    op: str
    va: int


@dataclass(frozen=True)
class PreparedCase:
    """A case with what the probe needs: stub addresses, prechecks, ops to run."""

    case: HarnessCase
    index: int
    stub_va_el1: int
    stub_va_el2: int
    prechecks: tuple[Precheck, ...]
    run: tuple[int, ...]
    skipped_ops: Mapping[int, str]
    skip_reason: str | None


def prepare(case: HarnessCase, index: int) -> PreparedCase:
    """Check a case against what QEMU can hold and plan its execution."""
    stub_el1 = stub_va(case, 1)
    stub_el2 = stub_va(case, 2)
    skipped = {i: reason for i, op in enumerate(case.ops) if (reason := op_skip_reason(case, op))}
    return PreparedCase(
        case=case,
        index=index,
        stub_va_el1=stub_el1,
        stub_va_el2=stub_el2,
        prechecks=prechecks_for(case, stub_el1, stub_el2, skipped),
        run=tuple(i for i in range(len(case.ops)) if i not in skipped),
        skipped_ops=skipped,
        skip_reason=memory_skip_reason(case),
    )


def el1_fetch_translated(regs: Mapping[str, int]) -> tuple[bool, bool]:
    """Return (stage 1, stage 2) translation of EL1 instruction fetches.

    HCR_EL2.DC=1 turns stage 1 off and behaves as HCR_EL2.VM=1 (Arm ARM HCR_EL2.DC).
    """
    hcr = regs["HCR_EL2"]
    dc = bool(hcr >> 12 & 1)
    return bool(regs["SCTLR_EL1"] & 1) and not dc, bool(hcr & 1) or dc


def el2_fetch_translated(regs: Mapping[str, int]) -> bool:
    """Return whether EL2 instruction fetches are translated (SCTLR_EL2.M)."""
    return bool(regs["SCTLR_EL2"] & 1)


def host_el0(regs: Mapping[str, int]) -> bool:
    """Return whether EL0 runs in the EL2&0 regime (HCR_EL2.E2H=TGE=1)."""
    return bool(regs["HCR_EL2"] >> 34 & 1 and regs["HCR_EL2"] >> 27 & 1)


def stub_el(case: HarnessCase, el: int) -> int:
    """Return whose stub mapping an EL fetches through: EL0 uses EL1's, or EL2's in a host."""
    if el == 0:
        return 2 if host_el0(case.regs) else 1
    return el


def stub_va(case: HarnessCase, el: int) -> int:
    """Return where the stub page runs at `el`: the case's address, else identity."""
    if el == 1:
        translated = any(el1_fetch_translated(case.regs))
        chosen = case.stub_va_el1
    else:
        translated = el2_fetch_translated(case.regs)
        chosen = case.stub_va_el2
    if not translated or chosen is None:
        return PROBE_LAYOUT.stub_pa
    return chosen


def prechecks_for(case: HarnessCase, stub_el1: int, stub_el2: int,
                  skipped: Mapping[int, str]) -> tuple[Precheck, ...]:
    """Return the EL3 ATs that prove the stub page is reachable for the case's ops."""
    els = {stub_el(case, op.el) for i, op in enumerate(case.ops) if i not in skipped}
    checks: list[Precheck] = []
    if 1 in els:
        stage1, stage2 = el1_fetch_translated(case.regs)
        if stage2:
            checks.append(Precheck("S12E1R", stub_el1))
        elif stage1:
            checks.append(Precheck("S1E1R", stub_el1))
    if els & {1, 2} and el2_fetch_translated(case.regs):
        checks.append(Precheck("S1E2R", stub_el2))
    return tuple(checks)


def op_skip_reason(case: HarnessCase, op: AtOp) -> str | None:
    """Return why an op cannot execute on QEMU, or None."""
    if op.el == 1 and case.regs["HCR_EL2"] >> 27 & 1:
        return "EL1 cannot execute with HCR_EL2.TGE=1 (an eret to EL1 is an illegal return)"
    if op.el == 0 and case.regs["HCR_EL2"] >> 27 & 1 and not host_el0(case.regs):
        return "the probe runs EL0 with HCR_EL2.TGE=1 only in a host (E2H=1)"
    return None


def memory_skip_reason(case: HarnessCase) -> str | None:
    """Return why a case cannot be held by QEMU virt and the probe, or None."""
    if len(case.ops) > MAX_OPS_PER_CASE:
        return (f"a case may hold at most {MAX_OPS_PER_CASE:,} ops (the probe's result "
                f"buffer), this one has {len(case.ops):,}")
    layout = PROBE_LAYOUT
    for pa, _ in case.words:
        if not layout.ram_base <= pa < layout.ram_end:
            return (f"memory at PA {pa:#x} is outside QEMU virt RAM "
                    f"[{layout.ram_base:#x}, {layout.ram_end:#x})")
        if layout.reserved_base <= pa < layout.reserved_end:
            return (f"memory at PA {pa:#x} overlaps the probe's reserved region "
                    f"[{layout.reserved_base:#x}, {layout.reserved_end:#x})")
    return None


# --- The blob ---------------------------------------------------------------------------


def encode_case(prepared: PreparedCase) -> bytes:
    """Encode one case as the probe reads it (layout.inc, "Case header")."""
    case = prepared.case
    run = [case.ops[i] for i in prepared.run]
    values = [0, prepared.index, len(case.words), len(run), len(prepared.prechecks),
              prepared.stub_va_el1, prepared.stub_va_el2, int(may_update_descriptors(case))]
    values += [case.regs[name] for name in REGISTERS]
    for check in prepared.prechecks:
        values += [OPS.index(check.op), check.va, PROBE_LAYOUT.stub_pa]
    for pa, value in case.words:
        values += [pa, value]
    for op in run:
        values += [op.code, op.el, op.pan, op.va, op.value, 0, 0, 0]
    values[0] = 8 * len(values)
    return struct.pack(f"<{len(values)}Q", *values)


def may_update_descriptors(case: HarnessCase) -> bool:
    """Return whether any walk of the case may write a descriptor (an HA or HD bit set).

    Checks TCR_EL1.{HA,HD} (bits 39, 40), TCR_EL2.{HA,HD} in both layouts (21, 22 with
    E2H=0; 39, 40 with E2H=1) and VTCR_EL2.{HA,HD} (21, 22). Without any, the probe
    skips comparing the case's words after each op.
    """
    regs = case.regs
    el1 = regs["TCR_EL1"] >> 39 & 3
    el2 = regs["TCR_EL2"] >> 21 & 3 | regs["TCR_EL2"] >> 39 & 3
    return bool(el1 or el2 or regs["VTCR_EL2"] >> 21 & 3)


def encode_blob(encoded_cases: Sequence[bytes], out_path: str) -> bytes:
    """Encode the blob header, the output path and the cases."""
    path = out_path.encode() + b"\0"
    path += b"\0" * (-len(path) % 8)
    header_size = 6 * 8
    header = struct.pack("<6Q", BLOB_MAGIC, 1, len(encoded_cases), header_size,
                         len(out_path.encode()), header_size + len(path))
    return header + path + b"".join(encoded_cases)


# --- Results ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RawResult:
    """One case's result record as the probe wrote it."""

    index: int
    precheck_failed: int
    precheck_par: int
    ops: tuple[tuple[int, ...], ...]
    changes: tuple[tuple[int, int, int, int], ...]
    guest_seconds: float = 0.0
    dropped_changes: int = 0


def parse_results(data: bytes) -> list[RawResult]:
    """Parse the complete result records at the start of the output file."""
    words = memoryview(data)[: len(data) // 8 * 8].cast("Q")
    results: list[RawResult] = []
    at = 0
    while at + RESULT_HEADER_WORDS <= len(words) and words[at] == RESULT_MAGIC:
        (_, index, nops, nchanges, failed, par, tick0, tick1, freq,
         dropped) = words[at: at + RESULT_HEADER_WORDS]
        end = at + RESULT_HEADER_WORDS + nops * OP_RECORD_WORDS + nchanges * CHANGE_WORDS
        if end > len(words):
            break
        body = words[at + RESULT_HEADER_WORDS: end].tolist()
        ops = [tuple(body[i: i + OP_RECORD_WORDS])
               for i in range(0, nops * OP_RECORD_WORDS, OP_RECORD_WORDS)]
        changes = body[nops * OP_RECORD_WORDS:]
        results.append(RawResult(
            index=index, precheck_failed=failed, precheck_par=par, ops=tuple(ops),
            changes=tuple(tuple(changes[i: i + 4]) for i in range(0, len(changes), 4)),  # type: ignore[misc]
            guest_seconds=(tick1 - tick0) / freq if freq else 0.0,
            dropped_changes=dropped,
        ))
        at = end
    return results


def op_header(op: AtOp) -> dict[str, Any]:
    """Return the fields every op answer starts with (at-case.md "Output")."""
    return {"op": op.op, "va": hex(op.va), "el": el_name(op.el), "pan": op.pan}


def at_instruction_va(prepared: PreparedCase, op: AtOp) -> int:
    """Return the virtual address of the AT instruction the probe runs for `op`."""
    if op.el == 0:
        base = prepared.stub_va_el2 if stub_el(prepared.case, 0) == 2 else prepared.stub_va_el1
        return base + PROBE_LAYOUT.stub_el0 + 8 * (op.code - OPS.index("LDR"))
    if op.el == 1:
        return prepared.stub_va_el1 + PROBE_LAYOUT.stub_at_el1 + 8 * op.code
    return prepared.stub_va_el2 + PROBE_LAYOUT.stub_at_el2 + 8 * op.code


def exception_answer(taken_to: int, esr: int, far: int, hpfar: int) -> dict[str, Any]:
    """Return an exception outcome with FAR and HPFAR_EL2 where the architecture sets them.

    FAR_ELx is set for Instruction and Data Aborts with ISS.FnV=0; HPFAR_EL2 for aborts
    from a lower EL taken to EL2 (for an AT, always a stage-2 fault on its stage-1 walk).
    """
    answer: dict[str, Any] = {"outcome": "exception", "taken_to": el_name(taken_to),
                              "ESR": hex(esr)}
    ec = esr >> 26 & 0x3F
    if ec in ABORT_ECS and not esr >> 10 & 1:
        answer["FAR"] = hex(far)
    if taken_to == 2 and ec in LOWER_ABORT_ECS:
        answer["HPFAR_EL2"] = hex(hpfar)
    return answer


def faulting_pcs(prepared: PreparedCase, op: AtOp) -> tuple[int, ...]:
    """Return where an op's own exception may return to: the instruction in the stub, or
    for a fetch the branch target, as is or with its top byte (a tag) replaced by the
    extension of bit 55 (ASL AArch64.BranchAddr)."""
    if op.op == "STXR":
        if op.el == 0:
            base = prepared.stub_va_el2 if stub_el(prepared.case, 0) == 2 else prepared.stub_va_el1
            seq = base + PROBE_LAYOUT.stub_el0_stxr
        else:
            base, table = ((prepared.stub_va_el1, PROBE_LAYOUT.stub_at_el1) if op.el == 1
                           else (prepared.stub_va_el2, PROBE_LAYOUT.stub_at_el2))
            seq = base + table + PROBE_LAYOUT.stub_stxr
        return seq, seq + 4     # the LDXR, then the STXR
    if op.op != "FETCH":
        return (at_instruction_va(prepared, op),)
    low = op.va & (1 << 56) - 1
    return op.va, low, low | 0xFF << 56


def access_answer(op: AtOp, loaded: int, status: int) -> dict[str, Any]:
    """Return a completed access's answer: the value loaded (X1), stored, or read by an
    atomic (X1); a Store-Exclusive adds its status (W5)."""
    if op.op in ATOMIC_OPS:
        return {"outcome": "atomic", "value": f"{loaded:#018x}"}
    if op.op not in WRITING_OPS:
        return {"outcome": "load", "value": f"{loaded:#018x}"}
    answer = {"outcome": "store", "value": f"{op.value:#018x}"}
    if op.op == "STXR":
        answer["status"] = hex(status & 0xFFFF_FFFF)
    return answer


def decode_op(prepared: PreparedCase, op: AtOp, record: tuple[int, ...],
              precheck: str) -> dict[str, Any]:
    """Turn one op record into its answer (at-case.md "Output")."""
    kind, v1, v2, v3, v4, _ = record
    if kind == KIND_PAR:
        return {"outcome": "par", "PAR_EL1": f"{v1:#018x}"}
    if kind == KIND_ACCESS and op.is_access:
        return access_answer(op, v1, v4)
    if kind in (KIND_EXC_EL1, KIND_EXC_EL2):
        taken_to = 1 if kind == KIND_EXC_EL1 else 2
        if v4 in faulting_pcs(prepared, op) and taken_to <= max(op.el, 2):
            if op.is_access and is_external_abort(v1):
                return skipped(f"the access reached a PA outside QEMU virt RAM (ESR {v1:#x}): "
                               "QEMU raises an external abort where at-case.md memory reads zero")
            if is_external_abort_on_walk(v1):
                return skipped(f"the walk read a PA outside QEMU virt RAM (ESR {v1:#x}): QEMU "
                               "raises an external abort where at-case.md memory reads zero")
            return exception_answer(taken_to, v1, v2, v3)
        return harness_error(f"unexpected exception to EL{taken_to} outside the AT "
                             f"(ESR {v1:#x}, ELR {v4:#x}): is the stub page executable?")
    if kind == KIND_EXC_EL3:
        if is_external_abort_on_walk(v1):
            return skipped(f"the walk read a PA outside QEMU virt RAM (ESR_EL3 {v1:#x}): QEMU "
                           "raises an external abort where at-case.md memory reads zero")
        return harness_error(f"the AT at EL3 took an exception (ESR {v1:#x}, ELR {v4:#x})")
    if kind == KIND_NO_STUB:
        return harness_error(precheck)
    if kind == KIND_EL3_LOWER:
        return harness_error(f"unexpected exception to EL3 from below (ESR {v1:#x}, ELR {v4:#x})")
    if kind == KIND_EL3_SELF:
        return harness_error(f"exception at EL3 in the probe (ESR {v1:#x}, ELR {v4:#x})")
    if kind == KIND_ASYNC:
        return harness_error(f"unexpected interrupt or SError (vector {v1:#x}, ELR {v4:#x})")
    return harness_error(f"unknown probe record kind {kind}")


def is_external_abort_on_walk(esr: int) -> bool:
    """Return whether an ESR is a Data/Instruction Abort for an external abort on a walk.

    FSC 0b0101LL (levels 0-3) and 0b010011 (level -1).
    """
    return esr >> 26 & 0x3F in ABORT_ECS and (esr & 0x3C == 0x14 or esr & 0x3F == 0x13)


def is_external_abort(esr: int) -> bool:
    """Return whether an ESR is an abort for a synchronous external abort (FSC 0b010000),
    not on a walk."""
    return esr >> 26 & 0x3F in ABORT_ECS and esr & 0x3F == 0x10


def skipped(reason: str) -> dict[str, Any]:
    """Return the outcome of an op QEMU cannot answer for the format (not a harness fault)."""
    return {"outcome": "skipped", "reason": reason}


def failure_outcome(reason: str) -> dict[str, Any]:
    """Return the outcome of an op that stopped QEMU: a QEMU crash skips it, a hang is ours.

    QEMU 7.2 asserts on some architecturally reachable states (a fault at level -1 from a
    block descriptor there, for one), QEMU 10.0 on others (do_ats_write's
    `!res.cacheattrs.is_s2_format`): QEMU cannot answer, which is not a harness fault.
    """
    if "Assertion" in reason or "qemu: fatal" in reason:
        return skipped(f"QEMU crashed on this op: {reason}")
    return harness_error(reason)


def harness_error(reason: str) -> dict[str, Any]:
    """Return the outcome of an op the harness could not run."""
    return {"outcome": "harness_error", "reason": reason}


def precheck_message(prepared: PreparedCase, raw: RawResult) -> str:
    """Describe a failed precheck."""
    if not raw.precheck_failed:
        return ""
    check = prepared.prechecks[raw.precheck_failed - 1]
    return (f"the probe's stub page (PA {PROBE_LAYOUT.stub_pa:#x}) is not mapped for "
            f"execution: AT {check.op} {check.va:#x} at EL3 gave PAR_EL1 {raw.precheck_par:#018x}")


def case_answer(prepared: PreparedCase, raw: RawResult) -> dict[str, Any]:
    """Build a case's answer from its result record."""
    case = prepared.case
    ops = [op_header(op) for op in case.ops]
    precheck = precheck_message(prepared, raw)
    for i, reason in prepared.skipped_ops.items():
        ops[i] |= {"outcome": "skipped", "reason": reason}
    for i, record in zip(prepared.run, raw.ops, strict=True):
        ops[i] |= decode_op(prepared, case.ops[i], record, precheck)
    for op in ops:
        if "outcome" not in op:
            op |= skipped("not run")
    answer: dict[str, Any] = {"name": case.name, "ops": ops, "memory_changes": [
        {"pa": hex(pa), "before": hex(before), "after": hex(after), "op": prepared.run[op]}
        for op, pa, before, after in raw.changes if op != PRECHECK_OP
    ]}
    if raw.dropped_changes:
        answer["memory_changes_dropped"] = raw.dropped_changes
    harness_words = {pa: after for op, pa, _, after in raw.changes if op == PRECHECK_OP}
    if harness_words:
        answer["harness_memory"] = [{"pa": hex(pa), "words": [hex(value)]}
                                    for pa, value in sorted(harness_words.items())]
    return answer


def failed_case_answer(case: HarnessCase, outcome: str, reason: str) -> dict[str, Any]:
    """Build the answer of a case that did not run: skipped, or lost to a hung guest."""
    ops = [op_header(op) | {"outcome": outcome, "reason": reason} for op in case.ops]
    return {"name": case.name, "ops": ops, "memory_changes": [], outcome: reason}


# --- Running QEMU -----------------------------------------------------------------------


@dataclass(frozen=True)
class QemuConfig:
    """How to run QEMU: binary, timeouts, parallel instances, probe cache.

    argv_prefix, when given, replaces the binary: the start of the command line of a
    chosen QEMU (qemu_binary.QemuBinary.argv_prefix, e.g. Debian's 10.0 from backports).
    """

    binary: str = QEMU_BINARY
    boot_timeout: float = 30.0
    case_timeout: float = 3.0
    op_timeout: float = 0.005
    jobs: int = 1
    cache_dir: Path | None = None
    argv_prefix: tuple[str, ...] = ()


def qemu_argv(config: QemuConfig, elf: Path, blob: Path) -> list[str]:
    """Return the QEMU command line for one batch."""
    return [
        *(config.argv_prefix or (config.binary,)),
        "-M", "virt,virtualization=on,secure=on",
        "-cpu", "max", "-accel", "tcg",
        "-m", f"{PROBE_LAYOUT.ram_size >> 20}M",
        "-nodefaults", "-display", "none", "-monitor", "none", "-serial", "none",
        "-semihosting-config", "enable=on,target=native",
        "-kernel", str(elf),
        "-device", f"loader,file={blob},addr={PROBE_LAYOUT.blob_addr:#x},force-raw=on",
    ]


@dataclass
class BatchOutcome:
    """What one QEMU run produced: complete records, and why it stopped if early."""

    records: list[RawResult]
    failure: str | None = None


@dataclass
class QemuAt:
    """Run AT cases on QEMU, many per boot, surviving hung or crashed guests."""

    config: QemuConfig = field(default_factory=QemuConfig)
    boots: int = 0
    boot_seconds: float = 0.0
    qemu_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def run(self, cases: Sequence[HarnessCase]) -> list[dict[str, Any]]:
        """Return each case's answer, in order (at-case.md "Output" objects)."""
        prepared = [prepare(case, i) for i, case in enumerate(cases)]
        answers: dict[int, dict[str, Any]] = {}
        runnable = []
        for item in prepared:
            if item.skip_reason:
                answers[item.index] = failed_case_answer(item.case, "skipped", item.skip_reason)
            else:
                runnable.append(item)
        elf = build_probe(self.config.cache_dir)
        groups = split_groups(runnable, max(1, self.config.jobs))
        with ThreadPoolExecutor(max_workers=len(groups) or 1) as pool:
            for part in pool.map(lambda group: self.run_group(elf, group), groups):
                answers.update(part)
        return [answers[i] for i in range(len(cases))]

    def run_group(self, elf: Path, group: list[PreparedCase]) -> dict[int, dict[str, Any]]:
        """Run cases in order, restarting QEMU after the case a failure cost."""
        answers: dict[int, dict[str, Any]] = {}
        by_index = {item.index: item for item in group}
        pending = list(group)
        while pending:
            batch = take_batch(pending)
            outcome = self.run_batch(elf, batch)
            for raw in outcome.records:
                answers[raw.index] = case_answer(by_index[raw.index], raw)
            done = len(outcome.records)
            if done < len(batch):
                lost = batch[done]
                answers[lost.index] = self.salvage(elf, lost, outcome.failure or "QEMU stopped")
                done += 1
            pending = pending[done:]
        return answers

    def salvage(self, elf: Path, lost: PreparedCase, failure: str) -> dict[str, Any]:
        """Re-run a lost case prefix by prefix: keep the ops before the one that failed.

        The op that hung or crashed QEMU gets the failure as its outcome; the ops after it
        are not run (their memory would depend on it).
        """
        prefixes = [replace(lost, run=lost.run[:k]) for k in range(1, len(lost.run) + 1)]
        outcome = self.run_batch(elf, prefixes) if len(prefixes) > 1 else BatchOutcome([])
        done = len(outcome.records)
        if done == len(prefixes):
            return case_answer(lost, outcome.records[-1])
        answer = (case_answer(prefixes[done - 1], outcome.records[-1]) if done
                  else failed_case_answer(lost.case, "skipped", "not run"))
        culprit = lost.run[done]
        answer["ops"][culprit] |= failure_outcome(outcome.failure or failure)
        for later in lost.run[done + 1:]:
            answer["ops"][later] |= skipped(f"not run: op {culprit} of this case stopped QEMU")
        return answer

    def run_batch(self, elf: Path, batch: list[PreparedCase]) -> BatchOutcome:
        """Boot QEMU once on a batch of cases and collect the records it wrote."""
        with tempfile.TemporaryDirectory(prefix="s2mmu-qemu-") as work:
            out = Path(work) / "results.bin"
            blob = Path(work) / "cases.bin"
            blob.write_bytes(encode_blob([encode_case(item) for item in batch], str(out)))
            out.touch()
            log = Path(work) / "qemu.log"
            failure = self.watch(qemu_argv(self.config, elf, blob), out, log, batch)
            records = parse_results(out.read_bytes())
            return BatchOutcome(records=records[: len(batch)], failure=failure)

    def watch(self, argv: list[str], out: Path, log: Path,
              batch: list[PreparedCase]) -> str | None:
        """Run QEMU until it exits or its output stalls; return why it failed, if it did."""
        budget = self.config.case_timeout + self.config.op_timeout * max(
            len(item.run) for item in batch)
        started = time.monotonic()
        with log.open("wb") as log_stream:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_stream,
                                    stderr=subprocess.STDOUT)
            size, deadline = 0, started + self.config.boot_timeout
            first = None
            while proc.poll() is None:
                time.sleep(0.005)
                now = time.monotonic()
                grown = out.stat().st_size
                if grown != size:
                    size, deadline = grown, now + budget
                    first = first or now
                elif now > deadline:
                    proc.kill()
                    proc.wait()
                    waited = budget if first else self.config.boot_timeout
                    return f"QEMU made no progress for {waited:.1f} s (guest hung); killed"
        self.note_boot(first, started, time.monotonic() - started)
        if proc.returncode != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            return f"QEMU exited with status {proc.returncode}: {' | '.join(tail)}"
        return None

    def note_boot(self, first: float | None, started: float, seconds: float) -> None:
        """Record one QEMU run: its wall time and the time to its first result."""
        with self._lock:
            self.boots += 1
            self.qemu_seconds += seconds
            if first is not None:
                self.boot_seconds += first - started


def take_batch(pending: list[PreparedCase]) -> list[PreparedCase]:
    """Return the longest prefix of `pending` whose blob fits the probe's region."""
    limit = PROBE_LAYOUT.blob_limit - 4096
    size = 0
    for count, item in enumerate(pending):
        size += 8 * (CASE_HEADER_WORDS + 3 * len(item.prechecks)
                     + 2 * len(item.case.words) + OP_ENTRY_WORDS * len(item.run))
        if size > limit:
            return pending[: max(count, 1)]
    return list(pending)


def split_groups(items: list[PreparedCase], jobs: int) -> list[list[PreparedCase]]:
    """Split cases into at most `jobs` contiguous groups of similar op counts."""
    total = sum(len(item.run) + 1 for item in items)
    groups: list[list[PreparedCase]] = [[]]
    share = total / jobs if jobs else total
    weight = 0
    for item in items:
        if weight >= share * len(groups) and len(groups) < jobs:
            groups.append([])
        groups[-1].append(item)
        weight += len(item.run) + 1
    return [group for group in groups if group]


def guest_seconds(cases: Sequence[HarnessCase], config: QemuConfig | None = None) -> list[float]:
    """Return, per case, the guest time its ops took (CNTPCT_EL0 around the op loop).

    The boot, the probe's set-up and the harness's encoding are outside the interval;
    bench/bench_qemu_at.py divides op counts by it.
    """
    runner = QemuAt(config or QemuConfig())
    prepared = [prepare(case, i) for i, case in enumerate(cases)]
    outcome = runner.run_batch(build_probe(runner.config.cache_dir), prepared)
    if outcome.failure or len(outcome.records) != len(prepared):
        raise HarnessUnavailable(f"timing run failed: {outcome.failure}")
    return [record.guest_seconds for record in outcome.records]


def iter_answers(cases: Sequence[HarnessCase],
                 config: QemuConfig | None = None) -> Iterator[dict[str, Any]]:
    """Yield QEMU's answer to each case."""
    yield from QemuAt(config or QemuConfig()).run(cases)


def run_case_file(obj: Any, config: QemuConfig | None = None) -> dict[str, Any]:
    """Run a case file's JSON value on QEMU and return {"cases": [...]}."""
    from s2mmu.conformance.casefile import parse_cases

    return {"cases": list(iter_answers(parse_cases(obj), config))}
