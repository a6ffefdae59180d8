"""The table builder: allocation, descriptor encodings, initial table sizes, mapping."""

import pytest

from s2mmu.arch.builder import (
    BumpAllocator,
    TableBuilder,
    encode_oa,
    s1_attrs,
    s2_attrs,
)
from s2mmu.arch.memory import PhysMem
from s2mmu.arch.params import Granule

G4, G16, G64 = Granule.G4K, Granule.G16K, Granule.G64K


def test_bump_allocator_aligns_to_the_size():
    a = BumpAllocator(0x1000, 0x10_0000)
    assert a.alloc() == 0x1000
    assert a.alloc(0x2000) == 0x2000
    assert a.alloc(64) == 0x4000
    assert a.alloc() == 0x5000


def test_bump_allocator_exhaustion():
    a = BumpAllocator(0x1000, 0x2000)
    a.alloc()
    with pytest.raises(MemoryError, match="table allocator exhausted at 0x2000"):
        a.alloc()


def test_encode_oa_4k():
    assert encode_oa(0x1234_5000, G4, False) == 0x1234_5000


def test_encode_oa_ds_puts_oa_51_50_in_bits_9_8():
    assert encode_oa(0xF_0001_2345_6000, G4, True) == 0x0003_0001_2345_6300
    assert encode_oa(0xF_0001_2345_4000, G16, True) == 0x0003_0001_2345_4300


def test_encode_oa_64k_puts_oa_51_48_in_bits_15_12():
    assert encode_oa(0xA_0000_0001_0000, G64, False) == 0x1_A000


@pytest.mark.parametrize(("granule", "iasize", "start", "size"), [
    (G4, 48, 0, 4096), (G4, 40, 1, 8192), (G4, 43, 1, 65536), (G4, 44, 0, 256),
    (G4, 52, -1, 128), (G4, 50, -1, 64), (G16, 48, 0, 16), (G16, 40, 2, 16 * 16384),
    (G64, 52, 1, 8192), (G64, 46, 2, 16 * 65536),
])
def test_root_size_is_the_initial_table_size(granule, iasize, start, size):
    alloc = BumpAllocator(0x100_0000, 0x1000_0000, granule.size)
    b = TableBuilder(PhysMem(), alloc, granule, iasize, start)
    assert b.root_size() == max(size, 64)
    assert b.root % b.root_size() == 0


def test_index_takes_all_remaining_bits_at_the_start_level():
    b = TableBuilder(PhysMem(), BumpAllocator(0x10_0000, 0x100_0000), G4, 40, 1)
    assert b.index(1, 0x80_4000_0000) == 0x201
    assert b.index(2, 0x80_4020_0000) == 1


def test_map_writes_tables_and_leaf():
    mem = PhysMem()
    b = TableBuilder(mem, BumpAllocator(0x10_0000, 0x100_0000), G4, 39, 1)
    b.map(0x4020_1000, 0x9000_0000, 0x1000, s1_attrs(), table_attrs=1 << 61)
    l1 = mem.read64(b.root + 8 * 1)
    assert l1 & 0b11 == 0b11 and l1 & (1 << 61)
    l2 = mem.read64((l1 & 0xFFFF_FFFF_F000) + 8 * 1)
    leaf = mem.read64((l2 & 0xFFFF_FFFF_F000) + 8 * 1)
    assert leaf == 0x9000_0000 | s1_attrs() | 0b11


def test_map_block_uses_0b01():
    mem = PhysMem()
    b = TableBuilder(mem, BumpAllocator(0x10_0000, 0x100_0000), G4, 39, 1)
    b.map(0x4000_0000, 0x8000_0000, 1 << 30, 0, level=1)
    assert mem.read64(b.root + 8) == 0x8000_0001


def test_map_rejects_misaligned_leaf():
    b = TableBuilder(PhysMem(), BumpAllocator(0x10_0000, 0x100_0000), G4, 39, 1)
    with pytest.raises(ValueError) as e:
        b.map(0x1000, 0, 0x200000, 0, level=2)
    assert str(e.value) == "ia/oa/size must be multiples of 0x200000 for a level-2 leaf"


def test_set_entry_returns_the_entry_address():
    mem = PhysMem()
    b = TableBuilder(mem, BumpAllocator(0x10_0000, 0x100_0000), G4, 39, 1)
    b.map(0x1000, 0x9000_0000, 0x1000, 0)
    entry = b.set_entry(0x1000, 3, 0x1234)
    assert mem.read64(entry) == 0x1234
    assert entry % 8 == 0 and entry & 0xFFF == 8


def test_big_endian_tables():
    mem = PhysMem()
    b = TableBuilder(mem, BumpAllocator(0x10_0000, 0x100_0000), G4, 39, 1, big_endian=True)
    b.map(0, 0x8000_0000, 1 << 30, 0, level=1)
    assert mem.read_bytes(b.root, 8) == bytes.fromhex("0000000080000001")


def test_s1_attrs_bits():
    assert s1_attrs() == (0b11 << 8) | (1 << 10)
    assert s1_attrs(attrindx=5, ro=True, el0=True, pxn=True, uxn=True, af=False, sh=0,
                    ng=True, dbm=True) == ((5 << 2) | (1 << 7) | (1 << 6) | (1 << 53)
                                           | (1 << 54) | (1 << 11) | (1 << 51))


def test_s2_attrs_bits():
    assert s2_attrs() == (0b1111 << 2) | (0b11 << 6) | (0b11 << 8) | (1 << 10)
    assert s2_attrs(memattr=1, s2ap=1, xn=0b10, af=False, sh=0, dbm=True) == (
        (1 << 2) | (1 << 6) | (1 << 54) | (1 << 51))
