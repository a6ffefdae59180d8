"""The generator's own descriptor encoder and table layout (independent of s2mmu.arch)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from s2mmu.conformance.tables import Image, Shape, TableTree, encode_address


def test_lpa2_puts_oa_51_50_in_bits_9_8() -> None:
    assert encode_address(0xC_0000_0000_1000 | 1 << 49, 12, ds=True) == (1 << 49) | 0x1000 | 0x300


def test_64k_puts_oa_51_48_in_bits_15_12() -> None:
    assert encode_address(0xA_1234_5678_0000, 16, ds=False) == 0x1234_5678_0000 | 0xA000


def test_start_table_index_covers_concatenated_tables() -> None:
    shape = Shape(stage=2, granule=12, ia_bits=40, start_level=1, concat=2)
    assert shape.root_entries() == 1024
    assert shape.index(1 << 39, 1) == 512


def test_level_minus_one_resolves_bits_51_48() -> None:
    shape = Shape(stage=1, granule=12, ia_bits=52, start_level=-1, ds=True)
    assert shape.shift(-1) == 48
    assert shape.index(0xA << 48, -1) == 0xA


def test_blocks_follow_block_desc_supported() -> None:
    assert Shape(1, 12, 48, 0).block_levels() == (1, 2)
    assert Shape(1, 12, 52, -1, ds=True).block_levels() == (0, 1, 2)
    assert Shape(1, 14, 48, 0).block_levels() == (2,)
    assert Shape(1, 16, 48, 1).block_levels() == (1, 2)


def bump() -> tuple[list[int], object]:
    """Return an allocator over a private window."""
    state = [0x5000_0000]

    def alloc(size: int, align: int) -> int:
        address = -(-state[0] // align) * align
        state[0] = address + size
        return address
    return state, alloc


@given(granule=st.sampled_from((12, 14, 16)), page=st.integers(0, (1 << 20) - 1),
       big_endian=st.booleans())
def test_map_then_walk_by_hand_finds_the_leaf(granule: int, page: int, big_endian: bool) -> None:
    image = Image()
    _, alloc = bump()
    shape = Shape(stage=1, granule=granule, ia_bits=48, start_level=4 - -(-(48 - granule) //
                                                                       (granule - 3)),
                  big_endian=big_endian)
    tree = TableTree(shape, image, alloc)  # type: ignore[arg-type]
    va = (page << granule) % (1 << 48)
    assert tree.map(va, 3, 0x9000_0000, 1 << 10)
    table = tree.root
    for level in range(shape.start_level, 3):
        desc = image.read(table + 8 * shape.index(va, level))
        assert desc & 3 == 3
        table = tree.decode_table(desc)
    leaf = image.read(table + 8 * shape.index(va, 3))
    assert leaf == 0x9000_0000 | 1 << 10 | 3
    assert not tree.map(va, 3, 0x1000, 0)


def test_big_endian_words_are_written_as_bytes() -> None:
    image = Image()
    image.write(0x1000, 0x0102030405060708, big_endian=True)
    assert image.memory_entries() == [{"pa": "0x1000", "bytes": "0102030405060708"}]
