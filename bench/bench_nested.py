"""Emulated AT instructions per second: KVM's fast path and slow path, printed.

A guest hypervisor (L1, at virtual EL2) with a 4-level EL1&0 stage 1 (4KB, 48-bit VA)
behind its own 3-level stage 2 (40-bit IPA); guest memory is flat over host memory.
Fast path: the architectural AT on the shadow state (the stage-1 walk's 4 reads each
through a 3-level shadow stage 2). Slow path: KVM's software walk, each stage-1
descriptor address through kvm_walk_nested_s2 and read as guest memory.
"""

from __future__ import annotations

import time
from dataclasses import replace

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


def main() -> None:
    fast, slow, regs = build()
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < 1.0:
        for i in range(PAGES):
            kvm_walk_nested_s2(fast.vm, regs, IPA + i * 4096)
        n += PAGES
    print(f"kvm_walk_nested_s2 (3 levels):       {n / (time.perf_counter() - t0):10.0f} /s")
    print(f"AT S1E1R, fast path (shadow S2):     {rate(fast, regs, AtOp.S1E1R, 'fast'):10.0f} /s")
    print(f"AT S1E1R, slow path (software walk): {rate(slow, regs, AtOp.S1E1R, 'slow'):10.0f} /s")
    print(f"AT S12E1R, fast stage 1 + S2 walk:   {rate(fast, regs, AtOp.S12E1R, 'fast'):10.0f} /s")
    print(f"AT S12E1R, slow stage 1 + S2 walk:   {rate(slow, regs, AtOp.S12E1R, 'slow'):10.0f} /s")


if __name__ == "__main__":
    main()
