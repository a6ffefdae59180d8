"""Descriptors decoded with their context: type, output address, fields, TTBR base."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s2mmu.arch.builder import encode_oa
from s2mmu.arch.descriptors import (
    Block,
    DescContext,
    Invalid,
    Page,
    Table,
    af,
    ap,
    ap_table,
    attrindx,
    block_desc_supported,
    contiguous,
    dbm,
    decode_descriptor,
    ng,
    output_address,
    pxn,
    pxn_table,
    s2_memattr,
    s2_xn,
    sh,
    tt_base_address,
    uxn,
    uxn_table,
)
from s2mmu.arch.params import Granule

G4, G16, G64 = Granule.G4K, Granule.G16K, Granule.G64K


def ctx(granule=G4, ds=False, lpa=True, stage=1, pamax52=True):
    return DescContext(granule, ds, lpa, stage, pamax52)


# Arm ASL AArch64.BlockDescSupported, by hand.
@pytest.mark.parametrize(("granule", "level", "ds", "pamax52", "ok"), [
    (G4, 0, False, True, False), (G4, 0, True, True, True), (G4, 1, False, False, True),
    (G4, 2, False, False, True), (G4, 3, True, True, False), (G4, -1, True, True, False),
    (G16, 0, True, True, False), (G16, 1, False, True, False), (G16, 1, True, True, True),
    (G16, 2, False, False, True), (G16, 3, True, True, False),
    (G64, 1, False, False, False), (G64, 1, False, True, True), (G64, 2, False, False, True),
    (G64, 3, False, True, False),
])
def test_block_desc_supported(granule, level, ds, pamax52, ok):
    assert block_desc_supported(granule, level, ds, pamax52) is ok


def test_bit0_clear_is_invalid():
    d = decode_descriptor(0xFFFF_FFFF_FFFF_FFFE, 1, ctx())
    assert isinstance(d, Invalid) and d.why == "bit[0] is 0"


def test_level3_0b11_is_page_and_0b01_is_reserved():
    assert decode_descriptor(0x9000_0703, 3, ctx()) == Page(0x9000_0703, 3, 0x9000_0000)
    d = decode_descriptor(0x9000_0701, 3, ctx())
    assert isinstance(d, Invalid) and d.why == "bits[1:0]=0b01 is reserved at level 3"


def test_table_descriptor_gives_next_level_address():
    assert decode_descriptor(0x6000_1003, 0, ctx()) == Table(0x6000_1003, 0, 0x6000_1000)
    # 64KB tables are 64KB aligned: bits [15:12] are not address bits at 48 bits...
    d = decode_descriptor(0x6001_0003, 2, ctx(G64, lpa=False))
    assert d == Table(0x6001_0003, 2, 0x6001_0000)


def test_level_minus1_table_and_no_block():
    assert isinstance(decode_descriptor(0x1000_0003, -1, ctx(ds=True)), Table)
    assert isinstance(decode_descriptor(0x1000_0001, -1, ctx(ds=True)), Invalid)


def test_block_ignores_address_bits_below_block_size():
    # 4KB level-1 block: OA[47:30] from bits[47:30]; bits[29:12] are not part of the OA.
    d = decode_descriptor(0x8000_0000 | 0x1FFF_F000 | 0x701, 1, ctx())
    assert d == Block(0x9FFF_F701, 1, 0x8000_0000)


@pytest.mark.parametrize(("granule", "level", "ds", "pamax52"), [
    (G4, 0, False, True), (G16, 1, False, True), (G64, 1, False, False)])
def test_block_at_unsupported_level_is_invalid(granule, level, ds, pamax52):
    d = decode_descriptor(0x701, level, ctx(granule, ds=ds, pamax52=pamax52))
    assert isinstance(d, Invalid)
    assert d.why == f"no block descriptor at level {level} for this granule"


def test_output_address_ds_4k():
    # OA[51:50] from bits[9:8], OA[49:48] from bits[49:48].
    raw = (0b10 << 48) | 0x0000_1234_5678_9000 | (0b11 << 8) | 0b11
    assert output_address(raw, 12, ctx(ds=True)) == (0b11 << 50) | (0b10 << 48) | 0x1234_5678_9000


def test_output_address_without_ds_ignores_bits_49_48_and_9_8():
    raw = (0b10 << 48) | 0x1234_5678_9000 | (0b11 << 8) | 0b11
    assert output_address(raw, 12, ctx(ds=False)) == 0x1234_5678_9000


def test_output_address_64k_lpa():
    raw = 0x0000_ABCD_0001_0000 | (0xA << 12) | 0b11
    assert output_address(raw, 16, ctx(G64, lpa=True)) == 0xA_ABCD_0001_0000
    assert output_address(raw, 16, ctx(G64, lpa=False)) == 0xABCD_0001_0000


def test_leaf_field_accessors():
    raw = ((1 << 54) | (1 << 53) | (1 << 52) | (1 << 51) | (1 << 11) | (1 << 10) | (0b10 << 8)
           | (0b11 << 6) | (0b101 << 2) | 0b11)
    assert (uxn(raw), pxn(raw), contiguous(raw), dbm(raw), ng(raw), af(raw)) == (1,) * 6
    assert (sh(raw), ap(raw), attrindx(raw)) == (0b10, 0b11, 0b101)
    assert s2_memattr(raw) == 0b0101 and s2_xn(raw) == 0b11


def test_table_field_accessors():
    raw = (0b10 << 61) | (1 << 60) | (0 << 59) | 0b11
    assert (ap_table(raw), uxn_table(raw), pxn_table(raw)) == (0b10, 1, 0)


# ---------------------------------------------------------------- OA round trips

def leaf_levels(granule):
    return {G4: [0, 1, 2, 3], G16: [1, 2, 3], G64: [1, 2, 3]}[granule]


def oa_strategy(granule, level, bits):
    lsb = granule.bits + (3 - level) * granule.stride
    return st.integers(0, (1 << (bits - lsb)) - 1).map(lambda n: n << lsb)


FORMS = [(G4, False, 48), (G16, False, 48), (G64, False, 48),
         (G4, True, 52), (G16, True, 52), (G64, False, 52)]
CASES = [(g, ds, n, level) for g, ds, n in FORMS for level in leaf_levels(g)]


@pytest.mark.parametrize(("granule", "ds", "oabits", "level"), CASES)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_encode_decode_oa_round_trip(granule, ds, oabits, level, data):
    """Every granule, level and 52-bit form (LPA 64KB, LPA2 DS 4KB/16KB)."""
    oa = data.draw(oa_strategy(granule, level, oabits))
    lsb = granule.bits + (3 - level) * granule.stride
    raw = encode_oa(oa, granule, ds)
    assert output_address(raw, lsb, ctx(granule, ds=ds, lpa=True)) == oa
    # As the walk decodes it: a table below level 3, a page at level 3.
    got = decode_descriptor(raw | 0b11, level, ctx(granule, ds=ds))
    if level == 3:
        assert got == Page(raw | 0b11, 3, oa)
    else:
        assert isinstance(got, Table)
        assert got.next_base == oa


@settings(max_examples=50, deadline=None)
@given(st.sampled_from([(G4, 0), (G4, 1), (G4, 2), (G16, 1), (G16, 2), (G64, 1), (G64, 2)]),
       st.integers(0, (1 << 52) - 1))
def test_block_decode_round_trip(gl, addr):
    granule, level = gl
    ds = granule is not G64
    lsb = granule.bits + (3 - level) * granule.stride
    oa = addr >> lsb << lsb
    raw = encode_oa(oa, granule, ds) | 0b01
    assert decode_descriptor(raw, level, ctx(granule, ds=ds)) == Block(raw, level, oa)


# ---------------------------------------------------------------- TTBR base address

def test_ttbr_base_aligned_to_initial_table():
    # 4KB, 48-bit, start level 0: a 4KB table; BADDR bits [11:1] and CnP are ignored.
    assert tt_base_address(0x6000_0FFF, 16, False, False, G4, 0, True) == 0x6000_0000


def test_ttbr_base_small_initial_table():
    # 4KB, 44-bit (T0SZ=20), start level 0: IA[43:39] = 32 entries = 256 bytes.
    assert tt_base_address(0x6000_0140, 20, False, False, G4, 0, True) == 0x6000_0100


def test_ttbr_base_concatenated_stage2():
    # 4KB, T0SZ=24, start level 1: IA[39:30] = 1024 entries = 8KB (two tables).
    assert tt_base_address(0x6010_1000, 24, False, False, G4, 1, True) == 0x6010_0000


def test_ttbr_base_ds_takes_bits_51_48_from_ttbr_5_2():
    # 4KB DS, 52-bit (T0SZ=12), start level -1: IA[51:48] = 16 entries = 128 bytes.
    assert tt_base_address(0x6000_00A8, 12, False, True, G4, -1, True) == 0xA_0000_6000_0080


def test_ttbr_base_52bit_minimum_alignment_is_64_bytes():
    # 4KB DS, 50-bit (T0SZ=14): IA[49:48] = 4 entries = 32 bytes, aligned to 64.
    assert tt_base_address(0x6000_0043, 14, False, True, G4, -1, True) == 0x6000_0040


def test_ttbr_base_64k_lpa_needs_ps_0b110():
    ttb = 0x0000_0000_6000_0000 | (0x3 << 2)
    assert tt_base_address(ttb, 12, True, False, G64, 1, True) == 0x3_0000_6000_0000
    assert tt_base_address(ttb, 12, False, False, G64, 1, True) == 0x6000_0000


# -- decode views ---------------------------------------------------------------------------

from s2mmu.arch.bits import U64  # noqa: E402
from s2mmu.arch.bits import mask as _mask  # noqa: E402
from s2mmu.arch.descriptors import DescKind, descriptor_view  # noqa: E402

VIEW_CONTEXTS = [
    (g, ds, lpa, stage, level)
    for g in (Granule.G4K, Granule.G16K, Granule.G64K)
    for ds in (False, True) if not (ds and g is Granule.G64K)
    for lpa in (False, True)
    for stage in (1, 2)
    for level in ((-1, 0, 1, 2, 3) if ds and g is Granule.G4K else
                  (1, 2, 3) if g is Granule.G64K else (0, 1, 2, 3))
]


@pytest.mark.parametrize(("g", "ds", "lpa", "stage", "level"), VIEW_CONTEXTS)
def test_view_rows_cover_every_bit_once_for_every_form(g, ds, lpa, stage, level):
    ctx = DescContext(g, ds, lpa, stage, pamax52=True)

    @settings(max_examples=15, deadline=None)
    @given(st.integers(0, U64), st.sampled_from([0b00, 0b01, 0b11]))
    def check(raw, low):
        raw = raw & ~0b11 | low
        v = descriptor_view(raw, level, ctx)
        seen = rebuilt = 0
        for f in v.fields:
            m = _mask(f.hi, f.lo)
            assert seen & m == 0, f
            seen |= m
            rebuilt |= f.value << f.lo
        assert seen == U64 and rebuilt == raw
        assert v.kind.value == type(decode_descriptor(raw, level, ctx)).__name__.lower()
        sw = [f for f in v.fields if (f.hi, f.lo) == (58, 55)]
        assert [f.name for f in sw] == ["SW"] and v.software == (raw >> 55) & 0xF

    check()


def test_ds_bits_9_8_are_oa_51_50_not_sh():
    raw = 0x0780000090003B03
    v = descriptor_view(raw, 3, DescContext(Granule.G4K, True, True, 1))
    names = {(f.hi, f.lo): f.name for f in v.fields}
    assert names[(9, 8)] == "OA[51:50]" and "SH" not in names.values()
    assert v.address == 0xC000090003000
    assert v.attributes == "MAIR_ELx.Attr0, shareability from TCR_ELx.SHx (DS=1)"
    assert v.software == 0xF


def test_without_ds_bits_9_8_are_sh():
    v = descriptor_view(0x0040000090003703, 3, DescContext(Granule.G4K, False, True, 1))
    sh_row = [f for f in v.fields if (f.hi, f.lo) == (9, 8)][0]
    assert (sh_row.name, sh_row.meaning) == ("SH", "Inner Shareable")
    assert v.permissions == "EL1 read/write, EL0 none; execute-never at EL0"
    assert (v.kind, v.address) == (DescKind.PAGE, 0x90003000)


def test_stage2_block_view():
    v = descriptor_view(0x400007FD, 2, DescContext(Granule.G4K, False, True, 2))
    assert v.kind is DescKind.BLOCK and v.address == 0x40000000
    assert v.attributes == "Normal iWB oWB (HCR_EL2.FWB=0), Inner Shareable"
    assert v.permissions == "read/write; executable at EL1 and EL0"
    rows = {f.name: f for f in v.fields}
    assert rows["S2AP"].meaning == "read/write" and rows["MemAttr"].value == 0xF


def test_stage2_memattr_reserved_cacheability_is_not_valid():
    v = descriptor_view(0x40000000 | 0x4D1, 2, DescContext(Granule.G4K, False, True, 2))
    memattr = [f for f in v.fields if f.name == "MemAttr"][0]
    assert memattr.value == 0b0100 and not memattr.valid


def test_software_bits_shown_for_invalid_and_table_entries():
    inv = descriptor_view(0xA << 55, 3, DescContext(Granule.G4K, False, True, 2))
    assert (inv.kind, inv.software, inv.why_invalid) == (DescKind.INVALID, 0xA, "bit[0] is 0")
    tab = descriptor_view(0x5 << 55 | 0x60001003, 1, DescContext(Granule.G4K, False, True, 1))
    assert (tab.kind, tab.software, tab.address) == (DescKind.TABLE, 0x5, 0x60001000)


def test_stage2_table_has_no_hierarchical_attributes():
    v = descriptor_view(0x60001003, 1, DescContext(Granule.G4K, False, True, 2))
    top = v.fields[0]
    assert (top.hi, top.lo, top.name) == (63, 59, "RES0")


def test_64k_lpa_bits_15_12_are_oa_51_48():
    v = descriptor_view(0x20000000 | 0xF000 | 0x401, 2, DescContext(Granule.G64K, False, True, 1))
    assert v.address == 0xF000020000000
    assert [f.name for f in v.fields if (f.hi, f.lo) == (15, 12)] == ["OA[51:48]"]


@pytest.mark.parametrize(("granule", "ds", "level", "msg"), [
    (Granule.G4K, False, -1, "level=-1: 4KB-granule tables have levels 0 to 3"),
    (Granule.G4K, True, -2, "level=-2: 4KB-granule tables with DS=1 have levels -1 to 3"),
    (Granule.G16K, True, -1, "level=-1: 16KB-granule tables with DS=1 have levels 0 to 3"),
    (Granule.G64K, False, 0, "level=0: 64KB-granule tables have levels 1 to 3"),
    (Granule.G4K, False, 4, "level=4: 4KB-granule tables have levels 0 to 3"),
])
def test_decode_descriptor_refuses_a_level_the_granule_does_not_have(granule, ds, level, msg):
    from s2mmu.arch.errors import InputError

    with pytest.raises(InputError) as e:
        decode_descriptor(0x3, level, DescContext(granule, ds, True, 1))
    assert str(e.value) == msg


def test_decode_descriptor_refuses_a_value_wider_than_64_bits_and_a_third_stage():
    from s2mmu.arch.errors import InputError

    with pytest.raises(InputError) as e:
        decode_descriptor(1 << 64, 3, DescContext(Granule.G4K, False, True, 1))
    assert str(e.value) == "descriptor 0x10000000000000000: a descriptor is 64 bits"
    with pytest.raises(InputError) as e:
        decode_descriptor(0x3, 3, DescContext(Granule.G4K, False, True, 3))
    assert str(e.value) == "stage=3: a descriptor belongs to stage 1 or 2"
