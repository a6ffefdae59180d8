"""The few A64 instructions the VMM's guest code uses, encoded as 32-bit words.

Encodings from the Arm ARM's A64 instruction classes (C6: MOVZ/MOVK, LDR/STR unsigned
offset, LDP/STP signed offset, BLR, RET, ERET, MRS/MSR, SUBS shifted
register for CMP, B.cond, ADD immediate, ISB); tests/real/test_asm.py checks each against
GNU as.
"""

from __future__ import annotations

import enum


class Reg(enum.IntEnum):
    """The general-purpose registers the generated code gives a role."""

    X1 = 1
    X2 = 2
    DATA = 26
    """The step number stored to the marker page."""
    TARGET = 27
    """The IPA the current access goes to (the exception handler compares ELR with it)."""
    MARKER = 28
    """The VMM's marker page."""
    SCRATCH = 25
    LINK = 30


RESERVED = frozenset({Reg.DATA, Reg.TARGET, Reg.MARKER, Reg.SCRATCH, Reg.LINK, 31})
"""Registers a scenario's syndrome may not name: the generated code needs them."""

SIZE_BITS = {1: 0, 2: 1, 4: 2, 8: 3}


def movz(rd: int, imm16: int, hw: int = 0) -> int:
    """MOVZ Xd, #imm16, LSL #(16*hw)."""
    return 0xD2800000 | hw << 21 | (imm16 & 0xFFFF) << 5 | rd


def movk(rd: int, imm16: int, hw: int) -> int:
    """MOVK Xd, #imm16, LSL #(16*hw)."""
    return 0xF2800000 | hw << 21 | (imm16 & 0xFFFF) << 5 | rd


def mov_imm(rd: int, value: int) -> list[int]:
    """Return MOVZ plus the MOVKs that load a 64-bit value (zero halfwords skipped)."""
    out = [movz(rd, value & 0xFFFF)]
    out += [movk(rd, value >> (16 * hw) & 0xFFFF, hw) for hw in (1, 2, 3)
            if value >> (16 * hw) & 0xFFFF]
    return out


def ldr(rt: int, rn: int, size: int = 8) -> int:
    """LDR{B,H} Wt / LDR Wt / LDR Xt, [Xn] (unsigned offset 0)."""
    return 0x39400000 | SIZE_BITS[size] << 30 | rn << 5 | rt


def str_(rt: int, rn: int, size: int = 8, offset: int = 0) -> int:
    """STR{B,H} Wt / STR Wt / STR Xt, [Xn, #offset] (unsigned offset, scaled)."""
    assert offset % size == 0 and offset // size < 4096
    return 0x39000000 | SIZE_BITS[size] << 30 | (offset // size) << 10 | rn << 5 | rt


def ldp_w(rt: int, rt2: int, rn: int) -> int:
    """LDP Wt, Wt2, [Xn]: a load pair, which reports no instruction syndrome (ISV=0)."""
    return 0x29400000 | rt2 << 10 | rn << 5 | rt


def stp_w(rt: int, rt2: int, rn: int) -> int:
    """STP Wt, Wt2, [Xn]: a store pair (ISV=0)."""
    return 0x29000000 | rt2 << 10 | rn << 5 | rt


def blr(rn: int) -> int:
    """BLR Xn."""
    return 0xD63F0000 | rn << 5


def msr_vbar_el1(rt: int) -> int:
    """MSR VBAR_EL1, Xt."""
    return 0xD518C000 | rt


def mrs_esr_el1(rt: int) -> int:
    """MRS Xt, ESR_EL1."""
    return 0xD5385200 | rt


def mrs_far_el1(rt: int) -> int:
    """MRS Xt, FAR_EL1."""
    return 0xD5386000 | rt


def mrs_elr_el1(rt: int) -> int:
    """MRS Xt, ELR_EL1."""
    return 0xD5384020 | rt


def msr_elr_el1(rt: int) -> int:
    """MSR ELR_EL1, Xt."""
    return 0xD5184020 | rt


def cmp(rn: int, rm: int) -> int:
    """CMP Xn, Xm (SUBS XZR, Xn, Xm)."""
    return 0xEB00001F | rm << 16 | rn << 5


def b_ne(words: int) -> int:
    """B.NE to words instructions ahead."""
    return 0x54000001 | (words & 0x7FFFF) << 5


def add_imm(rd: int, rn: int, imm12: int) -> int:
    """ADD Xd, Xn, #imm12."""
    return 0x91000000 | imm12 << 10 | rn << 5 | rd


def b_self() -> int:
    """B . (spin)."""
    return 0x14000000


ERET = 0xD69F03E0
ISB = 0xD5033FDF
RET = 0xD65F03C0
