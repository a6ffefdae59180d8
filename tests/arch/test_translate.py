"""Stage-1, stage-2 and two-stage translation, rule by rule (Arm ARM D8, ASL S1/S2Translate)."""

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s2mmu.arch.access import AccessDescriptor, AccessType, acc_at, acc_gpr, acc_ifetch
from s2mmu.arch.attrs import Cacheability, DeviceType, MemType, Shareability
from s2mmu.arch.builder import BumpAllocator, TableBuilder, s1_attrs, s2_attrs
from s2mmu.arch.config import ImplChoices
from s2mmu.arch.descriptors import block_desc_supported
from s2mmu.arch.faults import Fault, FaultRecord
from s2mmu.arch.features import FeatureSet, qemu_7_2_max, server_v8_2
from s2mmu.arch.memory import MemoryWrite
from s2mmu.arch.params import Granule, s1_start_level
from s2mmu.arch.registers import HCR_EL2, SCTLR_EL1, SCTLR_EL2, TCR_EL1
from s2mmu.arch.state import Regime
from s2mmu.arch.translate import AddressDescriptor, full_translate, stage2_lookup

from .machine import (
    DATA_IPA,
    DATA_PA,
    DATA_VA,
    HCR_RW,
    MAIR,
    S1_TABLES_IPA,
    S1_TABLES_PA,
    SCTLR_M,
    Machine,
    OffsetView,
    s1_machine,
    s2_builder,
    tcr_el1,
    two_stage,
    vtcr,
)

G4, G16, G64 = Granule.G4K, Granule.G16K, Granule.G64K
READ, WRITE = acc_gpr(1, False), acc_gpr(1, True)
EL0_READ = acc_gpr(0, False)
VA = 0x0000_0080_4020_1000     # L0 1, L1 1, L2 1, L3 1 with 4KB


# ---------------------------------------------------------------- ranges, TBI, EPD, E0PD

def both_halves():
    m, lo = s1_machine(G4, 16)
    hi = TableBuilder(m.mem, BumpAllocator(0x2000_0000, 0x2100_0000), G4, 39, 1)
    m.set(TTBR1_EL1=hi.root, TCR_EL1=tcr_el1(16, G4, t1sz=25))
    lo.map(VA, 0x9000_0000, 0x1000, s1_attrs())
    hi.map(0xFFFF_FF80_0000_0000, 0xA000_0000, 0x1000, s1_attrs())
    return m


def test_va_bit55_clear_walks_ttbr0():
    assert both_halves().ok(VA + 0x123).paddress == 0x9000_0123


def test_va_bit55_set_walks_ttbr1():
    # T1SZ=25: the upper range is 0xFFFF_FF80_0000_0000 and up; IA[38:30] = 0 there.
    assert both_halves().ok(0xFFFF_FF80_0000_0456).paddress == 0xA000_0456


def test_va_above_ttbr0_range_is_translation_fault_level_0():
    f = both_halves().fault(0x0001_0000_0000_0000)
    assert (f.statuscode, f.level, f.secondstage) == (Fault.TRANSLATION, 0, False)


def test_va_in_hole_below_ttbr1_range_is_translation_fault_level_0():
    # Bit 55 set selects TTBR1, but bits [63:39] are not all ones.
    f = both_halves().fault(0xFFFF_FF7F_FFFF_F000)
    assert (f.statuscode, f.level) == (Fault.TRANSLATION, 0)


def test_tbi_ignores_the_top_byte():
    m, b = s1_machine(G4, 16, TBI0=1)
    b.map(VA, 0x9000_0000, 0x1000, s1_attrs())
    assert m.ok(0xAB00_0000_0000_0000 | VA).paddress == 0x9000_0000


def test_without_tbi_a_tagged_va_is_out_of_range():
    m, b = s1_machine(G4, 16)
    b.map(VA, 0x9000_0000, 0x1000, s1_attrs())
    assert m.fault(0xAB00_0000_0000_0000 | VA).level == 0


def test_tbid_keeps_instruction_fetch_tag_checked():
    m, b = s1_machine(G4, 16, TBI0=1, TBID0=1)
    b.map(VA, 0x9000_0000, 0x1000, s1_attrs())
    assert m.ok(0xAB00_0000_0000_0000 | VA).paddress == 0x9000_0000
    f = m.fault(0xAB00_0000_0000_0000 | VA, acc_ifetch(1))
    assert (f.statuscode, f.level) == (Fault.TRANSLATION, 0)


def test_epd0_disables_ttbr0_walks():
    m, b = s1_machine(G4, 16, EPD0=1)
    b.map(VA, 0x9000_0000, 0x1000, s1_attrs())
    f = m.fault(VA)
    assert (f.statuscode, f.level) == (Fault.TRANSLATION, 0)
    assert "EPD0=1" in f.reason


def test_epd1_disables_ttbr1_walks():
    m = both_halves()
    m.set(TCR_EL1=m.regs.TCR_EL1 | TCR_EL1.encode(EPD1=1))
    assert m.fault(0xFFFF_FF80_0000_0000).level == 0
    assert m.ok(VA).paddress == 0x9000_0000


def test_e0pd_faults_el0_accesses_only():
    m, b = s1_machine(G4, 16, E0PD0=1)
    b.map(VA, 0x9000_0000, 0x1000, s1_attrs(el0=True))
    f = m.fault(VA, EL0_READ)
    assert (f.statuscode, f.level) == (Fault.TRANSLATION, 0)
    assert m.ok(VA, READ).paddress == 0x9000_0000


def test_e0pd_needs_feat_e0pd():
    m, b = s1_machine(G4, 16, fs=qemu_7_2_max().with_features(remove=("FEAT_E0PD",)), E0PD0=1)
    b.map(VA, 0x9000_0000, 0x1000, s1_attrs(el0=True))
    assert m.ok(VA, EL0_READ).paddress == 0x9000_0000


def test_txsz_below_minimum_faults():
    m, _ = s1_machine(G4, 16)
    m.set(TCR_EL1=tcr_el1(10, G4, epd1=1))
    f = m.fault(0)
    assert (f.statuscode, f.level) == (Fault.TRANSLATION, 0)


def test_txsz_above_maximum_faults_or_clamps_by_choice():
    m, b = s1_machine(G4, 48)          # 16-bit VA space, start level 3
    b.map(0x3000, 0x9000_0000, 0x1000, s1_attrs())
    m.set(TCR_EL1=tcr_el1(50, G4, epd1=1))
    assert m.fault(0x3000).level == 0
    m.choices = ImplChoices(txsz_out_of_range="clamp")
    assert m.ok(0x3000).paddress == 0x9000_0000


# ---------------------------------------------------------------- blocks, levels, 52-bit

@pytest.mark.parametrize(("granule", "txsz", "level", "ds"), [
    (G4, 16, 1, False), (G4, 16, 2, False), (G4, 12, 0, True), (G4, 12, 1, True),
    (G16, 16, 2, False), (G16, 12, 1, True), (G64, 16, 2, False), (G64, 12, 1, False),
])
def test_block_at_every_legal_level(granule, txsz, level, ds):
    m, b = s1_machine(granule, txsz, ds=ds)
    size = granule.block_size(level)
    va, pa = 2 * size, 5 * size
    # With DS, descriptor bits [9:8] are OA[51:50], not SH.
    b.map(va, pa, size, s1_attrs(sh=0 if ds else 3), level=level)
    got = m.ok(va + size - 8)
    assert got.paddress == pa + size - 8
    assert got.s1 is not None and got.s1.level == level


@pytest.mark.parametrize(("granule", "txsz", "level", "fs"), [
    (G4, 16, 0, qemu_7_2_max()),                      # 4KB level 0 needs DS
    (G16, 16, 1, qemu_7_2_max()),                     # 16KB level 1 needs DS
    (G64, 16, 1, server_v8_2()),                      # 64KB level 1 needs PAMax 52
])
def test_block_at_unsupported_level_is_translation_fault(granule, txsz, level, fs):
    m, b = s1_machine(granule, txsz, fs=fs)
    size = granule.block_size(level)
    b.map(0, 0, size, s1_attrs(), level=level)
    f = m.fault(0x1000)
    assert (f.statuscode, f.level) == (Fault.TRANSLATION, level)


def test_level3_block_encoding_is_translation_fault():
    m, b = s1_machine(G4, 16)
    b.map(VA, 0x9000_0000, 0x1000, s1_attrs())
    b.set_entry(VA, 3, 0x9000_0000 | s1_attrs() | 0b01)
    assert (m.fault(VA).statuscode, m.fault(VA).level) == (Fault.TRANSLATION, 3)


def test_level_minus_1_walk_with_52_bit_output():
    m, b = s1_machine(G4, 12, ds=True)
    va = (0xA << 48) | VA
    pa = 0xE_0000_9000_0000           # OA[51:50] in bits [9:8], OA[49:48] in bits [49:48]
    b.map(va, pa, 0x1000, s1_attrs(sh=0))
    got = m.ok(va + 0x10)
    assert got.paddress == pa + 0x10
    assert got.s1 is not None and [s.level for s in got.s1.steps] == [-1, 0, 1, 2, 3]


def test_level_minus_1_fault_is_reported_at_level_minus_1():
    m, b = s1_machine(G4, 12, ds=True)
    f = m.fault(0xF << 48)
    assert (f.statuscode, f.level) == (Fault.TRANSLATION, -1)


def test_64k_lpa_52_bit_output():
    m, b = s1_machine(G64, 12)
    m.set(TCR_EL1=tcr_el1(12, G64, ips=0b110, epd1=1))
    b.map(0x8_0000_0000_0000, 0xF_0000_0000_0000, 0x10000, s1_attrs())
    assert m.ok(0x8_0000_0000_1234).paddress == 0xF_0000_0000_1234


def test_contiguous_bit_is_ignored_for_consistent_ranges():
    m, b = s1_machine(G4, 16)
    b.map(VA, 0x9000_0000, 0x10000, s1_attrs() | (1 << 52))
    for off in (0, 0x5000, 0xF000):
        assert m.ok(VA + off + 8).paddress == 0x9000_0000 + off + 8


# ---------------------------------------------------------------- address size faults

def test_ttbr_beyond_ips_is_address_size_fault_level_0():
    m, b = s1_machine(G4, 25, ttb_base=0x1_0000_0000)   # start level 1
    m.set(TCR_EL1=tcr_el1(25, G4, ips=0b000, epd1=1))   # 32-bit output
    f = m.fault(0)
    assert (f.statuscode, f.level) == (Fault.ADDRESS_SIZE, 0)


def test_table_address_beyond_ips_is_address_size_fault_at_that_level():
    m, b = s1_machine(G4, 16)
    m.set(TCR_EL1=tcr_el1(16, G4, ips=0b000, epd1=1))
    b.map(VA, 0x9000_0000, 0x1000, s1_attrs())
    b.set_entry(VA, 1, 0x1_2000_0000 | 0b11)
    f = m.fault(VA)
    assert (f.statuscode, f.level) == (Fault.ADDRESS_SIZE, 1)


def test_output_address_beyond_ips_is_address_size_fault_at_the_leaf():
    m, b = s1_machine(G4, 16)
    m.set(TCR_EL1=tcr_el1(16, G4, ips=0b010, epd1=1))    # 40 bits
    b.map(VA, 0x100_0000_0000, 0x1000, s1_attrs())
    f = m.fault(VA)
    assert (f.statuscode, f.level) == (Fault.ADDRESS_SIZE, 3)


def test_ds_ttbr_bits_51_48_fault_when_ips_is_48():
    m, b = s1_machine(G4, 16, ds=True)
    m.set(TCR_EL1=tcr_el1(16, G4, ips=0b101, epd1=1, DS=1), TTBR0_EL1=b.root | (1 << 2))
    f = m.fault(0)
    assert (f.statuscode, f.level) == (Fault.ADDRESS_SIZE, 0)


def test_ds_descriptor_bits_9_8_are_output_address_bits():
    m, b = s1_machine(G4, 16, ds=True)
    m.set(TCR_EL1=tcr_el1(16, G4, ips=0b101, epd1=1, DS=1))
    b.map(VA, 0x9000_0000, 0x1000, s1_attrs(sh=0))
    b.set_entry(VA, 3, 0x9000_0000 | s1_attrs(sh=0) | (0b01 << 8) | 0b11)
    f = m.fault(VA)
    assert (f.statuscode, f.level) == (Fault.ADDRESS_SIZE, 3)


def test_64k_lpa_descriptor_bits_15_12_fault_when_ps_is_48():
    m, b = s1_machine(G64, 16)
    b.map(0x10000, 0x9000_0000, 0x10000, s1_attrs())
    b.set_entry(0x10000, 3, 0x9000_0000 | (0x1 << 12) | s1_attrs() | 0b11)
    f = m.fault(0x10000)
    assert (f.statuscode, f.level) == (Fault.ADDRESS_SIZE, 3)


# ---------------------------------------------------------------- access flag, dirty state

def test_af_zero_without_ha_is_access_flag_fault_at_leaf():
    m, b = s1_machine(G4, 16)
    b.map(0x80_4020_0000, 0x9000_0000, 0x200000, s1_attrs(af=False), level=2)
    f = m.fault(VA)
    assert (f.statuscode, f.level) == (Fault.ACCESS_FLAG, 2)


def test_af_fault_beats_permission_fault():
    m, b = s1_machine(G4, 16)
    b.map(VA, 0x9000_0000, 0x1000, s1_attrs(af=False, ro=True))
    assert m.fault(VA, WRITE).statuscode is Fault.ACCESS_FLAG


def test_ha_sets_af_in_memory():
    m, b = s1_machine(G4, 16, HA=1)
    b.map(VA, 0x9000_0000, 0x1000, s1_attrs(af=False))
    entry = b.set_entry(VA, 3, 0x9000_0000 | s1_attrs(af=False) | 0b11)
    old = 0x9000_0000 | s1_attrs(af=False) | 0b11
    assert m.ok(VA).paddress == 0x9000_0000
    assert m.mem.hw_writes == [MemoryWrite(entry, old, old | (1 << 10))]


def test_hd_write_to_dbm_page_clears_ap2():
    m, b = s1_machine(G4, 16, HA=1, HD=1)
    desc = 0x9000_0000 | s1_attrs(ro=True, dbm=True) | 0b11
    b.map(VA, 0x9000_0000, 0x1000, s1_attrs())
    entry = b.set_entry(VA, 3, desc)
    m.ok(VA, READ)
    assert m.mem.hw_writes == []
    m.ok(VA, WRITE)
    assert m.mem.hw_writes == [MemoryWrite(entry, desc, desc & ~(1 << 7))]


def test_dbm_without_hd_is_permission_fault():
    m, b = s1_machine(G4, 16, HA=1)
    b.map(VA, 0x9000_0000, 0x1000, s1_attrs(ro=True, dbm=True))
    f = m.fault(VA, WRITE)
    assert (f.statuscode, f.level, f.write) == (Fault.PERMISSION, 3, True)


def test_permission_fault_sets_no_af_unless_chosen():
    for choice in (False, True):
        m, b = s1_machine(G4, 16, HA=1)
        m.choices = ImplChoices(af_update_on_permission_fault=choice)
        b.map(VA, 0x9000_0000, 0x1000, s1_attrs(af=False, ro=True))
        assert m.fault(VA, WRITE).statuscode is Fault.PERMISSION
        assert len(m.mem.hw_writes) == int(choice)


# ---------------------------------------------------------------- endianness, MMU off

def test_big_endian_tables_with_sctlr_ee():
    m, b = s1_machine(G4, 16, big_endian=True)
    b.map(VA, 0x9000_0000, 0x1000, s1_attrs())
    assert m.ok(VA).paddress == 0x9000_0000
    m.set(SCTLR_EL1=SCTLR_M)                      # EE=0 reads the bytes little-endian
    assert m.fault(VA).statuscode is Fault.TRANSLATION


def test_big_endian_hardware_update_writes_big_endian():
    m, b = s1_machine(G4, 16, big_endian=True, HA=1)
    b.map(VA, 0x9000_0000, 0x1000, s1_attrs(af=False))
    m.ok(VA)
    entry = m.mem.hw_writes[0].pa
    assert m.mem.read64(entry, big_endian=True) & (1 << 10)


def test_mmu_off_is_flat_device_nGnRnE():
    m = Machine()
    got = m.ok(0x1234_5678)
    assert got.paddress == 0x1234_5678
    assert (got.memattrs.memtype, got.memattrs.device) == (MemType.DEVICE, DeviceType.nGnRnE)
    assert got.memattrs.shareability is Shareability.OSH


def test_mmu_off_instruction_fetch_is_normal_wt_or_nc():
    m = Machine()
    assert m.ok(0x1000, acc_ifetch(1)).memattrs.inner.attrs is Cacheability.NC
    m.set(SCTLR_EL1=m.regs.SCTLR_EL1 | SCTLR_EL1.encode(I=1))
    assert m.ok(0x1000, acc_ifetch(1)).memattrs.inner.attrs is Cacheability.WT


def test_mmu_off_va_above_pamax_is_address_size_fault():
    m = Machine(fs=FeatureSet(frozenset(), pa_bits=40))
    f = m.fault(1 << 40)
    assert (f.statuscode, f.level) == (Fault.ADDRESS_SIZE, 0)


def test_hcr_dc_makes_el10_flat_normal_write_back_and_enables_stage2():
    m = Machine()
    s2 = s2_builder(m)
    m.set(HCR_EL2=HCR_RW | HCR_EL2.encode(DC=1), SCTLR_EL1=SCTLR_M)
    s2.map(0x8000_0000, 0x9000_0000, 0x1000, s2_attrs())
    got = m.ok(0x8000_0010)
    assert got.paddress == 0x9000_0010
    assert got.memattrs.inner.attrs is Cacheability.WB
    assert got.memattrs.shareability is Shareability.ISH    # NSH combined with stage-2 ISH


def test_hcr_tge_turns_el10_stage1_off():
    m, b = s1_machine(G4, 16)
    b.map(VA, 0x9000_0000, 0x1000, s1_attrs())
    m.set(HCR_EL2=HCR_RW | HCR_EL2.encode(TGE=1))
    assert m.ok(VA & 0xFFFF_FFFF).paddress == VA & 0xFFFF_FFFF


# ---------------------------------------------------------------- regimes

def test_el2_regime_single_range():
    from s2mmu.arch.registers import TCR_EL2_E2H0

    m = Machine()
    b = TableBuilder(m.mem, BumpAllocator(0x3000_0000, 0x3100_0000), G4, 48, 0)
    b.map(VA, 0x9000_0000, 0x1000, s1_attrs())
    m.set(TCR_EL2=TCR_EL2_E2H0.encode(T0SZ=16, PS=0b101, SH0=3), TTBR0_EL2=b.root,
          SCTLR_EL2=0x30C50831, MAIR_EL2=MAIR)
    assert m.ok(VA, acc_gpr(2, False), Regime.EL2).paddress == 0x9000_0000
    # No upper range: bit 55 set is simply out of range.
    assert m.fault(0xFFFF_0080_4020_1000, acc_gpr(2, False), Regime.EL2).level == 0


def test_el20_regime_uses_tcr_el2_and_ttbr1_el2():
    m = Machine()
    b = TableBuilder(m.mem, BumpAllocator(0x3000_0000, 0x3100_0000), G4, 48, 0)
    b.map(0xFFFF_0080_4020_1000 & ((1 << 48) - 1), 0x9000_0000, 0x1000, s1_attrs())
    m.set(HCR_EL2=HCR_RW | HCR_EL2.encode(E2H=1), TCR_EL2=tcr_el1(16, G4),
          TTBR1_EL2=b.root, SCTLR_EL2=0x30C50831, MAIR_EL2=MAIR)
    got = m.ok(0xFFFF_0080_4020_1008, acc_gpr(2, False), Regime.EL20)
    assert got.paddress == 0x9000_0008


# ---------------------------------------------------------------- stage 2

def test_two_stage_translation():
    m, s1, s2 = two_stage()
    s1.map(DATA_VA, DATA_IPA, 0x1000, s1_attrs())
    s2.map(DATA_IPA, DATA_PA, 0x1000, s2_attrs())
    got = m.ok(DATA_VA + 0x18)
    assert got.paddress == DATA_PA + 0x18
    assert m.translate(DATA_VA, stage1_only=True).paddress == DATA_IPA


def test_stage2_fault_on_stage1_walk():
    m, s1, s2 = two_stage()
    s1.map(DATA_VA, DATA_IPA, 0x1000, s1_attrs())
    # Unmap the 2MB of stage-1 tables at stage 2: the very first table read faults at the
    # stage-2 level-2 entry.
    s2.set_entry(S1_TABLES_IPA, 2, 0)
    f = m.fault(DATA_VA)
    assert (f.statuscode, f.level, f.secondstage, f.s2fs1walk) == (
        Fault.TRANSLATION, 2, True, True)
    assert f.ipaddress == m.regs.TTBR0_EL1 + 8 * 0   # L0 index of DATA_VA is 0
    assert f.vaddress == DATA_VA


def test_stage2_fault_on_output_ipa_is_not_a_walk_fault():
    m, s1, s2 = two_stage()
    s1.map(DATA_VA, DATA_IPA, 0x1000, s1_attrs())
    f = m.fault(DATA_VA)
    # Stage 2 has no level-1 entry for IPA[39:30] = 2.
    assert (f.statuscode, f.level, f.secondstage, f.s2fs1walk, f.ipaddress) == (
        Fault.TRANSLATION, 1, True, False, DATA_IPA)


def test_ipa_beyond_t0sz_is_stage2_translation_fault_level_0():
    m, s1, s2 = two_stage()
    s1.map(DATA_VA, 1 << 40, 0x1000, s1_attrs())
    f = m.fault(DATA_VA)
    assert (f.statuscode, f.level, f.secondstage) == (Fault.TRANSLATION, 0, True)


@pytest.mark.parametrize(("vt", "fs"), [
    (vtcr(16, 1), qemu_7_2_max()),                  # 48-bit IPA cannot start at level 1
    (vtcr(24, 0), qemu_7_2_max()),                  # 40-bit IPA cannot start at level 2
    (vtcr(32, 2), qemu_7_2_max()),                  # 32-bit IPA cannot start at level 0
    (vtcr(24, 3, G64), qemu_7_2_max()),             # SL0=3 reserved for 64KB
    (vtcr(24, 3, G16), qemu_7_2_max()),             # 16KB level 0 needs DS
    (vtcr(40, 3), qemu_7_2_max().with_features(remove=("FEAT_TTST",))),
    (vtcr(16, 2), FeatureSet(frozenset({"FEAT_LPA"}), pa_bits=42)),
])
def test_illegal_sl0_t0sz_is_stage2_translation_fault_level_0(vt, fs):
    m = Machine(fs=fs)
    m.set(HCR_EL2=HCR_RW | HCR_EL2.encode(VM=1), VTCR_EL2=vt, VTTBR_EL2=0x6000_0000)
    f = m.fault(0x1000)
    assert (f.statuscode, f.level, f.secondstage, f.s2fs1walk) == (
        Fault.TRANSLATION, 0, True, False)


@pytest.mark.parametrize(("granule", "t0sz", "sl0", "start", "tables"), [
    (G4, 24, 1, 1, 2), (G4, 21, 1, 1, 16), (G16, 24, 1, 2, 16), (G64, 18, 1, 2, 16),
    (G16, 16, 2, 1, 2),
])
def test_concatenated_stage2_start_tables(granule, t0sz, sl0, start, tables):
    m = Machine()
    b = s2_builder(m, granule, t0sz=t0sz, sl0=sl0, startlevel=start, ps=0b101)
    assert b.root_size() == tables * granule.size
    ipa = (1 << (64 - t0sz)) - granule.size       # the last page: in the last table
    b.map(ipa, 0x9000_0000, granule.size, s2_attrs())
    got = m.ok(ipa + 8)
    assert got.paddress == 0x9000_0008
    assert got.s2 is not None
    assert got.s2.steps[0].descaddress == b.root + tables * granule.size - 8


def test_stage2_access_flag_fault_and_ha():
    m, s1, s2 = two_stage()
    s1.map(DATA_VA, DATA_IPA, 0x1000, s1_attrs())
    s2.map(DATA_IPA, DATA_PA, 0x1000, s2_attrs(af=False))
    f = m.fault(DATA_VA)
    assert (f.statuscode, f.level, f.secondstage) == (Fault.ACCESS_FLAG, 3, True)
    m.set(VTCR_EL2=m.regs.VTCR_EL2 | (1 << 21))      # VTCR_EL2.HA
    assert m.ok(DATA_VA).paddress == DATA_PA
    assert len(m.mem.hw_writes) == 1 and m.mem.hw_writes[0].after & (1 << 10)


def test_stage2_dirty_state_on_write_to_dbm_page():
    m, s1, s2 = two_stage(HA=1, HD=1)
    s1.map(DATA_VA, DATA_IPA, 0x1000, s1_attrs())
    s2.map(DATA_IPA, DATA_PA, 0x1000, s2_attrs(s2ap=0b01, dbm=True))
    m.ok(DATA_VA, READ)
    assert m.mem.hw_writes == []
    m.ok(DATA_VA, WRITE)
    (w,) = m.mem.hw_writes
    assert w.after == w.before | (1 << 7)


def test_stage2_read_only_page_is_permission_fault_on_write():
    m, s1, s2 = two_stage()
    s1.map(DATA_VA, DATA_IPA, 0x1000, s1_attrs())
    s2.map(DATA_IPA, DATA_PA, 0x1000, s2_attrs(s2ap=0b01))
    assert m.ok(DATA_VA, READ).paddress == DATA_PA
    f = m.fault(DATA_VA, WRITE)
    assert (f.statuscode, f.level, f.secondstage, f.s2fs1walk, f.write) == (
        Fault.PERMISSION, 3, True, False, True)


def test_stage1_af_update_needs_stage2_write_permission_on_the_table():
    m, s1, s2 = two_stage(s2_table_attrs=s2_attrs(s2ap=0b01))
    m.set(TCR_EL1=m.regs.TCR_EL1 | TCR_EL1.encode(HA=1))
    s1.map(DATA_VA, DATA_IPA, 0x1000, s1_attrs(af=False))
    s2.map(DATA_IPA, DATA_PA, 0x1000, s2_attrs())
    f = m.fault(DATA_VA, READ)
    assert (f.statuscode, f.level, f.secondstage, f.s2fs1walk, f.write) == (
        Fault.PERMISSION, 2, True, True, True)
    assert m.mem.hw_writes == []


def test_stage1_update_sets_stage2_dirty_state_of_the_table_page():
    m, s1, s2 = two_stage(s2_table_attrs=s2_attrs(s2ap=0b01, dbm=True), HA=1, HD=1)
    m.set(TCR_EL1=m.regs.TCR_EL1 | TCR_EL1.encode(HA=1))
    s1.map(DATA_VA, DATA_IPA, 0x1000, s1_attrs(af=False))
    s2.map(DATA_IPA, DATA_PA, 0x1000, s2_attrs())
    assert m.ok(DATA_VA, READ).paddress == DATA_PA
    s2_write, s1_write = m.mem.hw_writes
    assert s2_write.after == s2_write.before | (1 << 7)          # S2AP[1] of the table page
    assert s1_write.after == s1_write.before | (1 << 10)         # stage-1 AF
    assert S1_TABLES_PA <= s1_write.pa < S1_TABLES_PA + (2 << 20)


def test_hcr_ptw_faults_walks_into_stage2_device_memory():
    m, s1, s2 = two_stage(s2_table_attrs=s2_attrs(memattr=0b0001))
    s1.map(DATA_VA, DATA_IPA, 0x1000, s1_attrs())
    s2.map(DATA_IPA, DATA_PA, 0x1000, s2_attrs())
    assert m.ok(DATA_VA).paddress == DATA_PA
    m.set(HCR_EL2=m.regs.HCR_EL2 | HCR_EL2.encode(PTW=1))
    f = m.fault(DATA_VA)
    assert (f.statuscode, f.secondstage, f.s2fs1walk) == (Fault.PERMISSION, True, True)


def test_stage2_big_endian_with_sctlr_el2_ee():
    m = Machine()
    m.set(SCTLR_EL2=0x30C50830 | SCTLR_EL2.encode(EE=1))
    b = TableBuilder(m.mem, BumpAllocator(0x6000_0000, 0x6100_0000), G4, 40, 1,
                     big_endian=True)
    m.set(VTCR_EL2=vtcr(24, 1), VTTBR_EL2=b.root, HCR_EL2=HCR_RW | HCR_EL2.encode(VM=1))
    b.map(0x8000_0000, 0x9000_0000, 0x1000, s2_attrs())
    assert m.ok(0x8000_0000).paddress == 0x9000_0000


def test_stage2_lookup_helper():
    m = Machine()
    b = s2_builder(m)
    b.map(0x8000_0000, 0x9000_0000, 0x1000, s2_attrs(s2ap=0b01))
    got = stage2_lookup(m.mem, m.regs.VTCR_EL2, m.regs.VTTBR_EL2, 0x8000_0004)
    assert isinstance(got, AddressDescriptor) and got.paddress == 0x9000_0004
    f = stage2_lookup(m.mem, m.regs.VTCR_EL2, m.regs.VTTBR_EL2, 0x8000_0004, write=True)
    assert not isinstance(f, AddressDescriptor) and f.statuscode is Fault.PERMISSION


# ---------------------------------------------------------------- attributes

def test_sctlr_c_zero_makes_data_non_cacheable_but_tables_still_say_wb():
    m, b = s1_machine(G4, 16)
    b.map(VA, 0x9000_0000, 0x1000, s1_attrs(attrindx=0))
    m.set(SCTLR_EL1=SCTLR_M & ~SCTLR_EL1.encode(C=1))
    got = m.ok(VA)
    assert got.memattrs.inner.attrs is Cacheability.NC
    assert got.memattrs.shareability is Shareability.OSH
    assert got.par_attrs().inner.attrs is Cacheability.WB


def test_sctlr_c_does_not_change_device():
    m, b = s1_machine(G4, 16)
    b.map(VA, 0x9000_0000, 0x1000, s1_attrs(attrindx=1))
    m.set(SCTLR_EL1=SCTLR_M & ~SCTLR_EL1.encode(C=1))
    assert m.ok(VA).memattrs.device is DeviceType.nGnRE


def test_sctlr_i_zero_makes_instruction_fetches_non_cacheable():
    m, b = s1_machine(G4, 16)
    b.map(VA, 0x9000_0000, 0x1000, s1_attrs())
    m.set(SCTLR_EL1=SCTLR_M & ~SCTLR_EL1.encode(I=1))
    assert m.ok(VA, acc_ifetch(1)).memattrs.inner.attrs is Cacheability.NC
    assert m.ok(VA, READ).memattrs.inner.attrs is Cacheability.WB


def stage12(memattr, s1_attrindx=0, fwb=False, **hcr):
    m, s1, s2 = two_stage()
    m.set(HCR_EL2=HCR_RW | HCR_EL2.encode(VM=1, FWB=int(fwb), **hcr))
    s1.map(DATA_VA, DATA_IPA, 0x1000, s1_attrs(attrindx=s1_attrindx))
    s2.map(DATA_IPA, DATA_PA, 0x1000, s2_attrs(memattr=memattr))
    return m.ok(DATA_VA)


def test_combination_without_fwb_weaker_cacheability_wins():
    got = stage12(0b0101)                         # stage 2 Normal NC
    assert got.memattrs.inner.attrs is Cacheability.NC
    got = stage12(0b0001, s1_attrindx=0)           # stage 2 Device-nGnRE
    assert got.memattrs.device is DeviceType.nGnRE


def test_combination_with_fwb_forces_write_back_over_device():
    got = stage12(0b0110, s1_attrindx=1, fwb=True)
    assert got.memattrs.memtype is MemType.NORMAL
    assert got.memattrs.inner.attrs is Cacheability.WB
    # Without FWB, 0b0110 means outer NC, inner WT: Device at stage 1 stays Device.
    assert stage12(0b0110, s1_attrindx=1).memattrs.memtype is MemType.DEVICE


def test_fwb_is_ignored_without_feat_s2fwb():
    m, s1, s2 = two_stage()
    m.fs = server_v8_2()
    m.set(HCR_EL2=HCR_RW | HCR_EL2.encode(VM=1, FWB=1))
    s1.map(DATA_VA, DATA_IPA, 0x1000, s1_attrs(attrindx=1))
    s2.map(DATA_IPA, DATA_PA, 0x1000, s2_attrs(memattr=0b0110))
    assert m.ok(DATA_VA).memattrs.memtype is MemType.DEVICE


def test_hcr_cd_makes_stage2_normal_non_cacheable_for_data():
    got = stage12(0b1111, CD=1)
    assert got.memattrs.inner.attrs is Cacheability.NC
    # PAR_EL1 reports it too by default (without FWB, as QEMU 7.2 does)...
    assert got.par_attrs().inner.attrs is Cacheability.NC
    # ...but not with FWB.
    got = stage12(0b0111, CD=1, fwb=True)
    assert got.memattrs.inner.attrs is Cacheability.NC
    assert got.par_attrs().inner.attrs is Cacheability.WB


def test_par_attributes_follow_the_hcr_cd_choice():
    for choice, fwb, nc in (("never", False, False), ("always", True, True)):
        m, s1, s2 = two_stage()
        m.choices = ImplChoices(par_hcr_cd=choice)
        m.set(HCR_EL2=HCR_RW | HCR_EL2.encode(VM=1, CD=1, FWB=int(fwb)))
        s1.map(DATA_VA, DATA_IPA, 0x1000, s1_attrs())
        s2.map(DATA_IPA, DATA_PA, 0x1000, s2_attrs(memattr=0b1111 if not fwb else 0b0111))
        got = m.ok(DATA_VA)
        assert (got.par_attrs().inner.attrs is Cacheability.NC) is nc


def test_reserved_stage2_inner_cacheability_is_a_choice():
    # MemAttr 0b1100: outer Write-Back, inner 0b00 (reserved).
    for choice, inner in (("WB", Cacheability.WB), ("WT", Cacheability.WT),
                          ("NC", Cacheability.NC)):
        m, s1, s2 = two_stage()
        m.choices = ImplChoices(s2_reserved_cacheability=choice)
        s1.map(DATA_VA, DATA_IPA, 0x1000, s1_attrs())
        s2.map(DATA_IPA, DATA_PA, 0x1000, s2_attrs(memattr=0b1100))
        got = m.ok(DATA_VA)
        assert (got.memattrs.inner.attrs, got.memattrs.outer.attrs) == (inner, Cacheability.WB)


def test_hcr_id_makes_instruction_fetches_non_cacheable():
    m, s1, s2 = two_stage()
    m.set(HCR_EL2=HCR_RW | HCR_EL2.encode(VM=1, ID=1))
    s1.map(DATA_VA, DATA_IPA, 0x1000, s1_attrs())
    s2.map(DATA_IPA, DATA_PA, 0x1000, s2_attrs())
    assert m.ok(DATA_VA, acc_ifetch(1)).memattrs.inner.attrs is Cacheability.NC
    assert m.ok(DATA_VA, READ).memattrs.inner.attrs is Cacheability.WB


def test_stage1_shareability_passes_to_stage2_under_vm():
    # Stage-1 Device with SH=NSH, FWB 0b110 forces Normal WB: the combined shareability
    # comes from the descriptors (NSH with stage-2 NSH), not from Device's effective OSH.
    m, s1, s2 = two_stage()
    m.set(HCR_EL2=HCR_RW | HCR_EL2.encode(VM=1, FWB=1))
    s1.map(DATA_VA, DATA_IPA, 0x1000, s1_attrs(attrindx=1, sh=0))
    s2.map(DATA_IPA, DATA_PA, 0x1000, s2_attrs(memattr=0b0110, sh=0))
    assert m.ok(DATA_VA).memattrs.shareability is Shareability.NSH
    m.choices = ImplChoices(s1_effective_shareability=True)
    assert m.ok(DATA_VA).memattrs.shareability is Shareability.OSH


def test_ttw_access_kind():
    assert AccessDescriptor(AccessType.TTW, 1).acctype is AccessType.TTW
    assert acc_at(1, True).write


# ---------------------------------------------------------------- properties: map X, walk X


S1_TXSZ = {G4: (12, 48), G16: (12, 48), G64: (12, 47)}


def leaf_levels(granule, start, ds):
    return [lvl for lvl in range(max(start, 0), 4)
            if lvl == 3 or block_desc_supported(granule, lvl, ds, True)]


@st.composite
def s1_layouts(draw):
    granule = draw(st.sampled_from([G4, G16, G64]))
    txsz = draw(st.integers(*S1_TXSZ[granule]))
    ds = granule is not G64 and (txsz < 16 or draw(st.booleans()))
    start = s1_start_level(granule, txsz)
    level = draw(st.sampled_from(leaf_levels(granule, start, ds)))
    size = granule.block_size(level)
    va = draw(st.integers(0, (1 << (64 - txsz)) // size - 1)) * size
    oabits = 52 if ds or granule is G64 else 48
    pa = draw(st.integers(0, (1 << oabits) // size - 1)) * size
    off = draw(st.integers(0, size - 1)) & ~7
    upper = draw(st.booleans())
    return granule, txsz, ds, level, va, pa, off, upper


@settings(max_examples=60, deadline=None)
@given(s1_layouts())
def test_stage1_table_built_to_map_x_walks_to_x(layout):
    granule, txsz, ds, level, va, pa, off, upper = layout
    m, b = s1_machine(granule, txsz, ds=ds)
    if upper:
        # The same tables as TTBR1: the VA is sign-extended from bit 63 down to IA size.
        m.set(TTBR1_EL1=m.regs.TTBR0_EL1,
              TCR_EL1=tcr_el1(txsz, granule, ips=0b110 if ds else 0b101, EPD0=1,
                              **({"DS": 1} if ds else {})))
    m.set(TCR_EL1=(m.regs.TCR_EL1 & ~TCR_EL1.encode(IPS=7)) | TCR_EL1.encode(IPS=0b110))
    b.map(va, pa, granule.block_size(level), s1_attrs(sh=0 if ds else 3), level=level)
    ia = va + off
    if upper:
        ia |= ((1 << 64) - 1) ^ ((1 << (64 - txsz)) - 1)
    got = m.ok(ia)
    assert got.paddress == pa + off
    assert got.s1 is not None and got.s1.level == level


# Stage-2 start levels: (granule, SL0, SL2, DS, start level).
S2_STARTS = [(G4, 0, 0, False, 2), (G4, 1, 0, False, 1), (G4, 2, 0, False, 0),
             (G4, 3, 0, False, 3), (G4, 0, 1, True, -1), (G16, 0, 0, False, 3),
             (G16, 1, 0, False, 2), (G16, 2, 0, False, 1), (G16, 3, 0, True, 0),
             (G64, 0, 0, False, 3), (G64, 1, 0, False, 2), (G64, 2, 0, False, 1)]


def s2_t0sz_range(granule, start, ds):
    levels = 3 - start
    lo = levels * granule.stride + granule.bits + 1
    hi = lo + granule.stride - 1 + 4
    min_t0sz = 12 if (ds or granule is G64) else 16
    max_t0sz = 47 if granule is G64 else 48
    return max(64 - hi, min_t0sz), min(64 - lo, max_t0sz)


@st.composite
def s2_layouts(draw, min_iasize=0):
    starts = [s for s in S2_STARTS if s2_t0sz_range(s[0], s[4], s[3])[0] <= 64 - min_iasize]
    granule, sl0, sl2, ds, start = draw(st.sampled_from(starts))
    lo, hi = s2_t0sz_range(granule, start, ds)
    hi = min(hi, 64 - min_iasize)
    t0sz = draw(st.integers(lo, hi))
    ds = ds or (granule is not G64 and t0sz < 16)
    level = draw(st.sampled_from(leaf_levels(granule, start, ds)))
    return granule, sl0, sl2, ds, start, t0sz, level


def stage2_machine(granule, sl0, sl2, ds, start, t0sz, base=0x6000_0000):
    m = Machine()
    extra = {"DS": 1, "SL2": sl2} if ds else {}
    b = s2_builder(m, granule, t0sz=t0sz, sl0=sl0, startlevel=start, base=base, ds=ds,
                   ps=0b110, **extra)
    return m, b


@settings(max_examples=60, deadline=None)
@given(s2_layouts(), st.data())
def test_stage2_table_built_to_map_x_walks_to_x(layout, data):
    granule, sl0, sl2, ds, start, t0sz, level = layout
    m, b = stage2_machine(granule, sl0, sl2, ds, start, t0sz)
    size = granule.block_size(level)
    ipa = data.draw(st.integers(0, max((1 << (64 - t0sz)) // size - 1, 0))) * size
    pa = data.draw(st.integers(0, (1 << (52 if ds or granule is G64 else 48)) // size - 1)) * size
    off = data.draw(st.integers(0, size - 1)) & ~7
    b.map(ipa, pa, size, s2_attrs(sh=0 if ds else 3), level=level)
    got = m.ok(ipa + off)           # stage 1 off: the VA is the IPA
    assert got.paddress == pa + off
    assert got.s2 is not None and got.s2.level == level


@settings(max_examples=25, deadline=None)
@given(s1_layouts(), s2_layouts(min_iasize=32), st.data())
def test_two_stage_tables_built_to_map_x_walk_to_x(s1l, s2l, data):
    granule, txsz, ds, level, va, _, off, _ = s1l
    g2, sl0, sl2, ds2, start2, t0sz, _ = s2l
    m, s2 = stage2_machine(g2, sl0, sl2, ds2, start2, t0sz, base=0x7_0000_0000)
    # Stage-1 tables at IPA 1MB..1.5MB, at PA 0x5000_0000.., page by page.
    view_delta = 0x5000_0000 - 0x10_0000
    s2.map(0x10_0000, 0x5000_0000, 0x8_0000, s2_attrs(sh=0 if ds2 else 3))
    s1 = TableBuilder(OffsetView(m.mem, view_delta), BumpAllocator(0x10_0000, 0x18_0000),
                      granule, 64 - txsz, s1_start_level(granule, txsz), ds=ds)
    m.set(SCTLR_EL1=SCTLR_M, MAIR_EL1=MAIR, TTBR0_EL1=s1.root,
          TCR_EL1=tcr_el1(txsz, granule, ips=0b110, epd1=1, **({"DS": 1} if ds else {})))
    # The stage-1 output: in the upper half of the IPA space, aligned to the leaf.
    size = granule.block_size(level)
    iabits = min(64 - t0sz, 52 if ds or granule is G64 else 48)   # what stage 1 can output
    half = 1 << (iabits - 1)
    if size > half:
        level, size = 3, granule.size
        off %= size
    ipa = half + data.draw(st.integers(0, half // size - 1)) * size
    s1.map(va, ipa, size, s1_attrs(sh=0 if ds else 3), level=level)
    target = ipa + off
    pa = 0x9_0000_0000 + data.draw(st.integers(0, 255)) * g2.size
    page = target & ~(g2.size - 1)
    s2.map(page, pa, g2.size, s2_attrs(sh=0 if ds2 else 3))
    got = m.ok(va + off)
    assert got.paddress == pa + (target - page)


def test_misprogrammed_contiguous_run_output_is_a_choice():
    # A 16-page contiguous run whose third entry points elsewhere: by default the fetched
    # descriptor's OA; with contiguous_oa_from_ia the low OA bits over the run come from
    # the VA (ASL StageOA).
    m, b = s1_machine(G4, 16)
    b.map(VA & ~0xFFFF, 0x9000_0000, 0x10000, s1_attrs() | (1 << 52))
    b.set_entry(VA & ~0xFFFF | 0x2000, 3, 0xA000_0000 | s1_attrs() | (1 << 52) | 0b11)
    va = (VA & ~0xFFFF) | 0x2010
    assert m.ok(va).paddress == 0xA000_0010
    m.choices = ImplChoices(contiguous_oa_from_ia=True)
    assert m.ok(va).paddress == 0xA000_2010


@pytest.mark.parametrize(("xn", "fs", "el1_ok", "el0_ok"), [
    (0b01, qemu_7_2_max(), False, True),     # FEAT_XNX: XN[1:0]=01 stops EL1 only
    (0b11, qemu_7_2_max(), True, False),     # 11 stops EL0 only
    (0b01, server_v8_2(), True, True),       # without FEAT_XNX bit 53 is ignored
    (0b10, server_v8_2(), False, False),
])
def test_stage2_execute_never_for_instruction_fetches(xn, fs, el1_ok, el0_ok):
    m, s1, s2 = two_stage()
    m.fs = fs
    s1.map(DATA_VA, DATA_IPA, 0x1000, s1_attrs(el0=True, ro=True))
    s2.map(DATA_IPA, DATA_PA, 0x1000, s2_attrs(xn=xn))
    for el, ok in ((1, el1_ok), (0, el0_ok)):
        got = m.translate(DATA_VA, acc_ifetch(el))
        assert isinstance(got, AddressDescriptor) is ok
        if not ok:
            assert (got.statuscode, got.secondstage) == (Fault.PERMISSION, True)


def test_reserved_descriptor_sh_reads_as_the_chosen_shareability():
    # SH=0b01 is reserved (CONSTRAINED UNPREDICTABLE): ImplChoices.reserved_sh decides.
    for choice, want in ((0b00, Shareability.NSH), (0b11, Shareability.ISH),
                         (0b10, Shareability.OSH)):
        m, s1, s2 = two_stage()
        m.choices = ImplChoices(reserved_sh=choice)
        s1.map(DATA_VA, DATA_IPA, 0x1000, s1_attrs(sh=0b01))
        s2.map(DATA_IPA, DATA_PA, 0x1000, s2_attrs(sh=0b01))
        assert m.ok(DATA_VA).memattrs.shareability is want


def test_reserved_mair_encoding_is_a_choice():
    # Attr 0x05 (0b0000_0101) is reserved: "nearest" reads Device-nGnRE, "device"
    # reads Device-nGnRnE.
    for choice, want in (("nearest", DeviceType.nGnRE), ("device", DeviceType.nGnRnE)):
        m, s1 = s1_machine()
        m.choices = ImplChoices(reserved_mair=choice)
        m.set(MAIR_EL1=0x05)
        s1.map(DATA_VA, DATA_IPA, 0x1000, s1_attrs())
        got = m.ok(DATA_VA).memattrs
        assert (got.memtype, got.device) == (MemType.DEVICE, want)


@pytest.mark.parametrize(("regime", "el", "els"), [
    (Regime.EL2, 0, "EL2"), (Regime.EL2, 1, "EL2"), (Regime.EL10, 2, "EL0 and EL1"),
    (Regime.EL20, 1, "EL0 and EL2")])
def test_full_translate_refuses_an_access_from_an_el_the_regime_does_not_translate(
        regime, el, els):
    from s2mmu.arch.errors import InputError

    with pytest.raises(InputError) as e:
        Machine().translate(0x1000, acc_gpr(el, False), regime=regime)
    assert str(e.value) == (f"access.el={el}: the {regime.value} regime translates accesses "
                            f"from {els} only")


@pytest.mark.parametrize("va", [-1, 1 << 64])
def test_full_translate_and_stage2_lookup_refuse_addresses_wider_than_64_bits(va):
    from s2mmu.arch.errors import InputError
    from s2mmu.arch.memory import PhysMem

    with pytest.raises(InputError, match=r"^va=.*: a virtual address is 64 bits \(0\.\.2\^64-1\)$"):
        Machine().translate(va)
    with pytest.raises(InputError, match=r"^ipa=.*: an intermediate physical address is 64 bits"):
        stage2_lookup(PhysMem(), 0, 0, va)


# ---------------------------------------------------------------- table-memory port

class FailingPort:
    """Table memory that fails reads (or compare-and-swaps) at chosen PAs."""

    def __init__(self, mem, bad_reads=(), bad_cas=()):
        self.mem, self.bad_reads, self.bad_cas = mem, set(bad_reads), set(bad_cas)
        self.reads: list[int] = []

    def read64(self, pa, big_endian=False):
        from s2mmu.arch.memory import ExternalAbort
        self.reads.append(pa)
        if pa in self.bad_reads:
            return ExternalAbort(pa, "no memory behind it")
        return self.mem.read64(pa, big_endian)

    def cas64(self, pa, expected, new, big_endian=False):
        from s2mmu.arch.memory import ExternalAbort
        if pa in self.bad_cas:
            return ExternalAbort(pa, "store refused")
        return self.mem.cas64(pa, expected, new, big_endian)


def _env_with(m, port=None, hw=None):
    from s2mmu.arch.translate import Env
    return Env(m.mem, m.fs, m.choices, tables=port, hw=hw)


def test_walks_read_their_tables_through_the_port():
    from s2mmu.arch.translate import full_translate
    m, b = s1_machine()
    b.map(0x4000_0000, 0x8000_0000, 4096, s1_attrs())
    port = FailingPort(m.mem)
    got = full_translate(m.regs, Regime.EL10, 0x4000_0123, acc_gpr(1, False), _env_with(m, port))
    assert isinstance(got, AddressDescriptor) and got.paddress == 0x8000_0123
    assert len(port.reads) == 4


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_failed_stage1_descriptor_read_is_external_abort_at_its_level(level):
    from s2mmu.arch.translate import full_translate
    m, b = s1_machine()
    b.map(0x4000_0000, 0x8000_0000, 4096, s1_attrs())
    reads = FailingPort(m.mem)
    full_translate(m.regs, Regime.EL10, 0x4000_0000, acc_gpr(1, False), _env_with(m, reads))
    port = FailingPort(m.mem, bad_reads=[reads.reads[level]])
    got = full_translate(m.regs, Regime.EL10, 0x4000_0000, acc_gpr(1, False), _env_with(m, port))
    assert got.statuscode is Fault.SYNC_EXTERNAL_ON_WALK and got.level == level
    assert not got.secondstage
    assert f"(level {level}) failed: no memory behind it" in got.reason


def test_failed_stage2_read_during_stage1_walk_is_a_stage2_external_abort():
    from s2mmu.arch.translate import full_translate
    m, s1, s2 = two_stage()
    s1.map(DATA_VA, DATA_IPA, 4096, s1_attrs())
    s2.map(DATA_IPA, DATA_PA, 4096, s2_attrs())
    s2_root_entry = m.regs.VTTBR_EL2 + 8 * ((S1_TABLES_IPA >> 30) & 0x3FF)
    port = FailingPort(m.mem, bad_reads=[s2_root_entry])
    got = full_translate(m.regs, Regime.EL10, DATA_VA, acc_gpr(1, False), _env_with(m, port))
    assert got.statuscode is Fault.SYNC_EXTERNAL_ON_WALK and got.level == 1
    assert got.secondstage and got.s2fs1walk


def test_failed_access_flag_update_is_external_abort_at_the_leaf_level():
    from s2mmu.arch.translate import full_translate
    m, b = s1_machine(HA=1)
    leaf = b.map(0x4000_0000, 0x8000_0000, 2 << 20, s1_attrs(af=False), level=2)
    del leaf
    ok = full_translate(m.regs, Regime.EL10, 0x4000_0000, acc_gpr(1, False), m.env())
    assert isinstance(ok, AddressDescriptor)
    pa = ok.s1.leaf_paddress
    m.mem.write64(pa, m.mem.read64(pa) & ~(1 << 10))
    port = FailingPort(m.mem, bad_cas=[pa])
    got = full_translate(m.regs, Regime.EL10, 0x4000_0000, acc_gpr(1, False), _env_with(m, port))
    assert got.statuscode is Fault.SYNC_EXTERNAL_ON_WALK and got.level == 2
    assert "stage-1 descriptor update" in got.reason


# ---------------------------------------------------------------- hardware-update policy

def test_hw_update_policy_without_af_update_gives_access_flag_fault_despite_tcr_ha():
    from s2mmu.arch.features import NO_HW_UPDATE
    from s2mmu.arch.translate import full_translate
    m, b = s1_machine(HA=1)
    b.map(0x4000_0000, 0x8000_0000, 4096, s1_attrs(af=False))
    got = full_translate(m.regs, Regime.EL10, 0x4000_0000, acc_gpr(1, False),
                         _env_with(m, hw=NO_HW_UPDATE))
    assert got.statuscode is Fault.ACCESS_FLAG and got.level == 3
    assert m.mem.hw_writes == []


def test_hw_update_policy_af_only_sets_af_but_not_dirty():
    from s2mmu.arch.features import HwUpdate
    from s2mmu.arch.translate import full_translate
    m, b = s1_machine(HA=1, HD=1)
    b.map(0x4000_0000, 0x8000_0000, 4096, s1_attrs(af=False, ro=True, dbm=True))
    env = _env_with(m, hw=HwUpdate(s1_af=True, s1_dirty=False, s2_af=True, s2_dirty=False))
    got = full_translate(m.regs, Regime.EL10, 0x4000_0000, acc_gpr(1, True), env)
    assert got.statuscode is Fault.PERMISSION   # DBM does not make it writable without HD
    got = full_translate(m.regs, Regime.EL10, 0x4000_0000, acc_gpr(1, False), env)
    assert isinstance(got, AddressDescriptor) and got.s1.leaf.raw & (1 << 10)
    assert got.s1.leaf.raw & (1 << 7)


def test_default_hw_update_policy_is_the_feature_set():
    from s2mmu.arch.features import hw_update_of
    assert hw_update_of(qemu_7_2_max()).s1_dirty
    assert not hw_update_of(FeatureSet(frozenset())).s2_af


# ---------------------------------------------------------------- the stage-2 walk entry

def test_s2_walk_returns_the_leaf_without_checking_permission_or_af():
    from s2mmu.arch.params import get_s2_ttw_params
    from s2mmu.arch.translate import s2_output, s2_walk
    from s2mmu.arch.walk import TTWState
    m = Machine()
    s2 = s2_builder(m)
    s2.map(0x8000_0000, 0x9000_0000, 2 << 20, s2_attrs(s2ap=0b00, af=False), level=2)
    env = m.env()
    p = get_s2_ttw_params(m.regs, env.fs, env.choices)
    got = s2_walk(p, 0x8001_2345, acc_gpr(1, True), env)
    assert isinstance(got, TTWState) and got.level == 2
    assert s2_output(p, env, got, 0x8001_2345) == 0x9001_2345
    full = stage2_lookup(m.mem, m.regs.VTCR_EL2, m.regs.VTTBR_EL2, 0x8001_2345)
    assert full.statuscode is Fault.ACCESS_FLAG


def test_s2_walk_reports_pre_walk_faults_as_stage2_level_0():
    from s2mmu.arch.params import get_s2_ttw_params
    from s2mmu.arch.translate import s2_walk
    m = Machine()
    s2_builder(m)
    env = m.env()
    p = get_s2_ttw_params(m.regs, env.fs, env.choices)
    got = s2_walk(p, 1 << 40, acc_gpr(1, False), env)
    assert got.statuscode is Fault.TRANSLATION and got.level == 0 and got.secondstage
    assert got.reason == "IPA 0x10000000000 is outside the 40-bit IPA space (VTCR_EL2.T0SZ)"


# ---------------------------------------------------------------- the walk's own record

def test_result_steps_are_the_reads_the_trace_recorded():
    # A walk keeps its reads as tuples and builds WalkSteps only when asked: the
    # results' steps equal the explain trace step for step (stage-2 reads of each
    # stage-1 table first, then the stage-2 walk of the output IPA).
    m, s1, s2 = two_stage()
    s1.map(DATA_VA, DATA_IPA, 0x1000, s1_attrs())
    s2.map(DATA_IPA, DATA_PA, 0x1000, s2_attrs())
    trace: list = []
    got = full_translate(m.regs, Regime.EL10, DATA_VA, READ, m.env(), trace=trace)
    assert isinstance(got, AddressDescriptor) and got.s1 is not None and got.s2 is not None
    assert list(got.s1.steps) == [s for s in trace if s.stage == 1]
    assert list(got.s2.steps) == trace[-len(got.s2.steps):]
    # Each stage-1 table is in a stage-2 level-2 block; the output IPA is in a page.
    assert [s.stage for s in trace] == [2, 2, 1] * 4 + [2, 2, 2]
    assert got.s1.leaf_descaddress() == got.s1.steps[-1].descaddress


def test_steps_keep_the_leaf_as_read_before_a_hardware_update():
    m, b = s1_machine(G4, 16, HA=1)
    b.map(VA, 0x9000_0000, 0x1000, s1_attrs(af=False))
    got = m.ok(VA)
    assert got.s1 is not None
    assert got.s1.steps[-1].raw == got.s1.steps[-1].decoded.raw
    assert got.s1.leaf.raw == got.s1.steps[-1].raw | (1 << 10)


def test_a_new_register_set_or_feature_set_is_read_afresh():
    # full_translate reuses the last configuration while its inputs are the same objects:
    # equal values in new objects, and new values, give their own answers.
    m, b = s1_machine(G4, 16)
    b.map(VA, 0x9000_0000, 0x1000, s1_attrs())
    b.map(VA + 0x1000, 0xA000_0000, 0x1000, s1_attrs())
    first = m.regs
    assert m.ok(VA).paddress == 0x9000_0000
    m.set(TTBR0_EL1=0x7000_0000)                     # an empty table
    assert m.fault(VA).statuscode is Fault.TRANSLATION
    m.regs = first
    assert m.ok(VA + 0x1000).paddress == 0xA000_0000
    m.set(TCR_EL1=tcr_el1(16, G4, epd1=1, HPD0=1))  # same tables, new object
    assert m.ok(VA).paddress == 0x9000_0000
    m.regs = replace(first, TTBR0_EL1=first.TTBR0_EL1 | (1 << 44))
    f = m.fault(VA)                                  # tables of zeros at 0x1000_1000_0000
    assert (f.statuscode, f.level) == (Fault.TRANSLATION, 0)
    m.fs = FeatureSet(frozenset(), pa_bits=40)       # the same registers, PAMax 40
    f = m.fault(VA)
    assert (f.statuscode, f.level) == (Fault.ADDRESS_SIZE, 0)


# ---- FEAT_S1PIE / S1POE through the whole translation: AT, accesses, hardware updates

def _pie_machine(leaf_attrs: int, pir: int, pire0: int = 0, tcr2: int = 0b10, por: int = 0,
                 **tcr: int):
    from s2mmu.arch.features import server_v9_4_pie
    from s2mmu.arch.registers import HCRX_EL2
    m, b = s1_machine(fs=server_v9_4_pie(), **tcr)
    b.map(0x40_0000, 0x8000_0000, 0x1000, leaf_attrs)
    m.set(TCR2_EL1=tcr2, HCRX_EL2=HCRX_EL2.encode(TCR2En=1), PIR_EL1=pir, PIRE0_EL1=pire0,
          POR_EL1=por)
    return m


def test_at_with_pie_reports_a_permission_fault_from_the_pir():
    # PIIndex 0 (UXN=PXN=DBM=AP[1]=0): PIR Perm0 = 0b1000 (R): S1E1R completes, S1E1W
    # reports a level-3 Permission fault (FST 0b001111).
    m = _pie_machine(s1_attrs(), pir=0b1000)
    assert m.par("S1E1R", 0x40_0000, el=1) & 1 == 0
    par = m.par("S1E1W", 0x40_0000, el=1)
    assert par & 1 and (par >> 1) & 0x3F == 0b001111


def test_store_refused_by_the_overlay_reports_iss2_overlay():
    from s2mmu.arch.access_op import AccessException, AccessOp, execute_access
    m = _pie_machine(s1_attrs() | 3 << 60, pir=0b0101, tcr2=0b1010, por=0b0001 << 12)
    got = execute_access(AccessOp.STR, 0x40_0000, 1, False, 7, m.regs, m.env())
    assert isinstance(got, AccessException) and got.fault is not None
    assert got.fault.statuscode is Fault.PERMISSION and got.fault.overlay
    assert (got.esr >> 32) & 0xFFFFFF == 1 << 6  # ESR_ELx.ISS2.Overlay
    assert execute_access(AccessOp.LDR, 0x40_0000, 1, False, 0, m.regs, m.env()).value == 0


def test_pie_store_to_ndirty_page_faults_with_dirtybit_or_clears_it_with_hd():
    from s2mmu.arch.access_op import AccessException, AccessOp, execute_access
    attrs = s1_attrs(ro=True)  # bit[7] is nDirty under PIE
    m = _pie_machine(attrs, pir=0b1100)
    got = execute_access(AccessOp.STR, 0x40_0000, 1, False, 1, m.regs, m.env())
    assert isinstance(got, AccessException) and got.fault is not None
    assert got.fault.dirtybit and (got.esr >> 32) & 0xFFFFFF == 1 << 5
    m = _pie_machine(attrs, pir=0b1100, HA=1, HD=1)
    execute_access(AccessOp.STR, 0x40_0000, 1, False, 1, m.regs, m.env())
    (w,) = m.mem.hw_writes
    assert w.before >> 7 & 1 and not w.after >> 7 & 1


@pytest.mark.parametrize("hd", [False, True])
def test_s2pie_store_to_a_clean_page_faults_or_sets_dirty(hd):
    # S2PIR_EL2 Perm0 = RW+puX (0b1111) for every page; bit[7] is Dirty under S2PIE.
    from s2mmu.arch.access_op import AccessException, AccessOp, Stored, execute_access
    from s2mmu.arch.features import server_v9_4_pie
    m, s1, s2 = two_stage(S2PIE=1, HA=int(hd), HD=int(hd))
    m.fs = server_v9_4_pie()
    m.set(S2PIR_EL2=0xFFFF_FFFF_FFFF_FFFF)
    s1.map(DATA_VA, DATA_IPA, 0x1000, s1_attrs())
    s2.map(DATA_IPA, DATA_PA, 0x1000, s2_attrs(s2ap=0b01))   # Dirty=0
    got = execute_access(AccessOp.STR, DATA_VA, 1, False, 5, m.regs, m.env())
    if hd:
        assert isinstance(got, Stored)
        (w,) = m.mem.hw_writes  # the stage-2 leaf: Dirty (bit[7]) set
        assert not w.before >> 7 & 1 and w.after == w.before | 1 << 7
    else:
        assert isinstance(got, AccessException) and got.fault is not None
        assert got.fault.secondstage and got.fault.dirtybit and got.taken_to == 2
        assert (got.esr >> 37) & 1


# ---------------------------------------------------------------- FEAT_HAFT

def _haft_s1(haft: int = 1, ha: int = 1, tcr2en: int = 1, feature: bool = True):
    """Stage 1 (4KB, levels 0-3) mapping one page, FEAT_HAFT enabled as asked."""
    from s2mmu.arch.features import server_v9_4_haft, server_v9_4_pie
    from s2mmu.arch.registers import HCRX_EL2, TCR2_EL1
    fs = server_v9_4_haft() if feature else server_v9_4_pie()
    m, b = s1_machine(fs=fs, HA=ha)
    b.map(0x8000_0000, 0x9000_0000, 4096, s1_attrs())
    m.set(TCR2_EL1=TCR2_EL1.encode(HAFT=haft), HCRX_EL2=HCRX_EL2.encode(TCR2En=tcr2en))
    return m


def _table_pas(state) -> list[int]:
    return [pa for _, _, pa, desc in state.reads[:-1]]


def test_haft_sets_af_in_every_stage1_table_descriptor_on_the_way_down():
    # ASL AArch64.S1Walk: walkparams.haft sets new_descriptor<10> in each Table
    # descriptor, written by AArch64.MemSwapTableDesc before the next level is read.
    m = _haft_s1()
    got = m.ok(0x8000_0000)
    pas = _table_pas(got.s1)
    assert [lvl for lvl in (d.level for _, _, _, d in got.s1.reads)] == [0, 1, 2, 3]
    for pa in pas:
        assert m.mem.read64(pa) >> 10 & 1 == 1
    assert [w.pa for w in m.mem.hw_writes] == pas
    assert all(w.after == w.before | 1 << 10 for w in m.mem.hw_writes)
    # Once set, the next walk writes nothing.
    m.ok(0x8000_0000)
    assert len(m.mem.hw_writes) == 3


@pytest.mark.parametrize("haft, ha, tcr2en, feature", [
    (0, 1, 1, True), (1, 0, 1, True), (1, 1, 0, True), (1, 1, 1, False)])
def test_haft_needs_the_feature_tcr2_haft_ha_and_tcr2en(haft, ha, tcr2en, feature):
    m = _haft_s1(haft, ha, tcr2en, feature)
    got = m.ok(0x8000_0000)
    for pa in _table_pas(got.s1):
        assert m.mem.read64(pa) >> 10 & 1 == 0
    assert all(w.pa == got.s1.leaf_paddress for w in m.mem.hw_writes)


def test_haft_table_af_is_set_even_when_the_walk_then_faults():
    # The table step does not wait for the leaf: a later Translation fault keeps the
    # tables' AF set (the ASL writes at each level as it descends).
    m = _haft_s1()
    f = m.fault(0x8000_0000 + 4096 * 3)   # same tables, invalid level-3 entry
    assert f.statuscode is Fault.TRANSLATION and f.level == 3
    assert len(m.mem.hw_writes) == 3


def test_haft_at_sets_table_af_too():
    # ASL AArch64.S1Walk: the table step reads no access type (AT walks alike).
    m = _haft_s1()
    m.par("S1E1R", 0x8000_0000, el=1)
    assert len([w for w in m.mem.hw_writes if w.after & 3 == 3 and w.after >> 10 & 1]) >= 3


class _LosingPort:
    """Table memory whose first compare-and-swaps at chosen PAs lose: another agent
    writes an IGNORED bit (bit[58]) first."""

    def __init__(self, mem, losing, times=1):
        self.mem, self.losing, self.times = mem, set(losing), times
        self.cas: list[int] = []

    def read64(self, pa, big_endian=False):
        return self.mem.read64(pa, big_endian)

    def cas64(self, pa, expected, new, big_endian=False):
        self.cas.append(pa)
        if pa in self.losing and self.cas.count(pa) <= self.times:
            self.mem.write64(pa, self.mem.read64(pa, big_endian) | 1 << 58, big_endian)
            return False
        return self.mem.cas64(pa, expected, new, big_endian)


def test_haft_lost_compare_and_swap_reads_the_descriptor_again():
    m = _haft_s1()
    pas = _table_pas(_haft_s1().ok(0x8000_0000).s1)
    port = _LosingPort(m.mem, [pas[1]])
    got = full_translate(m.regs, Regime.EL10, 0x8000_0000, acc_gpr(1, False),
                         _env_with(m, port))
    assert isinstance(got, AddressDescriptor)
    assert port.cas.count(pas[1]) == 2
    assert m.mem.read64(pas[1]) >> 10 & 1 == 1 and m.mem.read64(pas[1]) >> 58 & 1 == 1


def test_haft_compare_and_swap_that_never_wins_is_a_model_error():
    m = _haft_s1()
    pas = _table_pas(_haft_s1().ok(0x8000_0000).s1)
    with pytest.raises(RuntimeError, match="cas64 never succeeds"):
        full_translate(m.regs, Regime.EL10, 0x8000_0000, acc_gpr(1, False),
                       _env_with(m, _LosingPort(m.mem, [pas[0]], times=10**6)))


def test_haft_external_abort_on_the_table_update_is_a_walk_abort_at_that_level():
    m = _haft_s1()
    pas = _table_pas(_haft_s1().ok(0x8000_0000).s1)
    got = full_translate(m.regs, Regime.EL10, 0x8000_0000, acc_gpr(1, False),
                         _env_with(m, FailingPort(m.mem, bad_cas=[pas[1]])))
    assert isinstance(got, FaultRecord)
    assert (got.statuscode, got.level) == (Fault.SYNC_EXTERNAL_ON_WALK, 1)


def _haft_two_stage(s1_haft: int, s2_haft: int):
    from s2mmu.arch.features import server_v9_4_haft
    from s2mmu.arch.registers import HCRX_EL2, TCR2_EL1
    m, s1, s2 = two_stage(HA=1, HAFT=s2_haft)
    m.fs = server_v9_4_haft()
    s1.map(DATA_VA, DATA_IPA, 4096, s1_attrs())
    s2.map(DATA_IPA, DATA_PA, 4096, s2_attrs())
    m.set(TCR_EL1=tcr_el1(16, epd1=1, HA=1), TCR2_EL1=TCR2_EL1.encode(HAFT=s1_haft),
          HCRX_EL2=HCRX_EL2.encode(TCR2En=1))
    return m


@pytest.mark.parametrize("s1_haft, s2_haft", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_haft_at_each_stage(s1_haft, s2_haft):
    # ASL AArch64.S2Walk sets AF in stage-2 Table descriptors with VTCR_EL2.HAFT; a
    # stage-1 Table descriptor's write goes through stage 2 (AArch64.S2Translate of
    # the descriptor address with CreateAccDescTTEUpdate) to its PA.
    m = _haft_two_stage(s1_haft, s2_haft)
    got = m.ok(DATA_VA)
    assert got.paddress == DATA_PA
    s1_tables = {pa for _, _, pa, _ in got.s1.reads[:-1]}
    s2_tables = {pa for _, _, pa, _ in got.s2.reads[:-1]}
    assert all(S1_TABLES_PA <= pa < S1_TABLES_PA + (2 << 20) for pa in s1_tables)
    for pa in s1_tables:
        assert m.mem.read64(pa) >> 10 & 1 == s1_haft
    for pa in s2_tables:
        assert m.mem.read64(pa) >> 10 & 1 == s2_haft
    writes = [w for w in m.mem.hw_writes if w.after != w.before | 1 << 10 or w.before & 3 == 3
              and w.pa not in (got.s1.leaf_paddress, got.s2.leaf_paddress)]
    assert all(w.after == w.before | 1 << 10 for w in writes)
    assert {w.pa for w in writes} & s1_tables == (s1_tables if s1_haft else set())
    # Stage 2 also walks for the stage-1 descriptor reads: its tables there (below
    # 0x6400_0000, the stage-2 tables' region) get AF too.
    s2_written = {w.pa for w in writes if 0x6000_0000 <= w.pa < 0x6400_0000}
    assert s2_written >= (s2_tables if s2_haft else set())
    assert bool(s2_written) == bool(s2_haft)


def test_haft_stage1_table_write_needs_stage2_write_permission():
    from s2mmu.arch.features import server_v9_4_haft
    from s2mmu.arch.registers import HCRX_EL2, TCR2_EL1
    m, s1, s2 = two_stage(s2_table_attrs=s2_attrs(s2ap=0b01), HA=1)
    m.fs = server_v9_4_haft()
    s1.map(DATA_VA, DATA_IPA, 4096, s1_attrs())
    s2.map(DATA_IPA, DATA_PA, 4096, s2_attrs())
    m.set(TCR_EL1=tcr_el1(16, epd1=1, HA=1), TCR2_EL1=TCR2_EL1.encode(HAFT=1),
          HCRX_EL2=HCRX_EL2.encode(TCR2En=1))
    f = m.fault(DATA_VA)
    assert f.statuscode is Fault.PERMISSION and f.secondstage and f.s2fs1walk


HAFT_OFF = st.tuples(st.booleans(), st.integers(0, 1), st.integers(0, 1),
                     st.integers(0, 1)).filter(lambda t: not all(t))


@settings(max_examples=40, deadline=None)
@given(HAFT_OFF, st.sampled_from([0x8000_0000, 0x8000_1000, 0x8020_0000]),
       st.booleans())
def test_with_haft_off_nothing_changes(off, va, write):
    # Without FEAT_HAFT, or with any of its enables 0, answers and memory are those of
    # an implementation without the feature and with TCR2_EL1 zero.
    feature, haft, ha, tcr2en = off
    m = _haft_s1(haft, ha, tcr2en, feature)
    base = _haft_s1(0, ha, 0, False)
    acc = acc_gpr(1, write)
    got, want = m.translate(va, acc), base.translate(va, acc)
    assert type(got) is type(want)
    if isinstance(want, FaultRecord):
        assert (got.statuscode, got.level) == (want.statuscode, want.level)
    else:
        assert got.paddress == want.paddress
    assert m.mem.hw_writes == base.mem.hw_writes
