"""Register values decoded field by field, with meanings that depend on context and features."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s2mmu.arch import registers as R
from s2mmu.arch.bits import U64, mask
from s2mmu.arch.features import qemu_7_2_max, server_v8_2
from s2mmu.arch.regdecode import (
    decode_register,
    mair_attr_meaning,
    register_layout,
)

QEMU = qemu_7_2_max()
V82 = server_v8_2()
ALL_LAYOUTS = {**{n: s for n, s in R.REGISTERS.items()}, "PAR_EL1_FAULT": R.PAR_EL1_FAULT,
               "ESR_ELx_DABT": R.ESR_ELx_DABT, "ESR_ELx_IABT": R.ESR_ELx_IABT,
               "TCR_EL2_E2H1": R.TCR_EL2_E2H1}


def decode(name: str, value: int, fs=QEMU):
    spec = register_layout(name, value)
    assert spec is not None
    return decode_register(spec, value, fs)


@pytest.mark.parametrize("name", sorted(ALL_LAYOUTS))
def test_rows_cover_every_bit_once_and_keep_the_value(name):
    spec = ALL_LAYOUTS[name]

    @settings(max_examples=20, deadline=None)
    @given(st.integers(0, U64))
    def check(value):
        seen = 0
        rebuilt = 0
        for f in decode_register(spec, value, QEMU).fields:
            m = mask(f.hi, f.lo)
            assert seen & m == 0
            seen |= m
            rebuilt |= f.value << f.lo
        assert seen == U64 and rebuilt == value

    check()


# ESR: ISV gates the instruction syndrome.
def test_esr_with_isv_0_says_the_syndrome_fields_are_res0():
    d = decode("ESR_EL2", 0x920001C7)
    for name in ("SAS", "SSE", "SRT", "SF", "AR"):
        f = d.field(name)
        assert (f.valid, f.meaning) == (False, "RES0: ISV=0, no valid instruction syndrome")


def test_esr_with_isv_1_names_the_access_size_and_register():
    # ISV=1 SAS=0b11 SRT=3 SF=1: STR X3, a doubleword.
    d = decode("ESR_EL2", 0x93C38046)
    assert d.field("SAS").meaning == "doubleword (8 bytes)"
    assert d.field("SRT").meaning == "X3"
    assert d.field("SF").meaning == "64-bit general-purpose register (Xt)"
    assert all(d.field(n).valid for n in ("SAS", "SSE", "SRT", "SF", "AR"))


@pytest.mark.parametrize(("sas", "text"), [(0, "byte (1 bytes)"), (1, "halfword (2 bytes)"),
                                           (2, "word (4 bytes)"), (3, "doubleword (8 bytes)")])
def test_esr_sas_encodings(sas, text):
    assert decode("ESR_EL2", 0x93000046 | sas << 22).field("SAS").meaning == text


def test_esr_srt_is_a_w_register_with_sf_0_and_31_is_the_zero_register():
    assert decode("ESR_EL2", 0x93050046).field("SRT").meaning == "W5"
    assert decode("ESR_EL2", 0x931F8046).field("SRT").meaning == "XZR"
    assert decode("ESR_EL2", 0x931F0046).field("SRT").meaning == "WZR"


def test_esr_wnr_s1ptw_cm_il_have_meanings():
    d = decode("ESR_EL2", 0x920001C7)
    assert d.field("IL").meaning == "1 for a Data Abort with ISV=0 (not an instruction length)"
    assert decode("ESR_EL2", 0x93C38046).field("IL").meaning == "32-bit instruction trapped"
    assert decode("ESR_EL2", 0x91C38046).field("IL").meaning == "16-bit instruction trapped"
    assert decode("ESR_EL2", 0x82000086).field("IL").meaning == (
        "1 for an Instruction Abort (not an instruction length)")
    assert not decode("ESR_EL2", 0x80000086).field("IL").valid
    assert d.field("CM").meaning == ("from a cache maintenance or address translation "
                                     "instruction")
    assert d.field("S1PTW").meaning.startswith("fault on the stage 2 translation of an access")
    assert d.field("WnR").meaning == ("abort caused by an instruction writing to memory (always "
                                      "1 for cache maintenance and address translation "
                                      "instructions)")
    assert "not the table walk" in decode("ESR_EL2", 0x920000C7).field("WnR").meaning
    assert decode("ESR_EL2", 0x92000007).field("WnR").meaning == (
        "abort caused by an instruction reading from memory")


def test_esr_fnv_and_set_only_for_a_synchronous_external_abort():
    sea = decode("ESR_EL2", 0x92000410)  # DFSC 0x10, FnV=1
    assert sea.field("FnV").meaning == "FAR is not valid, it holds an UNKNOWN value"
    assert sea.field("FnV").valid
    walk = decode("ESR_EL2", 0x92000007)
    assert not walk.field("FnV").valid and not walk.field("SET").valid
    assert walk.field("EA").meaning == "0 for any abort other than an External abort"


def test_esr_vncr_is_res0_without_feat_nv2():
    assert decode("ESR_EL2", 0x92000007).fields[10].name == "RES0"
    assert decode("ESR_EL2", 0x92000007).fields[10].meaning == (
        "reserved, RES0 (VNCR only with FEAT_NV2)")


def test_esr_instruction_abort_layout_by_ec():
    d = decode("ESR_EL2", 0x82000086)
    assert d.field("IFSC").meaning == "Translation fault, level 2"
    assert d.field("S1PTW").value == 1


def test_unknown_fsc_is_not_valid():
    f = decode("ESR_EL2", 0x9200003F).field("DFSC")
    assert not f.valid and "unallocated" in f.meaning


# PAR_EL1 bit 11 follows FEAT_RME.
def test_par_bit_11_is_res1_without_feat_rme():
    f = decode("PAR_EL1", 0xFF00000090000B80).fields[3]
    assert (f.name, f.hi, f.value, f.valid) == ("RES1", 11, 1, False)
    assert f.meaning == "reserved, RES1 (NSE only with FEAT_RME)"


def test_par_bit_11_is_nse_with_feat_rme():
    f = decode("PAR_EL1", 0xFF00000090000B80, QEMU.with_features("FEAT_RME")).fields[3]
    assert (f.name, f.value, f.valid) == ("NSE", 1, True)


def test_par_res1_bit_clear_is_called_out():
    f = decode("PAR_EL1", 0xFF00000090000380).fields[3]
    assert f.meaning == "reserved, RES1 (NSE only with FEAT_RME); bits set to 0x0, not RES1"


def test_par_success_fields():
    d = decode("PAR_EL1", 0xFF00000090000B80)
    assert d.field("PA").meaning == "output address 0x90000000"
    assert d.field("ATTR").meaning == "Normal iWB-RAWA oWB-RAWA"
    assert not d.field("NS").valid


def test_par_pa_above_48_bits_needs_feat_lpa():
    f = decode("PAR_EL1", 0x000F000090000800, V82).field("PA")
    assert not f.valid and "RES0 without FEAT_LPA" in f.meaning


def test_par_fault_layout_has_res1_bit_11_and_fst():
    d = decode("PAR_EL1", 0xB0F)
    assert [f.name for f in d.fields if f.hi in (11, 10)] == ["RES1", "RES0"]
    assert d.field("FST").meaning == "Translation fault, level 3"
    assert d.field("PTW").meaning == "stage 2 fault during a stage 1 translation table walk"


# VTCR_EL2: SL0 by granule, SL2 with DS; T0SZ as an input size.
@pytest.mark.parametrize(("vtcr", "text"), [
    (0x80023558, "stage 2 starts at level 1 (4KB granule)"),
    (0x80023518, "stage 2 starts at level 2 (4KB granule)"),
    (0x80023598, "stage 2 starts at level 0 (4KB granule)"),
    (0x8002B558, "stage 2 starts at level 2 (16KB granule)"),
    (0x80027558, "stage 2 starts at level 2 (64KB granule)"),
    (0x380023514, "stage 2 starts at level -1 (4KB granule, SL2=1)"),
])
def test_vtcr_sl0_is_a_start_level(vtcr, text):
    f = decode("VTCR_EL2", vtcr).field("SL0")
    assert (f.meaning, f.valid) == (text, True)


def test_vtcr_sl0_reserved_encodings_say_why():
    f = decode("VTCR_EL2", 0x800275D8).field("SL0")  # 64KB, SL0=0b11
    assert not f.valid
    assert f.meaning == "reserved: SL0=0b11 is reserved for 64KB (ASL AArch64.S2InvalidSL)"
    f = decode("VTCR_EL2", 0x8002B5D8).field("SL0")  # 16KB, SL0=0b11 without DS
    assert f.meaning == ("reserved: SL0=0b11 (level 0) with 16KB needs VTCR_EL2.DS=1 "
                         "(ASL AArch64.S2InvalidSL)")


def test_vtcr_ds_and_sl2_are_res0_without_feat_lpa2():
    d = decode("VTCR_EL2", 0x380023514, V82)
    assert [f.name for f in d.fields if f.hi in (33, 32)] == ["RES0", "RES0"]
    assert "SL2 only with FEAT_LPA2" in d.fields[[f.hi for f in d.fields].index(33)].meaning


def test_vtcr_t0sz_is_the_ipa_size_and_range_checked():
    assert decode("VTCR_EL2", 0x80023558).field("T0SZ").meaning == "40-bit IPA space (1TB)"
    f = decode("VTCR_EL2", 0x8002354C, V82).field("T0SZ")  # T0SZ=12 on a 48-bit PA CPU
    assert not f.valid
    assert f.meaning.startswith("52-bit IPA space (4PB): outside 16..39 for the 4KB granule")


def test_vtcr_ps_above_pamax_is_capped():
    f = decode("VTCR_EL2", 0x80063558, V82).field("PS")
    assert not f.valid and "treated as 48 bits" in f.meaning


def test_tcr_t1sz_uses_tg1():
    d = decode("TCR_EL1", 0x580903510)
    assert d.field("T1SZ").meaning == "48-bit VA range (256TB)"
    assert d.field("T0SZ").meaning == "48-bit VA range (256TB)"


# MAIR attribute bytes.
@pytest.mark.parametrize(("attr", "text", "valid"), [
    (0x00, "Device-nGnRnE", True), (0x04, "Device-nGnRE", True), (0x08, "Device-nGRE", True),
    (0x0C, "Device-GRE", True), (0xFF, "Normal iWB-RAWA oWB-RAWA", True),
    (0x44, "Normal iNC oNC", True), (0xBB, "Normal iWT-RAWA oWT-RAWA", True),
    (0x4F, "Normal iWB-RAWA oNC", True), (0x22, "Normal iWT-RA-T oWT-RA-T", True),
    (0x77, "Normal iWB-RAWA-T oWB-RAWA-T", True),
    (0x02, "UNPREDICTABLE (reserved Device encoding 0b0000dd1x)", False),
    (0x30, "UNPREDICTABLE (reserved encoding 0bxxxx0000)", False),
    (0x01, "UNPREDICTABLE: Device-nGnRnE with XS=0 needs FEAT_XS", False),
    (0x40, "UNPREDICTABLE without FEAT_XS (Normal iNC oNC, XS=0 (FEAT_XS))", False),
    (0xF0, "Tagged Normal iWB-RAWA oWB-RAWA (FEAT_MTE2)", True),
])
def test_mair_attribute_bytes(attr, text, valid):
    assert mair_attr_meaning(attr, QEMU) == (text, valid)


def test_mair_feat_xs_encodings_are_named_with_feat_xs():
    xs = QEMU.with_features("FEAT_XS")
    assert mair_attr_meaning(0x05, xs) == ("Device-nGnRE, XS=0 (FEAT_XS)", True)
    assert mair_attr_meaning(0x40, xs) == ("Normal iNC oNC, XS=0 (FEAT_XS)", True)
    assert mair_attr_meaning(0xA0, xs) == ("Normal iWT-RA oWT-RA, XS=0 (FEAT_XS)", True)
    assert mair_attr_meaning(0xF0, V82)[1] is False


def test_mair_register_decodes_each_attr():
    d = decode("MAIR_EL1", 0x000000000044FF04)
    assert [d.field(f"Attr{n}").meaning for n in range(3)] == [
        "Device-nGnRE", "Normal iWB-RAWA oWB-RAWA", "Normal iNC oNC"]


# HPFAR_EL2.FIPA gives the IPA page.
def test_hpfar_fipa_is_the_ipa_page():
    f = decode("HPFAR_EL2", 0x402100).field("FIPA")
    assert f.meaning.startswith("faulting IPA page 0x40210000 (FIPA is IPA[51:12]")
    assert decode("HPFAR_EL2", 0x402100, V82).field("FIPA").meaning.startswith(
        "faulting IPA page 0x40210000 (FIPA is IPA[47:12]")


def test_hpfar_fipa_above_47_bits_without_feat_lpa_is_flagged():
    f = decode("HPFAR_EL2", 0x10_0000_0000_0, V82).field("FIPA")
    assert not f.valid and "bits above IPA[47] are set" in f.meaning


def test_register_layout_selects_by_ec_and_f():
    assert register_layout("esr_el2", 0x920001C7) is R.ESR_ELx_DABT
    assert register_layout("ESR_EL1", 0x82000086) is R.ESR_ELx_IABT
    assert register_layout("ESR_EL2", 0x5A000000) is R.ESR_ELx
    assert register_layout("PAR_EL1", 1) is R.PAR_EL1_FAULT
    assert register_layout("TCR_EL2", 0, e2h=True) is R.TCR_EL2_E2H1
    assert register_layout("NOPE_EL1", 0) is None


def test_every_hex_value_is_the_field_bits():
    d = decode("VTTBR_EL2", 0x0007_0000_6010_0000)
    assert d.field("VMID").value == 7
    assert d.field("BADDR").meaning == "translation table base 0x60100000 (aligned to the " \
        "initial table's size)"


def test_esr_iss2_overlay_and_dirtybit_with_the_permission_extensions():
    from s2mmu.arch.features import server_v9_4_pie
    v94 = server_v9_4_pie()
    rows = {f.name: f for f in decode_register(R.ESR_ELx, 0x409600004F, v94).fields}
    assert rows["ISS2"].meaning == "Overlay=1: a permission overlay refused the access"
    rows = {f.name: f for f in decode_register(R.ESR_ELx, 0x209600004F, v94).fields}
    assert rows["ISS2"].meaning.startswith("DirtyBit=1")
    rows = {f.name: f for f in decode_register(R.ESR_ELx, 0x409600004F, QEMU).fields}
    assert rows["ISS2"].meaning.endswith("not decoded")
