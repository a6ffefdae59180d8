"""Whole-table dumps: every leaf the walker finds is in exactly one range, with the same
output address offset, permissions and attributes; merging never joins different leaves."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s2mmu.arch.access import AccessDescriptor, acc_gpr, acc_ifetch
from s2mmu.arch.attrs import MemType, Shareability
from s2mmu.arch.builder import s1_attrs, s2_attrs
from s2mmu.arch.dump import (
    AddrRange,
    DumpRange,
    LeafKind,
    PermFilter,
    S1LeafAttrs,
    S2LeafAttrs,
    TableDump,
    dump_s1,
    dump_s2,
    el_permissions,
    parse_addr_range,
    parse_perm_filter,
    s1_leaf_attrs,
    s2_leaf_attrs,
)
from s2mmu.arch.errors import InputError
from s2mmu.arch.faults import Fault, FaultRecord
from s2mmu.arch.params import Granule, get_s1_ttw_params, get_s2_ttw_params
from s2mmu.arch.state import Regime
from s2mmu.arch.translate import AddressDescriptor, s2_translate
from tests.arch.machine import Machine, s1_machine, s2_builder, tcr_el1

G = Granule.G4K
PAGE, BLOCK = 0x1000, 0x20_0000
BASE = 0x40_0000_0000         # the VA window: 8 level-2 blocks from here


def s1_dump(m: Machine, rng: AddrRange | None = None, keep: PermFilter | None = None
            ) -> TableDump:
    env = m.env()
    params = [get_s1_ttw_params(m.regs, Regime.EL10, va, env.fs, env.choices)
              for va in (0, (1 << 64) - 1)]
    return dump_s1(params, env, None, rng, keep)


def containing(dump: TableDump, addr: int) -> list[DumpRange]:
    return [r for r in dump.ranges() if r.start <= addr < r.end]


ACCESSES = [(el, what) for el in (1, 0) for what in "rwx"]


def access(el: int, what: str) -> AccessDescriptor:
    return acc_ifetch(el) if what == "x" else acc_gpr(el, what == "w")


S1_LEAF = st.fixed_dictionaries({
    "attrindx": st.integers(0, 7), "ro": st.booleans(), "el0": st.booleans(),
    "pxn": st.booleans(), "uxn": st.booleans(), "af": st.booleans(),
    "sh": st.sampled_from([0b00, 0b10, 0b11]), "ng": st.booleans(), "dbm": st.booleans(),
})
# (block index in the window, leaf level, pages or blocks, leaf attributes, OA block, sw bits)
S1_MAPS = st.lists(st.tuples(st.integers(0, 7), st.sampled_from([2, 3, 3]), st.integers(1, 40),
                             S1_LEAF, st.integers(0, 64), st.integers(0, 15)),
                   min_size=1, max_size=6)
TABLE_ATTRS = st.sampled_from([0, 1 << 59, 1 << 60, 1 << 61, 1 << 62, 0b11 << 61 | 1 << 60])


def build_s1(maps: list, table_attrs: int, wxn: bool = False) -> Machine:  # type: ignore[type-arg]
    m, b = s1_machine()
    if wxn:
        m.set(SCTLR_EL1=m.regs.SCTLR_EL1 | 1 << 19)
    for block, level, n, leaf, oa_block, sw in maps:
        attrs = s1_attrs(**leaf) | sw << 55
        ia = BASE + block * BLOCK
        oa = 0x8000_0000 + oa_block * BLOCK
        if level == 2:
            b.map(ia, oa, BLOCK, attrs, level=2, table_attrs=table_attrs)
        else:
            size = min(n * PAGE, BLOCK)
            b.map(ia + (n % 7) * PAGE, oa + (n % 3) * PAGE, size, attrs,
                  table_attrs=table_attrs)
    return m


@settings(max_examples=60, deadline=None)
@given(S1_MAPS, TABLE_ATTRS, st.booleans(),
       st.lists(st.integers(0, 8 * BLOCK - 1), min_size=20, max_size=40))
def test_every_stage1_leaf_is_in_exactly_one_range_with_the_walks_answer(
        maps: list, table_attrs: int, wxn: bool, offsets: list[int]) -> None:  # type: ignore[type-arg]
    m = build_s1(maps, table_attrs, wxn)
    dump = s1_dump(m)
    env = m.env()
    p = get_s1_ttw_params(m.regs, Regime.EL10, BASE, env.fs, env.choices)
    for off in offsets:
        va = BASE + off
        found = containing(dump, va)
        res = m.translate(va, acc_gpr(1, False), stage1_only=True)
        if isinstance(res, FaultRecord) and res.statuscode is Fault.TRANSLATION:
            assert found == [], (hex(va), res)
            continue
        assert len(found) == 1, (hex(va), found)
        r = found[0]
        assert isinstance(r.attrs, S1LeafAttrs)
        if isinstance(res, FaultRecord):
            assert res.statuscode is Fault.ACCESS_FLAG and not r.attrs.af
            continue
        assert res.paddress == r.oa + (va - r.start)
        assert res.s1 is not None and res.s1.level == r.attrs.level
        assert s1_leaf_attrs(res.s1, p, env) == r.attrs
        perms = dict(zip([(1, w) for w in "rwx"] + [(0, w) for w in "rwx"],
                         [b for trio in el_permissions(r.attrs) for b in trio], strict=True))
        for el, what in ACCESSES:
            got = m.translate(va, access(el, what), stage1_only=True)
            assert isinstance(got, AddressDescriptor) == perms[(el, what)], (hex(va), el, what)


@settings(max_examples=60, deadline=None)
@given(S1_MAPS, TABLE_ATTRS)
def test_merging_never_joins_entries_with_different_attributes_or_output(
        maps: list, table_attrs: int) -> None:  # type: ignore[type-arg]
    m = build_s1(maps, table_attrs)
    dump = s1_dump(m)
    env = m.env()
    p = get_s1_ttw_params(m.regs, Regime.EL10, BASE, env.fs, env.choices)
    ranges = list(dump.ranges())
    for r in ranges:
        leaf = G.block_size(r.attrs.level)
        assert r.size() == r.entries * leaf
        for i in range(r.entries):
            va = r.start + i * leaf
            res = m.translate(va, acc_gpr(1, False), stage1_only=True)
            state = res.s1 if isinstance(res, AddressDescriptor) else None
            if state is not None:
                assert res.paddress == r.oa + i * leaf
                assert s1_leaf_attrs(state, p, env) == r.attrs
    for a, b in zip(ranges, ranges[1:], strict=False):
        assert a.end <= b.start
        if a.end == b.start and a.oa + a.size() == b.oa:
            assert a.attrs != b.attrs, "two ranges that could merge were left apart"


def test_table_controls_reach_the_leaves_below_them() -> None:
    m, b = s1_machine()
    b.map(BASE, 0x8000_0000, 2 * PAGE, s1_attrs(el0=True), table_attrs=1 << 61 | 1 << 60)
    (r,) = s1_dump(m).ranges()
    assert isinstance(r.attrs, S1LeafAttrs)
    # APTable[0]: no EL0 access; UXNTable: no EL0 execute; EL0-writable AP gives no PXN
    assert el_permissions(r.attrs) == ((True, True, True), (False, False, False))
    assert (r.start, r.end, r.entries) == (BASE, BASE + 2 * PAGE, 2)


def test_wxn_removes_execute_where_the_el_can_write() -> None:
    m = build_s1([(0, 3, 1, {"attrindx": 0}, 0, 0)], 0, wxn=True)
    (r,) = s1_dump(m).ranges()
    assert el_permissions(r.attrs)[0] == (True, True, False)


def test_pages_with_discontiguous_output_stay_apart() -> None:
    m, b = s1_machine()
    b.map(BASE, 0x8000_0000, PAGE, s1_attrs())
    b.map(BASE + PAGE, 0x9000_0000, PAGE, s1_attrs())
    assert [(r.start, r.oa) for r in s1_dump(m).ranges()] == [
        (BASE, 0x8000_0000), (BASE + PAGE, 0x9000_0000)]


def test_block_and_pages_with_equal_attributes_stay_apart_by_level() -> None:
    m, b = s1_machine()
    b.map(BASE, 0x8000_0000, BLOCK, s1_attrs(), level=2)
    b.map(BASE + BLOCK, 0x8000_0000 + BLOCK, BLOCK, s1_attrs())
    got = [(r.attrs.level, r.attrs.kind, r.entries) for r in s1_dump(m).ranges()]
    assert got == [(2, LeafKind.BLOCK, 1), (3, LeafKind.PAGE, 512)]


def test_mair_attributes_and_software_bits_are_decoded() -> None:
    m, b = s1_machine()
    b.map(BASE, 0x8000_0000, PAGE, s1_attrs(attrindx=1, sh=0b10, ng=True) | 0b1010 << 55)
    (r,) = s1_dump(m).ranges()
    a = r.attrs
    assert isinstance(a, S1LeafAttrs)
    assert (a.attrs.memtype, a.attrs.device.name, a.sw, a.ng, a.sh) == (
        MemType.DEVICE, "nGnRE", 0b1010, True, Shareability.OSH)


def test_reserved_and_faulting_entries_are_faults_not_ranges() -> None:
    m, b = s1_machine()
    b.map(BASE, 0x8000_0000, PAGE, s1_attrs())
    b.set_entry(BASE + PAGE, 3, 0x9000_0001)             # bits[1:0]=0b01 at level 3
    b.set_entry(BASE + 2 * PAGE, 3, 1 << 36 | 0x703)     # OA beyond a 32-bit IPS
    m.set(TCR_EL1=tcr_el1(16, ips=0b000, epd1=1))
    dump = s1_dump(m)
    assert [r.start for r in dump.ranges()] == [BASE]
    faults = dump.regions[0].faults
    assert [(f.start, f.level) for f in faults] == [(BASE + PAGE, 3), (BASE + 2 * PAGE, 3)]
    assert faults[0].reason == "bits[1:0]=0b01 is reserved at level 3"
    assert faults[1].reason == "output address 0x1000000000 exceeds the 32-bit output size"


def test_range_filter_clips_ranges_and_output_addresses() -> None:
    m, b = s1_machine()
    b.map(BASE, 0x8000_0000, BLOCK, s1_attrs(), level=2)
    (r,) = s1_dump(m, AddrRange(BASE + 0x3000, BASE + 0x5000)).ranges()
    assert (r.start, r.end, r.oa) == (BASE + 0x3000, BASE + 0x5000, 0x8000_3000)


def test_perm_filter_keeps_only_ranges_one_el_can_write_and_execute() -> None:
    m, b = s1_machine()
    b.map(BASE, 0x8000_0000, PAGE, s1_attrs(ro=True))
    b.map(BASE + PAGE, 0x8000_1000, PAGE, s1_attrs(pxn=True, el0=True, uxn=True))
    b.map(BASE + 2 * PAGE, 0x8000_2000, PAGE, s1_attrs())
    assert [r.start for r in s1_dump(m, keep=PermFilter(w=True, x=True)).ranges()] == [
        BASE + 2 * PAGE]
    assert [r.start for r in s1_dump(m, keep=PermFilter(w=True)).ranges()] == [
        BASE + PAGE, BASE + 2 * PAGE]


def test_epd1_region_is_listed_as_not_walked() -> None:
    m, _ = s1_machine()
    regions = s1_dump(m).regions
    assert [reg.name for reg in regions] == ["TTBR0_EL1", "TTBR1_EL1"]
    assert regions[1].disabled == "EPD1=1 disables walks of TTBR1"
    assert regions[1].start == (1 << 64) - (1 << 48)


def test_range_outside_the_input_size_is_refused() -> None:
    m, _ = s1_machine()
    with pytest.raises(InputError, match=r"^--range 0x1000000000000-0x1000000001000 is outside "
                       r"the VA space \(0x0-0x1000000000000 or 0xffff000000000000-"):
        s1_dump(m, AddrRange(1 << 48, (1 << 48) + PAGE))


@pytest.mark.parametrize(("text", "message"), [
    ("0x2000-0x1000", "--range 0x2000-0x1000: the start 0x2000 is not below the end 0x1000"),
    ("0x1000", "--range expects START-END (e.g. 0x40000000-0x80000000), got '0x1000'"),
    ("zz-0x1000", "--range expects START-END (e.g. 0x40000000-0x80000000), got 'zz-0x1000'"),
])
def test_bad_address_range_is_one_line(text: str, message: str) -> None:
    with pytest.raises(InputError) as e:
        parse_addr_range(text)
    assert str(e.value) == message


def test_perm_filter_letters() -> None:
    assert parse_perm_filter("w-x") == PermFilter(False, True, True)
    with pytest.raises(InputError) as e:
        parse_perm_filter("rq")
    assert str(e.value) == ("--perm: unknown permission letter 'q' in 'rq' "
                            "(use r, w and x, e.g. 'wx' for W+X mappings)")


# ---------------------------------------------------------------- stage 2

S2_LEAF = st.fixed_dictionaries({
    "memattr": st.sampled_from([0b1111, 0b0101, 0b0001, 0b0110, 0b0111, 0b1010]),
    "s2ap": st.integers(0, 3), "xn": st.integers(0, 3), "af": st.booleans(),
    "sh": st.sampled_from([0b00, 0b10, 0b11]), "dbm": st.booleans(),
})


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 7), st.sampled_from([2, 3]), st.integers(1, 30),
                          S2_LEAF), min_size=1, max_size=6),
       st.booleans(), st.booleans(), st.lists(st.integers(0, 8 * BLOCK - 1), min_size=20,
                                              max_size=40))
def test_every_stage2_leaf_is_in_exactly_one_range_with_the_walks_answer(
        maps: list, fwb: bool, ha: bool, offsets: list[int]) -> None:  # type: ignore[type-arg]
    m = Machine()
    b = s2_builder(m, HA=int(ha))
    if fwb:
        m.set(HCR_EL2=m.regs.HCR_EL2 | 1 << 46)
    ipa0 = 0x4000_0000
    for block, level, n, leaf in maps:
        attrs = s2_attrs(**leaf)
        if level == 2:
            b.map(ipa0 + block * BLOCK, 0x8000_0000 + block * BLOCK, BLOCK, attrs, level=2)
        else:
            b.map(ipa0 + block * BLOCK + (n % 5) * PAGE, 0x9000_0000 + n * PAGE,
                  n * PAGE, attrs)
    env = m.env()
    p = get_s2_ttw_params(m.regs, env.fs, env.choices)
    dump = dump_s2(p, env)
    for off in offsets:
        ipa = ipa0 + off
        found = containing(dump, ipa)
        res = s2_translate(p, ipa, acc_gpr(1, False), env)
        if isinstance(res, FaultRecord) and res.statuscode is Fault.TRANSLATION:
            assert found == []
            continue
        assert len(found) == 1, (hex(ipa), found)
        r = found[0]
        assert isinstance(r.attrs, S2LeafAttrs)
        if isinstance(res, FaultRecord) and res.statuscode is Fault.ACCESS_FLAG:
            assert not r.attrs.af and not ha
            continue
        if isinstance(res, FaultRecord):
            assert res.statuscode is Fault.PERMISSION and not r.attrs.perms.r
            continue
        assert res.s2 is not None
        assert res.paddress == r.oa + (ipa - r.start)
        # with VTCR_EL2.HA the read just set the access flag the dump saw clear
        assert replace(s2_leaf_attrs(res.s2, p, env), af=r.attrs.af) == r.attrs
        for el, what in ACCESSES:
            got = s2_translate(p, ipa, access(el, what), env)
            want = dict(zip("rwx", el_permissions(r.attrs)[0 if el else 1], strict=True))[what]
            assert isinstance(got, AddressDescriptor) == want, (hex(ipa), el, what)


def test_fwb_memattr_0b111_passes_stage1_attributes_through() -> None:
    m = Machine()
    b = s2_builder(m)
    m.set(HCR_EL2=m.regs.HCR_EL2 | 1 << 46)
    b.map(0x4000_0000, 0x8000_0000, PAGE, s2_attrs(memattr=0b0111))
    b.map(0x4000_1000, 0x8000_1000, PAGE, s2_attrs(memattr=0b0001))
    env = m.env()
    a, d = (r.attrs for r in dump_s2(get_s2_ttw_params(m.regs, env.fs, env.choices),
                                     env).ranges())
    assert isinstance(a, S2LeafAttrs) and isinstance(d, S2LeafAttrs)
    assert (a.fwb, a.attrs) == (True, None)
    assert d.attrs is not None and d.attrs.memtype is MemType.DEVICE


def test_stage1_tables_are_read_through_stage2_without_setting_its_access_flag() -> None:
    from tests.arch.machine import DATA_IPA, DATA_VA, S1_TABLES_IPA, two_stage

    m, s1, s2 = two_stage(s2_attrs(af=False), HA=1)
    s1.map(DATA_VA, DATA_IPA, PAGE, s1_attrs())
    env = m.env()
    entry = s2.set_entry(S1_TABLES_IPA, 2, s2.read(s2.root) and 0)  # find the entry address
    s2.write(entry, 0x5000_0000 | s2_attrs(af=False) | 0b01)
    params = [get_s1_ttw_params(m.regs, Regime.EL10, va, env.fs, env.choices)
              for va in (0, (1 << 64) - 1)]
    dump = dump_s1(params, env, get_s2_ttw_params(m.regs, env.fs, env.choices))
    assert [(r.start, r.oa) for r in dump.ranges()] == [(DATA_VA, DATA_IPA)]
    assert env.mem.hw_writes == [] and s2.read(entry) & 1 << 10 == 0


def test_stage1_tables_stage2_cannot_read_are_faults() -> None:
    from tests.arch.machine import DATA_IPA, DATA_VA, two_stage

    m, s1, _ = two_stage(s2_attrs(af=False))          # VTCR_EL2.HA=0: Access flag fault
    s1.map(DATA_VA, DATA_IPA, PAGE, s1_attrs())
    env = m.env()
    params = [get_s1_ttw_params(m.regs, Regime.EL10, 0, env.fs, env.choices)]
    dump = dump_s1(params, env, get_s2_ttw_params(m.regs, env.fs, env.choices))
    assert list(dump.ranges()) == []
    (f,) = dump.regions[0].faults
    assert f.reason == "stage-2 access flag fault on table IPA 0x10000000"


def test_ttbr1_region_reports_upper_virtual_addresses() -> None:
    from s2mmu.arch.builder import BumpAllocator, TableBuilder

    m, _ = s1_machine()
    hi = TableBuilder(m.mem, BumpAllocator(0x2000_0000, 0x2100_0000), G, 48, 0)
    va = 0xFFFF_8000_1234_5000
    hi.map(va & ((1 << 48) - 1), 0x7000_0000, PAGE, s1_attrs(el0=True))
    m.set(TTBR1_EL1=hi.root, TCR_EL1=tcr_el1(16, epd1=0))
    (r,) = s1_dump(m, AddrRange(0xFFFF_0000_0000_0000, 1 << 64)).ranges()
    assert (r.start, r.end, r.oa) == (va, va + PAGE, 0x7000_0000)
    got = m.translate(va + 0x10, acc_gpr(0, True), stage1_only=True)
    assert isinstance(got, AddressDescriptor) and got.paddress == 0x7000_0010
    # EL0-writable: EL1 may not execute it (ASL: PXN implied), EL0 may (UXN=0)
    assert el_permissions(r.attrs) == ((True, True, False), (True, True, True))


def test_invalid_entries_with_software_bits_are_listed_only_when_asked() -> None:
    """Bits [63:1] of an invalid descriptor are software's (a hypervisor's ownership
    annotation, say): unused=True lists them, merged per level and value; zeros are not."""
    m = Machine()
    b = s2_builder(m)
    b.map(0x4000_0000, 0x8000_0000, PAGE, s2_attrs())
    for i in (1, 2, 4):
        b.set_entry(0x4000_0000 + i * PAGE, 3, 0x4)
    b.set_entry(0x4000_0000 + 3 * PAGE, 3, 0x8)
    env = m.env()
    params = get_s2_ttw_params(m.regs, env.fs, env.choices)
    (region,) = dump_s2(params, env, unused=True).regions
    assert [(u.start, u.end, u.level, u.raw, u.entries) for u in region.unused] == [
        (0x4000_1000, 0x4000_3000, 3, 0x4, 2), (0x4000_3000, 0x4000_4000, 3, 0x8, 1),
        (0x4000_4000, 0x4000_5000, 3, 0x4, 1)]
    assert dump_s2(params, env).regions[0].unused == ()
    assert [r.start for r in region.ranges] == [0x4000_0000]
