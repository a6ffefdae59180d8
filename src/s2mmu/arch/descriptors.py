"""Translation table descriptors decoded with their context into a closed union.

A descriptor is a 64-bit value; what it means depends on the level, the granule, DS
and the stage. ``decode_descriptor`` returns Invalid | Table | Block | Page, handled
with ``match``. Field accessors are functions of the raw value.

ASL: AArch64.DecodeDescriptorType, AArch64.BlockDescSupported, AArch64.NextTableBase,
AArch64.LeafBase, AArch64.TTBaseAddress.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from functools import lru_cache

from s2mmu.arch.attrs import MemType, s2_memattr_decode
from s2mmu.arch.bits import bit, bits, mask
from s2mmu.arch.errors import InputError
from s2mmu.arch.inputs import shorten, shorten_hex
from s2mmu.arch.params import FINAL_LEVEL, Granule
from s2mmu.arch.reprs import hex_repr
from s2mmu.arch.sysreg import FieldDecode


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


def table_levels(granule: Granule, ds: bool) -> range:
    """Return the levels a translation table can have (ASL AArch64.S1StartLevel,
    AArch64.S2StartLevel): 4KB 0..3 (-1..3 with DS), 16KB 0..3, 64KB 1..3."""
    if granule is Granule.G4K:
        return range(-1 if ds else 0, FINAL_LEVEL + 1)
    return range(1 if granule is Granule.G64K else 0, FINAL_LEVEL + 1)


def check_descriptor_args(raw: int, level: int, ctx: DescContext) -> None:
    """Refuse a descriptor no table can hold: wider than 64 bits, at a level the granule
    does not have, or of a stage other than 1 or 2."""
    if not 0 <= raw < 1 << 64:
        raise InputError(f"descriptor {shorten_hex(raw)}: a descriptor is 64 bits")
    levels = table_levels(ctx.granule, ctx.ds)
    if level not in levels:
        raise InputError(f"level={shorten(level)}: {ctx.granule.value}KB-granule tables"
                         f"{' with DS=1' if ctx.ds else ''} have levels {levels.start} to "
                         f"{levels.stop - 1}")
    if ctx.stage not in (1, 2):
        raise InputError(f"stage={shorten(ctx.stage)}: a descriptor belongs to stage 1 or 2")


@lru_cache(maxsize=1 << 16)
def decode_descriptor(raw: int, level: int, ctx: DescContext) -> Descriptor:
    """Decode raw as found at level (ASL AArch64.DecodeDescriptorType).

    raw is a 64-bit value, level one the granule has and ctx.stage 1 or 2 (InputError
    otherwise: no table holds such a descriptor). A pure function of frozen values,
    memoised: a walk meets the same table descriptors again and again.
    """
    if not (0 <= raw < 1 << 64 and 1 <= level <= FINAL_LEVEL and 1 <= ctx.stage <= 2):
        check_descriptor_args(raw, level, ctx)  # levels 1..3 exist in every granule
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


# -- decode views: every bit range of a descriptor, named for its form ---------------------


class DescKind(Enum):
    """The four forms a descriptor takes (ASL DescriptorType, with the walk's level)."""

    INVALID = "invalid"
    TABLE = "table"
    BLOCK = "block"
    PAGE = "page"


@dataclass(frozen=True)
class DescriptorView:
    """A descriptor decoded for reading: its form, every bit range, what it points at.

    address is the next-level table (table) or the output address (block, page);
    software is bits[58:55], which every form leaves to software. attributes and
    permissions summarise the leaf fields (empty for tables and invalid entries).
    """

    raw: int
    level: int
    stage: int
    kind: DescKind
    fields: tuple[FieldDecode, ...]
    address: int | None
    software: int
    attributes: str
    permissions: str
    why_invalid: str = ""


AP_MEANING = {0b00: "EL1 read/write, EL0 none", 0b01: "EL1 read/write, EL0 read/write",
              0b10: "EL1 read-only, EL0 none", 0b11: "EL1 read-only, EL0 read-only"}
S2AP_MEANING = {0b00: "no access", 0b01: "read-only", 0b10: "write-only", 0b11: "read/write"}
S2XN_MEANING = {0b00: "executable at EL1 and EL0", 0b01: "not executable at EL1 (EL0 may)",
                0b10: "not executable", 0b11: "not executable at EL0 (EL1 may)"}
APTABLE_MEANING = {0b00: "no effect", 0b01: "EL0 access not permitted at later levels",
                   0b10: "write access not permitted at later levels",
                   0b11: "write and EL0 access not permitted at later levels"}
SH_MEANING = {0b00: "Non-shareable", 0b01: "reserved (CONSTRAINED UNPREDICTABLE)",
              0b10: "Outer Shareable", 0b11: "Inner Shareable"}
SOFTWARE = (58, 55)

Row = tuple[int, int, str, str, bool]


def descriptor_view(raw: int, level: int, ctx: DescContext) -> DescriptorView:
    """Decode raw at level into its form and every bit range (ASL AArch64.DecodeDescriptorType).

    Layouts: Arm ARM D8.3 (VMSAv8-64 translation table descriptor formats); with DS
    (FEAT_LPA2, 4KB/16KB) bits[49:48] and [9:8] are OA[49:48] and OA[51:50], so there is
    no SH field; with the 64KB granule and FEAT_LPA bits[15:12] are OA[51:48].
    """
    d = decode_descriptor(raw, level, ctx)
    sw = bits(raw, *SOFTWARE)
    match d:
        case Invalid(why=why):
            rows = _invalid_rows(raw, why)
            return DescriptorView(raw, level, ctx.stage, DescKind.INVALID, _fields(raw, rows),
                                  None, sw, "", "", why)
        case Table(next_base=nb):
            rows = _table_rows(raw, ctx)
            return DescriptorView(raw, level, ctx.stage, DescKind.TABLE, _fields(raw, rows),
                                  nb, sw, "", "")
        case Block(oa=oa) | Page(oa=oa):
            kind = DescKind.BLOCK if isinstance(d, Block) else DescKind.PAGE
            lsb = ctx.granule.bits + (FINAL_LEVEL - level) * ctx.granule.stride
            rows = _leaf_rows(raw, lsb, kind, ctx)
            attrs, perms = (_s2_summary(raw, ctx) if ctx.stage == 2 else _s1_summary(raw, ctx))
            return DescriptorView(raw, level, ctx.stage, kind, _fields(raw, rows), oa, sw,
                                  attrs, perms)
    raise TypeError(d)


def _fields(raw: int, rows: list[Row]) -> tuple[FieldDecode, ...]:
    """Return rows as FieldDecodes, most significant first; rows must cover bits 63..0."""
    out = []
    for hi, lo, name, meaning, valid in sorted(rows, key=lambda r: -r[0]):
        out.append(FieldDecode(name, hi, lo, bits(raw, hi, lo), meaning, valid))
    return tuple(out)


def _software_row() -> Row:
    return (*SOFTWARE, "SW", "reserved for software use (ignored by hardware)", True)


def _invalid_rows(raw: int, why: str) -> list[Row]:
    kind = "invalid" if not bit(raw, 0) else f"invalid: {why}"
    return [(63, 59, "IGNORED", "ignored by hardware", False), _software_row(),
            (54, 2, "IGNORED", "ignored by hardware", False),
            (1, 0, "type", kind, True)]


def _address_rows(raw: int, lsb: int, ctx: DescContext, name: str) -> list[Row]:
    """Rows for the address bits: [49:48] and [9:8] with DS, [15:12] with 64KB and LPA."""
    rows: list[Row] = []
    oa = output_address(raw, lsb, ctx)
    what = "output address" if name == "OA" else "next-level table address"
    rows.append((47, lsb, f"{name}[47:{lsb}]", f"{what} {oa:#x}", True))
    leaf_s1 = name == "OA" and ctx.stage == 1
    rows.append((50, 50, "GP" if leaf_s1 else "RES0", _bit50(name, ctx), leaf_s1))
    if ctx.ds and ctx.granule is not Granule.G64K:
        rows.append((49, 48, f"{name}[49:48]", "address bits [49:48] (DS=1)", True))
        rows.append((9, 8, f"{name}[51:50]", "address bits [51:50] (DS=1: not SH)", True))
    else:
        rows.append((49, 48, "RES0", "RES0 (address bits [49:48] only with DS=1)", False))
    low_top = lsb - 1
    if ctx.granule is Granule.G64K and ctx.lpa:
        rows.append((15, 12, f"{name}[51:48]", "address bits [51:48] (64KB, FEAT_LPA)", True))
        low_top_end = 16
    else:
        low_top_end = 12
    if name == "OA" and lsb > 16:
        rows.append((16, 16, "nT", "FEAT_BBM: no TLB caching during a block size change; "
                     "RES0 otherwise", True))
        if low_top >= 17:
            rows.append((low_top, 17, "RES0", "RES0", False))
        if low_top_end == 12:
            rows.append((15, 12, "RES0", "RES0", False))
    elif low_top >= low_top_end:
        rows.append((low_top, low_top_end, "RES0", "RES0", False))
    return rows


def _bit50(name: str, ctx: DescContext) -> str:
    if name == "OA" and ctx.stage == 1:
        return "Guarded Page (FEAT_BTI): BTI checks on instruction fetches"
    return "RES0"


def _table_rows(raw: int, ctx: DescContext) -> list[Row]:
    rows = _address_rows(raw, ctx.granule.bits, ctx, "NLTA")
    if ctx.stage == 1:
        rows += [(63, 63, "NSTable", "ignored in a Non-secure translation regime", False),
                 (62, 61, "APTable", APTABLE_MEANING[bits(raw, 62, 61)], True),
                 (60, 60, "UXNTable", "UXN (XN in a one-range regime) for later levels"
                  if bit(raw, 60) else "no effect", True),
                 (59, 59, "PXNTable", "PXN for later levels" if bit(raw, 59) else "no effect",
                  True)]
    else:
        rows.append((63, 59, "RES0", "RES0: stage-2 table descriptors have no attributes",
                     False))
    rows += [_software_row(), (54, 51, "IGNORED", "ignored by hardware", False),
             (11, 10, "IGNORED", "ignored by hardware", False),
             (7, 2, "IGNORED", "ignored by hardware", False),
             (1, 0, "type", "table descriptor (0b11 above the final level)", True)]
    if not (ctx.ds and ctx.granule is not Granule.G64K):
        rows.append((9, 8, "IGNORED", "ignored by hardware", False))
    return rows


def _leaf_rows(raw: int, lsb: int, kind: DescKind, ctx: DescContext) -> list[Row]:
    rows = _address_rows(raw, lsb, ctx, "OA")
    rows += [(63, 63, "IGNORED", "ignored by hardware", False),
             (62, 59, "PBHA", "page-based hardware attributes (FEAT_HPDS2), "
              "IMPLEMENTATION DEFINED use; ignored otherwise", False),
             _software_row(),
             (52, 52, "Contiguous", "one of a contiguous set of entries" if bit(raw, 52)
              else "not contiguous", True),
             (51, 51, "DBM", "dirty bit modifier: writable, hardware manages dirty state"
              if bit(raw, 51) else "no hardware dirty state management", True),
             (10, 10, "AF", "accessed" if bit(raw, 10) else "not accessed: first access "
              "faults unless hardware sets AF", True),
             (1, 0, "type", f"{kind.value} descriptor", True)]
    ds = ctx.ds and ctx.granule is not Granule.G64K
    if not ds:
        sh_text = SH_MEANING[bits(raw, 9, 8)]
        rows.append((9, 8, "SH", sh_text, bits(raw, 9, 8) != 0b01))
    if ctx.stage == 1:
        rows += [(54, 54, "UXN", "not executable at EL0 (XN in a one-range regime)"
                  if bit(raw, 54) else "executable at EL0 (if readable)", True),
                 (53, 53, "PXN", "not executable at EL1" if bit(raw, 53)
                  else "executable at EL1", True),
                 (11, 11, "nG", "not global: tagged with the ASID" if bit(raw, 11)
                  else "global", True),
                 (7, 6, "AP[2:1]", AP_MEANING[bits(raw, 7, 6)], True),
                 (5, 5, "NS", "ignored in a Non-secure translation regime", False),
                 (4, 2, "AttrIndx", f"MAIR_ELx.Attr{bits(raw, 4, 2)}", True)]
    else:
        rows += [(54, 53, "XN[1:0]", S2XN_MEANING[bits(raw, 54, 53)]
                  + " (XN[0] needs FEAT_XNX)", True),
                 (11, 11, "FnXS", "FEAT_XS: XS attribute forced to 0; RES0 otherwise",
                  False),
                 (7, 6, "S2AP", S2AP_MEANING[bits(raw, 7, 6)], True),
                 (5, 2, "MemAttr", *_memattr_meaning(s2_memattr(raw)))]
    return rows


def _memattr_meaning(memattr: int) -> tuple[str, bool]:
    """Return stage-2 MemAttr[3:0] as HCR_EL2.FWB=0 reads it (ASL S2DecodeMemAttrs).

    0b0000dd Device; otherwise outer MemAttr[3:2] and inner MemAttr[1:0] as 01 NC,
    10 WT, 11 WB; a Normal cacheability of 0b00 is CONSTRAINED UNPREDICTABLE.
    """
    m = s2_memattr_decode(memattr, 0)
    if m.memtype is MemType.DEVICE:
        return f"{m.describe()} (HCR_EL2.FWB=0)", True
    text = f"Normal i{m.inner.attrs.name} o{m.outer.attrs.name} (HCR_EL2.FWB=0)"
    if bits(memattr, 1, 0) == 0:
        return f"{text}: inner cacheability 0b00 is CONSTRAINED UNPREDICTABLE", False
    return text, True


def _s1_summary(raw: int, ctx: DescContext) -> tuple[str, str]:
    """Return stage-1 leaf attributes and permissions in one line each."""
    ds = ctx.ds and ctx.granule is not Granule.G64K
    sh_text = "shareability from TCR_ELx.SHx (DS=1)" if ds else SH_MEANING[sh(raw)]
    attrs = f"MAIR_ELx.Attr{attrindx(raw)}, {sh_text}"
    perms = AP_MEANING[ap(raw)]
    xn = [w for w, b in (("EL1", pxn(raw)), ("EL0", uxn(raw))) if b]
    perms += ("; execute-never at " + " and ".join(xn)) if xn else "; executable"
    return attrs, perms


def _s2_summary(raw: int, ctx: DescContext) -> tuple[str, str]:
    """Return stage-2 leaf attributes (without FWB) and permissions in one line each."""
    ds = ctx.ds and ctx.granule is not Granule.G64K
    kind, _ = _memattr_meaning(s2_memattr(raw))
    sh_text = "shareability from VTCR_EL2.SH0 (DS=1)" if ds else SH_MEANING[sh(raw)]
    return (f"{kind}, {sh_text}",
            f"{S2AP_MEANING[ap(raw)]}; {S2XN_MEANING[s2_xn(raw)]}")
