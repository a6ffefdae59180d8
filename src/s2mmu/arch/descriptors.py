"""Translation table descriptors decoded with their context into a closed union.

A descriptor is a 64-bit value; what it means depends on the level, the granule, DS
and the stage. ``decode_descriptor`` returns Invalid | Table | Block | Page, handled
with ``match``. Field accessors are functions of the raw value.

ASL: AArch64.DecodeDescriptorType, AArch64.BlockDescSupported, AArch64.NextTableBase,
AArch64.LeafBase, AArch64.TTBaseAddress.
"""

from __future__ import annotations

from dataclasses import dataclass

from s2mmu.arch.bits import bit, bits, mask
from s2mmu.arch.params import FINAL_LEVEL, Granule
from s2mmu.arch.reprs import hex_repr


@dataclass(frozen=True)
class DescContext:
    """What decoding a descriptor depends on besides its bits."""

    granule: Granule
    ds: bool
    lpa: bool          # FEAT_LPA implemented (64KB: bits[15:12] are OA[51:48])
    stage: int         # 1 or 2
    pamax52: bool = False  # PAMax() is 52 (64KB level-1 blocks)


@hex_repr(decimal=("level",))
@dataclass(frozen=True)
class Invalid:
    """An invalid (fault) entry: bit[0] is 0, or a reserved encoding at this level."""

    raw: int
    level: int
    why: str = "bit[0] is 0"


@hex_repr(decimal=("level",))
@dataclass(frozen=True)
class Table:
    """A table descriptor: the address of the next-level table and hierarchical controls."""

    raw: int
    level: int
    next_base: int


@hex_repr(decimal=("level",))
@dataclass(frozen=True)
class Block:
    """A block descriptor: a leaf above the final level."""

    raw: int
    level: int
    oa: int


@hex_repr(decimal=("level",))
@dataclass(frozen=True)
class Page:
    """A page descriptor: a leaf at the final level."""

    raw: int
    level: int
    oa: int


Descriptor = Invalid | Table | Block | Page


def block_desc_supported(granule: Granule, level: int, ds: bool, pamax52: bool) -> bool:
    """Return whether a block descriptor is permitted at level (ASL AArch64.BlockDescSupported).

    4KB: levels 1 and 2, and level 0 with DS. 16KB: level 2, and level 1 with DS.
    64KB: level 2, and level 1 when PAMax() is 52 (whatever TCR.IPS says).
    """
    if granule is Granule.G4K:
        return level in (1, 2) or (level == 0 and ds)
    if granule is Granule.G16K:
        return level == 2 or (level == 1 and ds)
    return level == 2 or (level == 1 and pamax52)


def output_address(raw: int, lsb: int, ctx: DescContext) -> int:
    """Return the address field of a descriptor, aligned to 2^lsb.

    ASL: AArch64.NextTableBase / AArch64.LeafBase. OA[47:lsb] comes from bits[47:lsb].
    With DS (4KB/16KB), OA[49:48] comes from bits[49:48] and OA[51:50] from bits[9:8].
    With the 64KB granule and FEAT_LPA, OA[51:48] comes from bits[15:12].
    """
    oa = raw & mask(47, lsb)
    if ctx.ds and ctx.granule is not Granule.G64K:
        oa |= bits(raw, 49, 48) << 48 | bits(raw, 9, 8) << 50
    elif ctx.granule is Granule.G64K and ctx.lpa:
        oa |= bits(raw, 15, 12) << 48
    return oa


def decode_descriptor(raw: int, level: int, ctx: DescContext) -> Descriptor:
    """Decode raw as found at level (ASL AArch64.DecodeDescriptorType)."""
    if not bit(raw, 0):
        return Invalid(raw, level)
    if bit(raw, 1):
        if level == FINAL_LEVEL:
            return Page(raw, level, output_address(raw, ctx.granule.bits, ctx))
        return Table(raw, level, output_address(raw, ctx.granule.bits, ctx))
    if level == FINAL_LEVEL:
        return Invalid(raw, level, "bits[1:0]=0b01 is reserved at level 3")
    if not block_desc_supported(ctx.granule, level, ctx.ds, ctx.pamax52):
        return Invalid(raw, level, f"no block descriptor at level {level} for this granule")
    lsb = ctx.granule.bits + (FINAL_LEVEL - level) * ctx.granule.stride
    return Block(raw, level, output_address(raw, lsb, ctx))


# Stage-1 leaf fields (lower and upper attributes).
def attrindx(raw: int) -> int:
    """Return AttrIndx[2:0] (stage 1)."""
    return bits(raw, 4, 2)


def ap(raw: int) -> int:
    """Return AP[2:1] (stage 1) or S2AP[1:0] (stage 2): bits[7:6]."""
    return bits(raw, 7, 6)


def sh(raw: int) -> int:
    """Return SH[1:0] (bits[9:8]; meaningless when DS=1, where those bits are OA)."""
    return bits(raw, 9, 8)


def af(raw: int) -> int:
    """Return the access flag, bit[10]."""
    return bit(raw, 10)


def ng(raw: int) -> int:
    """Return nG, bit[11] (stage 1)."""
    return bit(raw, 11)


def dbm(raw: int) -> int:
    """Return the dirty bit modifier, bit[51]."""
    return bit(raw, 51)


def contiguous(raw: int) -> int:
    """Return the Contiguous bit, bit[52]."""
    return bit(raw, 52)


def pxn(raw: int) -> int:
    """Return PXN, bit[53] (stage 1; XN[0] at stage 2 with FEAT_XNX)."""
    return bit(raw, 53)


def uxn(raw: int) -> int:
    """Return UXN/XN, bit[54]."""
    return bit(raw, 54)


def s2_memattr(raw: int) -> int:
    """Return stage-2 MemAttr[3:0], bits[5:2]."""
    return bits(raw, 5, 2)


def s2_xn(raw: int) -> int:
    """Return stage-2 XN[1:0], bits[54:53]."""
    return bits(raw, 54, 53)


# Stage-1 table descriptor hierarchical controls.
def pxn_table(raw: int) -> int:
    """Return PXNTable, bit[59]."""
    return bit(raw, 59)


def uxn_table(raw: int) -> int:
    """Return UXNTable (XNTable in single-range regimes), bit[60]."""
    return bit(raw, 60)


def ap_table(raw: int) -> int:
    """Return APTable[1:0], bits[62:61]."""
    return bits(raw, 62, 61)


def tt_base_address(ttb: int, txsz: int, ps_raw_is_52: bool, ds: bool, granule: Granule,
                    startlevel: int, lpa: bool) -> int:
    """Return the physical base of the initial table from a TTBR value.

    ASL: AArch64.S1TTBaseAddress / AArch64.S2TTBaseAddress. The base is aligned to the
    initial table's size (bits below it are ignored; at least 64 bytes when 52-bit).
    BADDR[51:48] comes from TTBR bits[5:2] with DS, or with the 64KB granule, FEAT_LPA
    and the IPS/PS field programmed as 0b110 (the raw field, not the capped size).
    """
    iasize = 64 - txsz
    levels = FINAL_LEVEL - startlevel
    tsize = iasize - (granule.stride * levels + granule.bits) + 3
    if ds or (granule is Granule.G64K and lpa and ps_raw_is_52):
        tsize = max(tsize, 6)
        return (bits(ttb, 5, 2) << 48) | (ttb & mask(47, tsize))
    return ttb & mask(47, tsize)
