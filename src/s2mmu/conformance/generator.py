"""Generate random, seeded, reproducible AT cases, by family (issue 3).

Each case is an at-case.md object with two extra keys the format ignores: `family`,
and `harness` (where the probe's stub page is mapped, when ops execute at an EL whose
translation is on). Case `i` of a run depends only on (seed, i, family), so any case can
be regenerated from its name.

A case is drawn in two steps: a family function draws a `Spec` (registers and how
adventurous the tables are), then `CaseBuilder` lays out the tables with the
independent encoder in `tables.py` and picks the AT ops. Tables live in QEMU virt RAM
outside the probe's reserved region (qemu.PROBE_LAYOUT); output addresses of leaves
need not exist, since AT never accesses them.

Families: every granule, start levels (level -1 with FEAT_LPA2, concatenated stage-2
starts), TTBR0/TTBR1, TBI, EPD, E0PD, blocks (legal and not) and contiguous runs,
invalid entries with junk bits, permissions (AP, UXN/PXN, APTable/XNTable with HPD,
WXN, PAN and S1E1RP/WP), AF and dirty state (HA/HD/DBM at both stages), address size
faults, 52-bit LPA/LPA2, big-endian tables, stage 2 with FWB on and off, HCR_EL2.DC/CD/ID,
EL2 and EL2&0 regimes, ops executed at EL1, EL2 and EL3, and broken configurations
(reserved TG, out-of-range TxSZ, illegal SL0/T0SZ, reserved PS).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from s2mmu.arch.errors import InputError
from s2mmu.arch.features import FeatureSet
from s2mmu.conformance.casefile import WRITING_OPS
from s2mmu.conformance.divergences import TAG_ILLEGAL_BLOCK, TAG_OA_52BIT_FIELDS
from s2mmu.conformance.qemu import PROBE_LAYOUT
from s2mmu.conformance.tables import Image, Shape, TableTree, encode_address

PS_BITS = (32, 36, 40, 42, 44, 48, 52, 52)
TG0 = {12: 0b00, 16: 0b01, 14: 0b10}
TG1 = {14: 0b01, 12: 0b10, 16: 0b11}
PA_POOL = (0x4800_0000, 0x1_0000_0000)
HIGH_POOL = (0x1_0000_0000, 0x1_4000_0000)
STUB_ATTR_INDEX = 7
DATA_WINDOW = 8 << 20
"""The top of each case's 32 MiB table window holds the pages real accesses reach."""
DATA_WORDS = 8
"""Each data page starts with this many random words (loads read them; stores go above)."""
DEVICE_ATTRS = (0x00, 0x04, 0x08, 0x0C)
NORMAL_NIBBLES = (0x4, 0x1, 0x2, 0x3, 0x5, 0x6, 0x7, 0x8, 0x9, 0xA, 0xB, 0xC, 0xD, 0xE, 0xF)
EL1_OPS = ("S1E0R", "S1E0W", "S1E1R", "S1E1W", "S1E1RP", "S1E1WP")
S12_OPS = ("S12E0R", "S12E0W", "S12E1R", "S12E1W")
EL2_OPS = ("S1E2R", "S1E2W")


@dataclass
class Spec:
    """What one case configures: registers, table contents, ops."""

    regime: str = "EL1&0"
    s1: bool = True
    granule: tuple[int, int] = (12, 12)
    tg_raw: tuple[int | None, int | None] = (None, None)
    txsz: tuple[int, int] = (16, 16)
    epd: tuple[bool, bool] = (False, False)
    tbi: tuple[bool, bool] = (False, False)
    hpd: tuple[bool, bool] = (False, False)
    e0pd: tuple[bool, bool] = (False, False)
    ds: bool = False
    ips: int = 5
    ha: bool = False
    hd: bool = False
    ee: bool = False
    wxn: bool = False
    tge: bool = False
    e2h: bool = False
    vm: bool = True
    s2: bool = False
    s2_granule: int = 12
    s2_ia_bits: int = 40
    s2_start: int = 1
    s2_ds: bool = False
    s2_ps: int = 5
    s2_ha: bool = False
    s2_hd: bool = False
    s2_sl_raw: tuple[int, int] | None = None
    s2_t0sz_raw: int | None = None
    el2_ee: bool = False
    fwb: bool = False
    dc: bool = False
    cd: bool = False
    id: bool = False
    ptw: bool = False
    n_maps: int = 6
    block_p: float = 0.3
    illegal_block_p: float = 0.0
    contig_p: float = 0.0
    junk_p: float = 0.15
    table_attr_p: float = 0.0
    af0_p: float = 0.1
    dbm_p: float = 0.0
    wide_oa_p: float = 0.03
    lpa_junk_p: float = 0.0
    s2_unmapped_p: float = 0.1
    s2_perm_p: float = 0.2
    s1ptw_fault_p: float = 0.0
    wide_table_p: float = 0.0
    ttbr_hi_p: float = 0.0
    s2_contig_p: float = 0.05
    odd_mair_p: float = 0.0
    other_ops_p: float = 0.1
    high_tables: bool = False
    exec_els: tuple[int, ...] = (2,)
    pan_p: float = 0.3
    n_ops: int = 16
    undef_p: float = 0.0
    attrs_p: float = 0.5
    epan: bool = False
    """SCTLR_ELx.EPAN (FEAT_PAN3): drawn only for a QEMU that has the feature."""
    accesses: tuple[str, ...] = ()
    """Real accesses (LDR, STR, FETCH, ...) the ops draw from instead of AT: leaves are
    pages whose output lies in a data window of RAM, so the accesses reach memory QEMU has."""
    unaligned_p: float = 0.0
    """How often a data access is misaligned (by 1..7 bytes, inside its page)."""
    sctlr_a_p: float = 0.0
    """How often SCTLR_ELx.A (alignment checking) is set."""


# --- Random helpers -----------------------------------------------------------------------


def chance(rng: random.Random, p: float) -> bool:
    """Return True with probability p."""
    return rng.random() < p


RESERVED_MAIR = (0x01, 0x02, 0x03, 0x05, 0x0B, 0x0F, 0x40, 0xA0)
"""Reserved MAIR encodings (0b0000ddxx with xx != 0, 0bxxxx0000 with outer non-zero)."""
ODD_MAIR = (0xF0, *RESERVED_MAIR)
"""MAIR encodings the random mix uses with Spec.odd_mair_p: 0xF0 (Tagged Normal with
FEAT_MTE2; QEMU's virt machine without mte=on has no MTE) and the reserved encodings
(QEMU 7.2 reports a reserved byte as programmed; the divergence reserved_mair_as_is)."""
HOST_S12_OPS = True
"""Whether AT S12E* are drawn with HCR_EL2.{E2H,TGE}={1,1}, where the Arm ARM's AT S12E0R
etc. pseudocode ("if ELIsInHost(EL0) || HCR_EL2.<DC,VM> == '00' then AArch64.AT(...,
TranslationStage_1, ...)") makes them stage-1 translations in the EL2&0 regime."""


def mair_attr(rng: random.Random, odd_p: float = 0.0) -> int:
    """Return a MAIR attribute byte: Device, Normal inner and outer, or (odd_p) reserved."""
    if odd_p and chance(rng, odd_p):
        return rng.choice(ODD_MAIR)
    if chance(rng, 0.25):
        return rng.choice(DEVICE_ATTRS)
    return rng.choice(NORMAL_NIBBLES) << 4 | rng.choice(NORMAL_NIBBLES)


def random_mair(rng: random.Random, stub: bool, odd_p: float = 0.0) -> int:
    """Return a MAIR value; index 7 is Normal write-back when the stub page needs it."""
    attrs = [mair_attr(rng, odd_p) for _ in range(8)]
    if stub:
        attrs[STUB_ATTR_INDEX] = 0xFF
    return sum(attr << (8 * i) for i, attr in enumerate(attrs))


def start_level(granule: int, ia_bits: int) -> int:
    """Return the stage-1 start level for an input size (the fewest levels that cover it)."""
    stride = granule - 3
    levels = -(-(ia_bits - granule) // stride)
    return 4 - max(levels, 1)


def txsz_range(granule: int, ds: bool) -> tuple[int, int]:
    """Return the TxSZ range of -cpu max (FEAT_LVA, FEAT_LPA2, FEAT_TTST)."""
    low = 12 if ds or granule == 16 else 16
    return low, 47 if granule == 16 else 48


def s2_sl_fields(granule: int, level: int) -> tuple[int, int]:
    """Return VTCR_EL2 (SL0, SL2) for a stage-2 start level."""
    if granule == 12:
        return {-1: (0, 1), 0: (2, 0), 1: (1, 0), 2: (0, 0), 3: (3, 0)}[level]
    return 3 - level, 0


def s2_ia_range(granule: int, level: int) -> tuple[int, int]:
    """Return the input sizes a stage-2 start level accepts (1 bit .. 16 tables)."""
    shape = Shape(stage=2, granule=granule, ia_bits=48, start_level=level)
    low = shape.shift(level) + 1
    return low, low + shape.stride - 1 + 4


# --- Family specs -------------------------------------------------------------------------


def base_s1(rng: random.Random, granule: int | None = None, ds: bool = False) -> Spec:
    """Return a plain EL1&0 stage-1 spec with random granules and sizes."""
    g0 = granule or rng.choice((12, 14, 16))
    g1 = granule or rng.choice((12, 14, 16))
    if ds:
        # TCR.DS is ignored by a 64K half (FEAT_LPA2 is 4K/16K only): keep a few.
        g0 = g0 if g0 != 16 or chance(rng, 0.3) else 12
        g1 = g1 if g1 != 16 or chance(rng, 0.3) else 12
    return Spec(
        granule=(g0, g1),
        txsz=(rng.randint(*txsz_range(g0, ds)), rng.randint(*txsz_range(g1, ds))),
        tbi=(chance(rng, 0.3), chance(rng, 0.3)),
        ds=ds,
        ips=rng.choice((2, 3, 4, 5, 5, 5, 6)) if not ds else rng.choice((5, 6, 6)),
        exec_els=(2, 2, 3),
    )


def family_granule(granule: int) -> Callable[[random.Random], Spec]:
    """Return a family function for one stage-1 granule."""
    def draw(rng: random.Random) -> Spec:
        return base_s1(rng, granule)
    return draw


def family_lpa2(rng: random.Random) -> Spec:
    """52-bit: FEAT_LPA2 (DS=1, 4K/16K, level -1) and FEAT_LPA/LVA with 64K."""
    if chance(rng, 0.3):
        spec = base_s1(rng, 16)
        return replace(spec, txsz=(rng.randint(12, 20), rng.randint(12, 20)), ips=6,
                       wide_oa_p=0.2, lpa_junk_p=0.2)
    spec = base_s1(rng, rng.choice((12, 14)), ds=True)
    return replace(spec, txsz=(rng.randint(12, 18), rng.randint(12, 22)), wide_oa_p=0.2,
                   wide_table_p=0.15, ttbr_hi_p=0.1 if spec.ips < 6 else 0.0)


def family_ttbr(rng: random.Random) -> Spec:
    """TTBR0/TTBR1 selection, TBI, EPD0/1, E0PD0/1."""
    spec = base_s1(rng)
    return replace(spec, tbi=(chance(rng, 0.5), chance(rng, 0.5)),
                   epd=(chance(rng, 0.25), chance(rng, 0.25)),
                   e0pd=(chance(rng, 0.3), chance(rng, 0.3)))


def family_blocks(rng: random.Random) -> Spec:
    """Blocks at every level (and where the granule allows none), contiguous runs."""
    spec = base_s1(rng, ds=chance(rng, 0.3))
    return replace(spec, block_p=0.7, illegal_block_p=0.15, contig_p=0.3)


def family_invalid(rng: random.Random) -> Spec:
    """Invalid entries with junk bits, reserved level-3 encodings."""
    return replace(base_s1(rng), junk_p=0.6, n_maps=4)


def family_perms(rng: random.Random) -> Spec:
    """AP, UXN/PXN, hierarchical APTable/XNTable with HPD, WXN, PAN and S1E1RP/WP."""
    spec = base_s1(rng)
    return replace(spec, table_attr_p=0.5, hpd=(chance(rng, 0.4), chance(rng, 0.4)),
                   wxn=chance(rng, 0.4), pan_p=0.5, n_maps=8)


def family_af_dirty(rng: random.Random) -> Spec:
    """AF faults and hardware AF/dirty updates (HA/HD/DBM) at stage 1 and stage 2."""
    spec = with_stage2(rng, base_s1(rng)) if chance(rng, 0.5) else base_s1(rng)
    ha = chance(rng, 0.8)
    return replace(spec, ha=ha, hd=ha and chance(rng, 0.7), af0_p=0.5, dbm_p=0.5,
                   s2_ha=spec.s2 and chance(rng, 0.8),
                   s2_hd=spec.s2 and chance(rng, 0.6))


def family_addr_size(rng: random.Random) -> Spec:
    """Address size faults: small IPS/PS against table and output addresses."""
    spec = base_s1(rng)
    if chance(rng, 0.4):
        spec = with_stage2(rng, spec)
    ips = rng.choice((0, 1, 2, 3, 4))
    return replace(spec, ips=ips, wide_oa_p=0.4, high_tables=chance(rng, 0.5), lpa_junk_p=0.2,
                   wide_table_p=0.5, ttbr_hi_p=0.2 if spec.ds else 0.0)


def family_big_endian(rng: random.Random) -> Spec:
    """Big-endian table walks: SCTLR_EL1.EE at stage 1, SCTLR_EL2.EE at stage 2."""
    spec = base_s1(rng)
    if chance(rng, 0.5):
        spec = with_stage2(rng, spec)
    return replace(spec, ee=chance(rng, 0.8), el2_ee=chance(rng, 0.5),
                   ha=chance(rng, 0.3), af0_p=0.3)


def with_stage2(rng: random.Random, spec: Spec, ds: bool = False, wide_ps: bool = False) -> Spec:
    """Return `spec` with a random valid stage 2 (HCR_EL2.VM=1) beneath it.

    `wide_ps` keeps VTCR_EL2.PS at 48 bits or more, so that QEMU 7.2's check of the
    start level against PS (a listed divergence) cannot break the stub page's mapping.
    """
    granule = rng.choice((12, 14, 16)) if not ds else rng.choice((12, 14, 12, 14, 16))
    levels = {12: (0, 1, 2, 3), 14: (1, 2, 3), 16: (1, 2, 3)}[granule]
    if ds and granule != 16:
        levels = (-1, 0, 1, 2, 3) if granule == 12 else (0, 1, 2, 3)
    max_ia = 52 if ds or granule == 16 else 48
    options = [(level, bits) for level in levels
               for bits in range(s2_ia_range(granule, level)[0],
                                 s2_ia_range(granule, level)[1] + 1)
               if 32 <= bits <= max_ia]
    level, ia_bits = rng.choice(options)
    ps = rng.choice([i for i in range(7) if PS_BITS[i] >= min(ia_bits, 48)] or [5])
    if wide_ps:
        ps = max(ps, 5)
    return replace(spec, s2=True, s2_granule=granule, s2_start=level, s2_ia_bits=ia_bits,
                   s2_ds=ds, s2_ps=6 if (ds and granule != 16) or ia_bits > 48 else ps,
                   fwb=chance(rng, 0.3), exec_els=(2, 2, 3))


def family_stage2(rng: random.Random) -> Spec:
    """Stage 2: every granule, start level and concatenation; S2AP, XN, MemAttr, FWB."""
    spec = with_stage2(rng, base_s1(rng), ds=chance(rng, 0.2))
    return replace(spec, s1=chance(rng, 0.8), s2_unmapped_p=0.2, s2_perm_p=0.4)


def family_s1ptw(rng: random.Random) -> Spec:
    """Stage-2 faults on stage-1 table walks: in PAR from EL2, as exceptions from EL1."""
    from_el1 = chance(rng, 0.5)
    spec = with_stage2(rng, base_s1(rng), wide_ps=from_el1)
    s2_ha = chance(rng, 0.4)
    return replace(spec, s1ptw_fault_p=0.4, ptw=chance(rng, 0.3), ha=chance(rng, 0.4),
                   s2_ha=s2_ha, s2_hd=s2_ha and chance(rng, 0.6), epd=(False, spec.epd[1]),
                   exec_els=(1, 1, 2) if from_el1 else (2, 3))


def family_dc_cd(rng: random.Random) -> Spec:
    """HCR_EL2.DC, CD and ID with stage 1 on or off, stage 2 on or off."""
    spec = base_s1(rng)
    if chance(rng, 0.6):
        spec = with_stage2(rng, spec)
    dc = chance(rng, 0.5)
    if dc and not spec.s2:
        spec = with_stage2(rng, spec)
    # HCR_EL2.DC behaves as VM=1 whatever VM reads; TGE turns the EL1&0 stage 1 off (and
    # with E2H=1 it is the host regime, where VM, DC, CD and ID behave as 0).
    tge = spec.s2 and chance(rng, 0.2)
    return replace(spec, s1=chance(rng, 0.6), dc=dc, cd=chance(rng, 0.4), id=chance(rng, 0.4),
                   vm=not dc or chance(rng, 0.5), tge=tge, e2h=tge and chance(rng, 0.5),
                   exec_els=(2, 3) if tge else spec.exec_els)


def family_el2(rng: random.Random) -> Spec:
    """The EL2 regime (E2H=0): S1E2R/W from EL3, and from EL2 with the stub mapped."""
    granule = rng.choice((12, 14, 16))
    spec = base_s1(rng, granule)
    return replace(spec, regime="EL2", tbi=(chance(rng, 0.4), False), hpd=(chance(rng, 0.3), False),
                   table_attr_p=0.3, wxn=chance(rng, 0.3), ee=chance(rng, 0.2),
                   ha=chance(rng, 0.3), hd=chance(rng, 0.2), dbm_p=0.3, exec_els=(3, 3, 2))


def family_el20(rng: random.Random) -> Spec:
    """The EL2&0 regime (E2H=1, TGE 0 or 1): S1E2*, and S1E0*/S1E1* with TGE=1 at EL2."""
    spec = base_s1(rng)
    return replace(spec, regime="EL2&0", tge=chance(rng, 0.6), table_attr_p=0.3,
                   hpd=(chance(rng, 0.3), chance(rng, 0.3)), e0pd=(chance(rng, 0.2), False),
                   pan_p=0.5, exec_els=(2, 2, 3))


def family_el1_exec(rng: random.Random) -> Spec:
    """Ops executed at EL1: UNDEFINED ones, with EL1's MMU on, with stage 2 beneath."""
    spec = base_s1(rng)
    if chance(rng, 0.5):
        spec = with_stage2(rng, spec, wide_ps=True)
    return replace(spec, s1=chance(rng, 0.7), exec_els=(1, 1, 1, 2), undef_p=0.15,
                   epd=(False, spec.epd[1]), pan_p=0.5)


def family_broken(rng: random.Random) -> Spec:
    """Broken configurations: reserved TG, TxSZ out of range, illegal SL0/T0SZ, PS=0b111."""
    spec = base_s1(rng, ds=chance(rng, 0.2))
    kind = rng.choice(("tg", "txsz", "txsz", "sl0", "sl0", "ps", "mair"))
    if kind == "tg":
        return replace(spec, tg_raw=(rng.choice((3, None)), rng.choice((0, None))))
    if kind == "txsz":
        return replace(spec, txsz=(edge_txsz(rng, spec.granule[0], spec.ds),
                                   edge_txsz(rng, spec.granule[1], spec.ds)))
    if kind == "mair":
        return replace(spec, odd_mair_p=0.5)
    spec = with_stage2(rng, spec, ds=chance(rng, 0.3))
    if kind == "ps":
        return replace(spec, ips=7, s2_ps=rng.choice((7, spec.s2_ps)))
    t0sz = edge_txsz(rng, spec.s2_granule, spec.s2_ds, stage=2)
    return replace(spec, s2_sl_raw=(rng.randint(0, 3), rng.choice((0, 0, 1))),
                   s2_t0sz_raw=rng.choice((None, rng.randint(0, 63), t0sz)))


def edge_txsz(rng: random.Random, granule: int, ds: bool, stage: int = 1) -> int:
    """Return a TxSZ at or just beyond either end of the granule's legal range."""
    low, high = txsz_range(granule, ds and granule != 16)
    if stage == 2 and granule != 16 and not ds:
        low = 16
    return rng.choice((low - 1, low, high, high + 1, rng.choice((0, 8, 55, 63))))


def access_spec(rng: random.Random, accesses: tuple[str, ...]) -> Spec:
    """Return a spec for real accesses: a regime (EL1&0 from EL1, with or without stage 2;
    EL2; EL2&0), hardware AF and dirty state at both stages, permissions and PAN."""
    granule = rng.choice((12, 14, 16))
    spec = replace(base_s1(rng, granule), accesses=accesses, block_p=0.0, illegal_block_p=0.0,
                   wide_oa_p=0.0, junk_p=0.1, table_attr_p=0.3, hpd=(chance(rng, 0.3), False),
                   wxn=chance(rng, 0.2), ha=chance(rng, 0.6), hd=chance(rng, 0.5),
                   dbm_p=0.4, af0_p=0.2, pan_p=0.4, n_maps=5)
    regime = rng.choice(("EL1&0", "EL1&0", "EL1&0", "EL2", "EL2&0"))
    if regime == "EL1&0":
        if chance(rng, 0.5):
            spec = with_stage2(rng, spec, wide_ps=True)
            spec = replace(spec, s2_ha=chance(rng, 0.6), s2_hd=chance(rng, 0.5),
                           s2_unmapped_p=0.1, s2_perm_p=0.3, s1ptw_fault_p=0.1)
        return replace(spec, exec_els=(0, 1, 1))
    host = regime == "EL2&0" and chance(rng, 0.5)
    return replace(spec, regime=regime, tbi=(spec.tbi[0], False), tge=host,
                   exec_els=(0, 2, 2) if host else (2,))


def family_loads(rng: random.Random) -> Spec:
    """Real loads (LDR X1, [X2]) from EL1 and EL2: values read, aborts taken, AF set."""
    return access_spec(rng, ("LDR",))


def family_stores(rng: random.Random) -> Spec:
    """Real stores (STR X4, [X2]), with loads reading them back: dirty state set
    through DBM at both stages, stores to write-protected pages, PAN."""
    return access_spec(rng, ("STR", "STR", "LDR"))


def family_exclusives(rng: random.Random) -> Spec:
    """Load/Store Exclusives (LDXR, LDAXR, and STXR after the LDXR that arms the monitor),
    with loads: their permissions, AF and dirty updates, and their alignment (an
    unaligned exclusive faults whatever SCTLR_ELx.A says)."""
    return replace(access_spec(rng, ("LDXR", "LDAXR", "STXR", "STXR", "LDR")),
                   unaligned_p=0.15)


def family_atomics(rng: random.Random) -> Spec:
    """FEAT_LSE atomics (LDADD, SWP, CAS): they need read and write permission, report
    WnR=1 only for a refused write, set the dirty state through DBM at both stages, and
    must be aligned."""
    return replace(access_spec(rng, ("LDADD", "SWP", "CAS", "LDR")), unaligned_p=0.1)


def family_alignment(rng: random.Random) -> Spec:
    """Misaligned loads, stores, exclusives and atomics: SCTLR_ELx.A before any
    translation fault, unaligned accesses to Device memory (stage-1 MAIR, stage-2
    MemAttr) after the walk and before the permission check."""
    return replace(access_spec(rng, ("LDR", "STR", "LDR", "STR", "LDXR", "SWP")),
                   unaligned_p=0.6, sctlr_a_p=0.35)


def family_fetches(rng: random.Random) -> Spec:
    """Instruction fetches (BR X2 to memory reading zero, so UDF #0 when the fetch is
    permitted): UXN/PXN, XN at stage 2, WXN, hierarchical XNTable/PXNTable, S1PTW faults."""
    return access_spec(rng, ("FETCH",))


FAMILIES: dict[str, Callable[[random.Random], Spec]] = {
    "s1_4k": family_granule(12),
    "s1_16k": family_granule(14),
    "s1_64k": family_granule(16),
    "lpa2": family_lpa2,
    "ttbr_tbi_epd": family_ttbr,
    "blocks_contig": family_blocks,
    "invalid_junk": family_invalid,
    "perms": family_perms,
    "af_dirty": family_af_dirty,
    "addr_size": family_addr_size,
    "big_endian": family_big_endian,
    "stage2": family_stage2,
    "s1ptw": family_s1ptw,
    "dc_cd": family_dc_cd,
    "el2": family_el2,
    "el20": family_el20,
    "el1_exec": family_el1_exec,
    "broken": family_broken,
    "loads": family_loads,
    "stores": family_stores,
    "fetches": family_fetches,
    "exclusives": family_exclusives,
    "atomics": family_atomics,
    "alignment": family_alignment,
}
"""Case families by name: each draws a Spec from its own random stream."""


# --- Building a case ----------------------------------------------------------------------


@dataclass
class Allocator:
    """A bump allocator over one physical (or intermediate physical) window."""

    next: int
    limit: int

    def take(self, size: int, align: int) -> int:
        """Return an aligned block of `size` bytes."""
        address = -(-self.next // align) * align
        if address + size > self.limit:
            raise RuntimeError("generator: table window exhausted")
        self.next = address + size
        return address


@dataclass
class Target:
    """A mapped (or deliberately unmapped) virtual region that ops will translate."""

    va: int
    size: int
    output: int | None
    half: int


@dataclass
class CaseBuilder:
    """Lay out one case's tables and ops from a Spec."""

    spec: Spec
    rng: random.Random
    image: Image = field(default_factory=Image)
    targets: list[Target] = field(default_factory=list)
    harness: dict[str, str] = field(default_factory=dict)
    s2_tree: TableTree | None = None
    s1_trees: list[TableTree | None] = field(default_factory=list)
    chunk_pa: dict[int, int] = field(default_factory=dict)
    chunk_table: dict[int, int] = field(default_factory=dict)
    clean_tables: set[int] = field(default_factory=set)
    tags: set[str] = field(default_factory=set)

    def build(self, name: str, family: str) -> dict[str, Any]:
        """Return the case object."""
        self.pa = self.pa_window()
        self.data = Allocator(self.pa.limit - DATA_WINDOW, self.pa.limit)
        self.pa.limit -= DATA_WINDOW
        self.s2_tree = self.make_stage2() if self.stage2_on() else None
        self.ipa = self.ipa_window()
        self.s1_trees = [self.make_stage1(half) for half in (0, 1)]
        self.map_stub()
        for _ in range(self.spec.n_maps):
            self.add_target()
        self.add_junk()
        self.add_wide_tables()
        ops = self.make_ops()
        self.map_s1_tables_in_s2()
        case: dict[str, Any] = {"name": name, "family": family, "el": "EL2",
                                "regs": self.registers(), "memory": self.image.memory_entries(),
                                "ops": ops}
        if self.harness:
            case["harness"] = self.harness
        if self.tags:
            case["divergence_tags"] = sorted(self.tags)
        return case

    # Windows and trees ---------------------------------------------------------------

    def pa_window(self) -> Allocator:
        """Return this case's table window in RAM, at a random place."""
        low, high = HIGH_POOL if self.spec.high_tables else PA_POOL
        base = self.rng.randrange(low, high - (32 << 20), 1 << 21)
        return Allocator(base, base + (32 << 20))

    def stage2_on(self) -> bool:
        """Return whether the EL1&0 regime has a stage 2 (VM or DC)."""
        return self.spec.regime == "EL1&0" and (self.spec.s2 or self.spec.dc)

    def s2_shape(self) -> Shape:
        """Return the stage-2 walk shape the tables are built for."""
        spec = self.spec
        shape = Shape(stage=2, granule=spec.s2_granule, ia_bits=spec.s2_ia_bits,
                      start_level=spec.s2_start, ds=spec.s2_ds, big_endian=spec.el2_ee)
        return replace(shape, concat=max(1, shape.root_entries() >> shape.stride))

    def make_stage2(self) -> TableTree:
        """Create the stage-2 tree (tables at PA)."""
        shape = self.s2_shape()
        return TableTree(shape, self.image, lambda size, align: self.pa.take(size, align))

    def ipa_window(self) -> Allocator:
        """Return where stage-1 tables live in their output space (IPA under stage 2)."""
        if self.s2_tree is None:
            return self.pa
        chunk = 1 << self.spec.s2_granule
        top = self.ipa_top()
        base = self.rng.randrange(0, max(chunk, top - (16 << 20)), chunk)
        return Allocator(base, base + (16 << 20))

    def ipa_top(self) -> int:
        """Return the end of the IPA space usable for stage-1 tables and the stub.

        It stays below the stage-1 output size (else every walk faults on address size)
        unless the spec wants high tables.
        """
        bits = min(self.spec.s2_ia_bits, 40)
        if not self.spec.high_tables:
            bits = min(bits, PS_BITS[self.spec.ips])
        return 1 << bits

    def s1_granule(self, half: int) -> int:
        """Return the granule the stage-1 tables of a half are built for."""
        raw = self.spec.tg_raw[half]
        return 12 if raw is not None else self.spec.granule[half]

    def s1_shape(self, half: int) -> Shape:
        """Return a half's stage-1 walk shape (TxSZ clamped to what the CPU accepts)."""
        spec = self.spec
        granule = self.s1_granule(half)
        ds = spec.ds and granule != 16
        low, high = txsz_range(granule, ds)
        ia_bits = 64 - min(max(spec.txsz[half], low), high)
        big_endian = spec.el2_ee if spec.regime != "EL1&0" else spec.ee
        return Shape(stage=1, granule=granule, ia_bits=ia_bits,
                     start_level=start_level(granule, ia_bits), ds=ds, big_endian=big_endian)

    def make_stage1(self, half: int) -> TableTree | None:
        """Create a half's stage-1 tree, or None if the regime has no such half."""
        if not self.spec.s1 or (half == 1 and self.spec.regime == "EL2"):
            return None
        if self.s2_tree is None:
            return TableTree(self.s1_shape(half), self.image,
                             lambda size, align: self.pa.take(size, align))
        return TableTree(self.s1_shape(half), self.image, self.alloc_s1_table, self.ipa_to_pa)

    def alloc_s1_table(self, size: int, align: int) -> int:
        """Allocate a stage-1 table in IPA space, each in its own stage-2 page."""
        chunk = 1 << self.spec.s2_granule
        size = -(-max(size, chunk) // chunk) * chunk
        ipa = self.ipa.take(size, max(align, chunk))
        pa = self.pa.take(size, max(align, chunk))
        for offset in range(0, size, chunk):
            self.chunk_pa[ipa + offset] = pa + offset
            self.chunk_table[ipa + offset] = ipa
        return ipa

    def ipa_to_pa(self, ipa: int) -> int:
        """Return where a stage-1 table's IPA lives in PA."""
        chunk = 1 << self.spec.s2_granule
        return self.chunk_pa[ipa & ~(chunk - 1)] + (ipa & (chunk - 1))

    # The stub page -----------------------------------------------------------------------

    def needs_stub(self) -> tuple[bool, bool]:
        """Return whether the stub must be mapped for (EL1 fetches, EL2 fetches)."""
        spec = self.spec
        el1 = bool({0, 1} & set(spec.exec_els)) and spec.regime == "EL1&0" and (
            spec.s1 or self.stage2_on())
        el2 = bool({0, 2} & set(spec.exec_els)) and spec.regime != "EL1&0" and spec.s1
        return el1, el2

    def map_stub(self) -> None:
        """Map the probe's stub page where the executing EL fetches it, and say where."""
        el1, el2 = self.needs_stub()
        if not (el1 or el2):
            return
        page = 1 << max(self.s1_granule(0), 12)
        tree = self.s1_trees[0]
        ipa = PROBE_LAYOUT.stub_pa
        if self.s2_tree is not None:
            ipa = self.free_ipa(1 << 16)
            self.s2_tree.map(ipa, 3, PROBE_LAYOUT.stub_pa,
                             s2_leaf_attrs(readable=True, af=True, memattr=0xF, ds=self.spec.s2_ds))
        va = ipa
        if tree is not None:
            va = self.free_va(tree, page)
            tree.map(va, 3, ipa, s1_stub_attrs(self.spec.regime, tree.shape.ds,
                                               el0=0 in self.spec.exec_els))
            self.clean_tables.update(tree.tables)
        self.harness["stub_va_el1" if el1 else "stub_va_el2"] = hex(va)

    def free_output_ipa(self, size: int) -> int:
        """Return an IPA block for an access's output, away from the stage-1 tables."""
        top = self.ipa_top()
        for _ in range(64):
            ipa = self.rng.randrange(0, top, size)
            if not self.ipa.next - (16 << 20) <= ipa < self.ipa.limit + size:
                return ipa
        return self.rng.randrange(0, top, size)

    def free_ipa(self, size: int) -> int:
        """Return a stage-2-mapped-free IPA block outside the stage-1 table window."""
        assert self.s2_tree is not None
        top = self.ipa_top()
        for _ in range(64):
            ipa = self.rng.randrange(0, top, size)
            if not self.ipa.next - (16 << 20) <= ipa < self.ipa.limit + size and \
                    self.s2_tree.slot_free(ipa, 3):
                return ipa
        raise RuntimeError("generator: no free IPA for the stub")

    def free_va(self, tree: TableTree, page: int) -> int:
        """Return a page-aligned TTBR0 VA whose level-3 slot is free."""
        for _ in range(64):
            va = self.rng.randrange(0, 1 << tree.shape.ia_bits, page)
            if tree.slot_free(va, 3):
                return va
        raise RuntimeError("generator: no free VA for the stub")

    # Targets -----------------------------------------------------------------------------

    def add_target(self) -> None:
        """Map one random region (or leave it unmapped) and remember it for the ops."""
        half = self.rng.choice([h for h in (0, 1) if self.s1_trees[h] is not None] or [0])
        tree = self.s1_trees[half]
        if tree is None:
            self.targets.append(self.flat_target())
            return
        level = self.leaf_level(tree.shape)
        size = 1 << tree.shape.shift(level)
        va = self.rng.randrange(0, 1 << tree.shape.ia_bits, size)
        output = self.output_address(size)
        self.tag_leaf(tree.shape, level, output)
        attrs = self.s1_leaf_attrs()
        table_attrs = self.table_attrs()
        if chance(self.rng, self.spec.contig_p):
            self.map_contiguous(tree, va, level, output, attrs, table_attrs)
        elif not tree.map(va, level, output, attrs, table_attrs):
            return
        self.targets.append(Target(va=va, size=size, output=output, half=half))

    def tag_leaf(self, shape: Shape, level: int, output: int) -> None:
        """Tag the case with the divergences a leaf can trigger (divergences.py)."""
        if level < 3 and level not in shape.block_levels():
            self.tags.add(TAG_ILLEGAL_BLOCK)
        wide = output >> 48 if shape.granule == 16 else (output >> 50 if shape.ds else 0)
        if wide and PS_BITS[self.spec.ips] < 52:
            self.tags.add(TAG_OA_52BIT_FIELDS)

    def flat_target(self) -> Target:
        """Return a target for a regime whose stage 1 is off (VA = IPA or PA)."""
        bits = self.spec.s2_ia_bits if self.s2_tree is not None else 40
        size = 1 << 12
        if self.spec.accesses and self.s2_tree is None:
            pa = self.data_page(size)
            return Target(va=pa, size=size, output=pa, half=0)
        va = self.rng.randrange(0, 1 << bits, size)
        return Target(va=va, size=size, output=va, half=0)

    def leaf_level(self, shape: Shape) -> int:
        """Return a random leaf level: a page, a legal block or (rarely) an illegal one."""
        levels = [lvl for lvl in shape.block_levels() if lvl >= shape.start_level]
        if chance(self.rng, self.spec.illegal_block_p):
            illegal = [lvl for lvl in range(shape.start_level, 3) if lvl not in levels]
            if illegal:
                return self.rng.choice(illegal)
        if levels and chance(self.rng, self.spec.block_p):
            return self.rng.choice(levels)
        return 3

    def data_page(self, size: int) -> int:
        """Return a fresh data page in RAM, its first words random."""
        pa = self.data.take(size, size)
        for i in range(DATA_WORDS):
            self.image.write(pa + 8 * i, self.rng.getrandbits(64), False)
        return pa

    def output_address(self, size: int) -> int:
        """Return a random aligned output address, sometimes beyond the output size.

        For real accesses: a data page (stage 1 alone), or an IPA outside the stage-1
        table window that stage 2 maps to a data page when an op reaches it.
        """
        spec = self.spec
        if spec.accesses and self.s2_tree is None:
            return self.data_page(size)
        if spec.accesses:
            return self.free_output_ipa(size)
        bits = PS_BITS[spec.ips] if not self.s2_tree else spec.s2_ia_bits
        if chance(self.rng, spec.wide_oa_p):
            bits = 52 if spec.ds or 16 in spec.granule else 48
        top = 1 << min(bits, 52 if spec.ds or 16 in spec.granule else 48)
        output = self.rng.randrange(0, max(top, size), size)
        if chance(self.rng, spec.lpa_junk_p) and size >= 1 << 16:
            output |= self.rng.randrange(1, 16) << 48
        return output

    def s1_leaf_attrs(self) -> int:
        """Return random stage-1 block/page attributes (no address, no type bits)."""
        spec, rng = self.spec, self.rng
        attrs = rng.randrange(8) << 2 | rng.randrange(4) << 6 | rng.randrange(2) << 11
        if not spec.ds:
            attrs |= rng.randrange(4) << 8
        attrs |= (0 if chance(rng, spec.af0_p) else 1) << 10
        attrs |= (1 if chance(rng, spec.dbm_p) else 0) << 51
        attrs |= rng.randrange(4) << 53 if chance(rng, spec.attrs_p) else 0
        if chance(rng, 0.2):
            attrs |= rng.randrange(16) << 55
        return attrs

    def table_attrs(self) -> int:
        """Return random hierarchical attributes for new tables (APTable, XNTable)."""
        if not chance(self.rng, self.spec.table_attr_p):
            return 0
        rng = self.rng
        return rng.randrange(4) << 61 | rng.randrange(2) << 60 | rng.randrange(2) << 59

    def map_contiguous(self, tree: TableTree, va: int, level: int, output: int, attrs: int,
                       table_attrs: int) -> None:
        """Write a run of leaves with the contiguous bit, aligned as the granule requires."""
        shape = tree.shape
        count = 16 if shape.granule == 12 else (128 if shape.granule == 14 and level == 3 else 32)
        size = 1 << shape.shift(level)
        span = count * size
        va, output = va & ~(span - 1), output & ~(span - 1)
        for i in range(count):
            tree.map(va + i * size, level, output + i * size, attrs | 1 << 52, table_attrs)

    def add_junk(self) -> None:
        """Write invalid entries with junk bits (bit 0 clear) and reserved level-3 blocks."""
        for tree in self.s1_trees:
            if tree is None or not chance(self.rng, self.spec.junk_p * 3):
                continue
            for _ in range(self.rng.randint(1, 3)):
                level = self.rng.randint(tree.shape.start_level, 3)
                size = 1 << tree.shape.shift(level)
                va = self.rng.randrange(0, 1 << tree.shape.ia_bits, size)
                value = self.rng.getrandbits(64) & ~1
                if level == 3 and chance(self.rng, 0.3):
                    value = (value & ~3) | 1
                if tree.put(va, level, value):
                    half = int(tree is self.s1_trees[1])
                    self.targets.append(Target(va=va, size=size, output=None, half=half))

    def add_wide_tables(self) -> None:
        """Write table descriptors whose next-level address exceeds the output size.

        ASL AArch64.S1Walk: the next table's address is checked against PS before it is
        read, so nothing needs to exist there; the Address size fault is at the level of
        the table descriptor.
        """
        for half, tree in enumerate(self.s1_trees):
            if tree is None or tree.shape.start_level > 2 or \
                    not chance(self.rng, self.spec.wide_table_p):
                continue
            level = self.rng.randint(tree.shape.start_level, 2)
            size = 1 << tree.shape.shift(level)
            va = self.rng.randrange(0, 1 << tree.shape.ia_bits, size)
            ps = PS_BITS[min(self.spec.ips, 7)]
            address = self.beyond_ps(tree.shape, ps)
            if address is None:
                continue
            if tree.put(va, level, encode_address(address, tree.shape.granule, tree.shape.ds)
                        | self.table_attrs() | 3):
                self.targets.append(Target(va=va, size=size, output=None, half=half))

    def beyond_ps(self, shape: Shape, ps_field_bits: int) -> int | None:
        """Return a granule-aligned address above the output size a descriptor can hold."""
        wide = shape.granule == 16 or shape.ds
        top = 52 if wide else 48
        ps = min(ps_field_bits, top)
        if ps >= top:
            return None
        bit_at = self.rng.randrange(ps, top)
        address = (1 << bit_at | self.rng.getrandbits(bit_at)) & ~((1 << shape.granule) - 1)
        high = address >> 48 if shape.granule == 16 else (address >> 50 if shape.ds else 0)
        if high:
            self.tags.add(TAG_OA_52BIT_FIELDS)
        return address

    # Stage 2 -----------------------------------------------------------------------------

    def map_s1_tables_in_s2(self) -> None:
        """Map every stage-1 table page in stage 2, some with faults on the walk."""
        if self.s2_tree is None:
            return
        for ipa, pa in sorted(self.chunk_pa.items()):
            clean = self.chunk_table[ipa] in self.clean_tables
            if not clean and chance(self.rng, self.spec.s1ptw_fault_p):
                self.map_faulty_table(ipa, pa)
            else:
                self.s2_tree.map(ipa, 3, pa, s2_leaf_attrs(readable=True, af=True, memattr=0xF,
                                                           writable=True, ds=self.spec.s2_ds))

    def map_faulty_table(self, ipa: int, pa: int) -> None:
        """Map a stage-1 table page so that walking it faults (or updates AF) at stage 2."""
        assert self.s2_tree is not None
        kind = self.rng.choice(("unmapped", "noread", "af0", "device", "readonly", "dbm"))
        if kind == "unmapped":
            return
        attrs = s2_leaf_attrs(readable=kind != "noread", af=kind != "af0" or chance(self.rng, 0.5),
                              memattr=0x1 if kind == "device" else 0xF,
                              writable=kind not in ("readonly", "dbm"), ds=self.spec.s2_ds)
        if kind == "dbm":
            attrs |= 1 << 51
        self.s2_tree.map(ipa, 3, pa, attrs)

    def map_output_in_s2(self, ipa: int) -> None:
        """Map the stage-2 region holding `ipa`, randomly, unless left unmapped."""
        tree, spec, rng = self.s2_tree, self.spec, self.rng
        if tree is None or chance(rng, spec.s2_unmapped_p) or ipa >= 1 << spec.s2_ia_bits:
            return
        shape = tree.shape
        levels = [lvl for lvl in shape.block_levels() if lvl >= shape.start_level]
        level = rng.choice(levels) if levels and chance(rng, 0.3) else 3
        wide_table = shape.start_level <= 2 and chance(rng, spec.wide_table_p)
        if wide_table:
            level = rng.randint(shape.start_level, 2)
        size = 1 << shape.shift(level)
        base = ipa & ~(size - 1)
        if self.ipa.next - (16 << 20) <= base + size and base <= self.ipa.limit:
            return
        if wide_table:
            address = self.beyond_ps(shape, PS_BITS[spec.s2_ps])
            if address is not None:
                tree.put(base, level, encode_address(address, shape.granule, shape.ds) | 3)
            return
        if spec.accesses:
            size = 1 << shape.shift(3)
            base = ipa & ~(size - 1)
            if tree.slot_free(base, 3):
                tree.map(base, 3, self.data_page(size), self.s2_access_attrs())
            return
        pa = rng.randrange(0, 1 << min(PS_BITS[spec.s2_ps], 48), size)
        if chance(rng, spec.wide_oa_p):
            pa = self.beyond_ps(shape, PS_BITS[spec.s2_ps]) or pa
            pa &= ~(size - 1)
        attrs = s2_leaf_attrs(readable=not chance(rng, spec.s2_perm_p / 2),
                              writable=not chance(rng, spec.s2_perm_p),
                              af=not chance(rng, spec.af0_p), memattr=rng.randrange(16),
                              ds=spec.s2_ds)
        attrs |= (1 if chance(rng, spec.dbm_p) else 0) << 51
        attrs |= rng.randrange(4) << 53 if chance(rng, spec.attrs_p) else 0
        attrs |= (1 if chance(rng, spec.s2_contig_p) else 0) << 52
        tree.map(base, level, pa, attrs)

    def s2_access_attrs(self) -> int:
        """Return random stage-2 leaf attributes for a data page: S2AP, AF, DBM, XN."""
        spec, rng = self.spec, self.rng
        attrs = s2_leaf_attrs(readable=not chance(rng, spec.s2_perm_p / 2),
                              writable=not chance(rng, spec.s2_perm_p),
                              af=not chance(rng, spec.af0_p),
                              memattr=rng.choice((0xF, 0xF, 0x5, 0x1)), ds=spec.s2_ds)
        attrs |= (1 if chance(rng, spec.dbm_p) else 0) << 51
        return attrs | (rng.randrange(4) << 53 if chance(rng, spec.attrs_p) else 0)

    # Ops ---------------------------------------------------------------------------------

    def make_ops(self) -> list[dict[str, Any]]:
        """Return the case's ops: each target translated once or twice, plus strays."""
        ops: list[dict[str, Any]] = []
        while len(ops) < self.spec.n_ops:
            if self.targets and chance(self.rng, 0.85):
                target = self.rng.choice(self.targets)
            else:
                target = self.stray_target()
            ops.append(self.make_op(target))
        return ops

    def stray_target(self) -> Target:
        """Return an unmapped address, in range or not."""
        half = self.rng.randrange(2)
        return Target(va=self.rng.getrandbits(48) & ~0xFFF, size=4096, output=None, half=half)

    def make_access(self, target: Target) -> dict[str, Any]:
        """Return one real access on a target: loads read the page's first words or
        what stores left above them; fetches go to the zero upper half of a 4K page."""
        rng, spec = self.rng, self.spec
        name = rng.choice(spec.accesses)
        page = rng.randrange(target.size) & ~0xFFF
        if name == "FETCH":
            offset = page + 0x800 + 4 * rng.randrange(0x200)
        elif name in WRITING_OPS:   # above the page's given words: no memory_changes entry
            offset = page + 8 * (DATA_WORDS + rng.randrange(4))
        else:
            offset = page + 8 * rng.randrange(DATA_WORDS + 4)
        if name != "FETCH" and spec.unaligned_p and chance(rng, spec.unaligned_p):
            offset += rng.randrange(1, 8)
        if target.output is not None and self.s2_tree is not None:
            self.map_output_in_s2(target.output + offset)
        el = rng.choice(spec.exec_els)
        op: dict[str, Any] = {"op": name, "va": hex(self.full_va(target, offset)),
                              "el": f"EL{el}", "pan": 1 if chance(rng, spec.pan_p) else 0}
        if name in WRITING_OPS:
            op["value"] = hex(rng.getrandbits(64))
        return op

    def make_op(self, target: Target) -> dict[str, Any]:
        """Return one op on a target: random offset, address form, op, EL and PAN."""
        if self.spec.accesses:
            return self.make_access(target)
        rng = self.rng
        offset = rng.randrange(target.size) & ~7 if target.size <= 1 << 30 else rng.getrandbits(30)
        va = self.full_va(target, offset)
        el = rng.choice(self.spec.exec_els)
        name = self.pick_op(el)
        if target.output is not None and self.s2_tree is not None and name.startswith("S12"):
            self.map_output_in_s2(target.output + offset)
        return {"op": name, "va": hex(va), "el": f"EL{el}",
                "pan": 1 if chance(rng, self.spec.pan_p) else 0}

    def full_va(self, target: Target, offset: int) -> int:
        """Return the 64-bit VA: TTBR1 addresses sign-extended, TBI top bytes randomised."""
        tree = self.s1_trees[target.half] if self.s1_trees else None
        va = target.va + offset
        if target.half == 1 and tree is not None:
            va |= ((1 << 64) - 1) & ~((1 << tree.shape.ia_bits) - 1)
        elif target.half == 1 and chance(self.rng, 0.5):
            va |= 0xFFFF << 48
        if self.spec.tbi[target.half] and chance(self.rng, 0.6):
            va = (va & ((1 << 56) - 1)) | self.rng.getrandbits(8) << 56
            va = va | (1 << 55) if target.half == 1 else va & ~(1 << 55)
        elif chance(self.rng, 0.03):
            va ^= 1 << self.rng.randrange(48, 64)
        return va

    def pick_op(self, el: int) -> str:
        """Return an AT op that fits the regime (or an UNDEFINED one, at EL1)."""
        spec, rng = self.spec, self.rng
        if el == 1 and chance(rng, spec.undef_p):
            return rng.choice(EL2_OPS + S12_OPS)
        if el == 1:
            return rng.choice(EL1_OPS)
        # From EL2 and EL3 every op is defined: the ops of other regimes (S1E1*/S12E* with
        # E2H=0, S12E* with E2H=TGE=1, S12E* with stage 2 off) translate too.
        other = chance(rng, spec.other_ops_p)
        if spec.regime == "EL2":
            return rng.choice(EL1_OPS + S12_OPS) if other else rng.choice(EL2_OPS)
        host = spec.tge and (spec.e2h or spec.regime == "EL2&0")
        s12 = S12_OPS if HOST_S12_OPS or not host else ()
        if spec.regime == "EL2&0":
            if spec.tge:
                return rng.choice(s12 or EL2_OPS) if other else rng.choice(EL2_OPS + EL1_OPS)
            return rng.choice(EL1_OPS + S12_OPS) if other else rng.choice(EL2_OPS)
        if other:
            return rng.choice(EL2_OPS)
        return rng.choice(EL1_OPS + s12)

    # Registers ---------------------------------------------------------------------------

    def registers(self) -> dict[str, str]:
        """Return the case's registers as hex strings."""
        regs: dict[str, int] = {}
        match self.spec.regime:
            case "EL1&0":
                regs |= self.el1_registers()
            case "EL2":
                regs |= self.el2_registers(e2h=False)
            case _:
                regs |= self.el2_registers(e2h=True)
        regs["HCR_EL2"] = self.hcr()
        if self.s2_tree is not None:
            regs["VTCR_EL2"] = self.vtcr()
            regs["VTTBR_EL2"] = self.s2_tree.root | self.rng.randrange(1 << 16) << 48
            regs.setdefault("SCTLR_EL2", 0x30C50830 | (self.spec.el2_ee << 25))
        return {name: hex(value) for name, value in regs.items()}

    def ttbr(self, half: int) -> int:
        """Return a TTBR value for a half: root, random ASID, sometimes CnP."""
        tree = self.s1_trees[half]
        root = tree.root if tree is not None else self.pa.take(1 << 16, 1 << 16)
        if tree is not None and tree.shape.ds and chance(self.rng, self.spec.ttbr_hi_p):
            # BADDR[51:48] in TTBR[5:2] with DS=1: beyond a PS below 52 bits.
            root |= self.rng.randrange(1, 16) << 2
            self.tags.add(TAG_OA_52BIT_FIELDS)
        return root | self.rng.randrange(1 << 16) << 48 | self.rng.randrange(2)

    def el1_registers(self) -> dict[str, int]:
        """Return SCTLR_EL1, TCR_EL1, MAIR_EL1, TTBRn_EL1."""
        spec = self.spec
        sctlr = 0x30D00800 | int(spec.s1) | spec.wxn << 19 | spec.ee << 25 | spec.epan << 57
        sctlr |= self.rng.randrange(2) << 2
        if spec.sctlr_a_p and chance(self.rng, spec.sctlr_a_p):
            sctlr |= 1 << 1
        return {"SCTLR_EL1": sctlr, "TCR_EL1": self.tcr_el1(),
                "MAIR_EL1": random_mair(self.rng, any(self.needs_stub()), spec.odd_mair_p),
                "TTBR0_EL1": self.ttbr(0), "TTBR1_EL1": self.ttbr(1),
                "SCTLR_EL2": 0x30C50830 | spec.el2_ee << 25}

    def el2_registers(self, e2h: bool) -> dict[str, int]:
        """Return SCTLR_EL2, TCR_EL2 (either layout), MAIR_EL2, TTBRn_EL2."""
        spec = self.spec
        sctlr = 0x30C50830 | int(spec.s1) | spec.wxn << 19 | spec.el2_ee << 25
        sctlr |= (spec.epan and e2h) << 57
        if spec.sctlr_a_p and chance(self.rng, spec.sctlr_a_p):
            sctlr |= 1 << 1
        regs = {"SCTLR_EL2": sctlr, "TCR_EL2": self.tcr_el1() if e2h else self.tcr_el2(),
                "MAIR_EL2": random_mair(self.rng, any(self.needs_stub()), spec.odd_mair_p),
                "TTBR0_EL2": self.ttbr(0)}
        if e2h:
            regs["TTBR1_EL2"] = self.ttbr(1)
        return regs

    def tg(self, half: int) -> int:
        """Return a half's TG field (reserved values pass through)."""
        raw = self.spec.tg_raw[half]
        if raw is not None:
            return raw
        return (TG0 if half == 0 else TG1)[self.spec.granule[half]]

    def walk_cacheability(self) -> int:
        """Return random IRGN, ORGN, SH fields for one half (bits [13:8])."""
        return self.rng.randrange(64) << 8

    def tcr_el1(self) -> int:
        """Return a TCR_EL1 (also TCR_EL2 with E2H=1) value."""
        spec = self.spec
        tcr = spec.txsz[0] | spec.epd[0] << 7 | self.walk_cacheability() | self.tg(0) << 14
        tcr |= spec.txsz[1] << 16 | self.rng.randrange(2) << 22 | spec.epd[1] << 23
        tcr |= (self.walk_cacheability() << 16) | self.tg(1) << 30
        tcr |= spec.ips << 32 | self.rng.randrange(2) << 36 | spec.tbi[0] << 37 | spec.tbi[1] << 38
        tcr |= spec.ha << 39 | spec.hd << 40 | spec.hpd[0] << 41 | spec.hpd[1] << 42
        tcr |= spec.e0pd[0] << 55 | spec.e0pd[1] << 56 | spec.ds << 59
        return tcr

    def tcr_el2(self) -> int:
        """Return a TCR_EL2 value for E2H=0 (RES1 bits 31 and 23)."""
        spec = self.spec
        tcr = spec.txsz[0] | self.walk_cacheability() | self.tg(0) << 14 | min(spec.ips, 7) << 16
        tcr |= spec.tbi[0] << 20 | spec.ha << 21 | spec.hd << 22 | spec.hpd[0] << 24
        return tcr | 1 << 31 | 1 << 23 | spec.ds << 32

    def vtcr(self) -> int:
        """Return VTCR_EL2 for the stage-2 spec (or its broken SL0/T0SZ)."""
        spec = self.spec
        sl0, sl2 = spec.s2_sl_raw or s2_sl_fields(spec.s2_granule, spec.s2_start)
        t0sz = spec.s2_t0sz_raw if spec.s2_t0sz_raw is not None else 64 - spec.s2_ia_bits
        vtcr = t0sz | sl0 << 6 | self.walk_cacheability() | TG0[spec.s2_granule] << 14
        vtcr |= spec.s2_ps << 16 | self.rng.randrange(2) << 19 | spec.s2_ha << 21
        return vtcr | spec.s2_hd << 22 | 1 << 31 | spec.s2_ds << 32 | sl2 << 33

    def hcr(self) -> int:
        """Return HCR_EL2: RW, VM, DC, CD, ID, PTW, FWB, E2H, TGE as the spec says."""
        spec = self.spec
        hcr = 1 << 31 | int(self.s2_tree is not None and spec.s2 and spec.vm) | spec.ptw << 2
        hcr |= spec.dc << 12 | spec.cd << 32 | spec.id << 33 | spec.fwb << 46
        hcr |= spec.tge << 27 | (spec.regime == "EL2&0" or spec.e2h) << 34
        return hcr


def s1_stub_attrs(regime: str, ds: bool, el0: bool = False) -> int:
    """Return stage-1 attributes for the stub page: Normal, read-only, AF set, executable
    (at EL0 too when el0: read-only there, so EL1 may still execute it).

    With DS=1 bits [9:8] are OA[51:50], so SH is left to TCR_ELx.SH.
    """
    uxn = 0 if regime == "EL2" or el0 else 1 << 54
    sh = 0 if ds else 0b11 << 8
    return STUB_ATTR_INDEX << 2 | 0b11 << 6 | sh | 1 << 10 | uxn


def s2_leaf_attrs(readable: bool, af: bool, memattr: int, writable: bool = False,
                  ds: bool = False) -> int:
    """Return stage-2 leaf attributes: MemAttr, S2AP, inner shareable (unless DS), AF."""
    s2ap = int(readable) | int(writable) << 1
    sh = 0 if ds else 0b11 << 8
    return memattr << 2 | s2ap << 6 | sh | int(af) << 10


# --- Entry points -------------------------------------------------------------------------


def family_names(family: str | None) -> list[str]:
    """Return the families to draw from: all, or the comma-separated ones named."""
    if not family:
        return list(FAMILIES)
    names = [name.strip() for name in family.split(",") if name.strip()]
    unknown = [name for name in names if name not in FAMILIES]
    if unknown:
        raise InputError(f"unknown case family {unknown[0]!r} (known: {', '.join(FAMILIES)})")
    return names


def generate_case(family: str, seed: int, index: int,
                  features: FeatureSet | None = None) -> dict[str, Any]:
    """Return case `index` of family `family` for `seed` (the same every time).

    features: what the QEMU that will run the case implements (cpu_id.model_features);
    None is QEMU 7.2's -cpu max. A feature beyond 7.2's is drawn from its own random
    stream, so the case is otherwise the same one 7.2 gets: FEAT_PAN3 gives SCTLR_ELx.EPAN
    half the time.
    """
    name = f"s2mmu-conformance:{seed}:{index}:{family}"
    rng = random.Random(name)
    spec = FAMILIES[family](rng)
    if features is not None and features.has("FEAT_PAN3"):
        spec = replace(spec, epan=chance(random.Random(f"{name}:epan"), 0.5))
    return CaseBuilder(spec, rng).build(f"{family}-s{seed}-{index}", family)


def generate_cases(count: int, seed: int, families: Sequence[str] | None = None,
                   features: FeatureSet | None = None) -> list[dict[str, Any]]:
    """Return `count` cases, cycling through the families, for a QEMU with `features`."""
    names = list(families or FAMILIES)
    return [generate_case(names[i % len(names)], seed, i, features) for i in range(count)]
