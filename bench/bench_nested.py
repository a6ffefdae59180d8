"""Emulated AT instructions per second: KVM's fast path and slow path, printed.

A guest hypervisor (L1, at virtual EL2) with a 4-level EL1&0 stage 1 (4KB, 48-bit VA)
behind its own 3-level stage 2 (40-bit IPA); guest memory is flat over host memory.
Fast path: the architectural AT on the shadow state (the stage-1 walk's 4 reads each
through a 3-level shadow stage 2). Slow path: KVM's software walk, each stage-1
descriptor address through kvm_walk_nested_s2 and read as guest memory.

Usage: python3 bench/bench_nested.py [--json] [--seconds S] (S per figure, default 1).
--json prints one s2mmu.bench-nested/1 document (schema in src/s2mmu/cli/schemas).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from typing import Any

from s2mmu.arch.at import AtOp
from s2mmu.arch.builder import BumpAllocator, TableBuilder, s1_attrs, s2_attrs
from s2mmu.arch.features import qemu_7_2_max
from s2mmu.arch.memory import PhysMem
from s2mmu.arch.params import Granule
from s2mmu.arch.registers import HCR_EL2, SCTLR_EL1, TCR_EL1, VTCR_EL2
from s2mmu.arch.state import SysRegs
from s2mmu.nested.at import CURRENT, AtContext, ShadowS2, kvm_at
from s2mmu.nested.guest import identity_guest
from s2mmu.nested.nested import NestedVm, kvm_walk_nested_s2

PAGES = 512
VA, IPA, PA = 0x40_0000_0000, 0x8000_0000, 0x9000_0000


def build() -> tuple[AtContext, AtContext, SysRegs]:
    """Return fast-path and slow-only contexts and L1's registers, 512 pages mapped."""
    host = PhysMem()
    vm = NestedVm(qemu_7_2_max(), 48, host, identity_guest(host, 1 << 44))
    s1 = TableBuilder(host, BumpAllocator(0x1000_0000, 0x1100_0000), Granule.G4K, 48, 0)
    s2 = TableBuilder(host, BumpAllocator(0x2000_0000, 0x2100_0000), Granule.G4K, 40, 1)
    s1.map(VA, IPA, PAGES * 4096, s1_attrs())
    s2.map(0x1000_0000, 0x1000_0000, 2 << 20, s2_attrs(), level=2)
    s2.map(IPA, PA, PAGES * 4096, s2_attrs())
    vtcr = VTCR_EL2.encode(T0SZ=24, SL0=1, TG0=0, PS=2, SH0=3, IRGN0=1, ORGN0=1)
    regs = replace(SysRegs(), HCR_EL2=HCR_EL2.encode(RW=1, VM=1), MAIR_EL1=0xFF,
                   SCTLR_EL1=SCTLR_EL1.encode(M=1, C=1, I=1) | 0x30D00800,
                   TCR_EL1=TCR_EL1.encode(T0SZ=16, TG0=0, IPS=5, SH0=3, IRGN0=1, ORGN0=1,
                                          EPD1=1),
                   TTBR0_EL1=s1.root, VTCR_EL2=vtcr, VTTBR_EL2=s2.root)
    l1s2 = ShadowS2(vtcr, s2.root)
    return AtContext(vm, CURRENT, l1s2, l1s2), AtContext(vm, CURRENT, l1s2, None), regs


def rate(ctx: AtContext, regs: SysRegs, op: AtOp, want: str, seconds: float = 1.0) -> float:
    """Return emulated AT instructions per second over the mapped pages."""
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for i in range(PAGES):
            got = kvm_at(ctx, regs, False, op, VA + i * 4096)
            assert got.path == want and not got.par & 1, got
        n += PAGES
    return n / (time.perf_counter() - start)


def walk_rate(ctx: AtContext, regs: SysRegs, seconds: float) -> float:
    """Return kvm_walk_nested_s2 calls per second over the mapped pages."""
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        for i in range(PAGES):
            kvm_walk_nested_s2(ctx.vm, regs, IPA + i * 4096)
        n += PAGES
    return n / (time.perf_counter() - t0)


FIGURES = (
    ("kvm_walk_nested_s2", "kvm_walk_nested_s2 (3 levels)", None, None, None),
    ("at_s1e1r_fast", "AT S1E1R, fast path (shadow S2)", True, AtOp.S1E1R, "fast"),
    ("at_s1e1r_slow", "AT S1E1R, slow path (software walk)", False, AtOp.S1E1R, "slow"),
    ("at_s12e1r_fast", "AT S12E1R, fast stage 1 + S2 walk", True, AtOp.S12E1R, "fast"),
    ("at_s12e1r_slow", "AT S12E1R, slow stage 1 + S2 walk", False, AtOp.S12E1R, "slow"),
)
"""Each figure: JSON key, text label, fast context?, AT op, the path it must take."""


def measure(seconds: float) -> dict[str, float]:
    """Return every figure, per second, each measured for about `seconds`."""
    fast, slow, regs = build()
    out = {}
    for key, _, use_fast, op, path in FIGURES:
        ctx = fast if use_fast is not False else slow
        if op is None or path is None:
            out[key] = walk_rate(ctx, regs, seconds)
        else:
            out[key] = rate(ctx, regs, op, path, seconds)
    return out


def bench_doc(figures: dict[str, float], seconds: float) -> dict[str, Any]:
    """Return the s2mmu.bench-nested/1 document."""
    return {"schema": "s2mmu.bench-nested/1", "at_profile": CURRENT.name, "pages": PAGES,
            "seconds_per_figure": seconds,
            "per_second": {k: round(v, 1) for k, v in figures.items()}}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one s2mmu.bench-nested/1 document")
    ap.add_argument("--seconds", type=float, default=1.0, help="time per figure (default 1)")
    args = ap.parse_args(argv)
    figures = measure(args.seconds)
    if args.json:
        print(json.dumps(bench_doc(figures, args.seconds)))
        return
    for key, label, *_ in FIGURES:
        print(f"{label + ':':36} {figures[key]:10.0f} /s")


if __name__ == "__main__":
    main()
