"""Bit-field helpers: the one place where shifts and masks live.

ASL: the bit-slice notation x<hi:lo>; UInt, SignExtend, Zeros, Ones.
"""

from __future__ import annotations


def mask(hi: int, lo: int) -> int:
    """Return a mask with bits hi..lo (inclusive) set."""
    if hi < lo:
        return 0
    return ((1 << (hi - lo + 1)) - 1) << lo


def bits(value: int, hi: int, lo: int) -> int:
    """Return value<hi:lo> as an unsigned integer."""
    return (value >> lo) & ((1 << (hi - lo + 1)) - 1)


def bit(value: int, n: int) -> int:
    """Return value<n>."""
    return (value >> n) & 1


def set_bits(value: int, hi: int, lo: int, field: int) -> int:
    """Return value with value<hi:lo> replaced by field (which must fit)."""
    width = hi - lo + 1
    if field < 0 or field >> width:
        raise ValueError(f"field value {field:#x} does not fit in bits [{hi}:{lo}]")
    return (value & ~mask(hi, lo)) | (field << lo)


def set_bit(value: int, n: int, b: int) -> int:
    """Return value with value<n> set to b (0 or 1)."""
    return set_bits(value, n, n, b)


def sign_extend(value: int, width: int) -> int:
    """Return the width-bit value sign-extended to a Python int."""
    sign = 1 << (width - 1)
    return (value & (sign - 1)) - (value & sign)


def align_down(value: int, size: int) -> int:
    """Return value rounded down to a multiple of size (a power of two)."""
    return value & ~(size - 1)


def is_aligned(value: int, size: int) -> bool:
    """Return whether value is a multiple of size (a power of two)."""
    return value & (size - 1) == 0


U64 = mask(63, 0)
