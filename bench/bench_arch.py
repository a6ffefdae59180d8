"""Walks per second of the architecture engine (scalar path), printed.

A 4-level stage-1 walk (4KB, 48-bit VA, stage 2 off) and a full two-stage walk
(4-level stage 1 over a 4-level stage 2: 4 stage-1 reads, 5 x 4 stage-2 reads = 24
descriptor reads). Each figure is the median of ROUNDS rounds of process time (the
machine is shared), beside the same walks recording the explain trace (every descriptor
read as a WalkStep, as `s2mmu translate --explain` asks). --json prints one JSON object.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

from s2mmu.arch.access import acc_gpr
from s2mmu.arch.builder import BumpAllocator, TableBuilder, s1_attrs, s2_attrs
from s2mmu.arch.features import qemu_7_2_max
from s2mmu.arch.memory import PhysMem
from s2mmu.arch.params import Granule
from s2mmu.arch.registers import TCR_EL1, VTCR_EL2
from s2mmu.arch.state import Regime, SysRegs
from s2mmu.arch.translate import AddressDescriptor, Env, full_translate

PAGES = 512
ROUNDS = 7


def build(two_stage: bool) -> tuple[SysRegs, Env]:
    """Return registers and memory for 512 mapped 4KB pages, stage 2 identity-offset."""
    mem = PhysMem()
    s1 = TableBuilder(mem, BumpAllocator(0x4000_0000, 0x4100_0000), Granule.G4K, 48, 0)
    s1.map(0x8000_0000, 0x9000_0000, PAGES * 4096, s1_attrs())
    regs = SysRegs(SCTLR_EL1=0x30D00801, MAIR_EL1=0xFF, TTBR0_EL1=s1.root,
                   TCR_EL1=TCR_EL1.encode(T0SZ=16, TG0=0, IPS=5, SH0=3, IRGN0=1, ORGN0=1))
    if two_stage:
        s2 = TableBuilder(mem, BumpAllocator(0x5000_0000, 0x5100_0000), Granule.G4K, 48, 0)
        for base in (0x4000_0000, 0x9000_0000):
            s2.map(base, base, 4 << 20, s2_attrs())
        vtcr = VTCR_EL2.encode(T0SZ=16, SL0=2, TG0=0, PS=5, SH0=3, IRGN0=1, ORGN0=1)
        from dataclasses import replace
        regs = replace(regs, HCR_EL2=0x80000001, VTCR_EL2=vtcr, VTTBR_EL2=s2.root)
    return regs, Env(mem, qemu_7_2_max())


def rate(two_stage: bool, traced: bool = False, seconds: float = 0.25) -> tuple[float, int]:
    """Return (walks per second, descriptor reads per walk): the median of ROUNDS rounds.

    traced: every walk records the explain trace.
    """
    regs, env = build(two_stage)
    acc = acc_gpr(1, False)
    trace: list = []
    full_translate(regs, Regime.EL10, 0x8000_0000, acc, env, trace=trace)
    rates = []
    for _ in range(ROUNDS):
        n, start = 0, time.process_time()
        while time.process_time() - start < seconds:
            for i in range(PAGES):
                r = full_translate(regs, Regime.EL10, 0x8000_0000 + i * 4096, acc, env,
                                   trace=[] if traced else None)
                assert isinstance(r, AddressDescriptor)
            n += PAGES
        rates.append(n / (time.process_time() - start))
    return statistics.median(rates), len(trace)


def main() -> None:
    """Print the walk rates (--json: one JSON object of them)."""
    figures: dict[str, float] = {"load_average": os.getloadavg()[0]}
    lines = [f"scalar walks, median of {ROUNDS} rounds of process time; "
             f"load average {figures['load_average']:.1f}"]
    for two, key, name in ((False, "s1", "stage-1 4-level walk"),
                           (True, "s12", "two-stage walk")):
        per_s, reads = rate(two)
        traced, _ = rate(two, traced=True)
        figures |= {f"scalar_{key}_per_s": per_s, f"scalar_{key}_traced_per_s": traced}
        lines.append(f"  {name:24} {per_s:10,.0f} walks/s  ({reads} descriptor reads per "
                     f"walk; {traced:,.0f}/s recording the explain trace)")
    if "--json" in sys.argv[1:]:
        print(json.dumps({k: round(v, 3) for k, v in figures.items()}))
    else:
        print("\n".join(lines))


if __name__ == "__main__":
    main()
