"""The built-in two-stage demo: a guest's stage-1 tables inside guest memory, a stage 2
beneath them, and a tour of translations, AT results and faults.

Everything is built with the architecture layer only; the page-table library and the
fault path take over in later scenarios.
"""

from __future__ import annotations

from dataclasses import dataclass

from s2mmu.arch.access import AccessDescriptor, acc_gpr, acc_ifetch
from s2mmu.arch.at import AtException, AtOp, ParResult, execute_at
from s2mmu.arch.builder import BumpAllocator, TableBuilder, s1_attrs, s2_attrs
from s2mmu.arch.faults import FaultRecord
from s2mmu.arch.features import qemu_7_2_max
from s2mmu.arch.memory import PhysMem
from s2mmu.arch.params import Granule, get_s2_ttw_params
from s2mmu.arch.registers import TCR_EL1, VTCR_EL2
from s2mmu.arch.state import Regime, SysRegs
from s2mmu.arch.translate import (
    AddressDescriptor,
    Env,
    acc_ttw,
    full_translate,
    s2_translate,
    stage2_lookup,
)
from s2mmu.arch.walk import WalkStep

GUEST_RAM_IPA = 0x4000_0000
GUEST_RAM_PA = 0x8_0000_0000
GUEST_RAM_SIZE = 64 << 20
S2_TABLES_PA = 0x7000_0000
S1_TABLES_IPA = 0x4010_0000
UART_IPA = 0x0900_0000
KERNEL_VA = 0xFFFF_FF80_0000_0000
USER_CODE_VA = 0x40_0000
USER_DATA_VA = 0x60_0000
MMIO_VA = 0xFFFF_FFC0_0000_0000
AF_VA = 0x80_0000
MAIR = 0x00_44_04_FF  # Attr0 Normal WB, Attr1 Device-nGnRE, Attr2 Normal NC


class GuestPhysView:
    """Reads and writes guest-physical addresses through the demo's stage 2 (for building)."""

    def __init__(self, mem: PhysMem, vtcr: int, vttbr: int) -> None:
        self.mem, self.vtcr, self.vttbr = mem, vtcr, vttbr

    def _pa(self, ipa: int) -> int:
        got = stage2_lookup(self.mem, self.vtcr, self.vttbr, ipa)
        if isinstance(got, FaultRecord):
            raise ValueError(f"demo builder: IPA {ipa:#x} is not mapped at stage 2")
        return got.paddress

    def read64(self, pa: int, big_endian: bool = False) -> int:
        return self.mem.read64(self._pa(pa), big_endian)

    def write64(self, pa: int, value: int, big_endian: bool = False) -> None:
        self.mem.write64(self._pa(pa), value, big_endian)


@dataclass(frozen=True)
class DemoMachine:
    """The demo's state: memory, registers and the implementation."""

    env: Env
    regs: SysRegs


def build_demo() -> DemoMachine:
    """Build the demo guest: stage 2 (4K, 40-bit IPA, two concatenated level-1 tables)
    and the guest's stage 1 (4K, 39-bit VA, both TTBRs)."""
    mem = PhysMem()
    vtcr = VTCR_EL2.encode(T0SZ=24, SL0=1, IRGN0=1, ORGN0=1, SH0=3, TG0=0, PS=2, HA=1)
    s2 = TableBuilder(mem, BumpAllocator(S2_TABLES_PA, S2_TABLES_PA + (4 << 20)), Granule.G4K,
                      iasize=40, startlevel=1)
    # Guest RAM: 2MB blocks, except the first 2MB as 4K pages with one read-only page.
    s2.map(GUEST_RAM_IPA, GUEST_RAM_PA, 2 << 20, s2_attrs())
    s2.map(GUEST_RAM_IPA + (2 << 20), GUEST_RAM_PA + (2 << 20), GUEST_RAM_SIZE - (2 << 20),
           s2_attrs(), level=2)
    s2.set_entry(GUEST_RAM_IPA + 0x5000, 3,
                 (GUEST_RAM_PA + 0x5000) | s2_attrs(s2ap=0b01) | 0b11)
    vttbr = (1 << 48) | s2.root
    guest = GuestPhysView(mem, vtcr, vttbr)
    s1 = TableBuilder(guest, BumpAllocator(S1_TABLES_IPA, S1_TABLES_IPA + (1 << 20)),
                      Granule.G4K, iasize=39, startlevel=1)
    s1_hi = TableBuilder(guest, s1.alloc, Granule.G4K, iasize=39, startlevel=1)
    s1.map(USER_CODE_VA, GUEST_RAM_IPA + 0x20_0000, 0x1000, s1_attrs(ro=True, el0=True, pxn=True))
    s1.map(USER_DATA_VA, GUEST_RAM_IPA + 0x5000, 0x1000,
           s1_attrs(el0=True, pxn=True, uxn=True))
    s1.map(AF_VA, GUEST_RAM_IPA + 0x6000, 0x1000, s1_attrs(af=False, pxn=True, uxn=True))
    s1_hi.map(KERNEL_VA, GUEST_RAM_IPA, 4 << 20, s1_attrs(uxn=True), level=2)
    s1_hi.map(MMIO_VA, UART_IPA, 0x1000, s1_attrs(attrindx=1, pxn=True, uxn=True, sh=0))
    tcr = TCR_EL1.encode(T0SZ=25, T1SZ=25, TG0=0, TG1=2, IRGN0=1, ORGN0=1, SH0=3,
                         IRGN1=1, ORGN1=1, SH1=3, IPS=2, HA=1)
    regs = SysRegs(SCTLR_EL1=0x30D00801, TCR_EL1=tcr, MAIR_EL1=MAIR, TTBR0_EL1=s1.root,
                   TTBR1_EL1=s1_hi.root, HCR_EL2=0x80000001, VTCR_EL2=vtcr, VTTBR_EL2=vttbr)
    return DemoMachine(Env(mem, qemu_7_2_max()), regs)


@dataclass(frozen=True)
class Translation:
    """One explained translation of the tour."""

    title: str
    va: int
    access: AccessDescriptor
    result: AddressDescriptor | FaultRecord
    trace: tuple[WalkStep, ...]


@dataclass(frozen=True)
class AtRun:
    """One AT instruction of the tour."""

    title: str
    op: AtOp
    va: int
    el: int
    pan: bool
    result: ParResult | AtException


def translate_tour(m: DemoMachine) -> list[Translation]:
    """Run the demo's guest accesses through both stages, explained."""
    items = [
        ("kernel read of the linear map (2MB blocks at both stages)", KERNEL_VA + 0x21_2345,
         acc_gpr(1, False)),
        ("EL0 instruction fetch of user code", USER_CODE_VA + 0x10, acc_ifetch(0)),
        ("EL0 write to read-only user code: stage-1 permission fault", USER_CODE_VA,
         acc_gpr(0, True)),
        ("kernel write to a page stage 2 maps read-only (dirty logging)", USER_DATA_VA,
         acc_gpr(1, True)),
        ("kernel read with PSTATE.PAN=1 of a user page", USER_DATA_VA, acc_gpr(1, False, pan=True)),
        ("MMIO: the UART's IPA has no stage-2 mapping", MMIO_VA + 0x18, acc_gpr(1, True)),
        ("first touch of a page with AF=0 and TCR_EL1.HA=1: hardware sets AF", AF_VA,
         acc_gpr(1, False)),
    ]
    out = []
    for title, va, access in items:
        trace: list[WalkStep] = []
        result = full_translate(m.regs, Regime.EL10, va, access, m.env, trace=trace)
        out.append(Translation(title, va, access, result, tuple(trace)))
    return out


def at_tour(m: DemoMachine) -> list[AtRun]:
    """Run the demo's AT instructions from EL2 and EL1."""
    runs = [
        ("stage 1 only from EL2: PAR holds the IPA", AtOp.S1E1R, KERNEL_VA, 2, False),
        ("both stages from EL2: PAR holds the PA", AtOp.S12E1R, KERNEL_VA, 2, False),
        ("both stages, write to the read-only stage-2 page", AtOp.S12E1W, USER_DATA_VA, 2, False),
        ("PAN-aware AT S1E1RP with PSTATE.PAN=1 on a user page", AtOp.S1E1RP, USER_DATA_VA,
         2, True),
        ("AT S1E1R from EL1 with PAN=1 ignores PAN", AtOp.S1E1R, USER_DATA_VA, 1, True),
        ("AT S12E1R at EL1 is UNDEFINED", AtOp.S12E1R, KERNEL_VA, 1, False),
    ]
    return [AtRun(t, op, va, el, pan, execute_at(op, va, el, pan, m.regs, m.env))
            for t, op, va, el, pan in runs]


def s1_walk_fault_at_el1(m: DemoMachine) -> AtRun:
    """Unmap at stage 2 the page holding the guest's level-2 table for user code, then run
    AT S1E1R from EL1: the stage-2 fault on the stage-1 walk is taken to EL2.

    The stage-2 entry is restored afterwards.
    """
    trace: list[WalkStep] = []
    full_translate(m.regs, Regime.EL10, USER_CODE_VA, acc_gpr(1, False), m.env, trace=trace)
    table_ipa = next(s.descaddress for s in trace if s.stage == 1 and s.level == 2)
    p2 = get_s2_ttw_params(m.regs, m.env.fs, m.env.choices)
    s2_trace: list[WalkStep] = []
    s2_translate(p2, table_ipa, acc_ttw(acc_gpr(1, False)), m.env, trace=s2_trace)
    s2_entry = s2_trace[-1]
    m.env.mem.write64(s2_entry.paddress, 0)
    result = execute_at(AtOp.S1E1R, USER_CODE_VA, 1, False, m.regs, m.env)
    m.env.mem.write64(s2_entry.paddress, s2_entry.raw)
    return AtRun("AT S1E1R from EL1 after stage 2 unmaps the guest's level-2 table page",
                 AtOp.S1E1R, USER_CODE_VA, 1, False, result)
