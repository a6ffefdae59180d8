"""Memory attributes: MAIR decoding, stage-2 MemAttr, and their combination.

ASL: MemoryAttributes, MemAttrHints, AArch64.S1AttrDecode, S2MemAttrDecode,
AArch64.S2ApplyFWBMemAttrs, S2CombineS1MemAttrs, S2CombineS1Device,
S2CombineS1AttrHints, S2CombineS1Shareability, AArch64.S1DisabledOutput,
ReportedPARAttrs, ReportedPARShareability.

FEAT_XS (an input: the `xs` argument says the implementation has it) gives memory the
XS attribute (MemoryAttributes.xs). Stage 1: MAIR 0x40 (Normal Non-cacheable), 0xA0
(Normal Write-Through Read-Allocate) and 0b0000dd01 (Device) have XS=0, as has Normal
Inner and Outer Write-Back memory (0xF0 included); everything else XS=1. Stage 2: a
leaf's FnXS (bit 11) forces XS=0. The combination keeps XS=1 only where both stages
have it, and Normal Write-Back results have XS=0. Without FEAT_XS every result has
XS=1 and the encodings above are reserved (mair_reserved).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from functools import lru_cache

from s2mmu.arch.bits import bits
from s2mmu.arch.errors import InputError
from s2mmu.arch.inputs import shorten


class MemType(Enum):
    """Normal or Device memory."""

    # Members are singletons compared by identity: hash them as such, in C (Enum's
    # own __hash__ is Python code, and walk parameters are hashed on every walk).
    __hash__ = object.__hash__

    NORMAL = "Normal"
    DEVICE = "Device"


class DeviceType(Enum):
    """Device memory types, weakest last; the value is the 2-bit encoding."""

    # Members are singletons compared by identity: hash them as such, in C (Enum's
    # own __hash__ is Python code, and walk parameters are hashed on every walk).
    __hash__ = object.__hash__

    nGnRnE = 0
    nGnRE = 1
    nGRE = 2
    GRE = 3


class Cacheability(Enum):
    """Cacheability of one cache level (ASL MemAttr_NC/WT/WB); value orders strength."""

    # Members are singletons compared by identity: hash them as such, in C (Enum's
    # own __hash__ is Python code, and walk parameters are hashed on every walk).
    __hash__ = object.__hash__

    NC = 0
    WT = 1
    WB = 2


class Shareability(Enum):
    """Shareability domain; the value is the SH field encoding."""

    # Members are singletons compared by identity: hash them as such, in C (Enum's
    # own __hash__ is Python code, and walk parameters are hashed on every walk).
    __hash__ = object.__hash__

    NSH = 0
    OSH = 2
    ISH = 3


@dataclass(frozen=True)
class CacheHints:
    """ASL MemAttrHints: cacheability and allocation hints of one cache level."""

    attrs: Cacheability
    ra: bool = False
    wa: bool = False
    transient: bool = False


NC = CacheHints(Cacheability.NC)
WB_RAWA = CacheHints(Cacheability.WB, True, True)


@dataclass(frozen=True)
class MemoryAttributes:
    """ASL MemoryAttributes (the parts PAR_EL1 reports)."""

    memtype: MemType
    device: DeviceType = DeviceType.nGnRnE
    inner: CacheHints = NC
    outer: CacheHints = NC
    shareability: Shareability = Shareability.OSH
    tagged: bool = False
    xs: bool = True
    """FEAT_XS: the XS attribute (False: XS=0, accesses may complete without waiting
    for the nXS variants of TLBI and DSB). Always True without FEAT_XS."""

    def describe(self) -> str:
        """Return a short human description, e.g. 'Normal iWB-RAWA oWB-RAWA ISH'."""
        if self.memtype is MemType.DEVICE:
            return f"Device-{self.device.name}"
        return (f"Normal i{_hint_name(self.inner)} o{_hint_name(self.outer)} "
                f"{self.shareability.name}")


def _hint_name(h: CacheHints) -> str:
    if h.attrs is Cacheability.NC:
        return "NC"
    alloc = ("RA" if h.ra else "") + ("WA" if h.wa else "")
    return h.attrs.name + ("-" + alloc if alloc else "") + ("-T" if h.transient else "")


DEVICE_nGnRnE = MemoryAttributes(MemType.DEVICE, DeviceType.nGnRnE)
NORMAL_NC = MemoryAttributes(MemType.NORMAL, inner=NC, outer=NC,
                             shareability=Shareability.OSH)
"""ASL NormalNCMemAttr: Normal, Inner and Outer Non-cacheable, Outer Shareable."""


def decode_cache_nibble(n: int) -> CacheHints:
    """Decode a MAIR Normal-memory nibble (outer bits[7:4] or inner bits[3:0]).

    0b00RW (RW != 00) WT transient; 0b0100 NC; 0b01RW (RW != 00) WB transient;
    0b10RW WT non-transient; 0b11RW WB non-transient. n is 4 bits (InputError otherwise).
    """
    if not 0 <= n < 16:
        raise InputError(f"nibble={shorten(n)}: a MAIR cacheability nibble is 4 bits")
    r, w = bool(n & 0b10), bool(n & 0b01)
    if n == 0b0100:
        return NC
    top = n >> 2
    if top == 0b00:
        return CacheHints(Cacheability.WT, r, w, transient=True)
    if top == 0b01:
        return CacheHints(Cacheability.WB, r, w, transient=True)
    if top == 0b10:
        return CacheHints(Cacheability.WT, r, w)
    return CacheHints(Cacheability.WB, r, w)


def xs_of_normal(inner: CacheHints, outer: CacheHints) -> bool:
    """Return the XS attribute of Normal memory (FEAT_XS): 0 for Inner and Outer
    Write-Back, 1 otherwise (ASL S1DecodeMemAttrs, S2CombineS1MemAttrs)."""
    return not (inner.attrs is Cacheability.WB and outer.attrs is Cacheability.WB)


WT_RA = CacheHints(Cacheability.WT, True, False)


@lru_cache(maxsize=4096)
def s1_attr_decode(mair: int, attrindx: int, sh: int, reserved: str = "nearest",
                   xs: bool = False) -> MemoryAttributes:
    """Decode MAIR_ELx.Attr<attrindx> with the descriptor's SH (ASL S1DecodeMemAttrs).

    xs: the implementation has FEAT_XS: 0b0000dd01, 0x40 and 0xA0 are defined (XS=0)
    and the XS attribute is decoded (module docstring).

    The shareability is the SH field as decoded, for Device memory too; the walk then
    applies EffectiveShareability where the architecture says (s1_output_attrs).
    Reserved encodings (0b0000ddxx with xx != 00, 0bxxxx0000 with a non-zero outer
    nibble) are CONSTRAINED UNPREDICTABLE and read as ``reserved`` says
    (ImplChoices.reserved_mair). attrindx is 0..7 and sh 0..3 (InputError otherwise).
    """
    if not 0 <= attrindx < 8 or not 0 <= sh < 4:
        raise InputError(f"attrindx={shorten(attrindx)}, sh={shorten(sh)}: AttrIndx is 3 bits "
                         "(MAIR_ELx.Attr0..Attr7) and SH 2 bits")
    attr = bits(mair, 8 * attrindx + 7, 8 * attrindx)
    if mair_reserved(attr, xs) and reserved == "device":
        return MemoryAttributes(MemType.DEVICE, DeviceType.nGnRnE, shareability=_sh(sh))
    if attr >> 4 == 0:
        return MemoryAttributes(MemType.DEVICE, DeviceType(bits(attr, 3, 2)),
                                shareability=_sh(sh), xs=not (xs and attr & 0b11 == 0b01))
    if xs and attr == 0x40:
        return MemoryAttributes(MemType.NORMAL, inner=NC, outer=NC, shareability=_sh(sh),
                                xs=False)
    if xs and attr == 0xA0:
        return MemoryAttributes(MemType.NORMAL, inner=WT_RA, outer=WT_RA,
                                shareability=_sh(sh), xs=False)
    outer = decode_cache_nibble(attr >> 4)
    inner_nib = attr & 0xF
    inner = decode_cache_nibble(inner_nib) if inner_nib else NC
    tagged = attr == 0xF0
    if tagged:
        outer = inner = WB_RAWA
    return MemoryAttributes(MemType.NORMAL, inner=inner, outer=outer, shareability=_sh(sh),
                            tagged=tagged, xs=not xs or xs_of_normal(inner, outer))


def mair_reserved(attr: int, xs: bool = False) -> bool:
    """Return whether a MAIR attribute byte is a reserved encoding.

    0b0000ddxx with xx != 00, and 0booooo0000 with a non-zero outer nibble other than
    the Tagged Normal 0xF0 (FEAT_MTE2); with FEAT_XS (xs) its XS=0 encodings
    0b0000dd01, 0x40 and 0xA0 are defined (ASL S1DecodeMemAttrs).
    """
    if attr >> 4 == 0:
        return attr & 0b11 not in ((0b00, 0b01) if xs else (0b00,))
    return attr & 0xF == 0 and attr != 0xF0 and not (xs and attr in (0x40, 0xA0))


def _sh(sh: int) -> Shareability:
    """Decode an SH field; the reserved 0b01 has been resolved by the caller.

    Callers read SH through translate.resolve_sh (ImplChoices.reserved_sh); a raw
    0b01 that reaches here reads as Non-shareable.
    """
    return {0: Shareability.NSH, 2: Shareability.OSH, 3: Shareability.ISH}.get(sh, Shareability.NSH)


@lru_cache(maxsize=4096)
def normalise_shareability(m: MemoryAttributes) -> MemoryAttributes:
    """Return m with Device and Normal inner+outer NC memory made Outer Shareable.

    ASL: EffectiveShareability.
    """
    if m.memtype is MemType.DEVICE or (m.inner.attrs is Cacheability.NC
                                       and m.outer.attrs is Cacheability.NC):
        return replace(m, shareability=Shareability.OSH)
    return m


@lru_cache(maxsize=4096)
def s2_memattr_decode(memattr: int, sh: int, reserved: str = "WB") -> MemoryAttributes:
    """Decode stage-2 MemAttr[3:0] without FWB (ASL S2DecodeMemAttrs).

    MemAttr[3:2] is the outer (00 Device), MemAttr[1:0] the inner cacheability
    (01 NC, 10 WT, 11 WB; 00 is CONSTRAINED UNPREDICTABLE, read as ``reserved``:
    ImplChoices.s2_reserved_cacheability). Stage 2 has no allocation hints of its own
    (ASL S2DecodeCacheability leaves them UNKNOWN; the combination takes stage 1's).
    memattr is 4 bits and sh 2 bits (InputError otherwise).
    """
    if not 0 <= memattr < 16 or not 0 <= sh < 4:
        raise InputError(f"memattr={shorten(memattr)}, sh={shorten(sh)}: stage-2 MemAttr is "
                         "4 bits and SH 2 bits")
    if bits(memattr, 3, 2) == 0:
        return MemoryAttributes(MemType.DEVICE, DeviceType(bits(memattr, 1, 0)))
    def level(v: int) -> CacheHints:
        return {1: NC, 2: CacheHints(Cacheability.WT, True, True),
                3: CacheHints(Cacheability.WB, True, True)}[v or {"NC": 1, "WT": 2, "WB": 3}[
                    reserved]]
    return normalise_shareability(MemoryAttributes(
        MemType.NORMAL, inner=level(bits(memattr, 1, 0)), outer=level(bits(memattr, 3, 2)),
        shareability=_sh(sh)))


def combine_device(d1: DeviceType, d2: DeviceType) -> DeviceType:
    """Return the more restrictive of two Device types (ASL S2CombineS1Device)."""
    return d1 if d1.value < d2.value else d2


def combine_hints(s1: CacheHints, s2: CacheHints) -> CacheHints:
    """Return the combined cacheability: the weaker (less cacheable) wins.

    ASL S2CombineS1AttrHints: allocation and transient hints come from stage 1
    when the result is cacheable.
    """
    if s1.attrs is Cacheability.NC or s2.attrs is Cacheability.NC:
        return NC
    if s1.attrs is Cacheability.WT or s2.attrs is Cacheability.WT:
        return CacheHints(Cacheability.WT, s1.ra, s1.wa, s1.transient)
    return s1


def combine_shareability(s1: Shareability, s2: Shareability) -> Shareability:
    """Return the more shareable of two domains (ASL S2CombineS1Shareability)."""
    order = [Shareability.NSH, Shareability.ISH, Shareability.OSH]
    return max(s1, s2, key=order.index)


@lru_cache(maxsize=4096)
def s2_combine_s1(s1: MemoryAttributes, s2: MemoryAttributes, xs: bool = False
                  ) -> MemoryAttributes:
    """Combine stage-1 and stage-2 attributes without FWB (ASL S2CombineS1MemAttrs).

    xs (FEAT_XS): XS=1 only where both stages have it, XS=0 for a Normal Write-Back result.
    """
    both = s1.xs and s2.xs
    if s1.memtype is MemType.DEVICE and s2.memtype is MemType.DEVICE:
        return MemoryAttributes(MemType.DEVICE, combine_device(s1.device, s2.device),
                                xs=both)
    if s1.memtype is MemType.DEVICE:
        return replace(s1, xs=both)
    if s2.memtype is MemType.DEVICE:
        return replace(s2, xs=both)
    inner, outer = combine_hints(s1.inner, s2.inner), combine_hints(s1.outer, s2.outer)
    return normalise_shareability(MemoryAttributes(
        MemType.NORMAL, inner=inner, outer=outer,
        shareability=combine_shareability(s1.shareability, s2.shareability),
        tagged=s1.tagged and s2.memtype is MemType.NORMAL,
        xs=both and (not xs or xs_of_normal(inner, outer))))


@lru_cache(maxsize=4096)
def s2_apply_fwb(s1: MemoryAttributes, memattr: int, sh: int, fnxs: bool = False,
                 xs: bool = False) -> MemoryAttributes:
    """Combine stage-1 attributes with a stage-2 MemAttr under FWB.

    ASL: AArch64.S2ApplyFWBMemAttrs. MemAttr[2]=0: Device, type MemAttr[1:0] (the more
    restrictive of it and a stage-1 Device type). MemAttr[1:0]=0b11: the stage-1
    attributes. 0b10: Normal Write-Back, even over stage-1 Device (hints from stage 1
    where it is cacheable Normal, else RA WA). 0b01 and 0b00: Normal Non-cacheable,
    but stage-1 Device stays Device. MemAttr[3] is ignored. The shareability is the
    combination of both stages' (S2CombineS1Shareability), then EffectiveShareability.
    XS (xs: FEAT_XS): stage 1's, except the forced Write-Back (XS=0); the leaf's FnXS
    (fnxs) forces XS=0.
    """
    shs2 = combine_shareability(s1.shareability, _sh(sh))
    low = bits(memattr, 1, 0)
    if not bits(memattr, 2, 2):
        dev = DeviceType(low)
        if s1.memtype is MemType.DEVICE:
            dev = combine_device(s1.device, dev)
        out = MemoryAttributes(MemType.DEVICE, dev, xs=s1.xs)
    elif low == 0b11:
        out = s1
    elif low == 0b10:
        def wb(h: CacheHints) -> CacheHints:
            if s1.memtype is MemType.NORMAL and h.attrs is not Cacheability.NC:
                return replace(h, attrs=Cacheability.WB)
            return WB_RAWA
        out = MemoryAttributes(MemType.NORMAL, inner=wb(s1.inner), outer=wb(s1.outer),
                               tagged=s1.tagged, xs=not xs)
    elif s1.memtype is MemType.DEVICE:
        out = s1
    else:
        out = MemoryAttributes(MemType.NORMAL, inner=NC, outer=NC, xs=s1.xs)
    if fnxs:
        out = replace(out, xs=False)
    return normalise_shareability(replace(out, shareability=shs2))


def encode_cache_nibble(h: CacheHints) -> int:
    """Return the MAIR-style nibble of one cache level (inverse of decode_cache_nibble)."""
    if h.attrs is Cacheability.NC:
        return 0b0100
    rw = (int(h.ra) << 1) | int(h.wa)
    if h.transient and rw:
        return (0b00 if h.attrs is Cacheability.WT else 0b01) << 2 | rw
    return (0b10 if h.attrs is Cacheability.WT else 0b11) << 2 | rw


def par_attr(m: MemoryAttributes) -> int:
    """Return PAR_EL1.ATTR for m (ASL ReportedPARAttrs): MAIR encoding of the result.

    With XS=0 (FEAT_XS) the MAIR encodings that carry it: Device 0b0000dd01, Normal
    Non-cacheable 0x40, Normal Write-Through Read-Allocate 0xA0; Write-Back memory has
    XS=0 in its ordinary encoding. (The model's reading of the PAR_EL1.ATTR field
    description, which reports attributes in the MAIR_ELx encoding.)
    """
    if m.memtype is MemType.DEVICE:
        return m.device.value << 2 | (0 if m.xs else 0b01)
    if m.tagged:
        return 0xF0
    if not m.xs and m.inner == m.outer and m.inner in (NC, WT_RA):
        return 0x40 if m.inner == NC else 0xA0
    return encode_cache_nibble(m.outer) << 4 | encode_cache_nibble(m.inner)


def par_sh(m: MemoryAttributes) -> int:
    """Return PAR_EL1.SH (ASL ReportedPARShareability): 0b10 for Device and NC memory."""
    return normalise_shareability(m).shareability.value
