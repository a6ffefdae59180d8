"""Test helpers: a small machine (memory, registers, features) and table set-ups.

Register values are built from their Arm field names, so a test reads as the
configuration it describes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from s2mmu.arch.access import AccessDescriptor, acc_at, acc_gpr
from s2mmu.arch.at import AtException, AtOp, AtResult, ParResult, execute_at
from s2mmu.arch.builder import BumpAllocator, TableBuilder
from s2mmu.arch.config import DEFAULT_CHOICES, ImplChoices
from s2mmu.arch.faults import FaultRecord
from s2mmu.arch.features import FeatureSet, qemu_7_2_max
from s2mmu.arch.memory import PhysMem
from s2mmu.arch.params import Granule
from s2mmu.arch.registers import HCR_EL2, SCTLR_EL1, TCR_EL1, VTCR_EL2
from s2mmu.arch.state import Regime, SysRegs
from s2mmu.arch.translate import AddressDescriptor, Env, full_translate

TG0 = {Granule.G4K: 0b00, Granule.G64K: 0b01, Granule.G16K: 0b10}
TG1 = {Granule.G4K: 0b10, Granule.G64K: 0b11, Granule.G16K: 0b01}

# Attr0 Normal WB RWA, Attr1 Device-nGnRE, Attr2 Normal NC, Attr3 Device-nGnRnE,
# Attr4 Normal WT RA (non-transient), Attr5 outer NC / inner WB RWA, Attr6 Device-GRE,
# Attr7 Normal WB RWA tagged.
MAIR = 0xF0_0C_4F_AA_00_44_04_FF
ATTR_WB, ATTR_DEV_nGnRE, ATTR_NC, ATTR_DEV_nGnRnE, ATTR_WT, ATTR_ONC_IWB, ATTR_GRE = range(7)

SCTLR_M = SCTLR_EL1.encode(M=1, C=1, I=1) | 0x30D00800
HCR_RW = HCR_EL2.encode(RW=1)


def tcr_el1(txsz: int = 16, granule: Granule = Granule.G4K, ips: int = 0b101,
            t1sz: int | None = None, granule1: Granule | None = None, epd1: int = 0,
            **extra: int) -> int:
    """Return a TCR_EL1 value (both halves alike unless given), WB walks, Inner Shareable."""
    return TCR_EL1.encode(
        T0SZ=txsz, TG0=TG0[granule], SH0=3, ORGN0=1, IRGN0=1,
        T1SZ=txsz if t1sz is None else t1sz, TG1=TG1[granule1 or granule], SH1=3, ORGN1=1,
        IRGN1=1, EPD1=epd1, IPS=ips, **extra)


def vtcr(t0sz: int = 24, sl0: int = 1, granule: Granule = Granule.G4K, ps: int = 0b010,
         **extra: int) -> int:
    """Return a VTCR_EL2 value (WB walks, Inner Shareable)."""
    return VTCR_EL2.encode(T0SZ=t0sz, SL0=sl0, TG0=TG0[granule], SH0=3, ORGN0=1, IRGN0=1,
                           PS=ps, **extra)


@dataclass
class Machine:
    """Memory, registers and features: what an AT instruction or a translation runs on."""

    regs: SysRegs = field(default_factory=SysRegs)
    fs: FeatureSet = field(default_factory=qemu_7_2_max)
    choices: ImplChoices = DEFAULT_CHOICES
    mem: PhysMem = field(default_factory=PhysMem)

    def env(self) -> Env:
        return Env(self.mem, self.fs, self.choices)

    def set(self, **regs: int) -> Machine:
        self.regs = replace(self.regs, **regs)
        return self

    def at(self, op: str, va: int, el: int = 2, pan: bool = False) -> AtResult:
        return execute_at(AtOp.parse(op), va, el, pan, self.regs, self.env())

    def par(self, op: str, va: int, el: int = 2, pan: bool = False) -> int:
        got = self.at(op, va, el, pan)
        assert isinstance(got, ParResult), got
        return got.par

    def exc(self, op: str, va: int, el: int = 1, pan: bool = False) -> AtException:
        got = self.at(op, va, el, pan)
        assert isinstance(got, AtException), got
        return got

    def translate(self, va: int, access: AccessDescriptor | None = None,
                  regime: Regime = Regime.EL10, stage1_only: bool = False
                  ) -> AddressDescriptor | FaultRecord:
        return full_translate(self.regs, regime, va, access or acc_gpr(1, False), self.env(),
                              stage1_only)

    def ok(self, va: int, access: AccessDescriptor | None = None,
           regime: Regime = Regime.EL10) -> AddressDescriptor:
        got = self.translate(va, access, regime)
        assert isinstance(got, AddressDescriptor), got
        return got

    def fault(self, va: int, access: AccessDescriptor | None = None,
              regime: Regime = Regime.EL10) -> FaultRecord:
        got = self.translate(va, access, regime)
        assert isinstance(got, FaultRecord), got
        return got


def s1_machine(granule: Granule = Granule.G4K, txsz: int = 16, ds: bool = False,
               ttb_base: int = 0x1000_0000, big_endian: bool = False,
               fs: FeatureSet | None = None, **tcr: int) -> tuple[Machine, TableBuilder]:
    """Return an EL1&0 machine with the MMU on and an empty TTBR0_EL1 table tree."""
    from s2mmu.arch.params import s1_start_level

    m = Machine(fs=fs or qemu_7_2_max())
    alloc = BumpAllocator(ttb_base, ttb_base + (64 << 20), granule.size)
    b = TableBuilder(m.mem, alloc, granule, 64 - txsz, s1_start_level(granule, txsz), ds=ds,
                     big_endian=big_endian)
    sctlr = SCTLR_M | (SCTLR_EL1.encode(EE=1) if big_endian else 0)
    extra = dict(tcr)
    if ds:
        extra["DS"] = 1
    m.set(SCTLR_EL1=sctlr, MAIR_EL1=MAIR, TTBR0_EL1=b.root | ttb_encode_52(b.root, ds),
          TCR_EL1=tcr_el1(txsz, granule, ips=0b110 if ds else 0b101, epd1=1, **extra))
    return m, b


def ttb_encode_52(base: int, ds: bool) -> int:
    """Return the TTBR bits [5:2] that hold BADDR[51:48] (52-bit forms)."""
    return ((base >> 48) & 0xF) << 2 if base >> 48 else 0


def s2_builder(m: Machine, granule: Granule = Granule.G4K, t0sz: int = 24, sl0: int = 1,
               startlevel: int = 1, base: int = 0x6000_0000, ds: bool = False,
               **vtcr_extra: int) -> TableBuilder:
    """Return a stage-2 table tree and set VTCR_EL2/VTTBR_EL2/HCR_EL2.VM for it."""
    alloc = BumpAllocator(base, base + (64 << 20), granule.size)
    b = TableBuilder(m.mem, alloc, granule, 64 - t0sz, startlevel, ds=ds)
    m.set(VTCR_EL2=vtcr(t0sz, sl0, granule, **vtcr_extra), VTTBR_EL2=b.root,
          HCR_EL2=HCR_RW | HCR_EL2.encode(VM=1))
    return b


def stage1_read(el: int = 1) -> AccessDescriptor:
    return acc_gpr(el, False)


def at_access(el: int, write: bool = False) -> AccessDescriptor:
    return acc_at(el, write)


class OffsetView:
    """Guest-physical memory at a fixed offset from PA (for stage-1 tables behind stage 2)."""

    def __init__(self, mem: PhysMem, delta: int) -> None:
        self.mem, self.delta = mem, delta

    def read64(self, pa: int, big_endian: bool = False) -> int:
        return self.mem.read64(pa + self.delta, big_endian)

    def write64(self, pa: int, value: int, big_endian: bool = False) -> None:
        self.mem.write64(pa + self.delta, value, big_endian)


S1_TABLES_IPA = 0x1000_0000
S1_TABLES_PA = 0x5000_0000
DATA_VA = 0x40_0000_0000
DATA_IPA = 0x8000_0000
DATA_PA = 0x9000_0000


def two_stage(s2_table_attrs: int | None = None, **vtcr_extra: int
              ) -> tuple[Machine, TableBuilder, TableBuilder]:
    """Return an EL1&0 machine with stage 1 (4KB, 48-bit) behind stage 2 (4KB, 40-bit IPA).

    The stage-1 tables are at IPA 0x1000_0000, which stage 2 maps (a 2MB block, attributes
    s2_table_attrs) to PA 0x5000_0000. Nothing else is mapped yet.
    """
    from s2mmu.arch.builder import s2_attrs

    m = Machine()
    s2 = s2_builder(m, Granule.G4K, t0sz=24, sl0=1, startlevel=1, **vtcr_extra)
    s2.map(S1_TABLES_IPA, S1_TABLES_PA, 2 << 20,
           s2_attrs() if s2_table_attrs is None else s2_table_attrs, level=2)
    view = OffsetView(m.mem, S1_TABLES_PA - S1_TABLES_IPA)
    s1 = TableBuilder(view, BumpAllocator(S1_TABLES_IPA, S1_TABLES_IPA + (2 << 20)),
                      Granule.G4K, 48, 0)
    m.set(SCTLR_EL1=SCTLR_M, MAIR_EL1=MAIR, TCR_EL1=tcr_el1(16, epd1=1), TTBR0_EL1=s1.root)
    return m, s1, s2
