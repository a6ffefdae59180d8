"""Access permissions at stage 1 and stage 2 (direct permissions, no FEAT_S1PIE).

ASL: AArch64.S1ApplyTablePerms, AArch64.S1DirectBasePermissions,
AArch64.S1CheckPermissions, AArch64.S2DirectBasePermissions, AArch64.S2CheckPermissions.
Kernel: at.c compute_s1_direct_permissions / compute_par_s12 (evidence).
"""

from __future__ import annotations

from dataclasses import dataclass

from s2mmu.arch.access import AccessDescriptor, AccessType
from s2mmu.arch.descriptors import ap, ap_table, dbm, pxn, pxn_table, s2_xn, uxn, uxn_table
from s2mmu.arch.params import S1TTWParams
from s2mmu.arch.walk import TTWState


@dataclass(frozen=True)
class S1Perms:
    """Effective stage-1 permissions: privileged (p*) and unprivileged (u*)."""

    pr: bool
    pw: bool
    px: bool
    ur: bool
    uw: bool
    ux: bool


@dataclass(frozen=True)
class S2Perms:
    """Effective stage-2 permissions: read, write, and execute at EL1 and at EL0."""

    r: bool
    w: bool
    px: bool
    ux: bool


_S1_AP = {0b00: (True, True, False, False), 0b01: (True, True, True, True),
          0b10: (True, False, False, False), 0b11: (True, False, True, False)}
"""AP[2:1] -> (PR, PW, UR, UW) (ASL AArch64.S1DirectBasePermissions)."""

_S2_XN = {0b00: (True, True), 0b01: (False, True), 0b10: (False, False), 0b11: (True, False)}
"""XN[1:0] -> (PX, UX) with FEAT_XNX (ASL AArch64.S2DirectBasePermissions)."""


def table_controls(state: TTWState, hpd: bool) -> tuple[int, int, int]:
    """Return (APTable, UXNTable, PXNTable) ORed over the walk, or zeros with HPD.

    ASL: AArch64.S1ApplyTablePerms.
    """
    if hpd:
        return 0, 0, 0
    apt = uxt = pxt = 0
    for t in state.tables:
        apt |= ap_table(t.raw)
        uxt |= uxn_table(t.raw)
        pxt |= pxn_table(t.raw)
    return apt, uxt, pxt


def s1_direct_permissions(state: TTWState, params: S1TTWParams) -> S1Perms:
    """Return the stage-1 permissions of the leaf (ASL AArch64.S1DirectBasePermissions).

    With TCR.HA and TCR.HD set, a DBM page counts as writable (AP[2] read as 0):
    ASL AArch64.S1ApplyOutputPerms. WXN is applied per access in s1_permission_ok.
    """
    raw = state.leaf.raw
    apt, uxt, pxt = table_controls(state, params.hpd)
    ap21 = ap(raw)
    if params.ha and params.hd and dbm(raw):
        ap21 &= 0b01
    if not params.regime.has_el0():
        one_pw = not (ap21 & 0b10) and not (apt & 0b10)
        return S1Perms(True, one_pw, not (uxn(raw) or uxt), False, False, False)
    pr, pw, ur, uw = _S1_AP[ap21]
    if apt & 0b01:
        ur = uw = False
    if apt & 0b10:
        pw = uw = False
    px = not (pxn(raw) or pxt or uw)
    ux = not (uxn(raw) or uxt)
    return S1Perms(pr, pw, px, ur, uw, ux)


def pan_applies(perms: S1Perms, params: S1TTWParams, access: AccessDescriptor) -> bool:
    """Return whether PAN denies this privileged data access.

    Rule: with PSTATE.PAN=1 (access.pan) a privileged data access, or AT S1E1RP/WP, to
    a location EL0 can read or write faults; with FEAT_PAN3 and SCTLR_ELx.EPAN=1 also
    to a location EL0 can execute. Only regimes with EL0 have PAN. Execute is never
    affected. ASL: AArch64.S1DirectBasePermissions.
    """
    if not access.pan or not params.regime.has_el0():
        return False
    return perms.ur or perms.uw or (params.epan and perms.ux)


def s1_permission_ok(perms: S1Perms, params: S1TTWParams, access: AccessDescriptor) -> bool:
    """Return whether the access is permitted at stage 1 (ASL AArch64.S1CheckPermissions).

    AT instructions check read or write, never execute; an atomic read-modify-write
    needs both read and write. WXN removes execute from the
    accessing EL's permissions where that EL can write (ASL AArch64.S1ComputePermissions).
    """
    unpriv = access.el == 0 and params.regime.has_el0()
    r, w, x = (perms.ur, perms.uw, perms.ux) if unpriv else (perms.pr, perms.pw, perms.px)
    if not unpriv and pan_applies(perms, params, access):
        r = w = False
    if params.wxn and w:
        x = False
    if access.is_ifetch():
        return x
    if access.atomicop:   # ASL CreateAccDescAtomicOp: accdesc.read and accdesc.write
        return r and w
    return w if access.write else r


def s2_direct_permissions(state: TTWState, xnx: bool, ha: bool, hd: bool) -> S2Perms:
    """Return the stage-2 permissions of the leaf (ASL AArch64.S2DirectBasePermissions).

    S2AP[0] grants read, S2AP[1] write (a DBM page is writable when VTCR_EL2.HA and HD
    are set). XN[1:0] with FEAT_XNX: 00 executable at EL1 and EL0, 01 not at EL1,
    10 at neither, 11 not at EL0; without FEAT_XNX only XN[1] (bit 54) counts.
    """
    raw = state.leaf.raw
    s2ap = ap(raw)
    if ha and hd and dbm(raw):
        s2ap |= 0b10
    xn = s2_xn(raw)
    if not xnx:
        xn &= 0b10
    px, ux = _S2_XN[xn]
    return S2Perms(bool(s2ap & 0b01), bool(s2ap & 0b10), px, ux)


def s2_permission_ok(perms: S2Perms, access: AccessDescriptor) -> bool:
    """Return whether the access is permitted at stage 2 (ASL AArch64.S2CheckPermissions).

    A stage-1 table walk (acctype TTW) needs read permission, and write permission
    too when it updates the descriptor. An instruction fetch needs execute for the EL
    of the original access; an atomic read-modify-write needs read and write;
    everything else (AT included) needs read or write.
    """
    if access.acctype is AccessType.TTW:
        return perms.r and (perms.w or not access.write)
    if access.is_ifetch():
        return perms.ux if access.el == 0 else perms.px
    if access.atomicop:   # ASL CreateAccDescAtomicOp: accdesc.read and accdesc.write
        return perms.r and perms.w
    return perms.w if access.write else perms.r
