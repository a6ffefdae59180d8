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

