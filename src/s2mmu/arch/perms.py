"""Access permissions at stage 1 and stage 2: direct or indirect base permissions, overlays.

One path: the base permissions come from the descriptor's AP/PXN/UXN (direct) or, with
FEAT_S1PIE, from PIR_ELx/PIRE0_ELx indexed by the leaf's PIIndex (indirect); the stage-1
permission overlay (FEAT_S1POE, POR_ELx by POIndex) then restricts them; WXN and PAN
apply last. Stage 2 alike: S2AP/XN (direct) or S2PIR_EL2 (FEAT_S2PIE), then S2POR_EL1
(FEAT_S2POE). With the extensions off every answer is the direct encoding's.

ASL (rems-project/sail-arm arm-v9.4-a/src/v8_base.sail, read): AArch64.S1ApplyTablePerms,
AArch64.S1DirectBasePermissions, AArch64.S1IndirectBasePermissions,
AArch64.S1OverlayPermissions, AArch64.S1ComputePermissions, AArch64.S1CheckPermissions,
AArch64.S1POEnabled, AArch64.S1E0POEnabled; AArch64.S2DirectBasePermissions and the
stage-2 checks (the stage-2 indirect and overlay steps follow the S2PIR_EL2 field
description and QEMU ptw.c's S2PIE dirty check).
Kernel: at.c compute_s1_indirect_permissions, compute_s1_overlay_permissions,
compute_s1_permissions (evidence; where they differ from the ASL the ASL is followed).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from s2mmu.arch.access import AccessDescriptor, AccessType
from s2mmu.arch.bits import bit, bits
from s2mmu.arch.descriptors import ap, ap_table, dbm, pxn, pxn_table, s2_xn, uxn, uxn_table
from s2mmu.arch.params import S1TTWParams, S2TTWParams
from s2mmu.arch.walk import TTWState

POE_R, POE_X, POE_W = 1, 2, 4
"""Overlay permission bits of a POR_ELx Perm field (0b1xxx is reserved: no access)."""


@dataclass(frozen=True)
class S1Perms:
    """Stage-1 base permissions, privileged (p*) and unprivileged (u*), with their modifiers.

    pr..ux are the base permissions (direct or indirect, table controls applied). pwxn and
    uwxn are the WXN controls (direct: SCTLR_ELx.WXN, applying where the EL can write and
    execute; indirect: the Perm is 0b0110). pov and uov say the overlay applies
    (TCR2_ELx.POE/E0POE, and for an indirect Perm only with Perm<3>=0); po and uo are
    then the overlay permissions (POE_R | POE_X | POE_W). upi is the PIRE0 Perm of an
    indirect leaf (None for direct ones): PAN then refuses privileged data access
    wherever it is not 0b0000. pi is the leaf's PIIndex and poi its POIndex, where
    used. (ASL S1AccessControls holds the same for the accessing EL.)
    """

    pr: bool
    pw: bool
    px: bool
    ur: bool
    uw: bool
    ux: bool
    pwxn: bool = False
    uwxn: bool = False
    pov: bool = False
    uov: bool = False
    po: int = POE_R | POE_X | POE_W
    uo: int = POE_R | POE_X | POE_W
    upi: int | None = None
    pi: int | None = None
    poi: int | None = None

    def effective(self) -> tuple[bool, bool, bool, bool, bool, bool]:
        """Return (pr, pw, px, ur, uw, ux) with the overlays applied (ASL
        AArch64.S1OverlayPermissions), before WXN and PAN."""
        pr, pw, px, ur, uw, ux = self.pr, self.pw, self.px, self.ur, self.uw, self.ux
        if self.pov:
            pr, pw, px = (pr and bool(self.po & POE_R), pw and bool(self.po & POE_W),
                          px and bool(self.po & POE_X))
        if self.uov:
            ur, uw, ux = (ur and bool(self.uo & POE_R), uw and bool(self.uo & POE_W),
                          ux and bool(self.uo & POE_X))
        return pr, pw, px, ur, uw, ux


@dataclass(frozen=True)
class S2Perms:
    """Stage-2 permissions: read, write, and execute at EL1 and at EL0.

    mro: FEAT_S2PIE "mostly read-only": the hardware's stage-1 descriptor updates may
    write (ASL w_mmu) where other writes may not. ov: the stage-2 overlay's permissions
    (FEAT_S2POE, in the same form: r, w, px, ux, mro), None where no overlay applies.
    """

    r: bool
    w: bool
    px: bool
    ux: bool
    mro: bool = False
    ov: tuple[bool, bool, bool, bool, bool] | None = None

    def effective(self) -> tuple[bool, bool, bool, bool]:
        """Return (r, w, px, ux) with the overlay applied."""
        if self.ov is None:
            return self.r, self.w, self.px, self.ux
        o_r, o_w, o_px, o_ux, _ = self.ov
        return self.r and o_r, self.w and o_w, self.px and o_px, self.ux and o_ux


_S1_AP = {0b00: (True, True, False, False), 0b01: (True, True, True, True),
          0b10: (True, False, False, False), 0b11: (True, False, True, False)}
"""AP[2:1] -> (PR, PW, UR, UW) (ASL AArch64.S1DirectBasePermissions)."""

_S2_XN = {0b00: (True, True), 0b01: (False, True), 0b10: (False, False), 0b11: (True, False)}
"""XN[1:0] -> (PX, UX) with FEAT_XNX (ASL AArch64.S2DirectBasePermissions)."""

S1_PIE_PERMS: dict[int, tuple[bool, bool, bool, bool, bool]] = {
    0b0000: (False, False, False, True, False), 0b0001: (True, False, False, True, False),
    0b0010: (False, False, True, True, False), 0b0011: (True, False, True, True, False),
    0b0100: (False, False, False, True, False), 0b0101: (True, True, False, True, False),
    0b0110: (True, True, True, True, True), 0b0111: (True, True, True, True, False),
    0b1000: (True, False, False, False, False), 0b1001: (True, False, False, False, False),
    0b1010: (True, False, True, False, False), 0b1011: (False, False, False, False, False),
    0b1100: (True, True, False, False, False), 0b1101: (False, False, False, False, False),
    0b1110: (True, True, True, False, False), 0b1111: (False, False, False, False, False),
}
"""PIR_ELx/PIRE0_ELx Perm -> (R, W, X, overlay applies, WXN) (ASL
AArch64.S1IndirectBasePermissions; at.c set_perms; PIR_EL1 field description). Perm<3>
clear lets the overlay apply; 0b0110 is RWX with WXN; 0b1001 is R plus a GCS read, which
s2mmu (no FEAT_GCS) treats as R; 0b0100, 0b1011, 0b1101 and 0b1111 are reserved (no
access)."""

S2_PIE_PERMS: dict[int, tuple[bool, bool, bool, bool, bool]] = {
    0b0000: (False, False, False, False, False), 0b0001: (False, False, False, False, False),
    0b0010: (True, False, False, False, True), 0b0011: (True, False, False, False, True),
    0b0100: (False, True, False, False, False), 0b0101: (False, False, False, False, False),
    0b0110: (True, False, False, False, True), 0b0111: (True, False, False, False, True),
    0b1000: (True, False, False, False, False), 0b1001: (True, False, False, True, False),
    0b1010: (True, False, True, False, False), 0b1011: (True, False, True, True, False),
    0b1100: (True, True, False, False, False), 0b1101: (True, True, False, True, False),
    0b1110: (True, True, True, False, False), 0b1111: (True, True, True, True, False),
}
"""S2PIR_EL2/S2POR_EL1 Perm -> (R, W, pX, uX, MRO) (ASL AArch64.S2IndirectBasePermissions;
S2PIR_EL2 field description: RO/RW with pX, uX or puX; WO; MRO and its FEAT_THE
TopLevel variants, which s2mmu treats as MRO; 0b0001 and 0b0101 reserved, no access)."""


def perm_field(reg: int, index: int) -> int:
    """Return the 4-bit Perm<index> of a PIR/POR register."""
    return bits(reg, 4 * index + 3, 4 * index)


def s1_pi_index(raw: int) -> int:
    """Return a stage-1 leaf's PIIndex: {UXN, PXN, DBM, AP[1]} (bits 54, 53, 51, 6)."""
    return bit(raw, 54) << 3 | bit(raw, 53) << 2 | bit(raw, 51) << 1 | bit(raw, 6)


def s1_po_index(raw: int) -> int:
    """Return a stage-1 leaf's POIndex, bits [62:60]."""
    return bits(raw, 62, 60)


def s2_pi_index(raw: int) -> int:
    """Return a stage-2 leaf's PIIndex: bits 54, 53, 51 and 6 (TF-RMM s2tt_ap.h
    S2TTE_PI_INDEX_*_SHIFT); bit[7] is then the Dirty bit."""
    return bit(raw, 54) << 3 | bit(raw, 53) << 2 | bit(raw, 51) << 1 | bit(raw, 6)


def s2_po_index(raw: int) -> int:
    """Return a stage-2 leaf's POIndex, bits [62:59]."""
    return bits(raw, 62, 59)


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


def s1_permissions(state: TTWState, params: S1TTWParams) -> S1Perms:
    """Return the stage-1 permissions of the leaf: base (direct or indirect) and overlay.

    ASL: AArch64.S1ComputePermissions. params.pie selects the base encoding; params.poe
    and params.e0poe add the overlays (S1Perms.po/uo) where the base Perm allows them.
    """
    base = (s1_indirect_permissions(state, params) if params.pie
            else s1_direct_permissions(state, params))
    return s1_overlay_permissions(base, state, params)


def s1_direct_permissions(state: TTWState, params: S1TTWParams) -> S1Perms:
    """Return the stage-1 direct permissions of the leaf (ASL AArch64.S1DirectBasePermissions).

    With TCR.HA and TCR.HD set, a DBM page counts as writable (AP[2] read as 0):
    ASL AArch64.S1ApplyOutputPerms. WXN (SCTLR_ELx.WXN) applies per access in
    s1_check_permissions.
    """
    raw = state.leaf.raw
    apt, uxt, pxt = table_controls(state, params.hpd)
    ap21 = ap(raw)
    if params.ha and params.hd and dbm(raw):
        ap21 &= 0b01
    wxn, pov, uov = params.wxn, params.poe, params.e0poe
    if not params.regime.has_el0():
        one_pw = not (ap21 & 0b10) and not (apt & 0b10)
        return S1Perms(True, one_pw, not (uxn(raw) or uxt), False, False, False, wxn, wxn,
                       pov, False)
    pr, pw, ur, uw = _S1_AP[ap21]
    if apt & 0b01:
        ur = uw = False
    if apt & 0b10:
        pw = uw = False
    px = not (pxn(raw) or pxt or uw)
    ux = not (uxn(raw) or uxt)
    return S1Perms(pr, pw, px, ur, uw, ux, wxn, wxn, pov, uov)


def s1_indirect_permissions(state: TTWState, params: S1TTWParams) -> S1Perms:
    """Return the stage-1 indirect permissions of the leaf (FEAT_S1PIE).

    ASL: AArch64.S1IndirectBasePermissions. The leaf's PIIndex selects a Perm in
    PIR_ELx (privileged) and PIRE0_ELx (EL0; none in the EL2 regime). The table
    controls do not apply (HPD is forced with PIE, params.hpd). A location both
    privileged-executable (or GCS, 0b1001) and EL0-writable (or GCS) gets no access at
    either EL; PAN takes privileged data access away wherever the PIRE0 Perm is not
    0b0000 (SCTLR_ELx.EPAN plays no part).
    """
    pi = s1_pi_index(state.leaf.raw)
    ppi = perm_field(params.pir, pi)
    pr, pw, px, pov, pwxn = S1_PIE_PERMS[ppi]
    ur = uw = ux = uov = uwxn = False
    upi = 0
    if params.regime.has_el0():
        upi = perm_field(params.pire0, pi)
        ur, uw, ux, uov, uwxn = S1_PIE_PERMS[upi]
        if (px or ppi == 0b1001) and (uw or upi == 0b1001):
            pr = pw = px = ur = uw = ux = False
    return S1Perms(pr, pw, px, ur, uw, ux, pwxn, uwxn, params.poe and pov,
                   params.e0poe and uov, upi=upi, pi=pi)


def s1_overlay_permissions(base: S1Perms, state: TTWState, params: S1TTWParams) -> S1Perms:
    """Return base with its overlay permissions filled in (FEAT_S1POE).

    ASL: AArch64.S1OverlayPermissions. Where base.pov (privileged) or base.uov (EL0) is
    set, the leaf's POIndex selects a Perm in POR_ELx (POR_EL1, or POR_EL2 for the EL2
    regimes) or POR_EL0; a reserved Perm (0b1xxx) allows nothing.
    Kernel: at.c compute_s1_overlay_permissions.
    """
    if not (base.pov or base.uov):
        return base
    poi = s1_po_index(state.leaf.raw)
    po = _overlay_value(perm_field(params.por, poi)) if base.pov else base.po
    uo = _overlay_value(perm_field(params.por_e0, poi)) if base.uov else base.uo
    return replace(base, po=po, uo=uo, poi=poi)


def _overlay_value(perm: int) -> int:
    """Return a POR Perm as POE_R | POE_X | POE_W, reserved values (0b1xxx) as none."""
    return 0 if perm & 0b1000 else perm


@dataclass(frozen=True)
class S1Denial:
    """Why stage 1 refuses an access (ASL FaultRecord.overlay, FaultRecord.dirtybit).

    overlay: the overlay refused it (checked before the base permissions, so also where
    both refuse). dirtybit: FEAT_S1PIE, a write to a location whose nDirty (bit[7]) is
    set without hardware dirty-state management. write: the refused check was the
    write's (ASL FaultRecord.write; an atomic read-modify-write's read is checked first).
    """

    overlay: bool = False
    dirtybit: bool = False
    write: bool = False


def el_permissions(perms: S1Perms, params: S1TTWParams, access: AccessDescriptor
                   ) -> tuple[bool, bool, bool, bool, int]:
    """Return the accessing EL's (r, w, x, overlay, overlay perms) after PAN and WXN.

    ASL: the base-permission step's PAN and WXN (AArch64.S1DirectBasePermissions:
    wxn = SCTLR_ELx.WXN & w & x on the accessing EL's permissions after PAN;
    AArch64.S1IndirectBasePermissions: the Perm is 0b0110), then
    AArch64.S1ComputePermissions: with an overlay that allows execute, WXN takes the
    overlay's write away; otherwise it takes execute away.
    """
    if access.el == 0 and params.regime.has_el0():
        r, w, x, wxn, ov, o = perms.ur, perms.uw, perms.ux, perms.uwxn, perms.uov, perms.uo
    else:
        r, w, x, wxn, ov, o = perms.pr, perms.pw, perms.px, perms.pwxn, perms.pov, perms.po
        if pan_applies(perms, params, access):
            r = w = False
    if not params.pie:
        wxn = wxn and w and x
    if not ov:
        o = POE_R | POE_W | POE_X
    if ov and wxn and o & POE_X:
        o &= ~POE_W
    elif wxn:
        x = False
    return r, w, x, ov, o


def s1_wxn_effective(perms: S1Perms, params: S1TTWParams) -> S1Perms:
    """Return what each EL may do (overlays and WXN applied, no PAN), for listings."""
    out = []
    for el in ((1, 0) if params.regime.has_el0() else (2,)):
        r, w, x, _, o = el_permissions(perms, params, AccessDescriptor(AccessType.GPR, el,
                                                                       False))
        out.append((r and bool(o & POE_R), w and bool(o & POE_W), x and bool(o & POE_X)))
    (pr, pw, px), (ur, uw, ux) = out[0], (out[1] if len(out) > 1 else (False,) * 3)
    return S1Perms(pr, pw, px, ur, uw, ux, pi=perms.pi, poi=perms.poi)


def pan_applies(perms: S1Perms, params: S1TTWParams, access: AccessDescriptor) -> bool:
    """Return whether PAN denies this privileged data access.

    Rule: with PSTATE.PAN=1 (access.pan) a privileged data access, or AT S1E1RP/WP, to
    a location EL0 can read or write faults; with FEAT_PAN3 and SCTLR_ELx.EPAN=1 also to
    a location EL0 can execute; with FEAT_S1PIE to any location whose PIRE0 Perm is not
    0b0000. Only regimes with EL0 have PAN. Execute is never affected.
    ASL: AArch64.S1DirectBasePermissions, AArch64.S1IndirectBasePermissions.
    """
    if not access.pan or not params.regime.has_el0():
        return False
    if perms.upi is not None:
        return perms.upi != 0
    return perms.ur or perms.uw or (params.epan and perms.ux)


def s1_check_permissions(perms: S1Perms, params: S1TTWParams, access: AccessDescriptor,
                         ndirty: bool = False) -> S1Denial | None:
    """Return why stage 1 refuses the access, or None (ASL AArch64.S1CheckPermissions).

    An instruction fetch needs the overlay's and the base's execute; a read (AT reads
    included) their read; a write their write; an atomic read-modify-write both (ASL
    CreateAccDescAtomicOp), the read first. The overlay is checked first, and its
    refusal is an overlay fault. A permitted write under FEAT_S1PIE to a location with
    nDirty (bit[7]) set faults (dirtybit) unless TCR_ELx.HA and HD are both set.
    """
    r, w, x, ov, o = el_permissions(perms, params, access)
    if access.is_ifetch():
        checks = [(False, POE_X, x)]
    else:
        checks = [(False, POE_R, r)] if access.atomicop or not access.write else []
        if access.write:
            checks.append((True, POE_W, w))
    for write, need, _ in checks:
        if ov and not o & need:
            return S1Denial(overlay=True, write=write)
    for write, _, ok in checks:
        if not ok:
            return S1Denial(write=write)
    if params.pie and ndirty and access.write and not access.is_ifetch() and not params.hd:
        return S1Denial(dirtybit=True, write=True)
    return None


def s1_permission_ok(perms: S1Perms, params: S1TTWParams, access: AccessDescriptor) -> bool:
    """Return whether the permissions allow the access (s1_check_permissions without the
    dirty state)."""
    return s1_check_permissions(perms, params, access) is None


def s2_permissions(state: TTWState, p: S2TTWParams, xnx: bool) -> S2Perms:
    """Return the stage-2 permissions of the leaf: base (direct or indirect) and overlay.

    ASL: AArch64.S2ComputePermissions. With VTCR_EL2.S2PIE the leaf's PIIndex selects a
    Perm in S2PIR_EL2 (AArch64.S2IndirectBasePermissions), and with S2POE as well the
    leaf's POIndex a Perm in S2POR_EL1 (AArch64.S2OverlayPermissions: the same
    encodings); the overlay applies only under S2PIE.
    """
    raw = state.leaf.raw
    if not p.s2pie:
        return s2_direct_permissions(state, xnx, p.ha, p.hd)
    r, w, px, ux, mro = S2_PIE_PERMS[perm_field(p.s2pir, s2_pi_index(raw))]
    ov = S2_PIE_PERMS[perm_field(p.s2por, s2_po_index(raw))] if p.s2poe else None
    return S2Perms(r, w, px, ux, mro, ov)


@dataclass(frozen=True)
class S2Denial:
    """Why stage 2 refuses an access (ASL FaultRecord.overlay, FaultRecord.dirtybit; write:
    the refused check was the write's)."""

    overlay: bool = False
    dirtybit: bool = False
    write: bool = False


def _s2_checks(r: bool, w: bool, px: bool, ux: bool, mro: bool,
               access: AccessDescriptor) -> list[tuple[bool, bool]]:
    """Return the (is the write's, allowed) checks one stage-2 permission set makes of
    access, in the ASL's order (S2CheckPermissions: a stage-1 walk uses r_mmu/w_mmu, where
    MRO may write; a fetch the EL's execute; an atomic read-modify-write reads first)."""
    if access.acctype is AccessType.TTW:
        return [(False, r)] + ([(True, w or mro)] if access.write else [])
    if access.is_ifetch():
        return [(False, ux if access.el == 0 else px)]
    checks = [(False, r)] if access.atomicop or not access.write else []
    return checks + ([(True, w)] if access.write else [])


def _s2_allows(r: bool, w: bool, px: bool, ux: bool, mro: bool,
               access: AccessDescriptor) -> bool:
    """Return whether one stage-2 permission set allows access."""
    return all(ok for _, ok in _s2_checks(r, w, px, ux, mro, access))


def s2_check_permissions(perms: S2Perms, p: S2TTWParams, access: AccessDescriptor,
                         dirty: bool = True) -> S2Denial | None:
    """Return why stage 2 refuses the access, or None (ASL AArch64.S2CheckPermissions).

    The overlay is checked first (its refusal is an overlay fault), then the base
    permissions; then, under FEAT_S2PIE, a write to a location whose Dirty bit (bit[7])
    is 0 faults (dirtybit) unless VTCR_EL2.HA and HD are both set (stage-1 walk updates
    included).
    """
    if perms.ov is not None:
        for write, ok in _s2_checks(*perms.ov, access):
            if not ok:
                return S2Denial(overlay=True, write=write)
    for write, ok in _s2_checks(perms.r, perms.w, perms.px, perms.ux, perms.mro, access):
        if not ok:
            return S2Denial(write=write)
    if p.s2pie and access.write and not dirty and not p.hd:
        return S2Denial(dirtybit=True, write=True)
    return None


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
    """Return whether the access is permitted at stage 2 (ASL AArch64.S2CheckPermissions,
    without the dirty state).

    A stage-1 table walk (acctype TTW) needs read permission, and write permission
    too when it updates the descriptor (MRO allows that update). An instruction fetch
    needs execute for the EL of the original access; an atomic read-modify-write needs
    read and write; everything else (AT included) needs read or write. An overlay must
    allow the access as well.
    """
    if perms.ov is not None and not _s2_allows(*perms.ov, access):
        return False
    return _s2_allows(perms.r, perms.w, perms.px, perms.ux, perms.mro, access)
