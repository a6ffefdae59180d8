"""QEMU 7.2's own AT throughput in a tight loop (walks per second, boot subtracted).

The reference every later speed figure is read against, measured on the same machine:
the probe executes N AT instructions back to back in one QEMU process (TCG, -cpu max)
and reads the generic timer (CNTPCT_EL0) before the first and after the last, so boot,
probe set-up and the harness's encoding are outside the measured interval. Each op also
costs the probe's loop (and at EL2 an eret and an SMC), which is part of the figure.
Wall time per QEMU process, boot included, is printed for reference. The same cases
run on the model (s2mmu.arch.atcase.run_case) are printed next to it: the model's figures
are medians of MODEL_ROUNDS rounds of process time (the machine is shared).

Shapes, as in bench_arch.py: a 4-level stage-1 walk (4KB, 48-bit VA, stage 2 off), and
a full two-stage walk (4-level stage 1 over a 4-level stage 2: 24 descriptor reads).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from s2mmu.arch import atcase
from s2mmu.arch.at import execute_at
from s2mmu.arch.batch import at_batch
from s2mmu.arch.features import qemu_7_2_max
from s2mmu.arch.translate import Env
from s2mmu.conformance.casefile import parse_cases
from s2mmu.conformance.qemu import QemuAt, QemuConfig, build_probe, guest_seconds
from s2mmu.conformance.tables import Image, Shape, TableTree

N = 100_000
PAGES = 512
REPEATS = 3
MODEL_ROUNDS = 5
NORMAL_WB_RW = 0b11 << 8 | 1 << 10


def allocator(start: int) -> Callable[[int, int], int]:
    """Return a bump allocator from `start`."""
    state = [start]

    def alloc(size: int, align: int) -> int:
        state[0] = -(-state[0] // align) * align + size
        return state[0] - size
    return alloc


def stage1_case(el: str, op: str = "S1E1R") -> dict[str, Any]:
    """Return a case: 512 pages mapped by a 4-level 4KB stage 1, N ops cycling over them."""
    image = Image()
    tree = TableTree(Shape(stage=1, granule=12, ia_bits=48, start_level=0), image,
                     allocator(0x5000_0000))
    for page in range(PAGES):
        tree.map(0x8000_0000 + page * 4096, 3, 0x9000_0000 + page * 4096, NORMAL_WB_RW)
    tcr = 16 | 1 << 23 | 2 << 30 | 5 << 32 | 0b11 << 12 | 0b0101 << 8
    return {"name": "bench-s1", "el": el, "memory": image.memory_entries(),
            "regs": {"SCTLR_EL1": "0x30d00801", "TCR_EL1": hex(tcr), "MAIR_EL1": "0xff",
                     "TTBR0_EL1": hex(tree.root)},
            "ops": [[op, hex(0x8000_0000 + (i % PAGES) * 4096 + 8 * (i % 512))]
                    for i in range(N)]}


def two_stage_case(el: str) -> dict[str, Any]:
    """Return the stage-1 case over a 4-level 4KB stage 2 (48-bit IPA), ops S12E1R."""
    case = stage1_case(el, "S12E1R")
    image = Image()
    s2 = TableTree(Shape(stage=2, granule=12, ia_bits=48, start_level=0), image,
                   allocator(0x6000_0000))
    s2.map(0x4000_0000, 1, 0x4000_0000, 0xF << 2 | 0b11 << 6 | NORMAL_WB_RW)
    s2.map(0x8000_0000, 1, 0x1_0000_0000, 0xF << 2 | 0b11 << 6 | NORMAL_WB_RW)
    vtcr = 0x80000000 | 16 | 2 << 6 | 5 << 16 | 0b11 << 12 | 0b0101 << 8
    case["memory"] += image.memory_entries()
    case["regs"] |= {"HCR_EL2": "0x80000001", "VTCR_EL2": hex(vtcr), "VTTBR_EL2": hex(s2.root)}
    case["name"] = "bench-s12"
    return case


def qemu_rate(case: dict[str, Any]) -> tuple[float, float]:
    """Return (best walks per second in guest time, QEMU wall seconds of that run)."""
    parsed = parse_cases(case)
    best, wall = 0.0, 0.0
    for _ in range(REPEATS):
        runner = QemuAt(QemuConfig(jobs=1))
        (seconds,) = guest_seconds(parsed)
        if N / seconds > best:
            best, wall = N / seconds, runner.qemu_seconds
    return best, wall


def model_rate(case: dict[str, Any], ops: int = 2_000) -> float:
    """Return the model's scalar AT ops per second on the same case (first `ops` ops)."""
    (parsed,) = atcase.parse_cases(dict(case, ops=case["ops"][:ops]))
    times = []
    for _ in range(MODEL_ROUNDS):
        env = Env(atcase.load_memory(parsed), qemu_7_2_max())
        started = time.process_time()
        for spec in parsed.ops:
            execute_at(spec.op, spec.va, spec.el, spec.pan, parsed.regs, env)
        times.append(time.process_time() - started)
    return ops / statistics.median(times)


def batch_rate(case: dict[str, Any]) -> tuple[float, float]:
    """Return the batch engine's AT ops per second on all N ops of the case.

    First the engine itself (s2mmu.arch.batch.at_batch on an array of the N addresses),
    then the AT-case path that `s2mmu at` and the harness take (run_case_outcomes: the
    same engine plus grouping the ops and building the answers).
    """
    (parsed,) = atcase.parse_cases(case)
    spec = parsed.ops[0]
    vas = np.array([o.va for o in parsed.ops], dtype=np.uint64)
    engine, whole = [], []
    for _ in range(MODEL_ROUNDS):
        env = Env(atcase.load_memory(parsed), qemu_7_2_max())
        started = time.process_time()
        at_batch(spec.op, vas, spec.el, spec.pan, parsed.regs, env)
        engine.append(time.process_time() - started)
        started = time.process_time()
        outcomes, _, _ = atcase.run_case_outcomes(parsed)
        whole.append(time.process_time() - started)
    assert len(outcomes) == N
    return N / statistics.median(engine), N / statistics.median(whole)


def boot_seconds() -> float:
    """Return the best time from starting QEMU to the first result of a one-op case."""
    best = float("inf")
    for _ in range(REPEATS):
        runner = QemuAt(QemuConfig(jobs=1))
        runner.run(parse_cases({"name": "boot", "ops": [["S1E1R", "0x0"]]}))
        best = min(best, runner.boot_seconds)
    return best


def main() -> None:
    """Print QEMU's and the model's AT walks per second for each shape (--json: one object)."""
    as_json = "--json" in sys.argv[1:]
    build_probe()
    shapes = [
        ("s1", "4-level stage 1 (S1E1R at EL3)", stage1_case("EL3")),
        ("s1_el2", "4-level stage 1 (S1E1R at EL2, eret per op)", stage1_case("EL2")),
        ("s12", "two-stage 4+4 levels, 24 reads (S12E1R at EL3)", two_stage_case("EL3")),
    ]
    figures: dict[str, float] = {}
    lines = [f"QEMU 7.2 AT throughput, TCG -cpu max, {N} ops per run, best of {REPEATS}; "
             f"the model's: median of {MODEL_ROUNDS} rounds of process time; "
             f"load average {os.getloadavg()[0]:.1f}"]
    for key, title, case in shapes:
        rate, _ = qemu_rate(case)
        scalar, (batch, via_case) = model_rate(case), batch_rate(case)
        figures |= {f"qemu_{key}_per_s": rate, f"scalar_{key}_per_s": scalar,
                    f"batch_{key}_per_s": batch, f"batch_case_{key}_per_s": via_case}
        lines.append(f"  {title:<48} QEMU {rate:>10,.0f}   s2mmu batch {batch:>10,.0f} "
                     f"({via_case:>9,.0f} as a case)   scalar {scalar:>8,.0f} walks/s")
    figures["boot_s"] = boot_seconds()
    figures["load_average"] = os.getloadavg()[0]
    lines.append(f"  boot (QEMU start to first result): {figures['boot_s']:.3f} s")
    if as_json:
        print(json.dumps({k: round(v, 3) for k, v in figures.items()}))
    else:
        print("\n".join(lines))


if __name__ == "__main__":
    main()
