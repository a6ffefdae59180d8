"""Memory attributes: MAIR decode, stage-2 MemAttr, combination with and without FWB."""

from dataclasses import replace

import pytest

from s2mmu.arch.attrs import (
    NC,
    NORMAL_NC,
    WB_RAWA,
    Cacheability,
    CacheHints,
    DEVICE_nGnRnE,
    DeviceType,
    MemoryAttributes,
    MemType,
    Shareability,
    combine_device,
    combine_hints,
    combine_shareability,
    decode_cache_nibble,
    encode_cache_nibble,
    mair_reserved,
    par_attr,
    par_sh,
    s1_attr_decode,
    s2_apply_fwb,
    s2_combine_s1,
    s2_memattr_decode,
)
from s2mmu.arch.builder import s1_attrs, s2_attrs
from s2mmu.arch.features import FeatureSet, qemu_7_2_max

from .machine import DATA_IPA, DATA_PA, two_stage

WB, WT = Cacheability.WB, Cacheability.WT
NSH, OSH, ISH = Shareability.NSH, Shareability.OSH, Shareability.ISH


def normal(inner, outer=None, sh=ISH, tagged=False):
    return MemoryAttributes(MemType.NORMAL, inner=inner, outer=outer or inner, shareability=sh,
                            tagged=tagged)


def device(t):
    return MemoryAttributes(MemType.DEVICE, t)


@pytest.mark.parametrize(("nibble", "hints"), [
    (0b0100, NC),
    (0b0001, CacheHints(WT, False, True, True)), (0b0010, CacheHints(WT, True, False, True)),
    (0b0101, CacheHints(WB, False, True, True)), (0b0111, CacheHints(WB, True, True, True)),
    (0b1000, CacheHints(WT, False, False)), (0b1010, CacheHints(WT, True, False)),
    (0b1100, CacheHints(WB, False, False)), (0b1111, CacheHints(WB, True, True)),
])
def test_mair_nibble_decode_and_encode(nibble, hints):
    assert decode_cache_nibble(nibble) == hints
    assert encode_cache_nibble(hints) == nibble


@pytest.mark.parametrize(("attr", "dev"), [(0x00, DeviceType.nGnRnE), (0x04, DeviceType.nGnRE),
                                           (0x08, DeviceType.nGRE), (0x0C, DeviceType.GRE)])
def test_mair_device_types(attr, dev):
    # The descriptor's SH is kept as decoded; EffectiveShareability comes later.
    m = s1_attr_decode(attr << 8, 1, 0b00)
    assert (m.memtype, m.device, m.shareability) == (MemType.DEVICE, dev, NSH)


def test_mair_normal_write_back_keeps_descriptor_sh():
    assert s1_attr_decode(0xFF, 0, 0b11) == normal(WB_RAWA, sh=ISH)
    assert s1_attr_decode(0xFF, 0, 0b00) == normal(WB_RAWA, sh=NSH)


def test_mair_non_cacheable_keeps_decoded_sh():
    assert s1_attr_decode(0x44, 0, 0b00) == normal(NC, sh=NSH)


def test_mair_mixed_inner_outer():
    m = s1_attr_decode(0x4F << 16, 2, 0b00)
    assert (m.inner, m.outer, m.shareability) == (WB_RAWA, NC, NSH)


def test_mair_tagged():
    m = s1_attr_decode(0xF0, 0, 0b11)
    assert m.tagged and m.inner == WB_RAWA and m.outer == WB_RAWA


@pytest.mark.parametrize(("memattr", "dev"), [(0b0000, DeviceType.nGnRnE),
                                              (0b0001, DeviceType.nGnRE),
                                              (0b0010, DeviceType.nGRE), (0b0011, DeviceType.GRE)])
def test_s2_memattr_device(memattr, dev):
    assert s2_memattr_decode(memattr, 0b11) == device(dev)


def test_s2_memattr_normal():
    m = s2_memattr_decode(0b1111, 0b11)
    assert (m.inner.attrs, m.outer.attrs, m.shareability) == (WB, WB, ISH)
    m = s2_memattr_decode(0b1010, 0b00)
    assert (m.inner.attrs, m.outer.attrs, m.shareability) == (WT, WT, NSH)
    m = s2_memattr_decode(0b0111, 0b00)
    assert (m.outer.attrs, m.inner.attrs) == (Cacheability.NC, WB)
    assert s2_memattr_decode(0b0101, 0b00).shareability is OSH


def test_device_combination_takes_the_more_restrictive():
    assert combine_device(DeviceType.nGnRE, DeviceType.nGRE) is DeviceType.nGnRE
    assert combine_device(DeviceType.GRE, DeviceType.nGnRnE) is DeviceType.nGnRnE


def test_cacheability_combination_weaker_wins_hints_from_stage1():
    s1 = CacheHints(WB, True, False, transient=True)
    assert combine_hints(s1, CacheHints(WB, True, True)) == s1
    assert combine_hints(s1, CacheHints(WT, True, True)) == CacheHints(WT, True, False, True)
    assert combine_hints(s1, NC) == NC
    assert combine_hints(NC, WB_RAWA) == NC


def test_shareability_combination_more_shareable_wins():
    assert combine_shareability(NSH, ISH) is ISH
    assert combine_shareability(ISH, OSH) is OSH
    assert combine_shareability(NSH, NSH) is NSH


def test_s2_combine_without_fwb():
    s2_wb = s2_memattr_decode(0b1111, 0b11)
    assert s2_combine_s1(device(DeviceType.nGnRE), s2_wb) == device(DeviceType.nGnRE)
    assert s2_combine_s1(normal(WB_RAWA), device(DeviceType.GRE)) == device(DeviceType.GRE)
    assert s2_combine_s1(device(DeviceType.GRE), device(DeviceType.nGRE)) == device(
        DeviceType.nGRE)
    assert s2_combine_s1(normal(WB_RAWA, sh=NSH), s2_wb) == normal(WB_RAWA, sh=ISH)
    assert s2_combine_s1(normal(WB_RAWA), s2_memattr_decode(0b0101, 0)) == normal(NC, sh=OSH)


# FWB (MemAttr[2:0]; MemAttr[3] ignored), by stage-1 attributes: Normal WB, Device, Normal NC.
S1_WB = normal(WB_RAWA, sh=NSH)
# Stage-1 shareability as the descriptor gave it (HCR_EL2.VM=1 passes it on).
S1_DEV = MemoryAttributes(MemType.DEVICE, DeviceType.nGnRE, shareability=NSH)
S1_NC = normal(NC, sh=NSH)
DEV_nGnRE = device(DeviceType.nGnRE)
S1_WT = normal(CacheHints(WT, True, False), sh=NSH)


@pytest.mark.parametrize("bit3", [0, 0b1000])
@pytest.mark.parametrize(("memattr", "s1", "expect"), [
    # 0b0dd: Device dd, the more restrictive of both stages where stage 1 is Device.
    (0b000, S1_WB, DEVICE_nGnRnE), (0b011, S1_WB, device(DeviceType.GRE)),
    (0b011, S1_DEV, DEV_nGnRE), (0b000, S1_DEV, DEVICE_nGnRnE),
    # 0b111: the stage-1 attributes (shareability combined, then effective).
    (0b111, S1_WB, normal(WB_RAWA, sh=ISH)), (0b111, S1_DEV, DEV_nGnRE),
    (0b111, S1_NC, normal(NC, sh=OSH)),
    # 0b110: Normal Write-Back, even over Device; hints from stage 1 where cacheable.
    (0b110, S1_WB, normal(WB_RAWA, sh=ISH)), (0b110, S1_DEV, normal(WB_RAWA, sh=ISH)),
    (0b110, S1_NC, normal(WB_RAWA, sh=ISH)),
    (0b110, S1_WT, normal(CacheHints(WB, True, False), sh=ISH)),
    # 0b101 and 0b100: Normal Non-cacheable, stage-1 Device stays Device.
    (0b101, S1_WB, NORMAL_NC), (0b101, S1_DEV, DEV_nGnRE), (0b100, S1_WB, NORMAL_NC),
    (0b100, S1_DEV, DEV_nGnRE),
])
def test_fwb_encodings(memattr, s1, expect, bit3):
    assert s2_apply_fwb(s1, memattr | bit3, 0b11) == expect


def test_fwb_shareability_combines_both_stages():
    assert s2_apply_fwb(normal(WB_RAWA, sh=ISH), 0b111, 0b10).shareability is OSH
    assert s2_apply_fwb(normal(WB_RAWA, sh=NSH), 0b110, 0b00).shareability is NSH


@pytest.mark.parametrize(("attrs", "byte"), [
    (device(DeviceType.nGnRnE), 0x00), (device(DeviceType.nGnRE), 0x04),
    (device(DeviceType.nGRE), 0x08), (device(DeviceType.GRE), 0x0C),
    (normal(WB_RAWA), 0xFF), (normal(NC), 0x44), (normal(WB_RAWA, tagged=True), 0xF0),
    (normal(CacheHints(WT, True, False)), 0xAA),
    (normal(CacheHints(WB, True, True, True)), 0x77), (normal(WB_RAWA, NC), 0x4F),
])
def test_par_attr_uses_mair_encoding(attrs, byte):
    assert par_attr(attrs) == byte


def test_par_sh_is_outer_shareable_for_device_and_non_cacheable():
    assert par_sh(device(DeviceType.nGnRE)) == 0b10
    assert par_sh(MemoryAttributes(MemType.NORMAL, inner=NC, outer=NC, shareability=NSH)) == 0b10
    assert par_sh(normal(WB_RAWA, sh=ISH)) == 0b11
    assert par_sh(normal(WB_RAWA, sh=NSH)) == 0b00
    assert par_sh(normal(WB_RAWA, NC, sh=NSH)) == 0b00


def test_describe():
    assert normal(WB_RAWA).describe() == "Normal iWB-RAWA oWB-RAWA ISH"
    assert device(DeviceType.nGnRE).describe() == "Device-nGnRE"


def test_decoders_refuse_fields_wider_than_their_encoding():
    from s2mmu.arch.attrs import s1_attr_decode, s2_memattr_decode
    from s2mmu.arch.errors import InputError

    with pytest.raises(InputError) as e:
        s1_attr_decode(0xFF, 8, 0)
    assert str(e.value) == ("attrindx=8, sh=0: AttrIndx is 3 bits (MAIR_ELx.Attr0..Attr7) "
                            "and SH 2 bits")
    with pytest.raises(InputError) as e:
        s2_memattr_decode(16, 3)
    assert str(e.value) == "memattr=16, sh=3: stage-2 MemAttr is 4 bits and SH 2 bits"
    with pytest.raises(InputError) as e:
        decode_cache_nibble(-1)
    assert str(e.value) == "nibble=-1: a MAIR cacheability nibble is 4 bits"


# --- FEAT_XS: the XS attribute --------------------------------------------------------------

@pytest.mark.parametrize(("attr", "xs"), [
    (0x00, True), (0x04, True), (0x01, False), (0x05, False), (0x0D, False),
    (0x40, False), (0xA0, False), (0xF0, False), (0xFF, False), (0xBB, True),
    (0x44, True), (0xF4, True), (0x4F, True)])
def test_feat_xs_decodes_the_xs_attribute_of_each_mair_encoding(attr: int, xs: bool) -> None:
    got = s1_attr_decode(attr, 0, 0b11, xs=True)
    assert got.xs is xs
    assert s1_attr_decode(attr, 0, 0b11).xs is True or mair_reserved(attr)


def test_feat_xs_makes_its_encodings_defined_and_keeps_their_type() -> None:
    for attr in (0x01, 0x05, 0x09, 0x0D, 0x40, 0xA0):
        assert mair_reserved(attr) and not mair_reserved(attr, xs=True)
    assert mair_reserved(0x02, xs=True) and mair_reserved(0x80, xs=True)
    dev = s1_attr_decode(0x05, 0, 0b10, xs=True)
    assert (dev.memtype, dev.device) == (MemType.DEVICE, DeviceType.nGnRE)
    nc = s1_attr_decode(0x40, 0, 0b11, xs=True)
    assert (nc.inner.attrs, nc.outer.attrs) == (Cacheability.NC, Cacheability.NC)
    wt = s1_attr_decode(0xA0, 0, 0b11, xs=True)
    assert (wt.inner, wt.outer) == (CacheHints(Cacheability.WT, True, False),) * 2


@pytest.mark.parametrize("attr", [0x01, 0x05, 0x09, 0x0D, 0x40, 0xA0, 0x00, 0x44, 0xAA, 0xFF])
def test_par_attr_round_trips_the_xs_encodings(attr: int) -> None:
    assert par_attr(s1_attr_decode(attr, 0, 0b11, xs=True)) == attr


def test_stage2_combination_keeps_xs_1_only_where_both_stages_have_it() -> None:
    dev_xs0 = s1_attr_decode(0x05, 0, 0b10, xs=True)
    nc_xs1 = s1_attr_decode(0x44, 0, 0b10, xs=True)
    s2_nc = s2_memattr_decode(0b0101, 0b10)
    assert s2_combine_s1(nc_xs1, s2_nc, xs=True).xs is True
    assert s2_combine_s1(nc_xs1, replace(s2_nc, xs=False), xs=True).xs is False   # FnXS
    assert s2_combine_s1(dev_xs0, s2_nc, xs=True).xs is False
    wb = s1_attr_decode(0xFF, 0, 0b11, xs=True)
    assert s2_combine_s1(wb, s2_memattr_decode(0b1111, 0b11), xs=True).xs is False
    # Without FEAT_XS everything has XS=1, combined too.
    assert s2_combine_s1(s1_attr_decode(0xFF, 0, 0b11), s2_memattr_decode(0b1111, 0b11)).xs


def test_fwb_keeps_stage1_xs_forces_xs_0_for_write_back_and_fnxs() -> None:
    nc_xs1 = s1_attr_decode(0x44, 0, 0b10, xs=True)
    assert s2_apply_fwb(nc_xs1, 0b0111, 0b11, xs=True).xs is True       # stage 1's
    assert s2_apply_fwb(nc_xs1, 0b0110, 0b11, xs=True).xs is False      # forced WB
    assert s2_apply_fwb(nc_xs1, 0b0111, 0b11, fnxs=True, xs=True).xs is False
    assert s2_apply_fwb(nc_xs1, 0b0001, 0b11, xs=True).xs is True       # Device, stage 1's
    assert s2_apply_fwb(s1_attr_decode(0x44, 0, 0b10), 0b0110, 0b11).xs is True


def test_translation_reports_xs_in_the_result_and_par_with_feat_xs() -> None:
    m, s1, s2 = two_stage()
    base = qemu_7_2_max()
    m.fs = FeatureSet(base.features | {"FEAT_XS"}, base.pa_bits)
    m.set(MAIR_EL1=0x05_40)                 # Attr0 Normal NC XS=0, Attr1 Device-nGnRE XS=0
    s1.map(0x1000, DATA_IPA, 0x1000, s1_attrs(attrindx=0))
    s1.map(0x2000, DATA_IPA + 0x1000, 0x1000, s1_attrs(attrindx=1))
    s2.map(DATA_IPA, DATA_PA, 0x1000, s2_attrs(memattr=0b0101))
    s2.map(DATA_IPA + 0x1000, DATA_PA + 0x1000, 0x1000, s2_attrs(memattr=0b0101) | 1 << 11)
    assert m.ok(0x1000).memattrs.xs is False
    assert m.par("S12E1R", 0x1000) >> 56 == 0x40
    assert m.par("S12E1R", 0x2000) >> 56 == 0x05
    m.set(MAIR_EL1=0x44_44)                 # XS=1 at stage 1; FnXS at stage 2 clears it
    assert m.ok(0x1000).memattrs.xs is True and m.par("S12E1R", 0x1000) >> 56 == 0x44
    assert m.ok(0x2000).memattrs.xs is False
    m.fs = base                             # without FEAT_XS, bit 11 is not FnXS
    assert m.ok(0x2000).memattrs.xs is True
