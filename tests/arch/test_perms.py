"""Stage-1 and stage-2 direct permissions (AP, XN, table controls, PAN, WXN, S2AP, XNX)."""

import pytest

from s2mmu.arch.access import AccessDescriptor, AccessType, acc_at, acc_gpr, acc_ifetch
from s2mmu.arch.config import DEFAULT_CHOICES
from s2mmu.arch.descriptors import Page, Table
from s2mmu.arch.features import qemu_7_2_max
from s2mmu.arch.params import get_s1_ttw_params
from s2mmu.arch.perms import (
    S1Perms,
    S2Perms,
    pan_applies,
    s1_direct_permissions,
    s1_permission_ok,
    s2_direct_permissions,
    s2_permission_ok,
    table_controls,
)
from s2mmu.arch.registers import SCTLR_EL1, TCR_EL2_E2H0
from s2mmu.arch.state import Regime, SysRegs
from s2mmu.arch.walk import TTWState

from .machine import tcr_el1

AP_RO, AP_EL0 = 1 << 7, 1 << 6
PXN, UXN, DBM = 1 << 53, 1 << 54, 1 << 51
APTABLE0, APTABLE1, UXNTABLE, PXNTABLE = 1 << 61, 1 << 62, 1 << 60, 1 << 59
QEMU = qemu_7_2_max()


def state(leaf: int, *tables: int, stage: int = 1) -> TTWState:
    return TTWState(stage, Page(leaf | 0x403, 3, 0),
                    tuple(Table(t | 3, i, 0) for i, t in enumerate(tables)), 0, ())


def params(regime=Regime.EL10, fs=QEMU, sctlr=0x30D00801, **tcr):
    if regime is Regime.EL2:
        regs = SysRegs(TCR_EL2=TCR_EL2_E2H0.encode(T0SZ=16, **tcr), SCTLR_EL2=sctlr)
    else:
        regs = SysRegs(TCR_EL1=tcr_el1(16, **tcr), SCTLR_EL1=sctlr)
    return get_s1_ttw_params(regs, regime, 0, fs, DEFAULT_CHOICES)


def perms(leaf, *tables, **kw) -> S1Perms:
    return s1_direct_permissions(state(leaf, *tables), params(**kw))


# AP[2:1] for the two-range regimes: (pr, pw, ur, uw); px is off whenever EL0 can write.
@pytest.mark.parametrize(("ap", "expect"), [
    (0, S1Perms(True, True, True, False, False, True)),
    (AP_EL0, S1Perms(True, True, False, True, True, True)),
    (AP_RO, S1Perms(True, False, True, False, False, True)),
    (AP_RO | AP_EL0, S1Perms(True, False, True, True, False, True)),
])
def test_ap_two_range(ap, expect):
    assert perms(ap) == expect


def test_pxn_and_uxn():
    p = perms(AP_RO | AP_EL0 | PXN)
    assert (p.px, p.ux) == (False, True)
    p = perms(AP_RO | AP_EL0 | UXN)
    assert (p.px, p.ux) == (True, False)


def test_aptable0_removes_el0_access():
    p = perms(AP_EL0, APTABLE0)
    assert (p.pr, p.pw, p.ur, p.uw) == (True, True, False, False)
    assert p.px   # no longer EL0-writable


def test_aptable1_removes_write_at_both_els():
    p = perms(AP_EL0, 0, APTABLE1)
    assert (p.pr, p.pw, p.ur, p.uw) == (True, False, True, False)


def test_xn_tables_accumulate_over_the_walk():
    p = perms(0, UXNTABLE, PXNTABLE)
    assert (p.px, p.ux) == (False, False)
    assert table_controls(state(0, APTABLE0, APTABLE1 | UXNTABLE), hpd=False) == (0b11, 1, 0)


def test_hpd_ignores_every_hierarchical_control():
    p = perms(AP_EL0, APTABLE0 | APTABLE1 | UXNTABLE | PXNTABLE, HPD0=1)
    assert p == S1Perms(True, True, False, True, True, True)
    assert table_controls(state(0, APTABLE0), hpd=True) == (0, 0, 0)


def test_el2_one_range_ap_and_xn():
    # AP[1] is ignored (no EL0); AP[2] makes it read-only; XN is bit 54, bit 53 ignored.
    assert perms(AP_EL0 | PXN, regime=Regime.EL2) == S1Perms(True, True, True, False, False,
                                                              False)
    assert perms(AP_RO | UXN, regime=Regime.EL2) == S1Perms(True, False, False, False, False,
                                                             False)


def test_el2_one_range_table_controls():
    # APTable[0] and PXNTable are ignored; APTable[1] makes it read-only; XNTable bit 60.
    assert perms(0, APTABLE0 | PXNTABLE, regime=Regime.EL2).pw
    p = perms(0, APTABLE1 | UXNTABLE, regime=Regime.EL2)
    assert (p.pw, p.px) == (False, False)


def test_dbm_page_is_writable_only_with_ha_and_hd():
    assert perms(AP_RO | DBM, HA=1, HD=1).pw
    assert not perms(AP_RO | DBM, HA=1).pw
    assert not perms(AP_RO, HA=1, HD=1).pw


def test_pan_applies_to_el0_accessible_pages_only():
    pan = acc_gpr(1, False, pan=True)
    assert pan_applies(perms(AP_EL0), params(), pan)
    assert pan_applies(perms(AP_RO | AP_EL0), params(), pan)
    assert not pan_applies(perms(0), params(), pan)
    assert not pan_applies(perms(AP_EL0), params(), acc_gpr(1, False))


def test_epan_extends_pan_to_el0_executable_pages():
    # AP=00 (no EL0 data access) but UXN=0: EL0 can execute it.
    pan = acc_at(1, False, pan=True)
    epan_fs = QEMU.with_features("FEAT_PAN3")
    sctlr = 0x30D00801 | SCTLR_EL1.encode(EPAN=1)
    assert not pan_applies(perms(0), params(), pan)
    p = params(fs=epan_fs, sctlr=sctlr)
    assert pan_applies(s1_direct_permissions(state(0), p), p, pan)
    assert not pan_applies(s1_direct_permissions(state(UXN), p), p, pan)
    # SCTLR.EPAN without FEAT_PAN3 does nothing.
    p = params(sctlr=sctlr)
    assert not pan_applies(s1_direct_permissions(state(0), p), p, pan)


def test_pan_never_applies_in_el2_regime():
    p = params(Regime.EL2)
    assert not pan_applies(S1Perms(True, True, True, True, True, True), p,
                           acc_gpr(2, False, pan=True))


def test_permission_check_uses_accessing_el():
    p = params()
    ro_el0 = s1_direct_permissions(state(AP_RO | AP_EL0), p)
    assert s1_permission_ok(ro_el0, p, acc_at(0, False))
    assert not s1_permission_ok(ro_el0, p, acc_at(0, True))
    priv = s1_direct_permissions(state(0), p)
    assert s1_permission_ok(priv, p, acc_at(1, True))
    assert not s1_permission_ok(priv, p, acc_at(0, False))


def test_pan_denies_privileged_data_not_el0():
    p = params()
    rw_el0 = s1_direct_permissions(state(AP_EL0), p)
    assert not s1_permission_ok(rw_el0, p, acc_at(1, False, pan=True))
    assert not s1_permission_ok(rw_el0, p, acc_at(1, True, pan=True))
    assert s1_permission_ok(rw_el0, p, acc_at(1, False, pan=False))
    assert s1_permission_ok(rw_el0, p, acc_at(0, False, pan=True))


def test_wxn_removes_execute_from_writable_pages_only():
    p = params(sctlr=0x30D00801 | SCTLR_EL1.encode(WXN=1))
    rw = s1_direct_permissions(state(0), p)
    assert not s1_permission_ok(rw, p, acc_ifetch(1))
    assert s1_permission_ok(rw, p, acc_gpr(1, False))
    ro = s1_direct_permissions(state(AP_RO), p)
    assert s1_permission_ok(ro, p, acc_ifetch(1))
    # WXN applies to the accessing EL: EL0 cannot write an AP=00 page, so its
    # execute permission (UXN=0) stays.
    assert s1_permission_ok(rw, p, acc_ifetch(0))


def test_at_never_checks_execute():
    p = params()
    xn = s1_direct_permissions(state(PXN | UXN), p)
    assert s1_permission_ok(xn, p, acc_at(1, False))


# Stage 2 ---------------------------------------------------------------------------

@pytest.mark.parametrize(("xn", "xnx", "px", "ux"), [
    (0b00, True, True, True), (0b01, True, False, True), (0b10, True, False, False),
    (0b11, True, True, False),
    (0b01, False, True, True), (0b10, False, False, False), (0b11, False, False, False),
])
def test_s2_xn_with_and_without_xnx(xn, xnx, px, ux):
    p = s2_direct_permissions(state(xn << 53, stage=2), xnx, False, False)
    assert (p.px, p.ux) == (px, ux)


@pytest.mark.parametrize(("s2ap", "r", "w"), [(0, False, False), (1, True, False),
                                              (2, False, True), (3, True, True)])
def test_s2ap(s2ap, r, w):
    p = s2_direct_permissions(state(s2ap << 6, stage=2), True, False, False)
    assert (p.r, p.w) == (r, w)


def test_s2_dbm_is_writable_with_ha_and_hd():
    assert s2_direct_permissions(state((1 << 6) | DBM, stage=2), True, True, True).w
    assert not s2_direct_permissions(state((1 << 6) | DBM, stage=2), True, True, False).w


def test_s2_walk_access_needs_read_and_update_needs_write():
    walk_read = AccessDescriptor(AccessType.TTW, 1)
    walk_write = AccessDescriptor(AccessType.TTW, 1, write=True)
    assert s2_permission_ok(S2Perms(True, False, False, False), walk_read)
    assert not s2_permission_ok(S2Perms(False, True, True, True), walk_read)
    assert not s2_permission_ok(S2Perms(True, False, True, True), walk_write)
    assert s2_permission_ok(S2Perms(True, True, False, False), walk_write)


def test_s2_ifetch_uses_el_of_the_access():
    perms_ = S2Perms(True, True, px=False, ux=True)
    assert s2_permission_ok(perms_, acc_ifetch(0))
    assert not s2_permission_ok(perms_, acc_ifetch(1))


def test_s2_data_and_at():
    ro = S2Perms(True, False, True, True)
    assert s2_permission_ok(ro, acc_at(1, False))
    assert not s2_permission_ok(ro, acc_at(1, True))
    assert not s2_permission_ok(S2Perms(False, True, True, True), acc_gpr(1, False))



# ------------------------------------------------------------ FEAT_S1PIE / S1POE / S2PIE / S2POE
# Rule-level tests from the ASL read in rems-project/sail-arm arm-v9.4-a v8_base.sail:
# AArch64.S1IndirectBasePermissions, AArch64.S1OverlayPermissions,
# AArch64.S1ComputePermissions, AArch64.S1CheckPermissions, AArch64.S1POEnabled /
# S1E0POEnabled; the PIR_EL1 / POR_EL0 / S2PIR_EL2 field descriptions; KVM's at.c and
# QEMU's ptw.c where they agree with it.

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from s2mmu.arch.features import server_v9_4_pie  # noqa: E402
from s2mmu.arch.perms import (  # noqa: E402
    S1_PIE_PERMS,
    S2_PIE_PERMS,
    S1Denial,
    S2Denial,
    s1_check_permissions,
    s1_permissions,
    s2_check_permissions,
    s2_permissions,
)
from s2mmu.arch.registers import HCRX_EL2, TCR2_EL1, TCR2_EL2, VTCR_EL2  # noqa: E402

V94 = server_v9_4_pie()
TCR2_PIE, TCR2_E0POE, TCR2_POE = TCR2_EL1.encode(PIE=1), TCR2_EL1.encode(E0POE=1), \
    TCR2_EL1.encode(POE=1)
TCR2EN = HCRX_EL2.encode(TCR2En=1)
POR_ALL = 0x7777_7777  # Perm0..7 = RWX


def pie_params(regime=Regime.EL10, pir=0, pire0=0, tcr2=TCR2_PIE, hcrx=TCR2EN, fs=V94,
               sctlr=0x30D00801, por=0, por0=0, **tcr):
    if regime is Regime.EL10:
        regs = SysRegs(TCR_EL1=tcr_el1(16, **tcr), SCTLR_EL1=sctlr, TCR2_EL1=tcr2,
                       HCRX_EL2=hcrx, PIR_EL1=pir, PIRE0_EL1=pire0, POR_EL1=por,
                       POR_EL0=por0)
    else:
        regs = SysRegs(TCR_EL2=TCR_EL2_E2H0.encode(T0SZ=16, **tcr), SCTLR_EL2=sctlr,
                       TCR2_EL2=tcr2, PIR_EL2=pir, POR_EL2=por)
    return get_s1_ttw_params(regs, regime, 0, fs, DEFAULT_CHOICES)


def perm_reg(values: dict[int, int]) -> int:
    return sum(v << (4 * i) for i, v in values.items())


@pytest.mark.parametrize("perm", range(16))
def test_pir_encodings_match_the_pir_field_description(perm):
    # PIR_EL1 Perm<m>: 0001 R, 0010 X, 0011 RX, 0101 RW, 0110 RWX+WXN, 0111 RWX (all with
    # overlay); 1000 R, 1001 R (+GCS), 1010 RX, 1100 RW, 1110 RWX; 0000/0100/1011/1101/1111
    # no access.
    want = {0b0001: "R", 0b0010: "X", 0b0011: "RX", 0b0101: "RW", 0b0110: "RWX",
            0b0111: "RWX", 0b1000: "R", 0b1001: "R", 0b1010: "RX", 0b1100: "RW",
            0b1110: "RWX"}.get(perm, "")
    r, w, x, ov, wxn = S1_PIE_PERMS[perm]
    assert ("R" if r else "") + ("W" if w else "") + ("X" if x else "") == want
    assert ov == (perm < 8) and wxn == (perm == 0b0110)


def test_pie_indexes_pir_by_uxn_pxn_dbm_ap1():
    p = pie_params(pir=perm_reg({0b1011: 0b1100}), pire0=perm_reg({0b1011: 0b1000}))
    got = s1_permissions(state(UXN | DBM | AP_EL0), p)
    assert got.pi == 0b1011
    assert got.effective() == (True, True, False, True, False, False)
    assert s1_permissions(state(UXN | DBM), p).effective() == (False,) * 6


def test_pie_needs_tcr2_enabled_by_hcrx_for_el10():
    assert pie_params(hcrx=0).pie is False
    assert pie_params().pie is True
    assert pie_params(fs=V94.with_features(remove=("FEAT_TCR2",))).pie is False
    assert pie_params(regime=Regime.EL2, tcr2=TCR2_EL2.encode(PIE=1)).pie is True


def test_pie_forces_hpd():
    # at.c setup_s1_walk (hpd |= s1pie_enabled); S1IndirectBasePermissions reads no
    # table control.
    p = pie_params()
    assert p.hpd
    p = pie_params(pir=perm_reg({0: 0b1100}))
    assert s1_permissions(state(0, APTABLE1 | PXNTABLE), p).pw


@pytest.mark.parametrize("ppi,upi", [(0b1110, 0b1100), (0b1001, 0b1100), (0b1010, 0b1001)])
def test_pie_privileged_executable_and_el0_writable_is_no_access(ppi, upi):
    # S1IndirectBasePermissions: (px | pgcs) & (uw | ugcs) -> no access at either EL
    # (0b1001 is the GCS Perm).
    p = pie_params(pir=perm_reg({0: ppi}), pire0=perm_reg({0: upi}))
    assert s1_permissions(state(0), p).effective() == (False,) * 6


def test_pie_wxn_comes_from_perm_0110_not_sctlr():
    wxn_sctlr = 0x30D00801 | SCTLR_EL1.encode(WXN=1)
    fetch = acc_ifetch(1)
    p = pie_params(pir=perm_reg({0: 0b0110, 1: 0b1110}), sctlr=wxn_sctlr)
    assert s1_check_permissions(s1_permissions(state(0), p), p, fetch) is not None
    assert s1_check_permissions(s1_permissions(state(AP_EL0), p), p, fetch) is None


@pytest.mark.parametrize("upi,denied", [(0b0010, True), (0b0100, True), (0b0000, False),
                                         (0b1000, True)])
def test_pie_pan_applies_wherever_the_pire0_perm_is_not_zero(upi, denied):
    # S1IndirectBasePermissions: PSTATE.PAN == 1 && upi != 0b0000 -> (pr, pw) = (0, 0),
    # EPAN or not, even for a reserved (no access) Perm such as 0b0100.
    p = pie_params(pir=perm_reg({0: 0b1100}), pire0=perm_reg({0: upi}))
    got = s1_permissions(state(0), p)
    pan = AccessDescriptor(AccessType.GPR, 1, False, pan=True)
    assert (s1_check_permissions(got, p, pan) is not None) == denied
    assert s1_check_permissions(got, p, acc_gpr(1, False)) is None


def test_pie_ndirty_write_faults_without_hardware_dirty_state():
    p = pie_params(pir=perm_reg({0: 0b1100}))
    got = s1_permissions(state(AP_RO), p)
    denial = s1_check_permissions(got, p, acc_gpr(1, True), ndirty=True)
    assert denial is not None and denial.dirtybit
    hd = pie_params(pir=perm_reg({0: 0b1100}), HA=1, HD=1)
    assert s1_check_permissions(got, hd, acc_gpr(1, True), ndirty=True) is None
    assert s1_check_permissions(got, p, acc_gpr(1, False), ndirty=True) is None


def test_overlay_restricts_privileged_and_el0_by_poindex():
    p = pie_params(tcr2=TCR2_POE | TCR2_E0POE, por=perm_reg({5: 0b0001}),
                   por0=perm_reg({5: 0b0101}))
    got = s1_permissions(state(AP_EL0 | 5 << 60), p)
    assert got.poi == 5
    assert got.effective() == (True, False, False, True, True, False)
    denial = s1_check_permissions(got, p, acc_gpr(1, True))
    assert denial is not None and denial.overlay


def test_overlay_reserved_perm_is_no_access():
    p = pie_params(tcr2=TCR2_POE, por=perm_reg({0: 0b1111}))
    assert s1_permissions(state(0), p).effective()[:3] == (False, False, False)


def test_overlay_skips_pie_perms_with_bit3_set():
    # at.c: pov = poe && !(pp & BIT(3)).
    p = pie_params(tcr2=TCR2_PIE | TCR2_POE, pir=perm_reg({0: 0b1100, 1: 0b0101}))
    assert s1_permissions(state(0), p).pov is False
    assert s1_permissions(state(AP_EL0), p).pov is True
    assert s1_permissions(state(AP_EL0), p).effective()[:3] == (False, False, False)


def test_wxn_with_overlay_removes_write_not_execute():
    # S1ComputePermissions: overlay && wxn && ox -> ow = 0 (else wxn -> x = 0): the
    # write is refused as an overlay fault, the fetch is allowed.
    wxn = 0x30D00801 | SCTLR_EL1.encode(WXN=1)
    p = pie_params(tcr2=TCR2_POE, por=POR_ALL, sctlr=wxn)
    got = s1_permissions(state(0), p)
    denial = s1_check_permissions(got, p, acc_gpr(1, True))
    assert denial is not None and denial.overlay
    assert s1_check_permissions(got, p, acc_ifetch(1)) is None
    # An overlay without execute leaves WXN on execute: the write goes through.
    p = pie_params(tcr2=TCR2_POE, por=perm_reg({0: 0b0101}), sctlr=wxn)
    assert s1_check_permissions(s1_permissions(state(0), p), p, acc_gpr(1, True)) is None


def test_overlay_fault_is_checked_before_the_base_permissions():
    # S1CheckPermissions tests the overlay's write first: a write both refuse is an
    # overlay fault.
    p = pie_params(tcr2=TCR2_POE, por=perm_reg({0: 0b0001}))
    denial = s1_check_permissions(s1_permissions(state(AP_RO), p), p, acc_gpr(1, True))
    assert denial is not None and denial.overlay


def test_el2_regime_has_no_el0_pie_or_overlay():
    p = pie_params(regime=Regime.EL2, tcr2=TCR2_EL2.encode(PIE=1, POE=1, E0POE=1),
                   pir=perm_reg({0: 0b1000}))
    assert p.e0poe is False and p.pire0 == 0
    assert s1_permissions(state(0), p).effective() == (True, False, False, False, False, False)


@pytest.mark.parametrize("perm", range(16))
def test_s2pir_encodings_match_the_s2pir_field_description(perm):
    names = {0b0010: "MRO", 0b0011: "MRO", 0b0100: "WO", 0b0110: "MRO", 0b0111: "MRO",
             0b1000: "RO", 0b1001: "RO+uX", 0b1010: "RO+pX", 0b1011: "RO+puX", 0b1100: "RW",
             0b1101: "RW+uX", 0b1110: "RW+pX", 0b1111: "RW+puX"}
    r, w, px, ux, mro = S2_PIE_PERMS[perm]
    name = names.get(perm, "")
    assert mro == (name == "MRO")
    assert r == (name.startswith(("RO", "RW")) or mro) and w == name.startswith(("RW", "WO"))
    assert px == ("pX" in name or "puX" in name) and ux == ("uX" in name or "puX" in name)


def s2_params(s2pir=0, s2por=0, **vt):
    from s2mmu.arch.params import get_s2_ttw_params
    regs = SysRegs(VTCR_EL2=VTCR_EL2.encode(T0SZ=24, SL0=1, **vt), S2PIR_EL2=s2pir,
                   S2POR_EL1=s2por)
    return get_s2_ttw_params(regs, V94, DEFAULT_CHOICES)


def test_s2pie_indexes_by_xn_dbm_s2ap0_and_mro_allows_only_walk_updates():
    # PIIndex {bit 54, bit 53, bit 51, bit 6} (TF-RMM s2tt_ap.h); bit 7 is Dirty.
    p = s2_params(S2PIE=1, s2pir=perm_reg({0b0011: 0b0010}))
    got = s2_permissions(state(DBM | 1 << 6, stage=2), p, True)
    assert (got.r, got.w, got.mro) == (True, False, True)
    walk_update = AccessDescriptor(AccessType.TTW, 1, True)
    assert s2_permission_ok(got, walk_update)
    assert not s2_permission_ok(got, acc_gpr(1, True))


def test_s2pie_write_to_a_clean_location_needs_ha_and_hd():
    # S2CheckPermissions: write && (HA:HD) != 11 && s2pie && s2dirty == 0 -> dirtybit
    # (stage-1 walk updates included); bit 7 is Dirty.
    p = s2_params(S2PIE=1, s2pir=perm_reg({0: 0b1100}))
    got = s2_permissions(state(0, stage=2), p, True)
    assert s2_permission_ok(got, acc_gpr(1, True))
    assert s2_check_permissions(got, p, acc_gpr(1, True), dirty=False) == S2Denial(
        dirtybit=True, write=True)
    assert s2_check_permissions(got, p, acc_gpr(1, True), dirty=True) is None
    assert s2_check_permissions(got, p, acc_gpr(1, False), dirty=False) is None
    walk = AccessDescriptor(AccessType.TTW, 1, True)
    assert s2_check_permissions(got, p, walk, dirty=False) == S2Denial(dirtybit=True,
                                                                       write=True)
    hd = s2_params(S2PIE=1, s2pir=perm_reg({0: 0b1100}), HA=1, HD=1)
    assert s2_check_permissions(got, hd, acc_gpr(1, True), dirty=False) is None
    only_hd = s2_params(S2PIE=1, s2pir=perm_reg({0: 0b1100}), HD=1)
    assert s2_check_permissions(got, only_hd, acc_gpr(1, True), dirty=False) is not None


def test_s2poe_overlay_is_checked_first_and_only_under_s2pie():
    # S2ComputePermissions: the overlay applies only with S2PIE; S2CheckPermissions
    # checks it before the base permissions (an overlay fault).
    p = s2_params(S2PIE=1, S2POE=1, s2pir=perm_reg({0: 0b1111}), s2por=perm_reg({3: 0b1000}))
    got = s2_permissions(state(3 << 59, stage=2), p, True)
    assert got.effective() == (True, False, False, False)
    assert s2_check_permissions(got, p, acc_gpr(1, True)) == S2Denial(overlay=True, write=True)
    assert s2_check_permissions(got, p, acc_ifetch(1)) == S2Denial(overlay=True)
    assert s2_check_permissions(got, p, acc_gpr(1, False)) is None
    no_pie = s2_params(S2POE=1, s2por=perm_reg({3: 0b1000}))
    assert s2_permissions(state(3 << 59 | 0b11 << 6, stage=2), no_pie, True).ov is None


# ---- properties: a PIR table that says what the direct encoding says gives its answers

def _code(table, r, w, x, prefer_overlay=True, wxn=False):
    """Return a Perm encoding (R, W, X) with the overlay bit as preferred."""
    found = [c for c, (cr, cw, cx, ov, cwxn) in table.items()
             if (cr, cw, cx) == (r, w, x) and cwxn == (wxn and r and w and x)]
    found.sort(key=lambda c: (c >= 8) == prefer_overlay, reverse=True)
    return found[0] if found else None


def direct_pir(regime: Regime, wxn: bool, overlay: bool) -> tuple[int, int]:
    """Return (PIR, PIRE0) meaning what AP[1], PXN, UXN mean with AP[2]=0 and no table
    controls (PIIndex is {UXN, PXN, DBM, AP[1]}; DBM is then irrelevant)."""
    pir = pire0 = 0
    dp = params(regime=regime, fs=V94, sctlr=0x30D00801 | SCTLR_EL1.encode(EPAN=1))
    for idx in range(16):
        leaf = (idx >> 3) * UXN | (idx >> 2 & 1) * PXN | (idx >> 1 & 1) * DBM | (idx & 1) * AP_EL0
        d = s1_direct_permissions(state(leaf), dp)
        pir |= _code(S1_PIE_PERMS, d.pr, d.pw, d.px, overlay, wxn) << (4 * idx)
        if regime is not Regime.EL2:
            pire0 |= _code(S1_PIE_PERMS, d.ur, d.uw, d.ux, overlay, wxn) << (4 * idx)
    return pir, pire0


leaf_bits = st.builds(lambda ap1, pxn, uxn, dbm, poi: (
    AP_EL0 * ap1 | PXN * pxn | UXN * uxn | DBM * dbm | poi << 60),
    st.booleans(), st.booleans(), st.booleans(), st.booleans(), st.integers(0, 7))
accesses = st.builds(
    lambda kind, el, pan: (acc_ifetch(el) if kind == "x" else AccessDescriptor(
        AccessType.AT if kind.startswith("at") else AccessType.GPR, el, kind.endswith("w"),
        pan=pan)),
    st.sampled_from(["r", "w", "x", "atr", "atw"]), st.sampled_from([0, 1]), st.booleans())


@given(leaf=leaf_bits, access=accesses, wxn=st.booleans(),
       regime=st.sampled_from([Regime.EL10, Regime.EL2]))
def test_property_pir_equal_to_direct_gives_direct_answers(leaf, access, wxn, regime):
    sctlr = 0x30D00801 | SCTLR_EL1.encode(EPAN=1, WXN=int(wxn))
    if regime is Regime.EL2:
        access = AccessDescriptor(access.acctype, 2, access.write)
    pir, pire0 = direct_pir(regime, wxn, overlay=False)
    dp = params(regime=regime, fs=V94, sctlr=sctlr)
    tcr2 = TCR2_EL2.encode(PIE=1) if regime is Regime.EL2 else TCR2_PIE
    ip = pie_params(regime=regime, pir=pir, pire0=pire0, tcr2=tcr2, sctlr=sctlr)
    direct = s1_check_permissions(s1_permissions(state(leaf), dp), dp, access)
    indirect = s1_check_permissions(s1_permissions(state(leaf), ip), ip, access,
                                    ndirty=False)
    assert (direct is None) == (indirect is None)


@given(leaf=leaf_bits, access=accesses, pie=st.booleans(), ap2=st.booleans())
def test_property_all_permissive_overlay_changes_nothing(leaf, access, pie, ap2):
    # With WXN off (an overlay turns WXN into "no write where executable").
    leaf |= AP_RO * ap2
    pir, pire0 = direct_pir(Regime.EL10, False, overlay=True)
    base = TCR2_PIE if pie else 0
    sctlr = 0x30D00801 | SCTLR_EL1.encode(EPAN=1)
    plain = pie_params(pir=pir, pire0=pire0, tcr2=base, sctlr=sctlr)
    over = pie_params(pir=pir, pire0=pire0, tcr2=base | TCR2_POE | TCR2_E0POE, por=POR_ALL,
                      por0=POR_ALL, sctlr=sctlr)
    a = s1_permissions(state(leaf), plain)
    b = s1_permissions(state(leaf), over)
    assert a.effective() == b.effective()
    assert s1_check_permissions(a, plain, access) == s1_check_permissions(b, over, access)


def direct_s2pir() -> tuple[int, frozenset[int]]:
    """Return an S2PIR_EL2 meaning what S2AP[0] and XN[1:0] (FEAT_XNX) mean with S2AP[1]=1
    (PIIndex is {XN[1], XN[0], bit 51, S2AP[0]}; bit 51 is then irrelevant, and S2AP[1]
    is the Dirty bit, which refuses writes as S2AP[1]=0 does), and the PIIndex values it
    cannot say (S2PIR has no execute without read)."""
    pir, missing = 0, set()
    for idx in range(16):
        d = s2_direct_permissions(state((idx >> 2) << 53 | (idx & 1) << 6 | 1 << 7, stage=2),
                                  True, False, False)
        code = next((c for c, v in S2_PIE_PERMS.items()
                     if v == (d.r, d.w, d.px, d.ux, False)), None)
        if code is None:
            missing.add(idx)
        else:
            pir |= code << (4 * idx)
    return pir, frozenset(missing)


@given(xn=st.integers(0, 3), s2ap=st.integers(0, 3), poi=st.integers(0, 15),
       dbm=st.booleans(), kind=st.sampled_from(["r", "w", "x", "walk", "walkw"]),
       el=st.sampled_from([0, 1]))
def test_property_s2pir_equal_to_direct_gives_direct_answers(xn, s2ap, poi, dbm, kind, el):
    s2pir, missing = direct_s2pir()
    leaf = xn << 53 | s2ap << 6 | poi << 59 | DBM * dbm
    idx = xn << 2 | int(dbm) << 1 | (s2ap & 1)
    if idx in missing:
        assert s2ap & 1 == 0  # only "execute without read" is missing
        return
    access = (acc_ifetch(el) if kind == "x" else AccessDescriptor(
        AccessType.TTW if kind.startswith("walk") else AccessType.GPR, el,
        kind.endswith("w")))
    direct = s2_direct_permissions(state(leaf, stage=2), True, False, False)
    for p in (s2_params(S2PIE=1, s2pir=s2pir),
              s2_params(S2PIE=1, S2POE=1, s2pir=s2pir, s2por=0xFFFF_FFFF_FFFF_FFFF)):
        got = s2_permissions(state(leaf, stage=2), p, True)
        ok = s2_check_permissions(got, p, access, dirty=bool(s2ap & 0b10)) is None
        assert ok == s2_permission_ok(direct, access)


def test_tcr2_el1_needs_feat_hcx_for_hcrx_el2():
    assert pie_params(fs=V94.with_features(remove=("FEAT_HCX",))).pie is False


@pytest.mark.parametrize("por,want", [(0b0001, S1Denial(overlay=True, write=True)),
                                      (0b0100, S1Denial(overlay=True, write=False)),
                                      (0b0101, None)])
def test_atomic_checks_the_overlay_read_then_write(por, want):
    # S1CheckPermissions: accdesc.read && !or, then accdesc.write && !ow (an atomic
    # read-modify-write has both).
    from s2mmu.arch.access import acc_atomicop
    p = pie_params(tcr2=TCR2_POE, por=perm_reg({0: por}))
    assert s1_check_permissions(s1_permissions(state(0), p), p, acc_atomicop(1)) == want
