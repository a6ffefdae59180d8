"""Physical memory: sparse over 52 bits, both endiannesses, observable CAS updates."""

import pytest

from s2mmu.arch.memory import MemoryWrite, PhysMem


def test_untouched_memory_reads_zero():
    assert PhysMem().read64(0x1234_5678) == 0


def test_a_table_at_2_to_51_costs_one_page():
    mem = PhysMem()
    mem.write64(1 << 51, 0xDEAD)
    assert mem.read64(1 << 51) == 0xDEAD
    assert mem.pages_allocated() == 1


def test_endianness():
    mem = PhysMem()
    mem.write64(0x1000, 0x0102_0304_0506_0708)
    assert mem.read_bytes(0x1000, 8) == bytes.fromhex("0807060504030201")
    assert mem.read64(0x1000, big_endian=True) == 0x0807_0605_0403_0201


def test_reads_and_writes_across_a_page_boundary():
    mem = PhysMem()
    mem.write64(0xFFC, 0x1122_3344_5566_7788)
    assert mem.read64(0xFFC) == 0x1122_3344_5566_7788
    assert mem.pages_allocated() == 2


def test_outside_the_52_bit_space_is_an_error():
    with pytest.raises(ValueError, match="outside the 52-bit space"):
        PhysMem().write_bytes((1 << 52) - 4, bytes(8))


def test_cas_records_changes_only():
    mem = PhysMem()
    mem.write64(0x2000, 5)
    assert not mem.cas64(0x2000, 4, 6)
    assert mem.cas64(0x2000, 5, 5)
    assert mem.hw_writes == []
    assert mem.cas64(0x2000, 5, 7)
    assert mem.hw_writes == [MemoryWrite(0x2000, 5, 7)]
    assert mem.read64(0x2000) == 7


def test_free_page():
    mem = PhysMem()
    mem.write64(0x3000, 1)
    mem.free_page(0x3008)
    assert mem.read64(0x3000) == 0 and mem.pages_allocated() == 0


def test_physmem_is_a_table_memory_port():
    from s2mmu.arch.memory import TableMemory

    def read_through(port: TableMemory, pa: int) -> int:
        got = port.read64(pa, True)
        assert isinstance(got, int)
        return got

    mem = PhysMem()
    mem.write64(0x1000, 0x0102030405060708, big_endian=True)
    assert read_through(mem, 0x1000) == 0x0102030405060708
    assert mem.cas64(0x1000, 0x0102030405060708, 5, big_endian=True) is True


def test_write64_inside_a_page_and_across_pages_agree_with_write_bytes():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=200, deadline=None)
    @given(st.integers(0, 3 * 4096), st.integers(0, (1 << 64) - 1), st.booleans())
    def check(pa: int, value: int, be: bool) -> None:
        a, b = PhysMem(), PhysMem()
        a.write64(pa, value, be)
        b.write_bytes(pa, value.to_bytes(8, "big" if be else "little"))
        assert a.read_bytes(0, 4 * 4096) == b.read_bytes(0, 4 * 4096)
        assert a.read64(pa, be) == value
    check()
