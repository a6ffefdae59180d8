"""Test helpers: an L1 guest hypervisor's stage 2 laid out in guest memory."""

from __future__ import annotations

from dataclasses import replace

from s2mmu.arch.builder import BumpAllocator, TableBuilder
from s2mmu.arch.features import FeatureSet, qemu_7_2_max
from s2mmu.arch.memory import PhysMem
from s2mmu.arch.params import Granule
from s2mmu.arch.registers import SCTLR_EL2, VTCR_EL2
from s2mmu.arch.state import SysRegs
from s2mmu.nested.guest import GuestMemory, GuestRegion
from s2mmu.nested.nested import NestedVm

TG0 = {Granule.G4K: 0b00, Granule.G64K: 0b01, Granule.G16K: 0b10}
L1_TABLES = 0x1000_0000
GUEST_TO_HOST = 0x2_0000_0000   # guest PA + this = host PA


def l1_vm(fs: FeatureSet | None = None, ipa_limit: int = 48,
          regions: tuple[GuestRegion, ...] | None = None) -> NestedVm:
    """Return a VM whose guest memory [0, 4GB) sits at host PA 8GB."""
    host = PhysMem()
    regions = regions or (GuestRegion(0, 1 << 32, GUEST_TO_HOST),)
    return NestedVm(fs or qemu_7_2_max(), ipa_limit, host, GuestMemory(host, regions))


def l1_stage2(vm: NestedVm, granule: Granule = Granule.G4K, t0sz: int = 24, sl0: int = 1,
              ps: int = 0b010, big_endian: bool = False, base: int = L1_TABLES
              ) -> tuple[SysRegs, TableBuilder]:
    """Return L1's EL2 registers and a builder for its stage-2 tables in guest memory."""
    from s2mmu.nested.nested import kvm_start_level
    alloc = BumpAllocator(base, base + (64 << 20), granule.size)
    assert isinstance(vm.guest, GuestMemory)
    b = TableBuilder(vm.guest, alloc, granule, 64 - t0sz, kvm_start_level(granule, sl0),
                     big_endian=big_endian)
    return l1_regs(granule, t0sz, sl0, ps, b.root, big_endian), b


def l1_regs(granule: Granule, t0sz: int, sl0: int, ps: int = 0b010, vttbr: int = L1_TABLES,
            big_endian: bool = False) -> SysRegs:
    """Return L1's VTCR_EL2/VTTBR_EL2/SCTLR_EL2 (WB walks, Inner Shareable)."""
    return replace(SysRegs(), VTCR_EL2=VTCR_EL2.encode(T0SZ=t0sz, SL0=sl0, TG0=TG0[granule],
                                                       PS=ps, SH0=3, ORGN0=1, IRGN0=1),
                   VTTBR_EL2=vttbr,
                   SCTLR_EL2=SysRegs().SCTLR_EL2 | (SCTLR_EL2.encode(EE=1) if big_endian else 0))
