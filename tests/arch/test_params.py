"""Walk parameters: start levels, TxSZ limits, SL0/SL2 checks, PS, register reads."""

import pytest

from s2mmu.arch.config import DEFAULT_CHOICES, ImplChoices
from s2mmu.arch.features import FeatureSet, qemu_7_2_max, server_v8_2
from s2mmu.arch.params import (
    Granule,
    VARange,
    clamp_txsz,
    get_s1_ttw_params,
    get_s2_ttw_params,
    impdef_register_encodings,
    physical_address_size,
    s1_max_txsz,
    s1_min_txsz,
    s1_start_level,
    s2_inconsistent_sl,
    s2_invalid_sl,
    s2_min_txsz,
    s2_start_level,
    tg0_granule,
    tg1_granule,
    txsz_faults,
)
from s2mmu.arch.registers import HCR_EL2, SCTLR_EL1, TCR_EL1, TCR_EL2_E2H0, VTCR_EL2
from s2mmu.arch.state import Regime, SysRegs

from .machine import tcr_el1, vtcr

G4, G16, G64 = Granule.G4K, Granule.G16K, Granule.G64K
QEMU = qemu_7_2_max()
NO_TTST = QEMU.with_features(remove=("FEAT_TTST",))


def test_granule_sizes_and_strides():
    assert [(g.bits, g.stride, g.size) for g in (G4, G16, G64)] == [
        (12, 9, 4096), (14, 11, 16384), (16, 13, 65536)]


@pytest.mark.parametrize(("granule", "level", "size"), [
    (G4, 3, 4 << 10), (G4, 2, 2 << 20), (G4, 1, 1 << 30), (G4, 0, 512 << 30),
    (G16, 3, 16 << 10), (G16, 2, 32 << 20), (G16, 1, 64 << 30),
    (G64, 3, 64 << 10), (G64, 2, 512 << 20), (G64, 1, 4 << 40),
])
def test_block_sizes(granule, level, size):
    assert granule.block_size(level) == size


# (granule, TxSZ, start level): the boundaries of each start level (Arm ARM tables of
# the initial lookup level for each granule and input size).
S1_START = [
    (G4, 12, -1), (G4, 15, -1), (G4, 16, 0), (G4, 24, 0), (G4, 25, 1), (G4, 33, 1),
    (G4, 34, 2), (G4, 42, 2), (G4, 43, 3), (G4, 48, 3),
    (G16, 12, 0), (G16, 16, 0), (G16, 17, 1), (G16, 27, 1), (G16, 28, 2), (G16, 38, 2),
    (G16, 39, 3), (G16, 48, 3),
    (G64, 12, 1), (G64, 21, 1), (G64, 22, 2), (G64, 34, 2), (G64, 35, 3), (G64, 47, 3),
]


@pytest.mark.parametrize(("granule", "txsz", "level"), S1_START)
def test_s1_start_level(granule, txsz, level):
    assert s1_start_level(granule, txsz) == level


@pytest.mark.parametrize(("granule", "sl0", "sl2", "level"), [
    (G4, 0b00, 0, 2), (G4, 0b01, 0, 1), (G4, 0b10, 0, 0), (G4, 0b11, 0, 3), (G4, 0b00, 1, -1),
    (G16, 0b00, 0, 3), (G16, 0b01, 0, 2), (G16, 0b10, 0, 1), (G16, 0b11, 0, 0),
    (G64, 0b00, 0, 3), (G64, 0b01, 0, 2), (G64, 0b10, 0, 1),
])
def test_s2_start_level_from_sl0_sl2(granule, sl0, sl2, level):
    assert s2_start_level(granule, sl0, sl2) == level


@pytest.mark.parametrize(("granule", "sl0", "sl2", "ds", "fs"), [
    (G4, 0b01, 1, True, QEMU),        # SL2=1 needs SL0=0
    (G4, 0b10, 1, True, QEMU),
    (G4, 0b00, 1, False, QEMU),       # SL2 without DS
    (G4, 0b10, 0, False, FeatureSet(frozenset(), pa_bits=42)),   # level 0 needs PA >= 44
    (G4, 0b11, 0, False, NO_TTST),    # level 3 needs FEAT_TTST
    (G16, 0b11, 0, False, QEMU),      # level 0 needs DS
    (G16, 0b10, 0, False, FeatureSet(frozenset(), pa_bits=40)),  # level 1 needs PA >= 42
    (G64, 0b11, 0, False, QEMU),      # reserved
    (G64, 0b10, 0, False, FeatureSet(frozenset(), pa_bits=42)),  # level 1 needs PA >= 44
])
def test_s2_invalid_sl(granule, sl0, sl2, ds, fs):
    assert s2_invalid_sl(granule, sl0, sl2, ds, fs)


@pytest.mark.parametrize(("granule", "sl0", "sl2", "ds", "fs"), [
    (G4, 0b00, 1, True, QEMU), (G4, 0b10, 0, False, FeatureSet(frozenset(), pa_bits=44)),
    (G4, 0b11, 0, False, QEMU), (G16, 0b11, 0, True, QEMU),
    (G16, 0b10, 0, False, FeatureSet(frozenset(), pa_bits=42)), (G64, 0b10, 0, False, QEMU),
])
def test_s2_valid_sl(granule, sl0, sl2, ds, fs):
    assert s2_invalid_sl(granule, sl0, sl2, ds, fs) == ""


def test_s2_invalid_sl_messages():
    assert s2_invalid_sl(G64, 0b11, 0, False, QEMU) == "SL0=0b11 is reserved for 64KB"
    assert s2_invalid_sl(G4, 0b11, 0, False, NO_TTST) == "SL0=0b11 (level 3) needs FEAT_TTST"


# (granule, start level, smallest and largest IPA size it accepts): one bit resolved at
# least, one full stride plus 16 concatenated tables at most.
@pytest.mark.parametrize(("granule", "level", "lo", "hi"), [
    (G4, -1, 49, 61), (G4, 0, 40, 52), (G4, 1, 31, 43), (G4, 2, 22, 34), (G4, 3, 13, 25),
    (G16, 0, 48, 62), (G16, 1, 37, 51), (G16, 2, 26, 40), (G16, 3, 15, 29),
    (G64, 1, 43, 59), (G64, 2, 30, 46), (G64, 3, 17, 33),
])
def test_s2_inconsistent_sl_bounds(granule, level, lo, hi):
    assert s2_inconsistent_sl(granule, level, 64 - lo) == ""
    assert s2_inconsistent_sl(granule, level, 64 - hi) == ""
    assert s2_inconsistent_sl(granule, level, 64 - (lo - 1))
    assert s2_inconsistent_sl(granule, level, 64 - (hi + 1))


def test_s2_inconsistent_sl_message():
    assert s2_inconsistent_sl(G4, 1, 16) == (
        "an IPA of 48 bits cannot start at level 1 (31..43 bits)")


def test_s1_txsz_limits():
    assert s1_min_txsz(G4, False, QEMU) == 16
    assert s1_min_txsz(G4, True, QEMU) == 12
    assert s1_min_txsz(G16, True, QEMU) == 12
    assert s1_min_txsz(G64, False, QEMU) == 12          # FEAT_LVA
    assert s1_min_txsz(G64, False, server_v8_2()) == 16
    assert s1_max_txsz(G4, QEMU) == 48 and s1_max_txsz(G16, QEMU) == 48
    assert s1_max_txsz(G64, QEMU) == 47
    assert s1_max_txsz(G4, server_v8_2()) == 39          # no FEAT_TTST


def test_s2_min_txsz_follows_pamax():
    assert s2_min_txsz(G4, False, QEMU) == 16            # 48-bit without DS
    assert s2_min_txsz(G4, True, QEMU) == 12
    assert s2_min_txsz(G64, False, QEMU) == 12           # FEAT_LPA
    assert s2_min_txsz(G4, False, server_v8_2()) == 16
    assert s2_min_txsz(G4, False, FeatureSet(frozenset(), pa_bits=40)) == 24


def test_txsz_below_minimum_must_fault_with_lva_or_lpa():
    clamp = ImplChoices(txsz_out_of_range="clamp")
    assert txsz_faults(15, 16, 39, True, clamp)
    assert not txsz_faults(15, 16, 39, False, clamp)
    assert txsz_faults(15, 16, 39, False, DEFAULT_CHOICES)


def test_txsz_above_maximum_is_the_implementation_choice():
    assert txsz_faults(40, 16, 39, True, DEFAULT_CHOICES)
    assert not txsz_faults(40, 16, 39, True, ImplChoices(txsz_out_of_range="clamp"))
    assert not txsz_faults(39, 16, 39, True, DEFAULT_CHOICES)
    assert clamp_txsz(40, 16, 39) == 39 and clamp_txsz(10, 16, 39) == 16


@pytest.mark.parametrize(("ps", "bits"), [(0, 32), (1, 36), (2, 40), (3, 42), (4, 44),
                                          (5, 48), (6, 52), (7, 52)])
def test_physical_address_size_64k_lpa(ps, bits):
    assert physical_address_size(ps, G64, QEMU) == bits


def test_physical_address_size_caps():
    assert physical_address_size(6, G4, QEMU) == 52                     # FEAT_LPA2
    assert physical_address_size(6, G4, server_v8_2()) == 48            # no LPA2
    assert physical_address_size(6, G64, QEMU.with_features(remove=("FEAT_LPA",))) == 48
    assert physical_address_size(5, G4, FeatureSet(frozenset(), pa_bits=40)) == 40


def test_tg_decoding():
    assert [tg0_granule(v, QEMU, DEFAULT_CHOICES) for v in range(4)] == [G4, G64, G16, G4]
    assert [tg1_granule(v, QEMU, DEFAULT_CHOICES) for v in range(4)] == [G4, G16, G4, G64]
    only64 = FeatureSet(frozenset(), granules=frozenset({64}))
    assert tg0_granule(0, only64, ImplChoices(reserved_tg_granule=64)) is G64


def regs_el1(**kw):
    base = dict(TCR_EL1=tcr_el1(25, G4, t1sz=20, granule1=G16), SCTLR_EL1=0x30D00801,
                MAIR_EL1=0x44FF, TTBR0_EL1=0x1000, TTBR1_EL1=0x2000)
    base.update(kw)
    return SysRegs(**base)


def test_va_bit55_selects_ttbr1():
    regs = regs_el1()
    p0 = get_s1_ttw_params(regs, Regime.EL10, 0x0000_0012_3456_7000, QEMU, DEFAULT_CHOICES)
    p1 = get_s1_ttw_params(regs, Regime.EL10, 0xFFFF_F012_3456_7000, QEMU, DEFAULT_CHOICES)
    assert (p0.varange, p0.ttb, p0.txsz, p0.tgx) == (VARange.LOWER, 0x1000, 25, G4)
    assert (p1.varange, p1.ttb, p1.txsz, p1.tgx) == (VARange.UPPER, 0x2000, 20, G16)
    # Bit 55 decides, not bit 63.
    p = get_s1_ttw_params(regs, Regime.EL10, 0x0080_0000_0000_0000, QEMU, DEFAULT_CHOICES)
    assert p.varange is VARange.UPPER


def test_el1_params_read_tcr_bits():
    tcr = tcr_el1(16, G4, HA=1, HD=1, TBI0=1, HPD0=1, E0PD0=1, DS=1)
    p = get_s1_ttw_params(regs_el1(TCR_EL1=tcr), Regime.EL10, 0, QEMU, DEFAULT_CHOICES)
    assert (p.ha, p.hd, p.tbi, p.hpd, p.e0pd, p.ds, p.epd) == (True,) * 6 + (False,)
    assert (p.ps, p.ps_raw, p.mmu_on, p.sctlr_c) == (48, 0b101, True, False)


def test_hd_needs_ha():
    tcr = tcr_el1(16, G4, HD=1)
    p = get_s1_ttw_params(regs_el1(TCR_EL1=tcr), Regime.EL10, 0, QEMU, DEFAULT_CHOICES)
    assert (p.ha, p.hd) == (False, False)


def test_features_gate_params():
    tcr = tcr_el1(16, G4, HA=1, HD=1, HPD0=1, E0PD0=1, DS=1)
    regs = regs_el1(TCR_EL1=tcr, SCTLR_EL1=SCTLR_EL1.encode(EPAN=1, M=1))
    p = get_s1_ttw_params(regs, Regime.EL10, 0, FeatureSet(frozenset()), DEFAULT_CHOICES)
    assert (p.ha, p.hd, p.hpd, p.e0pd, p.ds, p.epan) == (False,) * 6
    p3 = get_s1_ttw_params(regs, Regime.EL10, 0, QEMU.with_features("FEAT_PAN3"),
                           DEFAULT_CHOICES)
    assert p3.epan


def test_ds_ignored_for_64k():
    tcr = tcr_el1(16, G64, DS=1)
    assert not get_s1_ttw_params(regs_el1(TCR_EL1=tcr), Regime.EL10, 0, QEMU,
                                 DEFAULT_CHOICES).ds


def test_hcr_dc_and_tge_turn_el10_stage1_off():
    for hcr in (HCR_EL2.encode(RW=1, DC=1), HCR_EL2.encode(RW=1, TGE=1)):
        p = get_s1_ttw_params(regs_el1(HCR_EL2=hcr), Regime.EL10, 0, QEMU, DEFAULT_CHOICES)
        assert not p.mmu_on


def test_el2_single_range_params():
    tcr = TCR_EL2_E2H0.encode(T0SZ=25, TG0=0b10, PS=0b010, TBI=1, HA=1, HD=1, HPD=1, DS=1)
    regs = SysRegs(TCR_EL2=tcr, TTBR0_EL2=0x5000, TTBR1_EL2=0x9000, SCTLR_EL2=0x30C50831)
    p = get_s1_ttw_params(regs, Regime.EL2, 0xFFFF_0000_0000_0000, QEMU, DEFAULT_CHOICES)
    assert (p.varange, p.ttb, p.txsz, p.tgx, p.ps) == (VARange.LOWER, 0x5000, 25, G16, 40)
    assert (p.tbi, p.ha, p.hd, p.hpd, p.ds, p.epd, p.e0pd, p.epan) == (
        True, True, True, True, True, False, False, False)


def test_el20_uses_tcr_el2_in_el1_layout():
    tcr = TCR_EL1.encode(T0SZ=20, TG0=0, T1SZ=30, TG1=0b10, IPS=0b001, DS=1, HA=1)
    regs = SysRegs(HCR_EL2=HCR_EL2.encode(RW=1, E2H=1), TCR_EL2=tcr, TTBR1_EL2=0x7000)
    p = get_s1_ttw_params(regs, Regime.EL20, 0xFFFF_FFF0_0000_0000, QEMU, DEFAULT_CHOICES)
    assert (p.varange, p.ttb, p.txsz, p.ps, p.ds, p.ha) == (
        VARange.UPPER, 0x7000, 30, 36, True, True)


def test_s2_params():
    regs = SysRegs(VTCR_EL2=vtcr(24, 1, G4, ps=0b010, DS=1, SL2=1, HA=1, HD=1),
                   VTTBR_EL2=0x6000_0000, HCR_EL2=HCR_EL2.encode(RW=1, VM=1, FWB=1, CD=1),
                   SCTLR_EL2=0x30C50830 | (1 << 25))
    p = get_s2_ttw_params(regs, QEMU, DEFAULT_CHOICES)
    assert (p.tgx, p.txsz, p.sl0, p.sl2, p.ds, p.ps, p.ha, p.hd) == (
        G4, 24, 1, 1, True, 40, True, True)
    assert (p.fwb, p.cd, p.id, p.ee, p.ttb) == (True, True, False, True, 0x6000_0000)
    nofwb = get_s2_ttw_params(regs, server_v8_2(), DEFAULT_CHOICES)
    assert (nofwb.fwb, nofwb.ds, nofwb.sl2) == (False, False, 0)


def test_sl2_ignored_without_ds():
    regs = SysRegs(VTCR_EL2=VTCR_EL2.encode(SL2=1))
    assert get_s2_ttw_params(regs, QEMU, DEFAULT_CHOICES).sl2 == 0


def test_unimplemented_granule_falls_back_to_the_smallest_implemented():
    fs = FeatureSet(frozenset(), granules=frozenset({16, 64}))
    assert tg0_granule(0b00, fs, DEFAULT_CHOICES) is G16
    assert tg0_granule(0b11, fs, DEFAULT_CHOICES) is G16


# ImplChoices that register values reach (ASL S1DecodeTG0/TG1, S2DecodeTG0, S1/S2TxSZFaults)

S1_ON = 0x30D00801


def _impdef(regime: Regime, va: int, fs: FeatureSet | None = None, **regs: int) -> list[str]:
    return impdef_register_encodings(SysRegs(**regs), regime, va, fs or qemu_7_2_max(),
                                     DEFAULT_CHOICES)


def test_reserved_tg0_is_an_impdef_granule() -> None:
    (why,) = _impdef(Regime.EL10, 0, SCTLR_EL1=S1_ON, TCR_EL1=0xC010)
    assert why.startswith("TCR_EL1.TG0=0b11 is reserved (ASL AArch64.S1DecodeTG0")


def test_reserved_tg1_counts_only_for_upper_range_vas() -> None:
    assert _impdef(Regime.EL10, 0x1000, SCTLR_EL1=S1_ON, TCR_EL1=0x100010) == []
    (why,) = _impdef(Regime.EL10, 1 << 55, SCTLR_EL1=S1_ON, TCR_EL1=0x100010)
    assert why.startswith("TCR_EL1.TG1=0b00 is reserved (ASL AArch64.S1DecodeTG1")


def test_el2_regime_reads_tcr_el2_tg0() -> None:
    (why,) = _impdef(Regime.EL2, 0, SCTLR_EL2=0x30C50831, TCR_EL2=0x8080C010)
    assert why.startswith("TCR_EL2.TG0=0b11 is reserved")


def test_unimplemented_granule_is_an_impdef_granule() -> None:
    fs = FeatureSet(frozenset(), 48, frozenset({4, 64}))
    (why,) = _impdef(Regime.EL10, 0, fs, SCTLR_EL1=S1_ON, TCR_EL1=0x8010)
    assert why.startswith("TCR_EL1.TG0=0b10 selects the 16KB granule, which is not implemented")


def test_stage_1_off_reaches_no_stage_1_choice() -> None:
    assert _impdef(Regime.EL10, 0, TCR_EL1=0xC03F) == []


def test_txsz_below_minimum_with_feat_lva_must_fault_so_is_no_choice() -> None:
    assert _impdef(Regime.EL10, 0, SCTLR_EL1=S1_ON, TCR_EL1=0x0) == []
    (why,) = _impdef(Regime.EL10, 0, server_v8_2(), SCTLR_EL1=S1_ON, TCR_EL1=0x0)
    assert why.startswith("TCR_EL1.T0SZ=0 is outside 16..39 (ASL AArch64.S1TxSZFaults")


def test_vtcr_tg0_counts_when_stage_2_is_on() -> None:
    assert _impdef(Regime.EL10, 0, VTCR_EL2=0x8000C018) == []
    (why,) = _impdef(Regime.EL10, 0, HCR_EL2=0x80000001, VTCR_EL2=0x8000C018)
    assert why.startswith("VTCR_EL2.TG0=0b11 is reserved (ASL AArch64.S2DecodeTG0")


def _bit_calls(module: str):
    """Yield the first argument of every bit()/bits() call in an arch module's source."""
    import ast
    from pathlib import Path

    import s2mmu.arch as arch_pkg

    tree = ast.parse((Path(arch_pkg.__file__).parent / module).read_text())
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("bit", "bits")):
            yield ast.unparse(node.args[0])


def test_params_reads_no_register_bit_by_number():
    # Register fields come from the declarations in arch/registers.py; only the VA's
    # bit 55 (the range select) is read by number.
    assert set(_bit_calls("params.py")) == {"va"}


def test_translate_reads_no_register_bit_by_number():
    assert not [arg for arg in _bit_calls("translate.py") if arg.startswith("regs.")]


def test_el20_reads_tcr_el2_with_the_two_range_layout():
    regs = SysRegs(HCR_EL2=(1 << 34) | (1 << 27), TCR_EL2=(25 << 16) | (2 << 30) | 20,
                   SCTLR_EL2=0x30C50831)
    upper = get_s1_ttw_params(regs, Regime.EL20, 0xFFFF_FF80_0000_0000, qemu_7_2_max(),
                              DEFAULT_CHOICES)
    lower = get_s1_ttw_params(regs, Regime.EL20, 0x1000, qemu_7_2_max(), DEFAULT_CHOICES)
    assert (upper.txsz, lower.txsz) == (25, 20)


def test_hw_update_input_gates_ha_and_hd_not_the_feature_set():
    from s2mmu.arch.config import DEFAULT_CHOICES
    from s2mmu.arch.features import HwUpdate, qemu_7_2_max
    from s2mmu.arch.params import get_s1_ttw_params, get_s2_ttw_params
    from s2mmu.arch.registers import TCR_EL1, VTCR_EL2
    from s2mmu.arch.state import Regime, SysRegs
    regs = SysRegs(TCR_EL1=TCR_EL1.encode(HA=1, HD=1, T0SZ=16),
                   VTCR_EL2=VTCR_EL2.encode(HA=1, HD=1, T0SZ=24, SL0=1))
    fs = qemu_7_2_max()
    only_s2_af = HwUpdate(s1_af=False, s1_dirty=False, s2_af=True, s2_dirty=False)
    p1 = get_s1_ttw_params(regs, Regime.EL10, 0, fs, DEFAULT_CHOICES, only_s2_af)
    p2 = get_s2_ttw_params(regs, fs, DEFAULT_CHOICES, only_s2_af)
    assert (p1.ha, p1.hd, p2.ha, p2.hd) == (False, False, True, False)
    p1 = get_s1_ttw_params(regs, Regime.EL10, 0, fs, DEFAULT_CHOICES)
    assert (p1.ha, p1.hd) == (True, True)
