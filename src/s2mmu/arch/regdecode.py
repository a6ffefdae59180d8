"""Register values decoded field by field, each field with what it means in context.

A declaration in s2mmu.arch.registers says where a field is and names its fixed
encodings. Some meanings depend on other fields or on the implemented features: ESR's
SAS/SSE/SRT/SF/AR are RES0 unless ISV=1; VTCR_EL2.SL0 means a start level only with
TG0 (and SL2 with DS); PAR_EL1 bit 11 is NSE only with FEAT_RME; a MAIR attribute byte
names FEAT_XS and FEAT_MTE2 encodings only where they exist. Those meanings are
registered here per (register, field), so every decode of a value says the same thing.

Read: Arm ARM (DDI 0487) register descriptions PAR_EL1 (D24.2.142: "NSE, bit [11]: When
FEAT_RME is implemented ... Otherwise: Reserved, RES1"), MAIR_EL1 (Attr<n> encodings,
"If FEAT_XS is implemented ... Otherwise, UNPREDICTABLE"), ESR_EL2 ISS for a Data Abort
(ISV: "ISS[23:14] hold a valid instruction syndrome"; FnV "valid only if the DFSC code is
0b010000"), HPFAR_EL2 (FIPA). ASL: AArch64.S2StartLevel, AArch64.S2InvalidSL,
AArch64.S1MinTxSZ, AArch64.S2MinTxSZ, AArch64.MaxTxSZ, AArch64.PhysicalAddressSize,
AArch64.FaultSyndrome (WnR for a stage-1 walk), IPAValid (see docs/asl-notes.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from s2mmu.arch.attrs import Cacheability, decode_cache_nibble
from s2mmu.arch.bits import bits, mask
from s2mmu.arch.faults import FSC_NAMES, Fault, decode_fsc
from s2mmu.arch.features import PARANGE_BITS, FeatureSet
from s2mmu.arch.params import (
    TG0_KB,
    TG1_KB,
    Granule,
    physical_address_size,
    s1_max_txsz,
    s1_min_txsz,
    s2_invalid_sl,
    s2_min_txsz,
    s2_start_level,
)
from s2mmu.arch.registers import (
    EC_ENC,
    PAR_EL1_FAULT,
    REGISTERS,
    TCR_EL2_E2H1,
    ESR_ELx,
    ESR_ELx_DABT,
    ESR_ELx_IABT,
)
from s2mmu.arch.sysreg import Field, FieldDecode, RegisterSpec, RegView, Res0, Res1

Meaning = tuple[str, bool]
Explain = Callable[[RegView, int, FeatureSet], Meaning]
"""What a field's value means given the whole view and the features: (meaning, valid)."""


@dataclass(frozen=True)
class RegisterDecode:
    """A register value decoded: every bit range, most significant first."""

    name: str
    value: int
    fields: tuple[FieldDecode, ...]

    def field(self, name: str) -> FieldDecode:
        """Return the decoded field called name."""
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no field {name}")


def register_layout(name: str, value: int, e2h: bool = False) -> RegisterSpec | None:
    """Return the layout value has in register name, or None for an unknown register.

    ESR_ELx takes the Data or Instruction Abort ISS layout by EC, PAR_EL1 its fault
    layout when F=1, TCR_EL2 its two-range layout when HCR_EL2.E2H=1 (e2h).
    """
    name = name.upper()
    spec = TCR_EL2_E2H1 if name == "TCR_EL2" and e2h else REGISTERS.get(name)
    if spec is None:
        return None
    if spec is ESR_ELx:
        ec = ESR_ELx.decode(value).EC
        if EC_ENC.get(ec, "").startswith("Data Abort"):
            return ESR_ELx_DABT
        if EC_ENC.get(ec, "").startswith("Instruction Abort"):
            return ESR_ELx_IABT
    if name == "PAR_EL1" and spec.decode(value).F:
        return PAR_EL1_FAULT
    return spec


def decode_register(spec: RegisterSpec, value: int, fs: FeatureSet) -> RegisterDecode:
    """Decode value field by field, reserved ranges included, for the features fs."""
    view = spec.decode(value)
    rows = [_decode_item(spec, view, item, fs) for item in spec.items_in_order()]
    return RegisterDecode(spec.name, value, tuple(rows))


def _decode_item(spec: RegisterSpec, view: RegView, item: Field | Res0 | Res1,
                 fs: FeatureSet) -> FieldDecode:
    v = bits(view.value, item.hi, item.lo)
    match item:
        case Res0() | Res1():
            kind = "RES0" if isinstance(item, Res0) else "RES1"
            return _reserved(kind, item.hi, item.lo, v, "")
        case Field(feature=feat) if feat and not fs.has(feat):
            return _reserved(item.absent, item.hi, item.lo, v,
                             f" ({item.name} only with {feat})")
        case Field():
            explain = EXPLAIN.get((spec.name, item.name))
            if explain is not None:
                meaning, valid = explain(view, v, fs)
            else:
                meaning, valid = item.enum.get(v, ""), True
            return FieldDecode(item.name, item.hi, item.lo, v, meaning, valid)
    raise TypeError(item)


def _reserved(kind: str, hi: int, lo: int, v: int, why: str) -> FieldDecode:
    """Return a reserved range, saying so when its bits differ from what is reserved."""
    want = 0 if kind == "RES0" else mask(hi - lo, 0)
    meaning = f"reserved, {kind}{why}"
    if v != want:
        meaning += f"; bits set to {v:#x}, not {kind}"
    return FieldDecode(kind, hi, lo, v, meaning, False)


# -- ESR_ELx (Data and Instruction Abort ISS) ----------------------------------------------


def _xfsc(view: RegView) -> int:
    """Return DFSC or IFSC, whichever layout view has."""
    names = {f.name for f in view.spec.fields()}
    return view.get("DFSC" if "DFSC" in names else "IFSC")


def _isv_enum(name: str) -> Explain:
    enum = ESR_ELx_DABT.field(name).enum

    def explain(view: RegView, v: int, fs: FeatureSet) -> Meaning:
        if not view.ISV:
            return "RES0: ISV=0, no valid instruction syndrome", False
        return enum.get(v, ""), True

    return explain


def _sas(view: RegView, v: int, fs: FeatureSet) -> Meaning:
    if not view.ISV:
        return "RES0: ISV=0, no valid instruction syndrome", False
    size = ESR_ELx_DABT.field("SAS").enum[v]
    return f"{size} ({1 << v} bytes)", True


def _srt(view: RegView, v: int, fs: FeatureSet) -> Meaning:
    """SRT names the transfer register, Xn with SF=1 and Wn with SF=0 (31: the zero register)."""
    if not view.ISV:
        return "RES0: ISV=0, no valid instruction syndrome", False
    if v == 31:
        return ("XZR" if view.SF else "WZR"), True
    return (f"X{v}" if view.SF else f"W{v}"), True


def _il(view: RegView, v: int, fs: FeatureSet) -> Meaning:
    """IL is 1, not an instruction length, for an Instruction Abort or a Data Abort with ISV=0.

    Arm ARM ESR_ELx.IL (DDI 0487L D24.2.40, as quoted in a Xen patch): "0b1 32-bit
    instruction trapped. This value is also used when the exception is ... An Instruction
    Abort exception. A Data Abort exception for which the value of the ISV bit is 0."
    """
    names = {f.name for f in view.spec.fields()}
    if "IFSC" in names or ("ISV" in names and not view.ISV):
        what = "an Instruction Abort" if "IFSC" in names else "a Data Abort with ISV=0"
        if v:
            return f"1 for {what} (not an instruction length)", True
        return f"should be 1 for {what}", False
    return ESR_ELx.field("IL").enum[v], True


def _wnr(view: RegView, v: int, fs: FeatureSet) -> Meaning:
    meaning = ESR_ELx_DABT.field("WnR").enum[v]
    if view.CM:
        meaning += " (always 1 for cache maintenance and address translation instructions)"
    elif view.S1PTW:
        meaning += (" (with S1PTW=1: the access being translated, not the table walk; "
                    "ASL AArch64.FaultSyndrome)")
    return meaning, True


def _fnv(view: RegView, v: int, fs: FeatureSet) -> Meaning:
    if decode_fsc(_xfsc(view)) != (Fault.SYNC_EXTERNAL, None):
        return "RES0: FnV is valid only for a synchronous External abort (xFSC 0x10)", False
    return ("FAR is not valid, it holds an UNKNOWN value" if v else "FAR is valid"), True


_SET_ENC = {0b00: "Recoverable state (UER)", 0b10: "Uncontainable (UC)",
            0b11: "Restartable state (UEO)"}


def _set(view: RegView, v: int, fs: FeatureSet) -> Meaning:
    if decode_fsc(_xfsc(view)) != (Fault.SYNC_EXTERNAL, None):
        return "RES0: SET is valid only for a synchronous External abort (xFSC 0x10)", False
    return _SET_ENC.get(v, "reserved") + " (FEAT_RAS)", v in _SET_ENC


_EXTERNAL = (Fault.SYNC_EXTERNAL, Fault.SYNC_EXTERNAL_ON_WALK, Fault.SYNC_PARITY,
             Fault.SYNC_PARITY_ON_WALK)


def _ea(view: RegView, v: int, fs: FeatureSet) -> Meaning:
    kind = decode_fsc(_xfsc(view))
    if kind is None or kind[0] not in _EXTERNAL:
        return "0 for any abort other than an External abort", False
    return "External abort type: IMPLEMENTATION DEFINED classification", True


def _fsc(view: RegView, v: int, fs: FeatureSet) -> Meaning:
    name = FSC_NAMES.get(v)
    if name is None:
        return "not a fault status code s2mmu knows (unallocated or not modelled)", False
    return name, True


def _ec(view: RegView, v: int, fs: FeatureSet) -> Meaning:
    return EC_ENC.get(v, f"exception class {v:#x}, not decoded by s2mmu"), True


# -- PAR_EL1 -------------------------------------------------------------------------------


def _par_pa(view: RegView, v: int, fs: FeatureSet) -> Meaning:
    pa = v << 12
    if pa >> 48 and not fs.has("FEAT_LPA"):
        return f"PA {pa:#x}: PA[51:48] is RES0 without FEAT_LPA", False
    return f"output address {pa:#x}", True


def _par_ns(view: RegView, v: int, fs: FeatureSet) -> Meaning:
    return "UNKNOWN for a result from a Non-secure translation regime", False


def _par_attr(view: RegView, v: int, fs: FeatureSet) -> Meaning:
    return mair_attr_meaning(v, fs)


def _impdef(view: RegView, v: int, fs: FeatureSet) -> Meaning:
    return "IMPLEMENTATION DEFINED", False


# -- MAIR_ELx ------------------------------------------------------------------------------

_DEVICE = ("nGnRnE", "nGnRE", "nGRE", "GRE")


def cache_nibble_name(n: int) -> str:
    """Return a MAIR Normal-memory nibble as WB-RAWA, WT-RA-T (transient), NC."""
    h = decode_cache_nibble(n)
    if h.attrs is Cacheability.NC:
        return "NC"
    alloc = ("RA" if h.ra else "") + ("WA" if h.wa else "")
    return h.attrs.name + ("-" + alloc if alloc else "") + ("-T" if h.transient else "")


def mair_attr_meaning(attr: int, fs: FeatureSet) -> Meaning:
    """Return what a MAIR_ELx.Attr<n> byte means on an implementation with fs.

    Arm ARM MAIR_EL1: 0b0000dd00 Device; 0b0000dd01 Device with XS=0 (FEAT_XS);
    0b0000dd1x UNPREDICTABLE; 0booooiiii (both non-zero) Normal; 0x40 and 0xA0 Normal
    with XS=0 (FEAT_XS); 0xF0 Tagged Normal (FEAT_MTE2); other 0bxxxx0000 UNPREDICTABLE.
    """
    outer, inner = attr >> 4, attr & 0xF
    if outer == 0:
        dev = f"Device-{_DEVICE[inner >> 2]}"
        if inner & 0b11 == 0:
            return dev, True
        if inner & 0b11 == 0b01:
            if fs.has("FEAT_XS"):
                return f"{dev}, XS=0 (FEAT_XS)", True
            return f"UNPREDICTABLE: {dev} with XS=0 needs FEAT_XS", False
        return "UNPREDICTABLE (reserved Device encoding 0b0000dd1x)", False
    if inner == 0:
        return _mair_outer_only(attr, fs)
    return f"Normal i{cache_nibble_name(inner)} o{cache_nibble_name(outer)}", True


def _mair_outer_only(attr: int, fs: FeatureSet) -> Meaning:
    """Return the meaning of 0bxxxx0000 with a non-zero outer nibble."""
    named = {0x40: ("FEAT_XS", "Normal iNC oNC, XS=0 (FEAT_XS)"),
             0xA0: ("FEAT_XS", "Normal iWT-RA oWT-RA, XS=0 (FEAT_XS)"),
             0xF0: ("FEAT_MTE2", "Tagged Normal iWB-RAWA oWB-RAWA (FEAT_MTE2)")}
    if attr in named:
        feat, meaning = named[attr]
        if fs.has(feat):
            return meaning, True
        return f"UNPREDICTABLE without {feat} ({meaning})", False
    return "UNPREDICTABLE (reserved encoding 0bxxxx0000)", False


def _mair(view: RegView, v: int, fs: FeatureSet) -> Meaning:
    return mair_attr_meaning(v, fs)


# -- TCR_ELx, VTCR_EL2 ---------------------------------------------------------------------


def _size(nbits: int) -> str:
    units = ((60, "EB"), (50, "PB"), (40, "TB"), (30, "GB"), (20, "MB"), (10, "KB"))
    for shift, unit in units:
        if nbits >= shift:
            return f"{1 << (nbits - shift)}{unit}"
    return f"{1 << nbits}B"


def _granule(table: dict[int, int], enc: int) -> Granule | None:
    kb = table.get(enc)
    return Granule(kb) if kb is not None else None


def _effective_ds(view: RegView, g: Granule | None, fs: FeatureSet) -> bool:
    """Return the DS the walk uses: the bit, with FEAT_LPA2 and a 4KB/16KB granule."""
    return bool(view.DS) and fs.has("FEAT_LPA2") and g is not None and g is not Granule.G64K


def _txsz(tg: str, table: dict[int, int], stage: int) -> Explain:
    """Explain T0SZ/T1SZ: the input address size, and whether it is in range."""

    def explain(view: RegView, v: int, fs: FeatureSet) -> Meaning:
        what = "IPA space" if stage == 2 else "VA range"
        meaning = f"{64 - v}-bit {what} ({_size(64 - v)})"
        g = _granule(table, view.get(tg))
        if g is None:
            return meaning, True
        ds = _effective_ds(view, g, fs)
        lo = s2_min_txsz(g, ds, fs) if stage == 2 else s1_min_txsz(g, ds, fs)
        hi = s1_max_txsz(g, fs)
        if lo <= v <= hi:
            return meaning, True
        rule = "AArch64.S2TxSZFaults" if stage == 2 else "AArch64.S1TxSZFaults"
        return (f"{meaning}: outside {lo}..{hi} for the {g.value}KB granule "
                f"(ASL {rule}: a level 0 Translation fault or an IMPLEMENTATION DEFINED "
                f"clamp)"), False

    return explain


def _ps(tg: str, table: dict[int, int]) -> Explain:
    """Explain PS/IPS: the output size, capped at what the implementation supports."""

    def explain(view: RegView, v: int, fs: FeatureSet) -> Meaning:
        if v not in PARANGE_BITS:
            meaning = "reserved"
        else:
            meaning = f"{PARANGE_BITS[v]} bits, {_size(PARANGE_BITS[v])}"
        g = _granule(table, view.get(tg))
        if g is None:
            return meaning, v in PARANGE_BITS
        size = physical_address_size(v, g, fs)
        if v not in PARANGE_BITS or PARANGE_BITS[v] != size:
            return (f"{meaning}: treated as {size} bits (ASL AArch64.PhysicalAddressSize "
                    f"caps it at PAMax {fs.pa_max()} bits and the granule's limit)"), False
        return meaning, True

    return explain


def _sl0(view: RegView, v: int, fs: FeatureSet) -> Meaning:
    """VTCR_EL2.SL0: the stage-2 start level, by TG0 (and SL2 with DS=1, 4KB)."""
    g = _granule(TG0_KB, view.TG0)
    if g is None:
        return f"start level depends on the granule; TG0={view.TG0:#04b} is reserved", False
    ds = _effective_ds(view, g, fs)
    sl2 = view.SL2 if ds else 0
    why = s2_invalid_sl(g, v, sl2, ds, fs)
    if why:
        return f"reserved: {why} (ASL AArch64.S2InvalidSL)", False
    level = s2_start_level(g, v, sl2)
    with_sl2 = ", SL2=1" if sl2 else ""
    return f"stage 2 starts at level {level} ({g.value}KB granule{with_sl2})", True


def _sl2(view: RegView, v: int, fs: FeatureSet) -> Meaning:
    if not view.DS:
        return "ignored with DS=0 (only SL2:SL0=0b100 with DS=1 and 4KB is defined)", not v
    return ("with SL0=0b00 and the 4KB granule: start at level -1" if v
            else "start level from SL0"), True


_DS = {0: "48-bit descriptors: bits[9:8] are SH",
       1: "52-bit descriptors (FEAT_LPA2): bits[9:8] are OA[51:50], shareability from SHx"}


def _ds(view: RegView, v: int, fs: FeatureSet) -> Meaning:
    g = _granule(TG0_KB, view.TG0)
    if v and g is Granule.G64K:
        return "no effect with the 64KB granule", True
    return _DS[v], True


def _fipa(view: RegView, v: int, fs: FeatureSet) -> Meaning:
    """HPFAR_EL2.FIPA: IPA[51:12] (FEAT_LPA) or IPA[47:12] of the faulting IPA's page."""
    top = 51 if fs.has("FEAT_LPA") else 47
    ipa = v << 12
    if ipa >> (top + 1):
        return (f"IPA page {ipa:#x}: bits above IPA[{top}] are set, RES0 on this "
                f"implementation"), False
    return (f"faulting IPA page {ipa:#x} (FIPA is IPA[{top}:12]; valid for the faults "
            f"ASL IPAValid names)"), True


def _baddr(view: RegView, v: int, fs: FeatureSet) -> Meaning:
    return f"translation table base {v << 1:#x} (aligned to the initial table's size)", True


def _iss2(view: RegView, v: int, fs: FeatureSet) -> Meaning:
    if not v:
        return "no ISS2 information", True
    abort = view.EC in (0x20, 0x21, 0x24, 0x25)
    poe = fs.has("FEAT_S1POE") or fs.has("FEAT_S2POE")
    known = (1 << 6 if poe else 0) | (1 << 5 if fs.has("FEAT_S1PIE") and view.EC >= 0x24 else 0)
    if abort and v & ~known == 0:
        said = [what for b, what in ((6, "Overlay=1: a permission overlay refused the access"),
                                     (5, "DirtyBit=1: a write to an nDirty=1 location "
                                         "(FEAT_S1PIE dirty state)")) if v >> b & 1]
        return "; ".join(said), True
    return "ISS2 syndrome (FEAT_LS64, FEAT_S1POE/S2POE, FEAT_GCS, ...): not decoded", True


def _iss(view: RegView, v: int, fs: FeatureSet) -> Meaning:
    return f"ISS for EC {view.EC:#x}: not decoded by s2mmu (only aborts are)", True


EXPLAIN: dict[tuple[str, str], Explain] = {
    ("ESR_ELx", "ISS2"): _iss2,
    ("ESR_ELx", "ISS"): _iss,
    ("ESR_ELx", "EC"): _ec,
    ("ESR_ELx", "IL"): _il,
    ("ESR_ELx", "SAS"): _sas,
    ("ESR_ELx", "SSE"): _isv_enum("SSE"),
    ("ESR_ELx", "SRT"): _srt,
    ("ESR_ELx", "SF"): _isv_enum("SF"),
    ("ESR_ELx", "AR"): _isv_enum("AR"),
    ("ESR_ELx", "WnR"): _wnr,
    ("ESR_ELx", "FnV"): _fnv,
    ("ESR_ELx", "SET"): _set,
    ("ESR_ELx", "EA"): _ea,
    ("ESR_ELx", "DFSC"): _fsc,
    ("ESR_ELx", "IFSC"): _fsc,
    ("PAR_EL1", "PA"): _par_pa,
    ("PAR_EL1", "NS"): _par_ns,
    ("PAR_EL1", "ATTR"): _par_attr,
    ("PAR_EL1", "FST"): _fsc,
    **{("PAR_EL1", n): _impdef for n in ("IMPDEF", "IMPDEF_63_56", "IMPDEF_55_52",
                                          "IMPDEF_51_48")},
    **{(reg, f"Attr{n}"): _mair for reg in ("MAIR_EL1", "MAIR_EL2") for n in range(8)},
    ("VTCR_EL2", "SL0"): _sl0,
    ("VTCR_EL2", "SL2"): _sl2,
    ("VTCR_EL2", "DS"): _ds,
    ("VTCR_EL2", "T0SZ"): _txsz("TG0", TG0_KB, 2),
    ("VTCR_EL2", "PS"): _ps("TG0", TG0_KB),
    ("TCR_EL1", "T0SZ"): _txsz("TG0", TG0_KB, 1),
    ("TCR_EL1", "T1SZ"): _txsz("TG1", TG1_KB, 1),
    ("TCR_EL1", "IPS"): _ps("TG0", TG0_KB),
    ("TCR_EL1", "DS"): _ds,
    ("TCR_EL2", "T0SZ"): _txsz("TG0", TG0_KB, 1),
    ("TCR_EL2", "T1SZ"): _txsz("TG1", TG1_KB, 1),
    ("TCR_EL2", "PS"): _ps("TG0", TG0_KB),
    ("TCR_EL2", "IPS"): _ps("TG0", TG0_KB),
    ("TCR_EL2", "DS"): _ds,
    ("HPFAR_EL2", "FIPA"): _fipa,
    **{(reg, "BADDR"): _baddr for reg in ("TTBR0_EL1", "TTBR1_EL1", "TTBR0_EL2",
                                           "TTBR1_EL2", "VTTBR_EL2")},
}
