"""The level loop: which input bits index which level, and the faults the walk raises.

Descriptors are placed by hand at addresses computed from the Arm ARM's tables of
input-address bits per level (VMSAv8-64 translation granules and levels).
"""

import pytest

from s2mmu.arch.access import acc_gpr
from s2mmu.arch.descriptors import Block, Page, Table
from s2mmu.arch.faults import Fault, FaultRecord
from s2mmu.arch.params import Granule
from s2mmu.arch.walk import (
    TTWState,
    WalkSetup,
    WalkStep,
    contiguous_bit,
    contiguous_size,
    leaf_output,
    level_index,
    oa_out_of_range,
    walk,
)

G4, G16, G64 = Granule.G4K, Granule.G16K, Granule.G64K
READ = acc_gpr(1, False)


def setup(granule, iasize, start, ttb=0x1000_0000, ps=48, ds=False, stage=1, **kw):
    return WalkSetup(stage, granule, iasize, start, ttb, ps, 0b101, ds, True, True, **kw)


# (granule, input size, start level, IA, [(level, index)...]): by hand.
SPLITS = [
    # 4KB: L-1 IA[51:48], L0 IA[47:39], L1 IA[38:30], L2 IA[29:21], L3 IA[20:12].
    (G4, 52, -1, (0xA << 48) | (1 << 39) | (2 << 30) | (3 << 21) | (4 << 12) | 0x567,
     [(-1, 0xA), (0, 1), (1, 2), (2, 3), (3, 4)]),
    (G4, 50, -1, (0x3 << 48) | (0x1FF << 39), [(-1, 3), (0, 0x1FF), (1, 0), (2, 0), (3, 0)]),
    (G4, 48, 0, (0x1FF << 39) | (0x100 << 30) | (0xAA << 21) | (0x155 << 12),
     [(0, 0x1FF), (1, 0x100), (2, 0xAA), (3, 0x155)]),
    (G4, 44, 0, (0x1F << 39) | (7 << 12), [(0, 0x1F), (1, 0), (2, 0), (3, 7)]),
    (G4, 39, 1, (0x1FF << 30) | (1 << 21) | (2 << 12), [(1, 0x1FF), (2, 1), (3, 2)]),
    (G4, 30, 2, (0x1FF << 21) | (0x1FE << 12), [(2, 0x1FF), (3, 0x1FE)]),
    (G4, 21, 3, 0x1F_F000, [(3, 0x1FF)]),
    # 4KB stage 2 concatenated: 40-bit IPA from level 1 uses IA[39:30] (2 tables);
    # 43-bit IPA from level 1 uses IA[42:30] (16 tables).
    (G4, 40, 1, 0x80_4000_0000, [(1, 0x201), (2, 0), (3, 0)]),
    (G4, 43, 1, 0x1ABC << 30, [(1, 0x1ABC), (2, 0), (3, 0)]),
    (G4, 34, 2, 0x3_FFE0_0000, [(2, 0x1FFF), (3, 0)]),
    # 16KB: L0 IA[51:47], L1 IA[46:36], L2 IA[35:25], L3 IA[24:14].
    (G16, 52, 0, (0x1F << 47) | (0x7FF << 36) | (0x400 << 25) | (1 << 14),
     [(0, 0x1F), (1, 0x7FF), (2, 0x400), (3, 1)]),
    (G16, 48, 0, (1 << 47) | (3 << 36) | (5 << 25) | (7 << 14), [(0, 1), (1, 3), (2, 5), (3, 7)]),
    (G16, 47, 1, (0x7FF << 36) | (1 << 14), [(1, 0x7FF), (2, 0), (3, 1)]),
    (G16, 36, 2, (0x7FF << 25) | (0x7FF << 14), [(2, 0x7FF), (3, 0x7FF)]),
    (G16, 25, 3, 0x1FF_C000, [(3, 0x7FF)]),
    (G16, 40, 2, 0x7FFF << 25, [(2, 0x7FFF), (3, 0)]),           # 16 tables
    # 64KB: L1 IA[51:42], L2 IA[41:29], L3 IA[28:16].
    (G64, 52, 1, (0x3FF << 42) | (0x1FFF << 29) | (1 << 16) | 0xABCD,
     [(1, 0x3FF), (2, 0x1FFF), (3, 1)]),
    (G64, 48, 1, (0x3F << 42) | (2 << 29), [(1, 0x3F), (2, 2), (3, 0)]),
    (G64, 42, 2, (0x1FFF << 29) | (0x1FFF << 16), [(2, 0x1FFF), (3, 0x1FFF)]),
    (G64, 29, 3, 0x1FFF_0000, [(3, 0x1FFF)]),
    (G64, 46, 2, 0x1_0001 << 29, [(2, 0x1_0001), (3, 0)]),       # 16 tables
]


@pytest.mark.parametrize(("granule", "iasize", "start", "ia", "expect"), SPLITS)
def test_address_split(granule, iasize, start, ia, expect):
    s = setup(granule, iasize, start)
    assert [(lvl, level_index(s, lvl, ia)) for lvl, _ in expect] == expect


def place_walk(granule, iasize, start, ia, expect, ps=52, ds=None):
    """Place one descriptor per level at the hand-computed address; return the walk."""
    ds = (granule is not G64) if ds is None else ds
    mem = {}
    base = 0x4000_0000
    tables = []
    for i, (_, idx) in enumerate(expect):
        entry = base + 8 * idx
        if i == len(expect) - 1:
            mem[entry] = 0x9000_0000 | 0x3
        else:
            nxt = 0x5000_0000 + (i << granule.bits)
            mem[entry] = nxt | 0x3
            tables.append(entry)
            base = nxt
    s = setup(granule, iasize, start, ttb=0x4000_0000, ps=ps, ds=ds)
    trace: list[WalkStep] = []
    got = walk(s, ia, READ, lambda a, lvl: (a, mem.get(a, 0)), trace)
    return got, trace, tables


@pytest.mark.parametrize(("granule", "iasize", "start", "ia", "expect"),
                         [c for c in SPLITS if c[4][-1][0] == 3])
def test_walk_reads_the_hand_computed_descriptor_addresses(granule, iasize, start, ia, expect):
    got, trace, _ = place_walk(granule, iasize, start, ia, expect)
    assert isinstance(got, TTWState), got
    assert [(st.level, st.index) for st in trace] == expect
    assert trace[0].table_base == 0x4000_0000
    assert all(st.descaddress == st.table_base + 8 * st.index for st in trace)
    assert isinstance(got.leaf, Page) and got.leaf.oa == 0x9000_0000
    assert len(got.tables) == len(expect) - 1


def test_walk_result_and_output_address():
    s = setup(G4, 48, 0)
    ia = (1 << 39) | (2 << 30) | (3 << 21) | 0x12_3456
    mem = {0x1000_0000 + 8: 0x1000_1003, 0x1000_1000 + 16: 0x1000_2003,
           0x1000_2000 + 24: 0x8000_0000 | 0x701}
    got = walk(s, ia, READ, lambda a, lvl: (a, mem.get(a, 0)))
    assert isinstance(got, TTWState)
    assert got.leaf == Block(0x8000_0701, 2, 0x8000_0000)
    assert got.level == 2 and got.leaf_paddress == 0x1000_2018
    assert [t.level for t in got.tables] == [0, 1]
    assert leaf_output(got, s, ia) == 0x8012_3456


def test_invalid_descriptor_is_translation_fault_at_its_level():
    s = setup(G4, 48, 0)
    mem = {0x1000_0000: 0x1000_1003}
    got = walk(s, 0, READ, lambda a, lvl: (a, mem.get(a, 0)))
    assert isinstance(got, FaultRecord)
    assert (got.statuscode, got.level) == (Fault.TRANSLATION, 1)
    assert got.reason == "level 1 descriptor 0x0000000000000000 is invalid: bit[0] is 0"


def test_ttbr_address_size_fault_is_level_0_even_when_starting_at_level_1():
    s = setup(G4, 39, 1, ttb=0x1_0000_0000, ps=32)
    got = walk(s, 0, READ, lambda a, lvl: pytest.fail("no descriptor may be read"))
    assert isinstance(got, FaultRecord)
    assert (got.statuscode, got.level) == (Fault.ADDRESS_SIZE, 0)


def test_table_address_size_fault_at_the_tables_level():
    s = setup(G4, 48, 0, ps=32)
    mem = {0x1000_0000: 0x1000_1003, 0x1000_1000: 0x1_0000_0003}
    got = walk(s, 0, READ, lambda a, lvl: (a, mem.get(a, 0)))
    assert isinstance(got, FaultRecord)
    assert (got.statuscode, got.level) == (Fault.ADDRESS_SIZE, 1)


def test_output_address_size_fault_at_the_leaf_level():
    s = setup(G4, 48, 0, ps=32)
    mem = {0x1000_0000: 0x1000_1003, 0x1000_1000: 0x1_4000_0701}
    got = walk(s, 0, READ, lambda a, lvl: (a, mem.get(a, 0)))
    assert isinstance(got, FaultRecord)
    assert (got.statuscode, got.level) == (Fault.ADDRESS_SIZE, 1)


def test_fetch_fault_ends_the_walk():
    s = setup(G4, 48, 0)
    f = FaultRecord(Fault.TRANSLATION, 2, READ, secondstage=True, s2fs1walk=True)
    assert walk(s, 0, READ, lambda a, lvl: f) is f


def test_oa_out_of_range():
    assert oa_out_of_range(1 << 40, 40)
    assert not oa_out_of_range((1 << 40) - 1, 40)


def test_contiguous_bit_is_res0_at_levels_without_contiguous_ranges():
    c = 1 << 52
    assert not contiguous_bit(c, G4, 0)
    assert not contiguous_bit(c, G16, 1)
    assert not contiguous_bit(c, G64, 1)
    assert contiguous_bit(c, G4, 1) and contiguous_bit(c, G16, 2) and contiguous_bit(c, G64, 3)


def test_contiguous_sizes():
    assert [contiguous_size(G4, lvl) for lvl in (1, 2, 3)] == [4, 4, 4]
    assert [contiguous_size(G16, lvl) for lvl in (2, 3)] == [5, 7]
    assert [contiguous_size(G64, lvl) for lvl in (2, 3)] == [5, 5]


def test_contiguous_range_beyond_input_size_faults_only_if_chosen():
    # 4KB, 21-bit input (start level 3): 16 contiguous 4KB pages = 2^16 bytes fit; a
    # 16-entry range of 2MB blocks would not fit a 24-bit input.
    mem = {0x1000_0000: 0x1000_1003, 0x1000_1000: 0x8000_0000 | (1 << 52) | 0x701}
    for faults in (False, True):
        s = WalkSetup(1, G4, 24, 2, 0x1000_1000, 48, 0b101, False, True, True,
                      contiguous_faults=faults)
        got = walk(s, 0, READ, lambda a, lvl: (a, mem.get(a, 0)))
        if faults:
            assert isinstance(got, FaultRecord) and got.statuscode is Fault.TRANSLATION
        else:
            assert isinstance(got, TTWState)


def test_block_nt_faults_only_if_chosen():
    mem = {0x1000_0000: 0x8000_0000 | (1 << 16) | 0x701}
    for faults in (False, True):
        s = setup(G4, 39, 1, nt_faults=faults)
        got = walk(s, 0, READ, lambda a, lvl: (a, mem.get(a, 0)))
        assert isinstance(got, FaultRecord) is faults


def test_trace_records_every_step():
    s = setup(G4, 39, 1)
    mem = {0x1000_0000: 0x1000_1003, 0x1000_1000: 0x1000_2003, 0x1000_2000: 0x9000_0703}
    trace: list[WalkStep] = []
    walk(s, 0, READ, lambda a, lvl: (a + 0x100_0000_0000, mem.get(a, 0)), trace)
    assert [(t.level, t.descaddress, t.paddress) for t in trace] == [
        (1, 0x1000_0000, 0x100_1000_0000), (2, 0x1000_1000, 0x100_1000_1000),
        (3, 0x1000_2000, 0x100_1000_2000)]
    assert isinstance(trace[0].decoded, Table) and isinstance(trace[2].decoded, Page)
