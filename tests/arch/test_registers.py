"""Every declared register: field positions from the Arm ARM, and exact round trips."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s2mmu.arch import registers as R
from s2mmu.arch.bits import U64, mask
from s2mmu.arch.sysreg import Field, RegisterSpec, Res0, Res1

ALL_SPECS = {
    **R.REGISTERS,
    "TCR_EL2_E2H0": R.TCR_EL2_E2H0, "PAR_EL1_FAULT": R.PAR_EL1_FAULT,
    "ESR_ELx_DABT": R.ESR_ELx_DABT, "ESR_ELx_IABT": R.ESR_ELx_IABT,
}
ISSUE_REGISTERS = [
    "SCTLR_EL1", "SCTLR_EL2", "TCR_EL1", "TCR_EL2", "TCR_EL2_E2H1", "VTCR_EL2", "TTBR0_EL1",
    "TTBR1_EL1", "TTBR0_EL2", "TTBR1_EL2", "VTTBR_EL2", "MAIR_EL1", "MAIR_EL2", "HCR_EL2",
    "HCRX_EL2", "PAR_EL1", "PAR_EL1_FAULT", "ESR_EL1", "ESR_EL2", "ESR_ELx_DABT",
    "ESR_ELx_IABT", "FAR_EL1", "FAR_EL2", "HPFAR_EL2", "ID_AA64MMFR0_EL1",
    "ID_AA64MMFR1_EL1", "ID_AA64MMFR2_EL1",
]


def item_mask(item: Field | Res0 | Res1) -> int:
    return mask(item.hi, item.lo)


@pytest.mark.parametrize("name", ISSUE_REGISTERS)
def test_issue_register_is_declared(name):
    assert name in ALL_SPECS


@pytest.mark.parametrize("name", sorted(ALL_SPECS))
def test_items_partition_all_64_bits(name):
    spec = ALL_SPECS[name]
    seen = 0
    for item in spec.items:
        assert item.hi >= item.lo
        assert seen & item_mask(item) == 0, f"{name}: overlapping items at {item}"
        seen |= item_mask(item)
    assert seen == U64


@pytest.mark.parametrize("name", sorted(ALL_SPECS))
def test_field_names_are_unique(name):
    names = [f.name for f in ALL_SPECS[name].fields()]
    assert len(names) == len(set(names))


def legal_values(spec: RegisterSpec):
    """Values with RES0 bits clear and RES1 bits set."""
    free = U64 & ~spec.res0_mask() & ~spec.res1_mask()
    return st.integers(0, U64).map(lambda v: (v & free) | spec.res1_mask())


@pytest.mark.parametrize("name", sorted(ALL_SPECS))
def test_decode_encode_round_trip(name):
    spec = ALL_SPECS[name]

    @settings(max_examples=30, deadline=None)
    @given(legal_values(spec))
    def round_trip(value):
        view = spec.decode(value)
        assert view.value == value
        assert spec.encode(**{f.name: view.get(f.name) for f in spec.fields()}) == value
        assert view.res0_violations() == 0

    round_trip()


# Field positions, checked by hand against the Arm ARM register descriptions.
def test_tcr_el1_fields_of_validation_value():
    # 0x5_8090_3510: IPS=0b101, TG1=0b10 (4KB), EPD1=1, T1SZ=16, SH0=0b11, ORGN0=IRGN0=0b01,
    # TG0=0b00 (4KB), T0SZ=16.
    v = R.TCR_EL1.decode(0x580903510)
    assert (v.IPS, v.TG1, v.EPD1, v.T1SZ) == (0b101, 0b10, 1, 16)
    assert (v.TG0, v.SH0, v.ORGN0, v.IRGN0, v.EPD0, v.T0SZ) == (0, 0b11, 1, 1, 0, 16)
    assert (v.HA, v.HD, v.TBI0, v.TBI1, v.DS) == (0, 0, 0, 0, 0)


def test_tcr_el1_upper_bits():
    v = R.TCR_EL1.decode((1 << 59) | (1 << 56) | (1 << 55) | (1 << 42) | (1 << 41)
                         | (1 << 40) | (1 << 39) | (1 << 38) | (1 << 37) | (1 << 52) | (1 << 51))
    assert (v.DS, v.E0PD1, v.E0PD0, v.HPD1, v.HPD0) == (1, 1, 1, 1, 1)
    assert (v.HD, v.HA, v.TBI1, v.TBI0, v.TBID1, v.TBID0) == (1, 1, 1, 1, 1, 1)


def test_tcr_el2_e2h0_fields():
    # 0x80823510: RES1 bits 31 and 23, PS=0b010 (40 bits), TG0=4KB, SH0=ISH, T0SZ=16.
    v = R.TCR_EL2_E2H0.decode(0x80823510)
    assert (v.PS, v.TG0, v.SH0, v.T0SZ, v.TBI, v.HA, v.HD, v.HPD, v.DS) == (
        2, 0, 3, 16, 0, 0, 0, 0, 0)
    assert R.TCR_EL2_E2H0.res1_mask() == (1 << 31) | (1 << 23)
    assert R.TCR_EL2_E2H0.decode((1 << 20) | (1 << 21) | (1 << 22) | (1 << 24)
                                 | (1 << 29) | (1 << 32)).describe()


def test_tcr_el2_e2h1_has_el1_layout():
    assert R.TCR_EL2_E2H1.field("T1SZ") == R.TCR_EL1.field("T1SZ")
    assert R.TCR_EL2_E2H1.field("IPS").lo == 32
    assert R.TCR_EL2_E2H0.field("PS").lo == 16


def test_vtcr_el2_validation_value():
    # 0x80023558: RES1 bit 31, PS=0b010 (40 bits), TG0=4KB, SH0=ISH, ORGN0=IRGN0=WB,
    # SL0=0b01 (start at level 1), T0SZ=24 (40-bit IPA).
    v = R.VTCR_EL2.decode(0x80023558)
    assert (v.PS, v.TG0, v.SH0, v.ORGN0, v.IRGN0, v.SL0, v.T0SZ) == (2, 0, 3, 1, 1, 1, 24)
    assert (v.DS, v.SL2, v.HA, v.HD) == (0, 0, 0, 0)


def test_vtcr_el2_ds_sl2_ha_hd_positions():
    v = R.VTCR_EL2.decode((1 << 33) | (1 << 32) | (1 << 22) | (1 << 21) | (1 << 31))
    assert (v.SL2, v.DS, v.HD, v.HA) == (1, 1, 1, 1)


def test_hcr_el2_bits_the_walk_reads():
    v = R.HCR_EL2.decode((1 << 46) | (1 << 34) | (1 << 33) | (1 << 32) | (1 << 31)
                         | (1 << 27) | (1 << 12) | (1 << 2) | 1)
    assert (v.FWB, v.E2H, v.ID, v.CD, v.RW, v.TGE, v.DC, v.PTW, v.VM) == (1,) * 9
    assert v.NV == 0


def test_sctlr_bits_the_walk_reads():
    v = R.SCTLR_EL1.decode((1 << 57) | (1 << 25) | (1 << 19) | (1 << 12) | (1 << 2) | 1)
    assert (v.EPAN, v.EE, v.WXN, v.I, v.C, v.M) == (1,) * 6
    assert v.SPAN == 0


def test_ttbr_fields():
    v = R.TTBR0_EL1.decode(0x0005_0000_6000_0001)
    assert (v.ASID, v.BADDR << 1, v.CnP) == (5, 0x6000_0000, 1)
    assert R.VTTBR_EL2.decode(0x0007_0000_6010_0000).VMID == 7


def test_mair_attr_fields():
    v = R.MAIR_EL1.decode(0x4404FF)
    assert (v.Attr0, v.Attr1, v.Attr2, v.Attr3) == (0xFF, 0x04, 0x44, 0)


def test_par_el1_success_layout():
    # ATTR=0xFF, PA=0x90000000, bit 11 RES1, NS=1, SH=0b11.
    v = R.PAR_EL1_OK.decode(0xFF00000090000B80)
    assert (v.ATTR, v.PA << 12, v.NSE, v.NS, v.SH, v.F) == (0xFF, 0x90000000, 1, 1, 3, 0)


def test_par_el1_fault_layout():
    # F=1, FST=0b000111 (translation level 3), PTW=1, S=1, bit 11 RES1.
    v = R.PAR_EL1_FAULT.decode(0xB0F)
    assert (v.F, v.FST, v.PTW, v.S) == (1, 0b000111, 1, 1)
    assert R.PAR_EL1_FAULT.res1_mask() == 1 << 11
    assert R.PAR_EL1_FAULT.res0_mask() & (1 << 10)


def test_esr_data_abort_layout():
    # 0x920001C7: EC=0x24 (DABT lower EL), IL=1, CM=1, S1PTW=1, WnR=1, DFSC=0b000111.
    v = R.ESR_ELx_DABT.decode(0x920001C7)
    assert (v.EC, v.IL, v.ISV, v.CM, v.S1PTW, v.WnR, v.DFSC) == (0x24, 1, 0, 1, 1, 1, 7)


def test_esr_instruction_abort_layout():
    v = R.ESR_ELx_IABT.decode((0x20 << 26) | (1 << 25) | (1 << 7) | 0b001111)
    assert (v.EC, v.S1PTW, v.IFSC) == (0x20, 1, 0b001111)


def test_hpfar_fipa():
    v = R.HPFAR_EL2.decode(0x100030)
    assert v.FIPA << 12 == 0x10003000
    assert v.NS == 0


def test_id_aa64mmfr0_fields():
    # PARange=6 (52 bits), TGran4=1 (52-bit 4KB), TGran16=2 (52-bit 16KB), TGran64=0.
    v = R.ID_AA64MMFR0_EL1.decode(0x0000_0000_1020_1126)
    assert (v.PARange, v.ASIDBits, v.BigEnd, v.SNSMem, v.TGran16, v.TGran64, v.TGran4) == (
        6, 2, 1, 1, 2, 0, 1)


def test_id_aa64mmfr1_and_mmfr2_fields():
    v1 = R.ID_AA64MMFR1_EL1.decode((1 << 28) | (3 << 20) | (2 << 12) | (1 << 8) | 2)
    assert (v1.XNX, v1.PAN, v1.HPDS, v1.VH, v1.HAFDBS) == (1, 3, 2, 1, 2)
    v2 = R.ID_AA64MMFR2_EL1.decode((1 << 60) | (1 << 40) | (1 << 28) | (1 << 16))
    assert (v2.E0PD, v2.FWB, v2.ST, v2.VARange) == (1, 1, 1, 1)
