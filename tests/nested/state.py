"""Random guest-hypervisor states for AT emulation tests: L1's registers and tables.

Guest memory is the host's at the same addresses (one memslot), so the architecture's
AT on the same registers walks exactly the tables KVM's emulation walks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from hypothesis import strategies as st

from s2mmu.arch.at import AtOp
from s2mmu.arch.builder import BumpAllocator, TableBuilder, s1_attrs, s2_attrs
from s2mmu.arch.features import FeatureSet, qemu_7_2_max
from s2mmu.arch.memory import PhysMem
from s2mmu.arch.params import Granule
from s2mmu.arch.registers import (
    HCR_EL2,
    SCTLR_EL1,
    SCTLR_EL2,
    TCR_EL1,
    TCR_EL2_E2H0,
    VTCR_EL2,
)
from s2mmu.arch.state import SysRegs
from s2mmu.nested.at import AT_CHOICES, CURRENT, AtContext, AtProfile, ShadowS2
from s2mmu.nested.guest import identity_guest
from s2mmu.nested.nested import NestedVm

MAIR = 0xF0_0C_4F_AA_00_44_04_FF
S1_EL1_TABLES, S1_EL2_TABLES, S2_TABLES = 0x1000_0000, 0x1800_0000, 0x2000_0000
CANONICAL_TABLES = 0x3000_0000
VA1, VA2 = 0x40_0000_0000, 0x4000_0000     # EL1&0 / EL2 data VAs
IPA, PA = 0x8000_0000, 0x9000_0000


@dataclass
class L1State:
    """L1's registers and PSTATE.PAN, its VM, and the tables laid out for them."""

    regs: SysRegs
    pan: bool
    vm: NestedVm
    el1: TableBuilder
    el2: TableBuilder
    s2: TableBuilder

    canonical: ShadowS2

    def ctx(self, profile: AtProfile = CURRENT, shadow: bool = True) -> AtContext:
        """Return the AT context: the shadow stage 2 of L2 is L1's own (memory is flat)."""
        l1s2 = ShadowS2(self.regs.VTCR_EL2, self.regs.VTTBR_EL2)
        return AtContext(self.vm, profile, self.canonical, l1s2 if shadow else None)

    def arch_env(self):  # type: ignore[no-untyped-def]
        from s2mmu.arch.translate import Env
        return Env(self.vm.host, self.vm.fs, AT_CHOICES)


def l1_state(fs: FeatureSet | None = None, *, e2h: bool = False, tge: bool = False,
             vm_on: bool = True, pan: bool = False, ha: bool = False, epan: bool = False,
             e0pd: int = 0, fwb: bool = False, cd: bool = False) -> L1State:
    """Return L1 with EL1&0 tables (4KB, 48-bit VA) behind its stage 2, and EL2 tables."""
    fs = fs or qemu_7_2_max().with_features("FEAT_PAN3", "FEAT_ATS1A")
    host = PhysMem()
    vm = NestedVm(fs, 48, host, identity_guest(host))
    s2 = TableBuilder(host, BumpAllocator(S2_TABLES, S2_TABLES + (16 << 20)), Granule.G4K, 40, 1)
    el1 = TableBuilder(host, BumpAllocator(S1_EL1_TABLES, S1_EL1_TABLES + (16 << 20)),
                       Granule.G4K, 48, 0)
    el2 = TableBuilder(host, BumpAllocator(S1_EL2_TABLES, S1_EL2_TABLES + (16 << 20)),
                       Granule.G4K, 48, 0)
    # L1's stage 2 maps its own tables flat and IPA -> PA.
    s2.map(S1_EL1_TABLES, S1_EL1_TABLES, 2 << 20, s2_attrs(), level=2)
    hcr = HCR_EL2.encode(RW=1, VM=int(vm_on), E2H=int(e2h), TGE=int(tge), FWB=int(fwb),
                         CD=int(cd))
    tcr = TCR_EL1.encode(T0SZ=16, TG0=0, SH0=3, ORGN0=1, IRGN0=1, T1SZ=16, TG1=2, EPD1=1,
                         IPS=0b101, HA=int(ha), E0PD0=e0pd)
    sctlr1 = SCTLR_EL1.encode(M=1, C=1, I=1, EPAN=int(epan)) | 0x30D00800
    sctlr2 = SCTLR_EL2.encode(M=1, C=1, I=1) | SysRegs().SCTLR_EL2
    tcr2 = tcr if e2h else TCR_EL2_E2H0.encode(T0SZ=16, TG0=0, SH0=3, ORGN0=1, IRGN0=1,
                                               PS=0b101, HA=int(ha)) | 0x80800000
    sctlr2 |= SCTLR_EL2.encode(EPAN=int(epan))
    regs = replace(SysRegs(), HCR_EL2=hcr, TCR_EL1=tcr, SCTLR_EL1=sctlr1, MAIR_EL1=MAIR,
                   TTBR0_EL1=el1.root, TCR_EL2=tcr2, SCTLR_EL2=sctlr2, MAIR_EL2=MAIR,
                   TTBR0_EL2=el2.root,
                   VTCR_EL2=VTCR_EL2.encode(T0SZ=24, SL0=1, TG0=0, SH0=3, ORGN0=1, IRGN0=1,
                                            PS=0b010),
                   VTTBR_EL2=s2.root)
    return L1State(regs, pan, vm, el1, el2, s2, canonical_stage2(host))


def canonical_stage2(host: PhysMem) -> ShadowS2:
    """Return the VM's own stage 2: guest PA = host PA for the first 16GB (1GB blocks)."""
    b = TableBuilder(host, BumpAllocator(CANONICAL_TABLES, CANONICAL_TABLES + (1 << 20)),
                     Granule.G4K, 40, 1)
    b.map(0, 0, 16 << 30, s2_attrs(), level=1)
    vtcr = VTCR_EL2.encode(T0SZ=24, SL0=1, TG0=0, SH0=3, ORGN0=1, IRGN0=1, PS=0b010)
    return ShadowS2(vtcr, b.root)


AT_OPS = [op for op in AtOp]


@st.composite
def random_l1_state(draw):  # type: ignore[no-untyped-def]
    """Draw an L1 state with one random mapping in each regime's tables."""
    st_ = l1_state(e2h=draw(st.booleans()), tge=draw(st.booleans()), vm_on=draw(st.booleans()),
                   pan=draw(st.booleans()), ha=draw(st.booleans()), epan=draw(st.booleans()),
                   fwb=draw(st.booleans()), cd=draw(st.booleans()))
    for b, va in ((st_.el1, VA1), (st_.el2, VA2)):
        level = draw(st.sampled_from([1, 2, 3]))
        size = Granule.G4K.block_size(level)
        attrs = s1_attrs(attrindx=draw(st.integers(0, 7)), ro=draw(st.booleans()),
                         el0=draw(st.booleans()), pxn=draw(st.booleans()),
                         uxn=draw(st.booleans()), af=draw(st.booleans()),
                         sh=draw(st.sampled_from([0, 2, 3])))
        b.map(va // size * size, IPA // size * size, size, attrs, level=level)
    s2level = draw(st.sampled_from([2, 3]))
    size = Granule.G4K.block_size(s2level)
    st_.s2.map(IPA // size * size, PA // size * size, size,
               s2_attrs(memattr=draw(st.integers(0, 15)), s2ap=draw(st.integers(0, 3)),
                        af=draw(st.booleans()), sh=draw(st.sampled_from([0, 2, 3]))),
               level=s2level)
    if draw(st.booleans()):   # the stage-1 tables' own stage-2 mapping may be restricted
        st_.s2.set_entry(S1_EL1_TABLES, 2, S1_EL1_TABLES | s2_attrs(
            s2ap=draw(st.integers(0, 3)), af=draw(st.booleans())) | 1)
    return st_
