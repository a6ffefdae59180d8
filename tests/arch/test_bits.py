"""Bit-field helpers: the ASL slice notation x<hi:lo> and friends."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s2mmu.arch.bits import (
    U64,
    align_down,
    bit,
    bits,
    is_aligned,
    mask,
    set_bit,
    set_bits,
    sign_extend,
)

u64 = st.integers(0, U64)


def test_mask_covers_inclusive_range():
    assert mask(7, 4) == 0xF0
    assert mask(0, 0) == 1
    assert mask(63, 0) == U64
    assert mask(47, 12) == 0x0000_FFFF_FFFF_F000


def test_mask_of_empty_range_is_zero():
    assert mask(3, 4) == 0


def test_bits_extracts_slice():
    assert bits(0x8040201000, 47, 39) == 1
    assert bits(0x8040201000, 38, 30) == 1
    assert bits(0x8040201000, 29, 21) == 1
    assert bits(0x8040402000, 29, 21) == 2
    assert bits(0x8040201000, 20, 12) == 1


def test_bit_reads_one_bit():
    assert bit(1 << 55, 55) == 1
    assert bit(1 << 55, 54) == 0


def test_set_bits_replaces_field():
    assert set_bits(0xFFFF, 7, 4, 0b1010) == 0xFFAF


def test_set_bits_rejects_value_too_wide():
    with pytest.raises(ValueError, match=r"does not fit in bits \[5:4\]"):
        set_bits(0, 5, 4, 4)


def test_set_bit_sets_and_clears():
    assert set_bit(0, 10, 1) == 0x400
    assert set_bit(0x4C0, 7, 0) == 0x440


def test_sign_extend_negative_and_positive():
    assert sign_extend(0b111, 3) == -1
    assert sign_extend(0b011, 3) == 3


def test_align_down_and_is_aligned():
    assert align_down(0x12345, 0x1000) == 0x12000
    assert is_aligned(0x2000, 0x1000)
    assert not is_aligned(0x2008, 0x1000)


@given(u64, st.integers(0, 63), st.integers(0, 63))
def test_set_bits_then_bits_round_trips(value, a, b):
    hi, lo = max(a, b), min(a, b)
    field = bits(value ^ U64, hi, lo)
    out = set_bits(value, hi, lo, field)
    assert bits(out, hi, lo) == field
    assert out & ~mask(hi, lo) == value & ~mask(hi, lo)
