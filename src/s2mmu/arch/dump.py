"""Whole translation tables as merged ranges, in the style of the kernel's ptdump.

Every entry of every table reachable from a stage's base is decoded with
``decode_descriptor`` and checked with the walk's own leaf rules (``leaf_translation_fault``,
``oa_out_of_range``); each valid leaf becomes a typed record with its permissions per
Exception level and its decoded attributes, and consecutive leaves merge into one range
when nothing but their addresses differs.

The merging rule is ptdump's note_page (entries at the same level with the same
attributes merge; a region boundary always ends a range) with one more condition:
the output addresses must be contiguous too, so that each range has one start OA and
every address in it translates to OA + (address - start). Invalid entries are holes,
not ranges; entries with bit[0]=1 that a walk would still fault on (reserved
encodings, nT or contiguous faults, output address size) are listed apart as faults.

Nothing is written to memory: the hardware access flag and dirty state updates a
translation would make are not made by a dump.

ASL: AArch64.S1Walk, AArch64.S2Walk, AArch64.S1DirectBasePermissions (hierarchical
controls, AArch64.S1ApplyTablePerms), AArch64.S2DirectBasePermissions, S1DecodeMemAttrs,
S2DecodeMemAttrs, AArch64.S2ApplyFWBMemAttrs, StageOA.
Kernel: arch/arm64/mm/ptdump.c (note_page: the merging rule, marker lines, sizes).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from enum import Enum

from s2mmu.arch.access import acc_gpr
from s2mmu.arch.attrs import (
    WB_RAWA,
    MemoryAttributes,
    MemType,
    Shareability,
    s2_apply_fwb,
    s2_memattr_decode,
)
from s2mmu.arch.bits import bits, mask
from s2mmu.arch.descriptors import (
    Block,
    Invalid,
    Page,
    Table,
    af,
    attrindx,
    dbm,
    decode_descriptor,
    ng,
    s2_memattr,
)
from s2mmu.arch.errors import InputError
from s2mmu.arch.faults import FaultRecord
from s2mmu.arch.params import (
    FINAL_LEVEL,
    Granule,
    S1TTWParams,
    S2TTWParams,
    VARange,
    clamp_txsz,
    txsz_faults,
)
from s2mmu.arch.perms import (
    S1Perms,
    S2Perms,
    s1_permissions,
    s1_wxn_effective,
    s2_permission_ok,
    s2_permissions,
)
from s2mmu.arch.state import Regime
from s2mmu.arch.translate import (
    Env,
    acc_ttw,
    resolve_sh,
    s1_attrs,
    s1_setup,
    s2_leaf_sh,
    s2_setup,
    s2_txsz_fault,
    s2_walk_checks,
)
from s2mmu.arch.walk import (
    TTWState,
    WalkSetup,
    contiguous_bit,
    leaf_output,
    leaf_translation_fault,
    oa_out_of_range,
    walk,
)


class LeafKind(Enum):
    """What kind of descriptor maps a range."""

    BLOCK = "block"
    PAGE = "page"


@dataclass(frozen=True)
class S1LeafAttrs:
    """Everything a stage-1 leaf says besides its addresses.

    perms are the direct permissions with the hierarchical table controls applied and
    WXN applied per EL (a location an EL can write is not executable at that EL), PAN
    not applied (it depends on PSTATE). attrs is MAIR_ELx.Attr<attrindx> decoded with
    the leaf's shareability, before SCTLR_ELx.C/I and before any stage 2.
    """

    level: int
    kind: LeafKind
    perms: S1Perms
    af: bool
    dbm: bool
    contiguous: bool
    ng: bool
    sh: Shareability
    attrindx: int
    attrs: MemoryAttributes
    sw: int               # software bits [58:55]


@dataclass(frozen=True)
class S2LeafAttrs:
    """Everything a stage-2 leaf says besides its addresses.

    memattr is the raw MemAttr[3:0]. attrs is its meaning on its own: without FWB the
    stage-2 attributes (S2DecodeMemAttrs); with FWB the result over a Normal Write-Back
    stage 1 (AArch64.S2ApplyFWBMemAttrs), or None for MemAttr[1:0]=0b11, where the
    stage-1 attributes pass through unchanged.
    """

    level: int
    kind: LeafKind
    perms: S2Perms
    af: bool
    dbm: bool
    contiguous: bool
    sh: Shareability
    memattr: int
    fwb: bool
    attrs: MemoryAttributes | None
    sw: int               # software bits [58:55]


LeafAttrs = S1LeafAttrs | S2LeafAttrs


@dataclass(frozen=True)
class DumpRange:
    """Consecutive leaves with identical attributes and contiguous output addresses.

    [start, end) in the stage's input space maps to [oa, oa + size); entries is how
    many descriptors were merged.
    """

    start: int
    end: int
    oa: int
    entries: int
    attrs: LeafAttrs

    def size(self) -> int:
        """Return the size of the range in bytes."""
        return self.end - self.start


@dataclass(frozen=True)
class DumpFault:
    """Part of the input space a walk reaches but cannot translate, though bit[0] is 1.

    A reserved encoding, a leaf the walk faults on (nT, contiguous, output address
    size), a table address out of range, or a stage-1 table whose IPA stage 2 cannot
    read.
    """

    start: int
    end: int
    level: int
    raw: int
    reason: str


@dataclass(frozen=True)
class DumpUnused:
    """Invalid descriptors (bit[0]=0) whose other bits are not all zero, merged: bits the
    hardware ignores and software may use (Arm ARM D8: an invalid descriptor's bits [63:1]
    are IGNORED). A hypervisor keeps ownership annotations there."""

    start: int
    end: int
    level: int
    raw: int
    entries: int


@dataclass(frozen=True)
class DumpRegion:
    """One input address range and its base register: TTBR0_EL1, TTBR1_EL2, VTTBR_EL2...

    disabled says why the region is not walked (EPDx, stage 1 off), or "".
    """

    name: str
    stage: int
    start: int
    end: int
    granule: Granule
    startlevel: int
    table: int            # the initial table's address (an IPA for stage 1 under stage 2)
    disabled: str
    ranges: tuple[DumpRange, ...]
    faults: tuple[DumpFault, ...]
    unused: tuple[DumpUnused, ...] = ()
    """Invalid descriptors holding software bits (only when the dump asks for them)."""


@dataclass(frozen=True)
class TableDump:
    """The dump of one stage: its regions in address order."""

    stage: int
    regime: Regime | None     # None for stage 2
    regions: tuple[DumpRegion, ...]

    def ranges(self) -> Iterator[DumpRange]:
        """Return every range of every region, in address order."""
        for region in self.regions:
            yield from region.ranges


@dataclass(frozen=True)
class AddrRange:
    """An address filter: [start, end)."""

    start: int
    end: int


@dataclass(frozen=True)
class PermFilter:
    """Keep ranges where one Exception level has every permission asked for.

    PermFilter(w=True, x=True) finds W+X mappings (the same EL can write and execute).
    """

    r: bool = False
    w: bool = False
    x: bool = False

    def __call__(self, attrs: LeafAttrs) -> bool:
        """Return whether attrs grant every requested permission at one EL."""
        return any((r or not self.r) and (w or not self.w) and (x or not self.x)
                   for r, w, x in el_permissions(attrs))


RangePredicate = Callable[[LeafAttrs], bool]


def el_permissions(attrs: LeafAttrs) -> tuple[tuple[bool, bool, bool], ...]:
    """Return (read, write, execute) per EL: privileged then EL0 (stage 2: EL1 then EL0)."""
    p = attrs.perms
    if isinstance(p, S1Perms):
        return (p.pr, p.pw, p.px), (p.ur, p.uw, p.ux)
    return (p.r, p.w, p.px), (p.r, p.w, p.ux)


def parse_perm_filter(text: str) -> PermFilter:
    """Return the filter a string like "w", "wx" or "r-x" asks for ('-' is a placeholder)."""
    bad = sorted({c for c in text.lower() if c not in "rwx-"})
    if bad or not text.strip("-"):
        letter = bad[0] if bad else text
        raise InputError(f"--perm: unknown permission letter {letter!r} in {text!r} "
                         f"(use r, w and x, e.g. 'wx' for W+X mappings)")
    t = text.lower()
    return PermFilter("r" in t, "w" in t, "x" in t)


def parse_addr_range(text: str) -> AddrRange:
    """Return START-END (hex or decimal, END exclusive, as dump lines print it)."""
    lo, sep, hi = text.partition("-")
    try:
        start, end = _num(lo), _num(hi)
    except ValueError:
        raise InputError(f"--range expects START-END (e.g. 0x40000000-0x80000000), "
                         f"got {text!r}") from None
    if not sep:
        raise InputError(f"--range expects START-END (e.g. 0x40000000-0x80000000), got {text!r}")
    if start >= end:
        raise InputError(f"--range {text}: the start {start:#x} is not below the end {end:#x}")
    return AddrRange(start, end)


def _num(text: str) -> int:
    t = text.strip().replace("_", "").lower()
    return int(t, 16) if t.startswith("0x") else int(t, 10)


# ---------------------------------------------------------------- the table traversal

class _Collect:
    """The merging state of one region (note_page's pg_state): a local of the dump.

    The open range is kept as plain fields (start, end, oa, entries, attrs) and becomes
    a DumpRange when continuity breaks.
    """

    def __init__(self, lo: int, hi: int, keep: RangePredicate | None) -> None:
        self.lo, self.hi, self.keep = lo, hi, keep
        self.ranges: list[DumpRange] = []
        self.faults: list[DumpFault] = []
        self.start = self.end = self.oa = self.entries = 0
        self.attrs: LeafAttrs | None = None
        self.unused: list[DumpUnused] | None = None

    def invalid(self, start: int, size: int, level: int, raw: int) -> None:
        """Add one invalid descriptor with software bits, merging it with the previous one
        when it continues it at the same level with the same bits."""
        if self.unused is None:
            return
        last = self.unused[-1] if self.unused else None
        if last is not None and (last.end, last.level, last.raw) == (start, level, raw):
            self.unused[-1] = replace(last, end=start + size, entries=last.entries + 1)
        else:
            self.unused.append(DumpUnused(start, start + size, level, raw, 1))

    def leaf(self, start: int, size: int, oa: int, attrs: LeafAttrs) -> None:
        """Add one leaf, clipped to [lo, hi), merging it with the open range if it can."""
        if self.keep is not None and not self.keep(attrs):
            return
        if start < self.lo:
            oa, size, start = oa + self.lo - start, size - (self.lo - start), self.lo
        size = min(size, self.hi - start)
        cur = self.attrs
        if (cur is not None and self.end == start and self.oa + (start - self.start) == oa
                and (cur is attrs or cur == attrs)):
            self.end, self.entries = start + size, self.entries + 1
            return
        self.close()
        self.start, self.end, self.oa, self.entries, self.attrs = start, start + size, oa, 1, attrs

    def close(self) -> None:
        """End the open range (ptdump: continuity broken)."""
        if self.attrs is not None:
            self.ranges.append(DumpRange(self.start, self.end, self.oa, self.entries,
                                         self.attrs))
            self.attrs = None


# The bits a leaf's attributes never depend on (output address bits [49:12]): leaves that
# differ only there share one LeafAttrs (a cache local to one dump).
_NOT_OA = ~mask(49, 12)

# Table addresses come back as (PA, "") or (0, why the table cannot be read).
TableAddr = Callable[[int], tuple[int, str]]


@dataclass(frozen=True)
class _Stage:
    """What the traversal of one region needs (built once per region)."""

    setup: WalkSetup
    ee: bool
    env: Env
    table_pa: TableAddr
    leaf_attrs: Callable[[TTWState], LeafAttrs]
    region_base: int      # added to walk input addresses to give reported addresses


def _entries(st: _Stage, level: int) -> int:
    """Return how many descriptors a table at level holds (the start level may concatenate)."""
    g = st.setup.granule
    lsb = (FINAL_LEVEL - level) * g.stride + g.bits
    if level == st.setup.startlevel:
        return 1 << max(st.setup.iasize - lsb, 0)
    return 1 << g.stride


def _read_table(st: _Stage, pa: int, n: int) -> tuple[int, ...]:
    """Return the n descriptors of the table at pa, in the tables' endianness."""
    data = st.env.mem.read_bytes(pa, 8 * n)
    return struct.unpack((">" if st.ee else "<") + f"{n}Q", data)


def _visit(st: _Stage, out: _Collect, pa: int, level: int, ia_base: int,
           tables: tuple[Table, ...], cache: dict[tuple[int, int, tuple[int, ...]], LeafAttrs]
           ) -> None:
    """Visit every entry of the table at pa in input-address order (depth first)."""
    g = st.setup.granule
    lsb = (FINAL_LEVEL - level) * g.stride + g.bits
    span = 1 << lsb
    ctx = st.setup.context()
    n = _entries(st, level)
    first = max(0, (out.lo - st.region_base - ia_base) >> lsb)
    last = min(n, -(-(out.hi - st.region_base - ia_base) // span))
    if first >= last:
        return
    words = _read_table(st, pa + 8 * first, last - first)
    tkey = tuple(t.raw >> 59 for t in tables)
    for i, raw in enumerate(words, first):
        if not raw & 1:
            if raw:
                out.invalid(st.region_base + ia_base + (i << lsb), span, level, raw)
            continue
        ia = ia_base + (i << lsb)
        start = st.region_base + ia
        desc = decode_descriptor(raw, level, ctx)
        match desc:
            case Invalid(why=why):
                out.faults.append(DumpFault(start, start + span, level, raw, why))
            case Table(next_base=nb):
                if oa_out_of_range(nb, st.setup.ps):
                    out.faults.append(DumpFault(start, start + span, level, raw, (
                        f"next-level table address {nb:#x} exceeds the "
                        f"{st.setup.ps}-bit output size")))
                    continue
                next_pa, why = st.table_pa(nb)
                if why:
                    out.faults.append(DumpFault(start, start + span, level, raw, why))
                    continue
                _visit(st, out, next_pa, level + 1, ia, (*tables, desc), cache)
            case Block() | Page():
                why = leaf_translation_fault(st.setup, desc)
                if not why and oa_out_of_range(desc.oa, st.setup.ps):
                    why = f"output address {desc.oa:#x} exceeds the {st.setup.ps}-bit output size"
                if why:
                    out.faults.append(DumpFault(start, start + span, level, raw, why))
                    continue
                state = TTWState(st.setup.stage, desc, tables, pa + 8 * i, ())
                key = (level, raw & _NOT_OA, tkey)
                attrs = cache.get(key)
                if attrs is None:
                    attrs = cache[key] = st.leaf_attrs(state)
                out.leaf(start, span, leaf_output(state, st.setup, ia), attrs)


def _region(name: str, st: _Stage, rng: AddrRange, end: int, keep: RangePredicate | None,
            disabled: str = "", unused: bool = False) -> DumpRegion:
    """Walk one region's tables and return its merged ranges (and, if unused, its invalid
    descriptors with software bits)."""
    setup = st.setup
    base = setup.base_address()
    lo, hi = max(rng.start, st.region_base), min(rng.end, end)
    out = _Collect(lo, hi, keep)
    if unused:
        out.unused = []
    if not disabled and lo < hi:
        if oa_out_of_range(base, setup.ps):
            out.faults.append(DumpFault(lo, hi, setup.startlevel, 0, (
                f"table base {base:#x} exceeds the {setup.ps}-bit output size")))
        else:
            pa, why = st.table_pa(base)
            if why:
                out.faults.append(DumpFault(lo, hi, setup.startlevel, 0, why))
            else:
                _visit(st, out, pa, setup.startlevel, 0, (), {})
    out.close()
    faults = tuple(out.faults) if keep is None else ()   # faults have no permissions
    return DumpRegion(name, setup.stage, st.region_base, end, setup.granule, setup.startlevel,
                      base, disabled, tuple(out.ranges), faults, tuple(out.unused or ()))


def _check_range(rng: AddrRange | None, spaces: list[tuple[int, int]], what: str) -> AddrRange:
    """Return the filter range, refusing one that leaves the input address space."""
    if rng is None:
        return AddrRange(0, 1 << 64)
    if (any(lo <= rng.start < hi for lo, hi in spaces)
            and any(lo < rng.end <= hi for lo, hi in spaces)):
        return rng
    where = " or ".join(f"{lo:#x}-{hi:#x}" for lo, hi in spaces)
    raise InputError(f"--range {rng.start:#x}-{rng.end:#x} is outside the {what} ({where})")


# ---------------------------------------------------------------- stage 2

def s2_leaf_attrs(state: TTWState, p: S2TTWParams, env: Env) -> S2LeafAttrs:
    """Return the stage-2 leaf's attributes (ASL AArch64.S2DirectBasePermissions, MemAttr)."""
    raw = state.leaf.raw
    shv = s2_leaf_sh(state, p, env)
    memattr = s2_memattr(raw)
    attrs: MemoryAttributes | None
    if not p.fwb:
        attrs = s2_memattr_decode(memattr, shv, env.choices.s2_reserved_cacheability)
    elif bits(memattr, 2, 0) == 0b111:
        attrs = None
    else:
        s1_wb = MemoryAttributes(MemType.NORMAL, inner=WB_RAWA, outer=WB_RAWA,
                                 shareability=Shareability.NSH)
        attrs = s2_apply_fwb(s1_wb, memattr, shv)
    return S2LeafAttrs(
        level=state.level,
        kind=LeafKind.PAGE if isinstance(state.leaf, Page) else LeafKind.BLOCK,
        perms=S2Perms(*s2_permissions(state, p, env.fs.has("FEAT_XNX")).effective()),
        af=bool(af(raw)), dbm=bool(dbm(raw)),
        contiguous=contiguous_bit(raw, p.tgx, state.level),
        sh=_shareability(shv), memattr=memattr, fwb=p.fwb, attrs=attrs, sw=bits(raw, 58, 55))


def _shareability(sh: int) -> Shareability:
    return {0: Shareability.NSH, 2: Shareability.OSH, 3: Shareability.ISH}.get(
        sh, Shareability.NSH)


def _physical(pa: int) -> tuple[int, str]:
    return pa, ""


def dump_s2(p: S2TTWParams, env: Env, rng: AddrRange | None = None,
            keep: RangePredicate | None = None, unused: bool = False) -> TableDump:
    """Return the stage 2 that p describes as merged ranges of IPA space.

    rng limits the dump to [start, end) (clipping ranges at its edges); keep keeps only
    ranges whose attributes it accepts (e.g. PermFilter(w=True)), and no faults; unused
    also lists invalid descriptors that hold software bits (DumpUnused, unclipped). A
    T0SZ or SL0 the walk would fault on at level 0 is bad input.
    """
    why = s2_txsz_fault(p, env)
    if why:
        raise InputError(f"stage 2 cannot be walked: {why}")
    p = replace(p, txsz=clamp_txsz(p.txsz, *p.txsz_range(env.fs)))
    why = s2_walk_checks(p, 0, env)
    if why:
        raise InputError(f"stage 2 cannot be walked: {why}")
    end = 1 << p.iasize()
    rng = _check_range(rng, [(0, end)], f"{p.iasize()}-bit IPA space")
    st = _Stage(s2_setup(p, env), p.ee, env, _physical,
                lambda s: s2_leaf_attrs(s, p, env), 0)
    return TableDump(2, None, (_region("VTTBR_EL2", st, rng, end, keep, unused=unused),))


# ---------------------------------------------------------------- stage 1

def s1_leaf_attrs(state: TTWState, p: S1TTWParams, env: Env) -> S1LeafAttrs:
    """Return the stage-1 leaf's attributes (ASL AArch64.S1DirectBasePermissions, MAIR)."""
    raw = state.leaf.raw
    perms = s1_wxn_effective(s1_permissions(state, p), p)
    attrs = s1_attrs(state, p, env)
    return S1LeafAttrs(
        level=state.level,
        kind=LeafKind.PAGE if isinstance(state.leaf, Page) else LeafKind.BLOCK,
        perms=perms, af=bool(af(raw)), dbm=bool(dbm(raw)),
        contiguous=contiguous_bit(raw, p.tgx, state.level), ng=bool(ng(raw)),
        sh=_shareability(resolve_sh(p.sh if p.ds else bits(raw, 9, 8), env.choices)),
        attrindx=attrindx(raw), attrs=attrs, sw=bits(raw, 58, 55))


def s2_table_address(p2: S2TTWParams, env: Env) -> TableAddr:
    """Return how a stage-1 table's IPA becomes a PA: a stage-2 read, without updates.

    ASL: AArch64.S2Translate for a stage-1 table walk (acctype TTW): the walk, the
    access flag (a fault without VTCR_EL2.HA) and read permission; no AF is set.
    """
    p2 = replace(p2, txsz=clamp_txsz(p2.txsz, *p2.txsz_range(env.fs)))
    setup = s2_setup(p2, env)
    access = acc_ttw(acc_gpr(1, False))

    def fetch(addr: int, level: int) -> tuple[int, int]:
        return addr, env.mem.read64(addr, p2.ee)

    def table_pa(ipa: int) -> tuple[int, str]:
        why = s2_txsz_fault(p2, env) or s2_walk_checks(p2, ipa, env)
        if why:
            return 0, f"stage 2 cannot translate table IPA {ipa:#x}: {why}"
        got = walk(setup, ipa, access, fetch)
        if isinstance(got, FaultRecord):
            return 0, f"stage 2 cannot translate table IPA {ipa:#x}: {got.reason}"
        if not af(got.leaf.raw) and not p2.ha:
            return 0, f"stage-2 access flag fault on table IPA {ipa:#x}"
        perms = s2_permissions(got, p2, env.fs.has("FEAT_XNX"))
        if not s2_permission_ok(perms, access):
            return 0, f"stage-2 permission fault reading table IPA {ipa:#x}"
        return leaf_output(got, setup, ipa), ""

    return table_pa


def _s1_attrs_of(p: S1TTWParams, env: Env) -> Callable[[TTWState], LeafAttrs]:
    def attrs(state: TTWState) -> LeafAttrs:
        return s1_leaf_attrs(state, p, env)
    return attrs


def s1_region_name(p: S1TTWParams) -> str:
    """Return the base register of a stage-1 range: TTBR0_EL1, TTBR1_EL2..."""
    el = "EL1" if p.regime is Regime.EL10 else "EL2"
    return f"TTBR{p.varange.value}_{el}"


def s1_region_bounds(p: S1TTWParams) -> tuple[int, int]:
    """Return [start, end) of the VA range p translates (TTBR1: the top of the space)."""
    size = 1 << p.iasize()
    if p.varange is VARange.UPPER:
        return (1 << 64) - size, 1 << 64
    return 0, size


def dump_s1(ranges: list[S1TTWParams], env: Env, s2: S2TTWParams | None = None,
            rng: AddrRange | None = None, keep: RangePredicate | None = None) -> TableDump:
    """Return a stage-1 regime as merged ranges of VA space, one region per VA range.

    ranges holds the walk parameters of each VA range (TTBR0 and, in two-range regimes,
    TTBR1: GetS1TTWParams for a VA in each). With s2, table addresses are IPAs read
    through that stage 2 (without setting its access flags). A TxSZ the walk would
    fault on is bad input; a range with EPDx=1 or stage 1 off is listed as disabled, and
    a range outside rng is left out.
    """
    if not ranges:
        raise ValueError("dump_s1 needs the walk parameters of at least one VA range")
    fixed = []
    for p in ranges:
        lo, hi = p.txsz_range(env.fs)
        if p.mmu_on and txsz_faults(p.txsz, lo, hi, env.fs.has("FEAT_LVA"), env.choices):
            raise InputError(f"stage 1 cannot be walked: {s1_region_name(p)}: TxSZ={p.txsz} "
                             f"is outside {lo}..{hi} for this granule")
        fixed.append(replace(p, txsz=clamp_txsz(p.txsz, lo, hi)))
    spaces = [s1_region_bounds(p) for p in fixed]
    rng = _check_range(rng, spaces, "VA space")
    table_pa = s2_table_address(s2, env) if s2 is not None else _physical
    regions = []
    for p in fixed:
        start, end = s1_region_bounds(p)
        if rng.end <= start or end <= rng.start:
            continue
        disabled = ""
        if not p.mmu_on:
            disabled = "stage 1 is off (SCTLR_ELx.M=0, or HCR_EL2.DC/TGE)"
        elif p.epd and p.regime.has_el0():
            disabled = f"EPD{p.varange.value}=1 disables walks of TTBR{p.varange.value}"
        st = _Stage(s1_setup(p, env), p.ee, env, table_pa, _s1_attrs_of(p, env), start)
        regions.append(_region(s1_region_name(p), st, rng, end, keep, disabled))
    return TableDump(1, fixed[0].regime, tuple(regions))

