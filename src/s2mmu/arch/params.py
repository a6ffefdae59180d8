"""Walk parameters: the registers read once, as the walk needs them.

ASL: AArch64.GetS1TTWParams, AArch64.GetS2TTWParams, AArch64.S1StartLevel,
AArch64.S2StartLevel, AArch64.S1MinTxSZ/S1MaxTxSZ, AArch64.S2MinTxSZ,
AArch64.PhysicalAddressSize, AArch64.S2InvalidSL, AArch64.S2InconsistentSL.
QEMU: ARMVAParameters (aa64_va_parameters). Kernel: at.c struct s1_walk_info.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from functools import lru_cache

from s2mmu.arch.bits import bit
from s2mmu.arch.config import ImplChoices
from s2mmu.arch.features import PARANGE_BITS, FeatureSet, HwUpdate, hw_update_of
from s2mmu.arch.registers import (
    HCR_EL2,
    HCRX_EL2,
    SCTLR_EL1,
    SCTLR_EL2,
    TCR2_EL1,
    TCR2_EL2,
    TCR_EL1,
    TCR_EL2_E2H0,
    TCR_EL2_E2H1,
    VTCR_EL2,
)
from s2mmu.arch.state import Regime, SysRegs
from s2mmu.arch.sysreg import RegView

FINAL_LEVEL = 3


class Granule(Enum):
    """Translation granule, valued by its size in KB.

    bits is log2 of the granule size (ASL TGxGranuleBits), stride the number of input
    address bits one level resolves (bits - 3), size the granule in bytes. They are
    set once per member: the walk reads them at every level.
    """

    # Members are singletons compared by identity: hash them as such, in C (Enum's
    # own __hash__ is Python code, and walk parameters are hashed on every walk).
    __hash__ = object.__hash__

    G4K = 4
    G16K = 16
    G64K = 64

    bits: int
    stride: int
    size: int

    def __init__(self, kb: int) -> None:
        self.bits = {4: 12, 16: 14, 64: 16}[kb]
        self.stride = self.bits - 3
        self.size = 1 << self.bits

    def block_size(self, level: int) -> int:
        """Return the size of the region a leaf at level maps."""
        return 1 << (self.bits + (FINAL_LEVEL - level) * self.stride)


class VARange(Enum):
    """Which half of the VA space (ASL VARange)."""

    # Members are singletons compared by identity: hash them as such, in C (Enum's
    # own __hash__ is Python code, and walk parameters are hashed on every walk).
    __hash__ = object.__hash__

    LOWER = 0
    UPPER = 1


# Granule size in KB of each defined TGx encoding (the others are reserved).
TG0_KB = {0b00: 4, 0b01: 64, 0b10: 16}
TG1_KB = {0b01: 16, 0b10: 4, 0b11: 64}


def tg0_granule(tg0: int, fs: FeatureSet, choices: ImplChoices) -> Granule:
    """Decode TCR_ELx.TG0/VTCR_EL2.TG0 (00 4K, 01 64K, 10 16K; 11 reserved)."""
    g = TG0_KB.get(tg0, choices.reserved_tg_granule)
    return _implemented(g, fs, choices)


def tg1_granule(tg1: int, fs: FeatureSet, choices: ImplChoices) -> Granule:
    """Decode TCR_ELx.TG1 (01 16K, 10 4K, 11 64K; 00 reserved)."""
    g = TG1_KB.get(tg1, choices.reserved_tg_granule)
    return _implemented(g, fs, choices)


def _implemented(kb: int, fs: FeatureSet, choices: ImplChoices) -> Granule:
    """Return kb as a Granule, or the IMPLEMENTATION DEFINED choice if not implemented.

    If the chosen size is not implemented either, the smallest implemented one (QEMU 7.2).
    """
    if kb not in fs.granules:
        kb = choices.reserved_tg_granule
    if kb not in fs.granules:
        kb = min(fs.granules)
    return Granule(kb)


def physical_address_size(ps: int, granule: Granule, fs: FeatureSet) -> int:
    """Return the output size in bits for an IPS/PS encoding.

    ASL: AArch64.PhysicalAddressSize. Encodings above PAMax (the reserved 0b111 too)
    are capped to the maximum, never faulted: 52 bits needs FEAT_LPA2 for 4KB/16KB and
    FEAT_LPA for 64KB, otherwise the cap is 48. DS does not enter.
    """
    size = PARANGE_BITS.get(ps, 56)
    big = fs.has("FEAT_LPA") if granule is Granule.G64K else fs.has("FEAT_LPA2")
    cap = min(52 if big else 48, fs.pa_max())
    return min(size, cap)


def s1_min_txsz(granule: Granule, ds: bool, fs: FeatureSet) -> int:
    """Return the smallest legal TxSZ (ASL AArch64.S1MinTxSZ)."""
    if (fs.has("FEAT_LVA") and granule is Granule.G64K) or ds:
        return 12
    return 16


def s1_max_txsz(granule: Granule, fs: FeatureSet) -> int:
    """Return the largest legal TxSZ (ASL AArch64.MaxTxSZ; FEAT_TTST raises it)."""
    if fs.has("FEAT_TTST"):
        return 47 if granule is Granule.G64K else 48
    return 39


def s2_min_txsz(granule: Granule, ds: bool, fs: FeatureSet) -> int:
    """Return the smallest legal VTCR_EL2.T0SZ (ASL AArch64.S2MinTxSZ): 64 - PAMax.

    Without 52-bit support for this granule (FEAT_LPA for 64KB, DS for 4KB/16KB) the
    IPA is at most 48 bits.
    """
    big = fs.has("FEAT_LPA") if granule is Granule.G64K else ds
    return 64 - min(52 if big else 48, fs.pa_max())


def txsz_faults(txsz: int, min_txsz: int, max_txsz: int, below_min_must_fault: bool,
                choices: ImplChoices) -> bool:
    """Return whether an out-of-range TxSZ gives a level-0 Translation fault.

    ASL: AArch64.S1TxSZFaults / AArch64.S2TxSZFaults. Below the minimum it must fault
    when FEAT_LVA (stage 1) or FEAT_LPA (stage 2) is implemented; otherwise, and above
    the maximum, it is IMPLEMENTATION DEFINED (ImplChoices.txsz_out_of_range).
    """
    impdef_fault = choices.txsz_out_of_range == "fault"
    if txsz < min_txsz:
        return below_min_must_fault or impdef_fault
    if txsz > max_txsz:
        return impdef_fault
    return False


def clamp_txsz(txsz: int, min_txsz: int, max_txsz: int) -> int:
    """Return TxSZ as the walk uses it when out of range without faulting."""
    return min(max(txsz, min_txsz), max_txsz)


def s1_start_level(granule: Granule, txsz: int) -> int:
    """Return the level the stage-1 walk starts at (ASL AArch64.S1StartLevel)."""
    iasize = 64 - txsz
    return FINAL_LEVEL - (iasize - 1 - granule.bits) // granule.stride


def s2_start_level(granule: Granule, sl0: int, sl2: int) -> int:
    """Return the level the stage-2 walk starts at (ASL AArch64.S2StartLevel)."""
    if granule is Granule.G4K:
        if sl2:
            return -1
        return {0: 2, 1: 1, 2: 0, 3: 3}[sl0]
    return {0: 3, 1: 2, 2: 1, 3: 0}[sl0]


def s2_invalid_sl(granule: Granule, sl0: int, sl2: int, ds: bool, fs: FeatureSet) -> str:
    """Return why SL0/SL2 is reserved for this granule, or "" (ASL AArch64.S2InvalidSL)."""
    pamax = fs.pa_max()
    if granule is Granule.G4K:
        code = (sl2 << 2) | sl0
        if code == 0b100:
            return "" if ds else "SL2:SL0=0b100 needs VTCR_EL2.DS=1"
        if code > 0b100:
            return f"SL2:SL0={code:#05b} is reserved"
        if code == 0b010 and pamax < 44:
            return "SL0=0b10 (level 0) needs a PA size of at least 44 bits"
        if code == 0b011 and not fs.has("FEAT_TTST"):
            return "SL0=0b11 (level 3) needs FEAT_TTST"
        return ""
    if granule is Granule.G16K:
        if sl0 == 0b11 and not ds:
            return "SL0=0b11 (level 0) with 16KB needs VTCR_EL2.DS=1"
        if sl0 == 0b10 and pamax < 42:
            return "SL0=0b10 (level 1) with 16KB needs a PA size of at least 42 bits"
        return ""
    if sl0 == 0b11:
        return "SL0=0b11 is reserved for 64KB"
    if sl0 == 0b10 and pamax < 44:
        return "SL0=0b10 (level 1) with 64KB needs a PA size of at least 44 bits"
    return ""


def s2_inconsistent_sl(granule: Granule, startlevel: int, txsz: int) -> str:
    """Return why the start level cannot resolve a 64-T0SZ-bit IPA, or "".

    ASL: AArch64.S2InconsistentSL. The initial lookup resolves at least one bit and
    at most one full stride plus four bits of concatenation (up to 16 tables).
    """
    levels = FINAL_LEVEL - startlevel
    sl_min = levels * granule.stride + granule.bits + 1
    sl_max = sl_min + (granule.stride - 1) + 4
    iasize = 64 - txsz
    if iasize < sl_min or iasize > sl_max:
        return (f"an IPA of {iasize} bits cannot start at level {startlevel} "
                f"({sl_min}..{sl_max} bits)")
    return ""


@dataclass(frozen=True)
class S1TTWParams:
    """ASL S1TTWParams: everything the stage-1 walk reads, for one VA range."""

    regime: Regime
    varange: VARange
    tgx: Granule
    txsz: int
    ttb: int
    ps: int           # output size in bits, after PAMax/48-bit capping
    ps_raw: int       # the IPS/PS field as programmed (TTBR BADDR[51:48] needs 0b110)
    ds: bool
    ha: bool
    hd: bool
    tbi: bool
    tbid: bool        # TBI applies to data accesses only (FEAT_PAuth)
    epd: bool
    e0pd: bool
    hpd: bool
    wxn: bool
    ee: bool
    epan: bool
    mair: int
    sh: int
    irgn: int
    orgn: int
    mmu_on: bool      # SCTLR_ELx.M (or EL1&0 stage 1 forced off by HCR_EL2.DC/TGE)
    sctlr_c: bool
    sctlr_i: bool
    dc: bool          # HCR_EL2.DC applies to this regime
    # FEAT_S1PIE / FEAT_S1POE (TCR2_ELx.PIE/POE/E0POE, read as 0 when not enabled):
    pie: bool = False  # indirect permissions: PIR (privileged) and PIRE0 (EL0)
    pir: int = 0
    pire0: int = 0
    poe: bool = False  # privileged permission overlay (POR_EL1 or POR_EL2)
    e0poe: bool = False  # EL0 permission overlay (POR_EL0)
    por: int = 0
    por_e0: int = 0
    # FEAT_HAFT: TCR2_ELx.HAFT with HA: the walk sets AF in table descriptors.
    haft: bool = False

    def startlevel(self) -> int:
        """Return the stage-1 start level (ASL AArch64.S1StartLevel)."""
        return s1_start_level(self.tgx, self.txsz)

    def iasize(self) -> int:
        """Return the input address size in bits."""
        return 64 - self.txsz

    def txsz_range(self, fs: FeatureSet) -> tuple[int, int]:
        """Return [S1MinTxSZ, MaxTxSZ] for this granule and DS."""
        return s1_min_txsz(self.tgx, self.ds, fs), s1_max_txsz(self.tgx, fs)


@dataclass(frozen=True)
class S2TTWParams:
    """ASL S2TTWParams: everything the stage-2 walk reads."""

    tgx: Granule
    txsz: int
    sl0: int
    sl2: int
    ttb: int
    ps: int
    ps_raw: int
    ds: bool
    ha: bool
    hd: bool
    ee: bool          # SCTLR_EL2.EE: endianness of stage-2 table walks
    fwb: bool
    cd: bool          # HCR_EL2.CD: stage-2 data accesses Non-cacheable
    id: bool          # HCR_EL2.ID: stage-2 instruction accesses Non-cacheable
    sh: int
    irgn: int
    orgn: int
    # FEAT_S2PIE / FEAT_S2POE (VTCR_EL2.S2PIE/S2POE, read as 0 without the feature):
    s2pie: bool = False  # indirect permissions: S2PIR_EL2 by the leaf's PIIndex
    s2pir: int = 0
    s2poe: bool = False  # stage-2 permission overlay: S2POR_EL1 by the leaf's POIndex
    s2por: int = 0
    # FEAT_HAFT: VTCR_EL2.HAFT with HA: the walk sets AF in table descriptors.
    haft: bool = False

    def startlevel(self) -> int:
        """Return the stage-2 start level (ASL AArch64.S2StartLevel)."""
        return s2_start_level(self.tgx, self.sl0, self.sl2)

    def iasize(self) -> int:
        """Return the input address size in bits."""
        return 64 - self.txsz

    def txsz_range(self, fs: FeatureSet) -> tuple[int, int]:
        """Return [S2MinTxSZ, MaxTxSZ] for this granule and DS."""
        return s2_min_txsz(self.tgx, self.ds, fs), s1_max_txsz(self.tgx, fs)


def stage2_enabled(regs: SysRegs, regime: Regime) -> bool:
    """Return whether stage 2 applies to regime (HCR_EL2.VM or DC for EL1&0)."""
    hcr = HCR_EL2.decode(regs.HCR_EL2)
    return regime is Regime.EL10 and bool(hcr.VM or hcr.DC)


def va_range(va: int, regime: Regime) -> VARange:
    """Return the VA range va falls in: bit 55 selects TTBR1 in two-range regimes."""
    if regime.has_two_ranges() and bit(va, 55):
        return VARange.UPPER
    return VARange.LOWER


def s1_regs(regs: SysRegs, regime: Regime) -> tuple[RegView, RegView, int]:
    """Return the TCR and SCTLR views and the MAIR value of a regime's stage 1.

    TCR_EL2 has the two-range TCR_EL1 layout in the EL2&0 regime (E2H=1), and its own
    one-range layout in the EL2 regime.
    """
    if regime is Regime.EL10:
        return TCR_EL1.decode(regs.TCR_EL1), SCTLR_EL1.decode(regs.SCTLR_EL1), regs.MAIR_EL1
    tcr_spec = TCR_EL2_E2H1 if regime is Regime.EL20 else TCR_EL2_E2H0
    return tcr_spec.decode(regs.TCR_EL2), SCTLR_EL2.decode(regs.SCTLR_EL2), regs.MAIR_EL2


def tcr2_enabled(regs: SysRegs, regime: Regime, fs: FeatureSet) -> bool:
    """Return whether the regime's TCR2_ELx is in effect (ASL IsTCR2EL1Enabled /
    IsTCR2EL2Enabled).

    FEAT_TCR2 is needed; for the EL1&0 regime EL2 also gates it with HCRX_EL2.TCR2En
    (the model always has EL2; HCRX_EL2 reads as 0 without FEAT_HCX). Kernel: at.c
    s1pie_enabled reads the same bits.
    """
    if not fs.has("FEAT_TCR2"):
        return False
    if regime is not Regime.EL10:
        return True
    return fs.has("FEAT_HCX") and bool(HCRX_EL2.decode(regs.HCRX_EL2).TCR2En)


@dataclass(frozen=True)
class S1PermControls:
    """The FEAT_S1PIE/S1POE controls of a regime, read once (ASL GetS1TTWParams).

    pie/poe/e0poe are the TCR2_ELx enables with the features implemented; the
    registers are the regime's: PIR_EL1/PIRE0_EL1/POR_EL1 for EL1&0, PIR_EL2/PIRE0_EL2/
    POR_EL2 for EL2&0 and EL2 (no EL0 controls for EL2), POR_EL0 for EL0.
    Kernel: at.c s1pie_enabled, compute_s1poe, compute_s1_indirect_permissions.
    """

    pie: bool = False
    pir: int = 0
    pire0: int = 0
    poe: bool = False
    e0poe: bool = False
    por: int = 0
    por_e0: int = 0


def s1_perm_controls(regs: SysRegs, regime: Regime, fs: FeatureSet) -> S1PermControls:
    """Return the regime's indirect-permission and overlay controls (zeros when off)."""
    if not tcr2_enabled(regs, regime, fs):
        return S1PermControls()
    el10 = regime is Regime.EL10
    tcr2 = (TCR2_EL1 if el10 else TCR2_EL2).decode(regs.TCR2_EL1 if el10 else regs.TCR2_EL2)
    el0 = regime.has_el0()
    pie = bool(tcr2.PIE) and fs.has("FEAT_S1PIE")
    poe = bool(tcr2.POE) and fs.has("FEAT_S1POE")
    e0poe = el0 and bool(tcr2.E0POE) and fs.has("FEAT_S1POE")
    return S1PermControls(
        pie=pie, pir=(regs.PIR_EL1 if el10 else regs.PIR_EL2) if pie else 0,
        pire0=(regs.PIRE0_EL1 if el10 else regs.PIRE0_EL2) if pie and el0 else 0,
        poe=poe, e0poe=e0poe, por=(regs.POR_EL1 if el10 else regs.POR_EL2) if poe else 0,
        por_e0=regs.POR_EL0 if e0poe else 0)


def s1_haft(regs: SysRegs, regime: Regime, fs: FeatureSet, ha: bool) -> bool:
    """Return walkparams.haft of the regime's stage 1: TCR2_ELx.HAFT, with FEAT_HAFT, the
    effective HA and TCR2_ELx in effect (ASL AArch64.GetS1TTWParams: haft reads as 0
    without FEAT_HAFT or with ha 0; tcr2_enabled for HCRX_EL2.TCR2En). Arm ARM RFWSJH:
    TCR2_EL1.HAFT for EL1&0, TCR2_EL2.HAFT for EL2 and EL2&0; RSNVTX: HA 0 makes it 0."""
    if not (ha and fs.has("FEAT_HAFT") and tcr2_enabled(regs, regime, fs)):
        return False
    el10 = regime is Regime.EL10
    return bool((TCR2_EL1 if el10 else TCR2_EL2).decode(
        regs.TCR2_EL1 if el10 else regs.TCR2_EL2).HAFT)


def get_s1_ttw_params(regs: SysRegs, regime: Regime, va: int, fs: FeatureSet,
                      choices: ImplChoices, hw: HwUpdate | None = None) -> S1TTWParams:
    """Read the stage-1 walk parameters for va (ASL AArch64.GetS1TTWParams).

    hw says which descriptor updates are made (default: what fs implements). The
    parameters depend on va only through its VA range, so they are read once per
    register set and range (a pure function of frozen inputs, memoised).
    """
    return _s1_ttw_params(regs, regime, va_range(va, regime), fs, choices,
                          hw or hw_update_of(fs))


@lru_cache(maxsize=1024)
def _s1_ttw_params(regs: SysRegs, regime: Regime, rng: VARange, fs: FeatureSet,
                   choices: ImplChoices, hw: HwUpdate) -> S1TTWParams:
    """Read the stage-1 walk parameters of one VA range (get_s1_ttw_params, memoised)."""
    if regime is Regime.EL2:
        return _s1_params_el2(regs, fs, choices, hw)
    tcr, sctlr, mair = s1_regs(regs, regime)
    upper = rng is VARange.UPPER
    if upper:
        ttb = regs.TTBR1_EL1 if regime is Regime.EL10 else regs.TTBR1_EL2
        tgx = tg1_granule(tcr.TG1, fs, choices)
        txsz, sh, orgn, irgn = tcr.T1SZ, tcr.SH1, tcr.ORGN1, tcr.IRGN1
        tbi, epd, e0pd, hpd, tbid = tcr.TBI1, tcr.EPD1, tcr.E0PD1, tcr.HPD1, tcr.TBID1
    else:
        ttb = regs.TTBR0_EL1 if regime is Regime.EL10 else regs.TTBR0_EL2
        tgx = tg0_granule(tcr.TG0, fs, choices)
        txsz, sh, orgn, irgn = tcr.T0SZ, tcr.SH0, tcr.ORGN0, tcr.IRGN0
        tbi, epd, e0pd, hpd, tbid = tcr.TBI0, tcr.EPD0, tcr.E0PD0, tcr.HPD0, tcr.TBID0
    ds = bool(tcr.DS) and fs.has("FEAT_LPA2") and tgx is not Granule.G64K
    ctl = s1_perm_controls(regs, regime, fs)
    # ASL AArch64.S1Enabled: HCR_EL2.DC or TGE turns the EL1&0 stage 1 off.
    dc = regime is Regime.EL10 and bool(HCR_EL2.decode(regs.HCR_EL2).DC)
    tge = regime is Regime.EL10 and regs.tge()
    return S1TTWParams(
        regime=regime, varange=rng, tgx=tgx, txsz=txsz, ttb=ttb,
        ps=physical_address_size(tcr.IPS, tgx, fs), ps_raw=tcr.IPS, ds=ds,
        ha=bool(tcr.HA) and hw.s1_af, hd=bool(tcr.HA and tcr.HD) and hw.s1_dirty,
        tbi=bool(tbi), tbid=bool(tbid), epd=bool(epd), e0pd=bool(e0pd) and fs.has("FEAT_E0PD"),
        # With PIE or an overlay the hierarchical controls are disabled (at.c
        # setup_s1_walk; the ASL's S1IndirectBasePermissions reads no table control).
        hpd=(bool(hpd) and fs.has("FEAT_HPDS")) or ctl.pie or ctl.poe or ctl.e0poe,
        wxn=bool(sctlr.WXN), ee=bool(sctlr.EE),
        epan=bool(sctlr.EPAN) and fs.has("FEAT_PAN3"),
        mair=mair, sh=sh, irgn=irgn, orgn=orgn,
        mmu_on=bool(sctlr.M) and not dc and not tge,
        sctlr_c=bool(sctlr.C), sctlr_i=bool(sctlr.I), dc=dc,
        pie=ctl.pie, pir=ctl.pir, pire0=ctl.pire0, poe=ctl.poe, e0poe=ctl.e0poe,
        por=ctl.por, por_e0=ctl.por_e0,
        haft=s1_haft(regs, regime, fs, bool(tcr.HA) and hw.s1_af),
    )


def _s1_params_el2(regs: SysRegs, fs: FeatureSet, choices: ImplChoices,
                   hw: HwUpdate) -> S1TTWParams:
    """Read the EL2 (E2H=0) regime's single-range parameters from TCR_EL2/SCTLR_EL2."""
    tcr, sctlr, mair = s1_regs(regs, Regime.EL2)
    tgx = tg0_granule(tcr.TG0, fs, choices)
    ds = bool(tcr.DS) and fs.has("FEAT_LPA2") and tgx is not Granule.G64K
    ctl = s1_perm_controls(regs, Regime.EL2, fs)
    return S1TTWParams(
        regime=Regime.EL2, varange=VARange.LOWER, tgx=tgx, txsz=tcr.T0SZ,
        ttb=regs.TTBR0_EL2, ps=physical_address_size(tcr.PS, tgx, fs), ps_raw=tcr.PS,
        ds=ds, ha=bool(tcr.HA) and hw.s1_af, hd=bool(tcr.HA and tcr.HD) and hw.s1_dirty,
        tbi=bool(tcr.TBI), tbid=bool(tcr.TBID), epd=False, e0pd=False,
        hpd=(bool(tcr.HPD) and fs.has("FEAT_HPDS")) or ctl.pie or ctl.poe,
        wxn=bool(sctlr.WXN), ee=bool(sctlr.EE), epan=False, mair=mair, sh=tcr.SH0,
        irgn=tcr.IRGN0, orgn=tcr.ORGN0, mmu_on=bool(sctlr.M),
        sctlr_c=bool(sctlr.C), sctlr_i=bool(sctlr.I), dc=False,
        pie=ctl.pie, pir=ctl.pir, poe=ctl.poe, por=ctl.por,
        haft=s1_haft(regs, Regime.EL2, fs, bool(tcr.HA) and hw.s1_af),
    )


def get_s2_ttw_params(regs: SysRegs, fs: FeatureSet, choices: ImplChoices,
                      hw: HwUpdate | None = None) -> S2TTWParams:
    """Read the stage-2 walk parameters from VTCR_EL2/VTTBR_EL2 (ASL AArch64.GetS2TTWParams).

    hw says which descriptor updates are made (default: what fs implements). Read once
    per register set (a pure function of frozen inputs, memoised).
    """
    return _s2_ttw_params(regs, fs, choices, hw or hw_update_of(fs))


@lru_cache(maxsize=1024)
def _s2_ttw_params(regs: SysRegs, fs: FeatureSet, choices: ImplChoices,
                   hw: HwUpdate) -> S2TTWParams:
    """Read the stage-2 walk parameters (get_s2_ttw_params, memoised)."""
    vtcr, hcr = VTCR_EL2.decode(regs.VTCR_EL2), HCR_EL2.decode(regs.HCR_EL2)
    tgx = tg0_granule(vtcr.TG0, fs, choices)
    ds = bool(vtcr.DS) and fs.has("FEAT_LPA2") and tgx is not Granule.G64K
    s2pie = bool(vtcr.S2PIE) and fs.has("FEAT_S2PIE")
    s2poe = bool(vtcr.S2POE) and fs.has("FEAT_S2POE")
    return S2TTWParams(
        tgx=tgx, txsz=vtcr.T0SZ, sl0=vtcr.SL0, sl2=vtcr.SL2 if ds else 0,
        ttb=regs.VTTBR_EL2, ps=physical_address_size(vtcr.PS, tgx, fs), ps_raw=vtcr.PS,
        ds=ds, ha=bool(vtcr.HA) and hw.s2_af, hd=bool(vtcr.HA and vtcr.HD) and hw.s2_dirty,
        ee=bool(SCTLR_EL2.decode(regs.SCTLR_EL2).EE),
        fwb=bool(hcr.FWB) and fs.has("FEAT_S2FWB"),
        cd=bool(hcr.CD), id=bool(hcr.ID), sh=vtcr.SH0, irgn=vtcr.IRGN0, orgn=vtcr.ORGN0,
        s2pie=s2pie, s2pir=regs.S2PIR_EL2 if s2pie else 0,
        s2poe=s2poe, s2por=regs.S2POR_EL1 if s2poe else 0,
        # ASL AArch64.GetS2TTWParams: haft is VTCR_EL2.HAFT with FEAT_HAFT and ha.
        haft=bool(vtcr.HAFT) and fs.has("FEAT_HAFT") and bool(vtcr.HA) and hw.s2_af,
    )


def _tg_choice(reg: str, name: str, enc: int, kb: int | None, fs: FeatureSet,
               choices: ImplChoices, rule: str) -> str:
    """Return why a TGx encoding needs an IMPLEMENTATION DEFINED granule, or ""."""
    if kb is None:
        return (f"{reg}.{name}={enc:#04b} is reserved ({rule}: an IMPLEMENTATION DEFINED "
                f"granule; ImplChoices.reserved_tg_granule={choices.reserved_tg_granule}KB)")
    if kb not in fs.granules:
        return (f"{reg}.{name}={enc:#04b} selects the {kb}KB granule, which is not implemented "
                f"({rule}: an IMPLEMENTATION DEFINED granule; "
                f"ImplChoices.reserved_tg_granule={choices.reserved_tg_granule}KB)")
    return ""


def _txsz_choice(reg: str, name: str, txsz: int, lo: int, hi: int,
                 below_min_must_fault: bool, choices: ImplChoices, rule: str) -> str:
    """Return why a TxSZ value has IMPLEMENTATION DEFINED handling, or ""."""
    if lo <= txsz <= hi or (txsz < lo and below_min_must_fault):
        return ""
    return (f"{reg}.{name}={txsz} is outside {lo}..{hi} ({rule}: IMPLEMENTATION DEFINED "
            f"fault or clamp; ImplChoices.txsz_out_of_range={choices.txsz_out_of_range!r})")


def impdef_register_encodings(regs: SysRegs, regime: Regime, va: int, fs: FeatureSet,
                              choices: ImplChoices) -> list[str]:
    """Return the register encodings a translation of va resolves by an ImplChoices field.

    Each entry names the register field, its value, the rule and the choice used: a
    reserved or unimplemented TG0/TG1 (ASL AArch64.S1DecodeTG0/TG1, AArch64.S2DecodeTG0)
    and a TxSZ outside [MinTxSZ, MaxTxSZ] where faulting is not mandatory (ASL
    AArch64.S1TxSZFaults, AArch64.S2TxSZFaults). Only the stages that translate va count.
    """
    out = []
    p1 = get_s1_ttw_params(regs, regime, va, fs, choices)
    if p1.mmu_on:
        two = regime.has_two_ranges()
        tcr, _, _ = s1_regs(regs, regime)
        reg = "TCR_EL1" if regime is Regime.EL10 else "TCR_EL2"
        upper = p1.varange is VARange.UPPER
        if upper:
            enc = tcr.TG1
            kb = TG1_KB.get(enc)
            out.append(_tg_choice(reg, "TG1", enc, kb, fs, choices, "ASL AArch64.S1DecodeTG1"))
        else:
            enc = tcr.TG0
            kb = TG0_KB.get(enc)
            out.append(_tg_choice(reg, "TG0", enc, kb, fs, choices, "ASL AArch64.S1DecodeTG0"))
        lo, hi = p1.txsz_range(fs)
        name = ("T1SZ" if upper else "T0SZ") if two else "T0SZ"
        out.append(_txsz_choice(reg, name, p1.txsz, lo, hi, fs.has("FEAT_LVA"), choices,
                                "ASL AArch64.S1TxSZFaults"))
    if stage2_enabled(regs, regime):
        p2 = get_s2_ttw_params(regs, fs, choices)
        enc = VTCR_EL2.decode(regs.VTCR_EL2).TG0
        kb = TG0_KB.get(enc)
        out.append(_tg_choice("VTCR_EL2", "TG0", enc, kb, fs, choices,
                              "ASL AArch64.S2DecodeTG0"))
        lo, hi = p2.txsz_range(fs)
        out.append(_txsz_choice("VTCR_EL2", "T0SZ", p2.txsz, lo, hi, fs.has("FEAT_LPA"),
                                choices, "ASL AArch64.S2TxSZFaults"))
    return [why for why in out if why]
