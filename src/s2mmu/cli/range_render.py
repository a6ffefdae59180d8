"""`s2mmu translate VA --to END`: a range of addresses through the batch engine, as runs.

One line per run of consecutive addresses that translate alike (the same attributes and
permissions, outputs advancing with the inputs; or the same fault), like the kernel's
ptdump: the answer is s2mmu.arch.batch.translate_batch's, lane for lane the scalar path's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from s2mmu.arch.access import AccessDescriptor
from s2mmu.arch.batch import BatchResult, BatchRun, coalesce, translate_batch
from s2mmu.arch.errors import InputError
from s2mmu.arch.inputs import shorten_hex
from s2mmu.arch.state import Regime, SysRegs
from s2mmu.arch.translate import Env
from s2mmu.cli.arch_json import attrs_json

MAX_LANES = 1 << 22
"""The most addresses one range translates (each costs about 40 bytes of arrays)."""


def range_addresses(start: int, end: int, step: int) -> np.ndarray:
    """Return the addresses start, start+step, ... below end (InputError if none or too many)."""
    if step <= 0 or step >> 64:
        raise InputError(f"--step {shorten_hex(step)}: the step is 1..2^64-1 bytes")
    if end >> 64 and end != 1 << 64:
        raise InputError(f"--to {shorten_hex(end)}: the end is at most 2^64 (exclusive)")
    if end <= start:
        raise InputError(f"--to {end:#x}: the range end must be above the start {start:#x}")
    count = -(-(end - start) // step)
    if count > MAX_LANES:
        raise InputError(f"--to {end:#x} --step {step:#x}: {count} addresses; a range "
                         f"translates at most {MAX_LANES} (take a larger --step)")
    return np.uint64(start) + np.arange(count, dtype=np.uint64) * np.uint64(step)


def translate_range(regs: SysRegs, regime: Regime, vas: np.ndarray, access: AccessDescriptor,
                    env: Env, stage1_only: bool) -> tuple[BatchResult, list[BatchRun]]:
    """Translate every address and coalesce the answers into runs."""
    res = translate_batch(regs, regime, vas, access, env, stage1_only)
    return res, coalesce(vas, res)


S1_NAMES = ("PR", "PW", "PX", "UR", "UW", "UX")
S2_NAMES = ("R", "W", "PX", "UX")


def perm_text(mask: int, names: tuple[str, ...]) -> str:
    """Return the permissions a mask holds, as names joined by '|', or '-'."""
    got = [n for i, n in enumerate(names) if mask >> i & 1]
    return "|".join(got) or "-"


def run_line(run: BatchRun, two_stage: bool) -> str:
    """Return one run as a line: addresses, output or fault, attributes and permissions."""
    span = f"{run.va_first:#x}" if run.count == 1 else f"{run.va_first:#x}..{run.va_last:#x}"
    head = f"  {span:<39} {run.count:>8}  "
    if run.fault is not None:
        where = ("stage 2 on a stage-1 table walk" if run.s2fs1walk else "stage 2"
                 ) if run.secondstage else "stage 1"
        return head + f"{run.fault.value} fault, level {run.level} ({where})"
    assert run.pa_first is not None and run.attrs is not None
    perms = f"S1 {perm_text(run.s1_perms, S1_NAMES)}"
    if two_stage:
        perms += f"  S2 {perm_text(run.s2_perms, S2_NAMES)}"
    return head + f"-> {run.pa_first:#x}  {run.attrs.describe()}  {perms}"


def range_text(title: str, res: BatchResult, runs: list[BatchRun], two_stage: bool) -> str:
    """Return the text report of a range translation."""
    lines = [title, f"  {'addresses':<39} {'count':>8}  answer"]
    lines += [run_line(r, two_stage) for r in runs]
    lines.append(f"{len(res)} addresses in {len(runs)} runs")
    return "\n".join(lines) + "\n"


def run_json(run: BatchRun) -> dict[str, Any]:
    """Return one run of the s2mmu.translate-range/1 document."""
    return {
        "va_first": f"{run.va_first:#x}", "va_last": f"{run.va_last:#x}", "count": run.count,
        "pa_first": None if run.pa_first is None else f"{run.pa_first:#x}",
        "fault": None if run.fault is None else {
            "statuscode": run.fault.value, "level": run.level,
            "secondstage": run.secondstage, "s2fs1walk": run.s2fs1walk},
        "attrs": None if run.attrs is None else attrs_json(run.attrs),
        "s1_perms": [n for i, n in enumerate(S1_NAMES) if run.s1_perms >> i & 1],
        "s2_perms": [n for i, n in enumerate(S2_NAMES) if run.s2_perms >> i & 1],
    }


def range_doc(inp: dict[str, Any], res: BatchResult, runs: list[BatchRun]) -> dict[str, Any]:
    """Return the s2mmu.translate-range/1 document."""
    return {"schema": "s2mmu.translate-range/1", "input": inp, "count": len(res),
            "runs": [run_json(r) for r in runs]}
