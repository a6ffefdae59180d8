"""Stage-1, stage-2 and two-stage translation: the ASL phases in order.

Each function reads as its ASL counterpart: checks that fault before the walk, the
walk, the access flag, permissions, hardware updates, then attributes. Faults are
returned as values, never raised.

ASL: AArch64.S1Translate, AArch64.S2Translate, AArch64.FullTranslate,
AArch64.S1DisabledOutput, AArch64.VAIsOutOfRange, AArch64.IPAIsOutOfRange,
AArch64.SetAccessFlag / AArch64.SetDirtyState (the descriptor update helpers).

A descriptor update is a compare-and-swap (ASL AArch64.MemSwapTableDesc); when the
descriptor changed between the walk's read and the swap, the translation is retried
from the walk (the `repeat ... until new_desc == descriptor || mem_desc == new_desc`
loop of AArch64.S1Translate and AArch64.S2Translate).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

from s2mmu.arch.access import AccessDescriptor, AccessType
from s2mmu.arch.attrs import (
    NORMAL_NC,
    WB_RAWA,
    Cacheability,
    CacheHints,
    DEVICE_nGnRnE,
    MemoryAttributes,
    MemType,
    Shareability,
    normalise_shareability,
    s1_attr_decode,
    s2_apply_fwb,
    s2_combine_s1,
    s2_memattr_decode,
)
from s2mmu.arch.bits import bit, bits, mask, set_bit
from s2mmu.arch.config import DEFAULT_CHOICES, ImplChoices
from s2mmu.arch.descriptors import af, attrindx, dbm, s2_memattr, sh
from s2mmu.arch.errors import InputError
from s2mmu.arch.faults import Fault, FaultRecord, as_stage2
from s2mmu.arch.features import FeatureSet, HwUpdate, hw_update_of, qemu_7_2_max
from s2mmu.arch.inputs import shorten_hex
from s2mmu.arch.memory import ExternalAbort, PhysMem, TableMemory
from s2mmu.arch.params import (
    S1TTWParams,
    S2TTWParams,
    VARange,
    _s1_ttw_params,
    clamp_txsz,
    get_s2_ttw_params,
    s2_inconsistent_sl,
    s2_invalid_sl,
    stage2_enabled,
    txsz_faults,
    va_range,
)
from s2mmu.arch.perms import (
    S1Perms,
    s1_check_permissions,
    s1_permissions,
    s2_check_permissions,
    s2_permissions,
)
from s2mmu.arch.registers import HCR_EL2
from s2mmu.arch.reprs import hex_repr
from s2mmu.arch.state import Regime, SysRegs
from s2mmu.arch.walk import (
    Fetch,
    TableUpdate,
    TTWState,
    WalkPlan,
    WalkSetup,
    WalkStep,
    leaf_output,
    walk_plan,
    walk_planned,
)

S1Prep = tuple[str, S1TTWParams, WalkSetup, WalkPlan | None]
"""A stage-1 configuration's VA-independent part: why TxSZ faults (or ""), the parameters
with TxSZ clamped, their walk setup and its plan (None where the configuration faults)
(_s1_prepare)."""

S2Prep = tuple[str, S2TTWParams, WalkSetup, WalkPlan | None]
"""A stage-2 configuration's IPA-independent part: why T0SZ or SL0 faults (or ""), the
parameters with T0SZ clamped, their walk setup and its plan (None where the configuration
faults) (_s2_prepare)."""


@dataclass(frozen=True)
class Env:
    """What a translation is computed against: memory, the implementation, its choices.

    tables: the port table walks read and update descriptors through (default: mem).
    hw: the descriptor updates made (default: what fs implements, hw_update_of).
    """

    mem: PhysMem
    fs: FeatureSet
    choices: ImplChoices = DEFAULT_CHOICES
    tables: TableMemory | None = None
    hw: HwUpdate | None = None

    def table_memory(self) -> TableMemory:
        """Return the port table walks go through."""
        return self.mem if self.tables is None else self.tables

    def hw_update(self) -> HwUpdate:
        """Return the descriptor updates this implementation makes."""
        return hw_update_of(self.fs) if self.hw is None else self.hw


@hex_repr()
@dataclass(frozen=True)
class AddressDescriptor:
    """ASL AddressDescriptor: the successful result of a translation stage.

    paddress is this stage's output (an IPA after stage 1 alone). memattrs are the
    resulting attributes, after SCTLR_ELx.C/I and HCR_EL2.CD/ID. parattrs are the
    attributes PAR_EL1 reports (ASL ReportedPARAttrs: the tables' attributes with the
    configuration bits ImplChoices says; None means the same as memattrs). s1 and s2 are
    the walks that produced it (None where a stage was off).
    """

    vaddress: int | None
    paddress: int
    memattrs: MemoryAttributes
    s1: TTWState | None = None
    s2: TTWState | None = None
    parattrs: MemoryAttributes | None = None

    def par_attrs(self) -> MemoryAttributes:
        """Return the attributes PAR_EL1 reports for this result."""
        return self.memattrs if self.parattrs is None else self.parattrs


Result = AddressDescriptor | FaultRecord


def walk_abort(got: ExternalAbort, level: int, access: AccessDescriptor,
               what: str) -> FaultRecord:
    """Return the External abort on a table walk for a failed descriptor access.

    ASL: HandleExternalTTWAbort (Fault_SyncExternalOnWalk at the walk's level), for
    the fetch in AArch64.S1Walk/S2Walk and the update in AArch64.MemSwapTableDesc.
    """
    return FaultRecord(Fault.SYNC_EXTERNAL_ON_WALK, level, access, reason=(
        f"{what} at {got.pa:#x} (level {level}) failed: {got.reason}"))


def acc_ttw(access: AccessDescriptor, write: bool = False) -> AccessDescriptor:
    """Return the access of a stage-1 table walk (ASL CreateAccDescS1TTW / TTEUpdate)."""
    return AccessDescriptor(AccessType.TTW, access.el, write, walk_of=access.original())


MAX_UPDATE_RETRIES = 64
"""How often a translation retries after a descriptor update lost its compare-and-swap
before the model gives up (the ASL retries until it wins; a port that always loses is
misuse of the TableMemory protocol)."""


def retries_exhausted(state: TTWState | FaultRecord) -> RuntimeError:
    """Return the error for a table port whose compare-and-swap never succeeds."""
    pa = state.leaf_paddress if isinstance(state, TTWState) else 0
    return RuntimeError(f"the descriptor at {pa:#x} changed under every one of "
                        f"{MAX_UPDATE_RETRIES} hardware updates: the table port's cas64 "
                        "never succeeds")


# ---------------------------------------------------------------- stage 2

# The per-register-set parts of a walk (its setup, the T0SZ/SL checks, the clamped
# parameters) are pure functions of frozen values: memoised, so that a run of walks
# under one configuration decodes them once.

def s2_setup(p: S2TTWParams, env: Env) -> WalkSetup:
    """Return the walk setup for stage 2."""
    return _s2_setup(p, env.fs, env.choices)


@lru_cache(maxsize=1024)
def _s2_setup(p: S2TTWParams, fs: FeatureSet, choices: ImplChoices) -> WalkSetup:
    return WalkSetup(2, p.tgx, p.iasize(), p.startlevel(), p.ttb, p.ps, p.ps_raw, p.ds,
                     fs.has("FEAT_LPA"), fs.pa_max() >= 52,
                     contiguous_faults=choices.contiguous_bit_faults,
                     nt_faults=fs.has("FEAT_BBM") and choices.block_nt_faults,
                     contiguous_oa_from_ia=choices.contiguous_oa_from_ia)


def s2_txsz_fault(p: S2TTWParams, env: Env) -> str:
    """Return why VTCR_EL2.T0SZ faults, or "" (ASL AArch64.S2TxSZFaults)."""
    return _s2_txsz_fault(p, env.fs, env.choices)


@lru_cache(maxsize=1024)
def _s2_txsz_fault(p: S2TTWParams, fs: FeatureSet, choices: ImplChoices) -> str:
    lo, hi = p.txsz_range(fs)
    if txsz_faults(p.txsz, lo, hi, fs.has("FEAT_LPA"), choices):
        return f"VTCR_EL2.T0SZ={p.txsz} is outside {lo}..{hi} for this granule"
    return ""


def s2_walk_checks(p: S2TTWParams, ipa: int, env: Env) -> str:
    """Return why stage 2 faults at level 0 before walking, or "".

    ASL: AArch64.S2InvalidSL, AArch64.S2InconsistentSL, AArch64.IPAIsOutOfRange, in that
    order (after the T0SZ check and clamp).
    """
    why = _s2_sl_fault(p, env.fs)
    if why:
        return why
    if ipa >> p.iasize():
        return f"IPA {ipa:#x} is outside the {p.iasize()}-bit IPA space (VTCR_EL2.T0SZ)"
    return ""


@lru_cache(maxsize=1024)
def _s2_sl_fault(p: S2TTWParams, fs: FeatureSet) -> str:
    why = s2_invalid_sl(p.tgx, p.sl0, p.sl2, p.ds, fs) or s2_inconsistent_sl(
        p.tgx, p.startlevel(), p.txsz)
    return f"VTCR_EL2.SL0: {why}" if why else ""


@lru_cache(maxsize=1024)
def _s2_effective_params(p: S2TTWParams, fs: FeatureSet) -> S2TTWParams:
    txsz = clamp_txsz(p.txsz, *p.txsz_range(fs))
    return p if txsz == p.txsz else replace(p, txsz=txsz)


def s2_walk(p: S2TTWParams, ipa: int, access: AccessDescriptor, env: Env,
            trace: list[WalkStep] | None = None) -> TTWState | FaultRecord:
    """Walk stage 2 for ipa: the leaf and its level, or the fault; no AF or permission check.

    The checks before the walk (T0SZ, SL0, the IPA size) and the walk's own faults
    (translation, address size, External abort on the walk) are stage-2 faults here.
    The output address is s2_output(p, env, state, ipa).

    ASL: AArch64.S2Translate up to and including AArch64.S2Walk.
    """
    return _s2_walk(_s2_prepare(p, env.fs, env.choices), ipa, access, env, trace)


def _s2_walk(prep: S2Prep, ipa: int, access: AccessDescriptor,
             env: Env, trace: list[WalkStep] | None) -> TTWState | FaultRecord:
    """Walk stage 2 for ipa with the configuration's prepared part (s2_walk)."""
    s1ptw = access.acctype is AccessType.TTW
    why, p, _, plan = prep
    if not why and ipa >> p.iasize():
        why = f"IPA {ipa:#x} is outside the {p.iasize()}-bit IPA space (VTCR_EL2.T0SZ)"
    if why or plan is None:
        return as_stage2(FaultRecord(Fault.TRANSLATION, 0, access, reason=why), ipa, s1ptw)
    port = env.table_memory()

    def fetch(addr: int, level: int) -> tuple[int, int] | FaultRecord:
        raw = port.read64(addr, p.ee)
        if isinstance(raw, ExternalAbort):
            return walk_abort(raw, level, access, "stage-2 descriptor read")
        return addr, raw

    got = walk_planned(plan, ipa, access, fetch, trace,
                       s2_table_update(p, access, env) if p.haft else None)
    if isinstance(got, FaultRecord):
        return as_stage2(got, ipa, s1ptw)
    return got


@lru_cache(maxsize=1024)
def _s2_prepare(p: S2TTWParams, fs: FeatureSet, choices: ImplChoices) -> S2Prep:
    """Return the IPA-independent part of s2_walk for one configuration (S2Prep).

    The ASL order of AArch64.S2TxSZFaults, the clamp, S2InvalidSL and S2InconsistentSL.
    """
    why = _s2_txsz_fault(p, fs, choices)
    if not why:
        p = _s2_effective_params(p, fs)
        why = _s2_sl_fault(p, fs)
    setup = _s2_setup(p, fs, choices)
    return why, p, setup, None if why else walk_plan(setup)


def s2_output(p: S2TTWParams, env: Env, state: TTWState, ipa: int) -> int:
    """Return the output address of a stage-2 walk for ipa (ASL StageOA)."""
    return leaf_output(state, _s2_prepare(p, env.fs, env.choices)[2], ipa)


def s2_translate(p: S2TTWParams, ipa: int, access: AccessDescriptor, env: Env,
                 hcr_ptw: bool = False, trace: list[WalkStep] | None = None) -> Result:
    """Translate ipa through stage 2 (ASL AArch64.S2Translate).

    access.acctype TTW marks a stage-1 table walk (s2fs1walk); a stage-1 descriptor
    update is a TTW write.
    """
    prep = _s2_prepare(p, env.fs, env.choices)
    got = _s2_translate_leaf(prep, ipa, access, env, hcr_ptw, trace)
    if isinstance(got, FaultRecord):
        return got
    state, oa = got
    return AddressDescriptor(None, oa, s2_only_attrs(state, prep[1], env), s2=state)


def _s2_translate_leaf(prep: S2Prep, ipa: int,
                       access: AccessDescriptor, env: Env, hcr_ptw: bool,
                       trace: list[WalkStep] | None) -> tuple[TTWState, int] | FaultRecord:
    """Translate ipa through stage 2 up to its output address: the (updated) leaf and the
    address, or the fault (s2_translate without the attributes, which a stage-1 table
    read does not use). A hardware update that loses its compare-and-swap walks again."""
    s1ptw = access.acctype is AccessType.TTW
    p = prep[1]
    for _ in range(MAX_UPDATE_RETRIES):
        got = _s2_walk(prep, ipa, access, env, trace)
        if isinstance(got, FaultRecord):
            return got
        if not af(got.leaf.raw) and not p.ha:
            return as_stage2(FaultRecord(Fault.ACCESS_FLAG, got.level, access, reason=(
                "stage-2 access flag is 0 and VTCR_EL2.HA=0")), ipa, s1ptw)
        fault = s2_check_fault(got, p, access, env, hcr_ptw)
        if fault is not None:
            # ASL AArch64.SettingAccessFlagPermitted: AF on a Permission or Alignment
            # fault is CONSTRAINED UNPREDICTABLE; the dirty state is never set.
            if env.choices.af_update_on_permission_fault:
                s2_hw_update(got, p, access, env, dirty_permitted=False)
            return as_stage2(fault, ipa, s1ptw)
        updated = s2_hw_update(got, p, access, env)
        if updated is None:
            continue   # the descriptor changed under the update: walk again
        if isinstance(updated, FaultRecord):
            return as_stage2(updated, ipa, s1ptw)
        return updated, leaf_output(updated, prep[2], ipa)
    raise retries_exhausted(got)


def s2_check_fault(state: TTWState, p: S2TTWParams, access: AccessDescriptor, env: Env,
                   hcr_ptw: bool) -> FaultRecord | None:
    """Return the Alignment or Permission fault of a stage-2 leaf, or None.

    ASL: AArch64.S2Translate: AArch64.S2HasAlignmentFault (an unaligned data access to
    Device memory) before AArch64.S2CheckPermissions (with HCR_EL2.PTW, a stage-1 walk
    into stage-2 Device memory is a Permission fault). The read permission of an atomic
    read-modify-write is checked first: it reports a write (FaultRecord.atomic_write)
    only when it may read and may not write.
    """
    raw = state.leaf.raw
    device = s2_memattr_is_device(raw, p.fwb)
    if device and not access.aligned and not access.is_ifetch():
        return FaultRecord(Fault.ALIGNMENT, state.level, access, reason=(
            f"unaligned data access to stage-2 Device memory (descriptor {raw:#018x})"))
    if access.acctype is AccessType.TTW and hcr_ptw and device:
        return FaultRecord(Fault.PERMISSION, state.level, access, reason=(
            "stage-1 table in stage-2 Device memory with HCR_EL2.PTW=1"))
    perms = s2_permissions(state, p, env.fs.has("FEAT_XNX"))
    denial = s2_check_permissions(perms, p, access, bool(bit(raw, 7)))
    if denial is None:
        return None
    write_half = access.atomicop and denial.write   # ASL: the read is checked first
    return FaultRecord(Fault.PERMISSION, state.level, access, atomic_write=write_half,
                       overlay=denial.overlay, dirtybit=denial.dirtybit, reason=(
                           "stage-2 write to a location with Dirty=0 (S2PIE) without "
                           "VTCR_EL2.HA and HD" if denial.dirtybit
                           else s2_perm_reason(raw, access, write_half)))


def s2_memattr_is_device(raw: int, fwb: bool) -> bool:
    """Return whether a stage-2 leaf's MemAttr makes the location Device memory."""
    memattr = s2_memattr(raw)
    return (not bit(memattr, 2)) if fwb else bits(memattr, 3, 2) == 0


def access_verb(access: AccessDescriptor, write_half: bool = False) -> str:
    """Return what the access needs: execute, read, write, or read and write."""
    if access.is_ifetch():
        return "execute"
    if access.atomicop:
        return "write (an atomic read-modify-write)" if write_half else (
            "read (an atomic read-modify-write)")
    return "write" if access.write else "read"


def s2_perm_reason(raw: int, access: AccessDescriptor, write_half: bool = False) -> str:
    """Return why stage 2 refused the access, for humans."""
    what = access_verb(access, write_half)
    return f"stage-2 descriptor {raw:#018x} (S2AP={bits(raw, 7, 6):#04b}) does not allow {what}"


def s2_hw_update(state: TTWState, p: S2TTWParams, access: AccessDescriptor, env: Env,
                 dirty_permitted: bool = True) -> TTWState | FaultRecord | None:
    """Set the stage-2 AF (VTCR_EL2.HA) and dirty state (HD+DBM) in memory.

    ASL: AArch64.S2Translate's descriptor update: AF when HA and AF=0; S2AP[1] when the
    access writes a DBM page with HA and HD. AT, DC and IC instructions update AF only.
    With FEAT_S2PIE bit[7] is the Dirty bit and DBM is PIIndex[1]: a permitted write
    with HA and HD sets Dirty whatever bit[51] holds.
    An External abort on the compare-and-swap is an External abort on the walk at the
    leaf's level (ASL AArch64.MemSwapTableDesc); a swap that finds the descriptor
    changed returns None: the caller walks again.
    """
    raw = state.leaf.raw
    new = raw
    if p.ha and not af(raw):
        new = set_bit(new, 10, 1)
    if (dirty_permitted and access.write and p.ha and p.hd and (dbm(raw) or p.s2pie)
            and not bit(raw, 7) and access.acctype not in (AccessType.AT, AccessType.DC)):
        new = set_bit(new, 7, 1)
    if new == raw:
        return state
    done = env.table_memory().cas64(state.leaf_paddress, raw, new, p.ee)
    if isinstance(done, ExternalAbort):
        return walk_abort(done, state.level, access, "stage-2 descriptor update")
    if not done:
        return None
    return replace(state, leaf=replace(state.leaf, raw=new))


def s2_only_attrs(state: TTWState, p: S2TTWParams, env: Env) -> MemoryAttributes:
    """Return the stage-2 attributes on their own (a stage-2-only lookup's result).

    With FEAT_XS the leaf's FnXS (bit 11) gives XS=0 (ASL S2DecodeMemAttrs, then the
    walk's `memattrs.xs = NOT(s2_fnxs)`).
    """
    attrs = s2_memattr_decode(s2_memattr(state.leaf.raw), s2_leaf_sh(state, p, env),
                              env.choices.s2_reserved_cacheability)
    return replace(attrs, xs=False) if s2_fnxs(state.leaf.raw, env) else attrs


def s2_fnxs(raw: int, env: Env) -> bool:
    """Return a stage-2 leaf's FnXS (bit 11), which exists with FEAT_XS only."""
    return env.fs.has("FEAT_XS") and bool(bit(raw, 11))


def s2_leaf_sh(state: TTWState, p: S2TTWParams, env: Env) -> int:
    """Return the stage-2 leaf's SH (VTCR_EL2.SH0 when DS=1), the reserved 0b01 resolved."""
    return resolve_sh(p.sh if p.ds else sh(state.leaf.raw), env.choices)


def resolve_sh(field: int, choices: ImplChoices) -> int:
    """Return an SH field with the reserved 0b01 replaced by ImplChoices.reserved_sh."""
    return choices.reserved_sh if field == 0b01 else field


# ---------------------------------------------------------------- stage 1

def s1_setup(p: S1TTWParams, env: Env) -> WalkSetup:
    """Return the walk setup for stage 1."""
    return _s1_setup(p, env.fs, env.choices)


@lru_cache(maxsize=1024)
def _s1_setup(p: S1TTWParams, fs: FeatureSet, choices: ImplChoices) -> WalkSetup:
    return WalkSetup(1, p.tgx, p.iasize(), p.startlevel(), p.ttb, p.ps, p.ps_raw, p.ds,
                     fs.has("FEAT_LPA"), fs.pa_max() >= 52,
                     contiguous_faults=choices.contiguous_bit_faults,
                     nt_faults=fs.has("FEAT_BBM") and choices.block_nt_faults,
                     contiguous_oa_from_ia=choices.contiguous_oa_from_ia)


@lru_cache(maxsize=1024)
def _s1_txsz(p: S1TTWParams, fs: FeatureSet, choices: ImplChoices) -> tuple[str, S1TTWParams]:
    """Return why TxSZ faults (or ""), and p with an out-of-range TxSZ clamped."""
    lo, hi = p.txsz_range(fs)
    if txsz_faults(p.txsz, lo, hi, fs.has("FEAT_LVA"), choices):
        return f"TxSZ={p.txsz} is outside {lo}..{hi} for this granule", p
    txsz = clamp_txsz(p.txsz, lo, hi)
    return "", (p if txsz == p.txsz else replace(p, txsz=txsz))


@lru_cache(maxsize=1024)
def _s1_prepare(p: S1TTWParams, fs: FeatureSet, choices: ImplChoices) -> S1Prep:
    """Return the VA-independent part of s1_translate for one configuration (S1Prep).

    ASL AArch64.S1TxSZFaults and the clamp.
    """
    why, pc = _s1_txsz(p, fs, choices)
    setup = _s1_setup(pc, fs, choices)
    return why, pc, setup, None if why else walk_plan(setup)


def addr_top(p: S1TTWParams, ifetch: bool) -> int:
    """Return the top bit of the address the walk sees (ASL AArch64.AddrTop).

    55 with TBI (the top byte is ignored), 63 without; TBID keeps instruction
    fetches at 63.
    """
    if p.tbid and ifetch:
        return 63
    return 55 if p.tbi else 63


def va_out_of_range(p: S1TTWParams, va: int, ifetch: bool = False) -> bool:
    """Return whether va is outside the range's input size (ASL AArch64.VAIsOutOfRange).

    Bits [top:iasize] must all equal the range's selector: 0 for TTBR0 (and one-range
    regimes), 1 for TTBR1; top comes from AddrTop (TBI, TBID).
    """
    top = addr_top(p, ifetch)
    field = bits(va, top, p.iasize())
    want = mask(top - p.iasize(), 0) if p.varange.value else 0
    return field != want


def s1_pre_walk_fault(p: S1TTWParams, va: int, access: AccessDescriptor, env: Env) -> str:
    """Return why stage 1 faults at level 0 before walking, or "".

    ASL: AArch64.VAIsOutOfRange, the E0PD check, and AArch64.S1Walk's EPD check (after
    the TxSZ check and clamp, s1_txsz_fault).
    """
    if va_out_of_range(p, va, access.is_ifetch()):
        return f"VA {va:#x} is outside the {p.iasize()}-bit range of TTBR{p.varange.value}"
    if p.regime.has_el0() and access.el == 0 and p.e0pd:
        return f"E0PD{p.varange.value}=1 faults EL0 accesses to this range"
    if p.regime.has_el0() and p.epd:
        return f"EPD{p.varange.value}=1 disables walks of TTBR{p.varange.value}"
    return ""


def s1_disabled_output(p: S1TTWParams, va: int, access: AccessDescriptor, env: Env) -> Result:
    """Return the flat mapping of a stage-1-disabled regime (ASL AArch64.S1DisabledOutput).

    Data: Device-nGnRnE, or with HCR_EL2.DC Normal Write-Back Non-shareable.
    Instruction fetch: Normal, Write-Through if SCTLR.I else Non-cacheable.
    An unaligned data access to the Device memory takes an Alignment fault (ASL
    AArch64.S1DisabledOutput calls AArch64.S1HasAlignmentFault).
    """
    top = addr_top(p, access.is_ifetch())
    if bits(va, top, env.fs.pa_max()):
        return FaultRecord(Fault.ADDRESS_SIZE, 0, access, vaddress=va,
                           reason=f"VA {va:#x} exceeds PAMax with the MMU off")
    pa = bits(va, env.fs.pa_max() - 1, 0)
    if p.dc:
        attrs = MemoryAttributes(MemType.NORMAL, inner=WB_RAWA, outer=WB_RAWA,
                                 shareability=Shareability.NSH,
                                 xs=not env.fs.has("FEAT_XS"))
    elif access.is_ifetch():
        wt = CacheHints(Cacheability.WT, True, False)
        hint = wt if p.sctlr_i else CacheHints(Cacheability.NC)
        attrs = normalise_shareability(MemoryAttributes(MemType.NORMAL, inner=hint, outer=hint))
    else:
        attrs = DEVICE_nGnRnE
        if not access.aligned:
            return FaultRecord(Fault.ALIGNMENT, 0, access, vaddress=va, reason=(
                "unaligned data access to Device memory (stage 1 off: Device-nGnRnE)"))
    return AddressDescriptor(va, pa, attrs)


def s1_translate(p: S1TTWParams, s2: S2TTWParams | None, va: int, access: AccessDescriptor,
                 env: Env, hcr_ptw: bool = False, trace: list[WalkStep] | None = None) -> Result:
    """Translate va through stage 1, its table walk through stage 2 if s2 is given.

    ASL: AArch64.S1Translate. The result's paddress is the IPA (or the PA when there is
    no stage 2).
    """
    if not p.mmu_on:
        return s1_disabled_output(p, va, access, env)
    s2prep = None if s2 is None else _s2_prepare(s2, env.fs, env.choices)
    return _s1_translate(_s1_prepare(p, env.fs, env.choices), s2prep, va, access, env,
                         hcr_ptw, trace)


def _s1_translate(prep: S1Prep, s2prep: S2Prep | None, va: int,
                  access: AccessDescriptor, env: Env, hcr_ptw: bool,
                  trace: list[WalkStep] | None) -> Result:
    """s1_translate with the configuration's prepared parts (stage 1 on)."""
    why, p, setup, plan = prep
    if why or plan is None:
        return FaultRecord(Fault.TRANSLATION, 0, access, vaddress=va, reason=why)
    why = s1_pre_walk_fault(p, va, access, env)
    if why:
        return FaultRecord(Fault.TRANSLATION, 0, access, vaddress=va, reason=why)
    s2 = None if s2prep is None else s2prep[1]
    fetch = _s1_fetch(p, s2prep, access, env, hcr_ptw, trace)
    update = s1_table_update(p, s2, access, env, hcr_ptw) if p.haft else None
    for _ in range(MAX_UPDATE_RETRIES):
        got = walk_planned(plan, va, access, fetch, trace, update)
        if isinstance(got, FaultRecord):
            return replace(got, vaddress=va)
        if not af(got.leaf.raw) and not p.ha:
            return FaultRecord(Fault.ACCESS_FLAG, got.level, access, vaddress=va,
                               reason="access flag is 0 and TCR.HA=0")
        fault = s1_check_fault(got, p, access, env, va)
        if fault is not None:
            # ASL AArch64.SettingAccessFlagPermitted: AF on a Permission or Alignment
            # fault is CONSTRAINED UNPREDICTABLE; the dirty state is never set.
            if env.choices.af_update_on_permission_fault:
                done = s1_hw_update(got, p, s2, access, env, hcr_ptw, dirty_permitted=False)
                if isinstance(done, FaultRecord):
                    return replace(done, vaddress=va)
            return fault
        updated = s1_hw_update(got, p, s2, access, env, hcr_ptw)
        if updated is None:
            continue   # the descriptor changed under the update: walk again
        if isinstance(updated, FaultRecord):
            return replace(updated, vaddress=va)
        return s1_output(updated, p, s2, setup, va, access, env)
    raise retries_exhausted(got)


def s1_check_fault(state: TTWState, p: S1TTWParams, access: AccessDescriptor, env: Env,
                   va: int) -> FaultRecord | None:
    """Return the Alignment or Permission fault of a stage-1 leaf, or None.

    ASL: AArch64.S1Translate: AArch64.S1HasAlignmentFault (an unaligned data access to
    Device memory, by the attributes MAIR gives the leaf) before
    AArch64.S1CheckPermissions. The read permission of an atomic read-modify-write is
    checked first (`accdesc.read && !r` before `accdesc.write && !w`): it reports a
    write (FaultRecord.atomic_write) only when it may read and may not write.
    """
    if (not access.aligned and not access.is_ifetch()
            and s1_attrs(state, p, env).memtype is MemType.DEVICE):
        return FaultRecord(Fault.ALIGNMENT, state.level, access, vaddress=va, reason=(
            "unaligned data access to Device memory (MAIR_ELx.Attr"
            f"{attrindx(state.leaf.raw)})"))
    if access.any_access:
        return None
    perms = s1_permissions(state, p)
    denial = s1_check_permissions(perms, p, access, ndirty=bool(bit(state.leaf.raw, 7)))
    if denial is None:
        return None
    write_half = access.atomicop and denial.write   # ASL: the read is checked first
    return FaultRecord(Fault.PERMISSION, state.level, access, vaddress=va,
                       atomic_write=write_half, overlay=denial.overlay,
                       dirtybit=denial.dirtybit,
                       reason=s1_perm_reason(perms, access, write_half, denial.dirtybit))



def s1_output(updated: TTWState, p: S1TTWParams, s2: S2TTWParams | None, setup: WalkSetup,
              va: int, access: AccessDescriptor, env: Env) -> AddressDescriptor:
    """Return stage 1's result: the output address and attributes of the updated leaf."""
    walkattrs = s1_attrs(updated, p, env)
    under_s2 = s2 is not None and not env.choices.s1_effective_shareability
    return AddressDescriptor(va, leaf_output(updated, setup, va),
                             s1_output_attrs(walkattrs, p, access, under_s2), s1=updated,
                             parattrs=s1_output_attrs(
                                 walkattrs, p, access, under_s2,
                                 controls=env.choices.par_sctlr_cacheability))


def s1_fetch(p: S1TTWParams, s2: S2TTWParams | None, access: AccessDescriptor, env: Env,
             hcr_ptw: bool, trace: list[WalkStep] | None) -> Fetch:
    """Return the descriptor fetch of a stage-1 walk: through stage 2 when it is on."""
    s2prep = None if s2 is None else _s2_prepare(s2, env.fs, env.choices)
    return _s1_fetch(p, s2prep, access, env, hcr_ptw, trace)


def _s1_fetch(p: S1TTWParams, s2prep: S2Prep | None,
              access: AccessDescriptor, env: Env, hcr_ptw: bool,
              trace: list[WalkStep] | None) -> Fetch:
    """s1_fetch with stage 2's prepared part: a table read uses only its output address."""
    port = env.table_memory()
    ttw = acc_ttw(access) if s2prep is not None else access

    def fetch(addr: int, level: int) -> tuple[int, int] | FaultRecord:
        pa = addr
        if s2prep is not None:
            got = _s2_translate_leaf(s2prep, addr, ttw, env, hcr_ptw, trace)
            if isinstance(got, FaultRecord):
                return got
            pa = got[1]
        raw = port.read64(pa, p.ee)
        if isinstance(raw, ExternalAbort):
            return walk_abort(raw, level, access, "stage-1 descriptor read")
        return pa, raw

    return fetch


def s1_table_update(p: S1TTWParams, s2: S2TTWParams | None, access: AccessDescriptor,
                    env: Env, hcr_ptw: bool) -> TableUpdate:
    """Return the FEAT_HAFT table update of a stage-1 walk (walkparams.haft).

    ASL AArch64.S1Walk: a Table descriptor gets new_descriptor<10> = '1'; when that
    differs from the descriptor read, the write is an AccessDescriptor from
    CreateAccDescTTEUpdate, translated through stage 2 first in the EL1&0 regime with EL2
    enabled (AArch64.S2Translate: a stage-2 fault ends the walk), then
    AArch64.MemSwapTableDesc, a compare-and-swap on the table port (an External abort
    there is one on the walk at that level). As for the leaf (s1_hw_update), AT sets it
    too: the ASL's table step does not look at the access type, and the Arm ARM's
    RFBZPR requires it of address translation instructions (RCGKWB of accesses; IVPNMG:
    stage-1 table updates are subject to stage-2 permission checks).
    """
    port = env.table_memory()
    write = acc_ttw(access, write=True)

    def update(descaddress: int, pa: int, raw: int, level: int) -> bool | FaultRecord:
        if s2 is not None:
            got = s2_translate(s2, descaddress, write, env, hcr_ptw)
            if isinstance(got, FaultRecord):
                return got
            pa = got.paddress
        done = port.cas64(pa, raw, raw | 1 << 10, p.ee)
        if isinstance(done, ExternalAbort):
            return walk_abort(done, level, access, "stage-1 table descriptor update")
        return done

    return update


def s2_table_update(p: S2TTWParams, access: AccessDescriptor, env: Env) -> TableUpdate:
    """Return the FEAT_HAFT table update of a stage-2 walk (walkparams.haft).

    ASL AArch64.S2Walk: a Table descriptor gets new_descriptor<10> = '1', written by
    AArch64.MemSwapTableDesc (a compare-and-swap on the table port; an External abort
    is one on the walk at that level); the caller marks the fault stage 2.
    """
    port = env.table_memory()

    def update(descaddress: int, pa: int, raw: int, level: int) -> bool | FaultRecord:
        done = port.cas64(pa, raw, raw | 1 << 10, p.ee)
        if isinstance(done, ExternalAbort):
            return walk_abort(done, level, access, "stage-2 table descriptor update")
        return done

    return update


def s1_perm_reason(perms: S1Perms, access: AccessDescriptor, write_half: bool = False,
                   dirtybit: bool = False) -> str:
    """Return why stage 1 refused the access, for humans."""
    if dirtybit:
        return ("write to a location with nDirty=1 (PIE) without hardware dirty-state "
                "management (TCR.HA and HD)")
    what = access_verb(access, write_half)
    pan = " with PSTATE.PAN=1" if access.pan else ""

    def rwx(r: bool, w: bool, x: bool) -> str:
        return ("R" if r else "-") + ("W" if w else "-") + ("X" if x else "-")

    pr, pw, px, ur, uw, ux = perms.effective()
    have = f"privileged {rwx(pr, pw, px)}, EL0 {rwx(ur, uw, ux)}"
    return f"stage-1 permissions ({have}) do not allow {what} at EL{access.el}{pan}"


def s1_hw_update(state: TTWState, p: S1TTWParams, s2: S2TTWParams | None,
                 access: AccessDescriptor, env: Env, hcr_ptw: bool,
                 dirty_permitted: bool = True) -> TTWState | FaultRecord | None:
    """Set the stage-1 AF (TCR.HA) and dirty state (HD+DBM clears AP[2]) in memory.

    The descriptor is written with a compare-and-swap. Under stage 2, the write needs
    stage-2 write permission on the descriptor's IPA (ASL CreateAccDescTTEUpdate), so
    it can take a stage-2 fault. AT (and DC) instructions set AF but never the dirty
    state. An External abort on the compare-and-swap is an External abort on the walk
    at the leaf's level (ASL AArch64.MemSwapTableDesc); a swap that finds the
    descriptor changed returns None: the caller walks again.

    With FEAT_S1PIE bit[7] is nDirty and DBM is PIIndex[1]: a permitted write with HA
    and HD clears nDirty whatever bit[51] holds.
    """
    raw = state.leaf.raw
    new = raw
    if p.ha and not af(raw):
        new = set_bit(new, 10, 1)
    if (dirty_permitted and access.write and p.ha and p.hd and (dbm(raw) or p.pie)
            and bit(raw, 7) and access.acctype not in (AccessType.AT, AccessType.DC)):
        new = set_bit(new, 7, 0)
    if new == raw:
        return state
    pa = state.leaf_paddress
    if s2 is not None:
        ipa = state.leaf_descaddress()
        got = s2_translate(s2, ipa, acc_ttw(access, write=True), env, hcr_ptw)
        if isinstance(got, FaultRecord):
            return got
        pa = got.paddress
    done = env.table_memory().cas64(pa, raw, new, p.ee)
    if isinstance(done, ExternalAbort):
        return walk_abort(done, state.level, access, "stage-1 descriptor update")
    if not done:
        return None
    return replace(state, leaf=replace(state.leaf, raw=new))


def s1_attrs(state: TTWState, p: S1TTWParams, env: Env) -> MemoryAttributes:
    """Return the stage-1 attributes of the leaf from MAIR (ASL S1DecodeMemAttrs).

    SH comes from the descriptor, or from TCR_ELx.SHx when DS=1.
    """
    raw = state.leaf.raw
    shv = resolve_sh(p.sh if p.ds else sh(raw), env.choices)
    return s1_attr_decode(p.mair, attrindx(raw), shv, env.choices.reserved_mair,
                          env.fs.has("FEAT_XS"))


def s1_output_attrs(attrs: MemoryAttributes, p: S1TTWParams, access: AccessDescriptor,
                    under_s2: bool, controls: bool = True) -> MemoryAttributes:
    """Return the stage-1 output attributes (ASL AArch64.S1Translate, attribute step).

    With controls, an instruction fetch from Device memory or with SCTLR_ELx.I=0, and a
    data access to Normal memory with SCTLR_ELx.C=0, are Normal Non-cacheable (keeping
    the XS attribute: `memattrs.xs = walkstate.memattrs.xs`). Under
    stage 2 (EL1&0, HCR_EL2.VM=1) the descriptor's shareability goes on to the
    combination; otherwise the effective shareability applies (Device and Normal
    Non-cacheable are Outer Shareable).
    """
    out = attrs
    if controls:
        if access.is_ifetch():
            nc = attrs.memtype is MemType.DEVICE or not p.sctlr_i
        else:
            nc = attrs.memtype is MemType.NORMAL and not p.sctlr_c
        out = replace(NORMAL_NC, xs=attrs.xs) if nc else attrs
    if under_s2:
        if out.shareability is attrs.shareability:
            return out
        return replace(out, shareability=attrs.shareability)
    return normalise_shareability(out)


# ---------------------------------------------------------------- both stages

def combine_attrs(s1: MemoryAttributes, s2: TTWState | None, p2: S2TTWParams,
                  access: AccessDescriptor, env: Env, controls: bool = True
                  ) -> MemoryAttributes:
    """Combine stage-1 attributes with stage 2's.

    ASL: AArch64.S2Translate's attribute step. The stage-2 attributes are the leaf's
    MemAttr (S2NextWalkStateLeaf; with FWB already combined with stage 1,
    AArch64.S2ApplyFWBMemAttrs); with controls, HCR_EL2.CD (data to Normal memory)
    and HCR_EL2.ID or Device memory (instruction fetches) make them Normal
    Non-cacheable; without FWB they are then combined with stage 1
    (S2CombineS1MemAttrs).
    """
    if s2 is None:
        return s1
    raw = s2.leaf.raw
    shv = s2_leaf_sh(s2, p2, env)
    xs = env.fs.has("FEAT_XS")
    if p2.fwb:
        s2attrs = s2_apply_fwb(s1, s2_memattr(raw), shv, s2_fnxs(raw, env), xs)
    else:
        s2attrs = s2_only_attrs(s2, p2, env)
    if controls:
        if access.is_ifetch():
            nc = s2attrs.memtype is MemType.DEVICE or p2.id
        else:
            nc = s2attrs.memtype is MemType.NORMAL and p2.cd
        s2attrs = replace(NORMAL_NC, xs=s2attrs.xs) if nc else s2attrs
    return s2attrs if p2.fwb else s2_combine_s1(s1, s2attrs, xs)


def translate_stage12(s1p: S1TTWParams, s2p: S2TTWParams | None, va: int,
                      access: AccessDescriptor, env: Env, hcr_ptw: bool = False,
                      trace: list[WalkStep] | None = None) -> Result:
    """Translate va through stage 1 and then, if s2p is given, stage 2.

    ASL: AArch64.FullTranslate.
    """
    s1 = s1_translate(s1p, s2p, va, access, env, hcr_ptw, trace)
    if isinstance(s1, FaultRecord) or s2p is None:
        return s1
    return _s12_output(s1, _s2_prepare(s2p, env.fs, env.choices), va, access, env, hcr_ptw,
                       trace)


def _s12_output(s1: AddressDescriptor, s2prep: S2Prep, va: int,
                access: AccessDescriptor, env: Env, hcr_ptw: bool,
                trace: list[WalkStep] | None) -> Result:
    """Translate stage 1's output through stage 2 and combine the attributes (the second
    half of translate_stage12, with stage 2's prepared part)."""
    s2p = s2prep[1]
    got = _s2_translate_leaf(s2prep, s1.paddress, access, env, hcr_ptw, trace)
    if isinstance(got, FaultRecord):
        return replace(got, vaddress=va)
    s2, pa = got
    attrs = combine_attrs(s1.memattrs, s2, s2p, access, env)
    cd = env.choices.par_hcr_cd
    par_cd = cd == "always" or (cd == "without_fwb" and not s2p.fwb)
    parattrs = combine_attrs(s1.par_attrs(), s2, s2p, access, env, controls=par_cd)
    return AddressDescriptor(va, pa, attrs, s1=s1.s1, s2=s2, parattrs=parattrs)


REGIME_ELS: dict[Regime, tuple[int, ...]] = {
    Regime.EL10: (0, 1), Regime.EL20: (0, 2), Regime.EL2: (2,)}
"""The ELs whose accesses each regime translates (ASL TranslationRegime)."""


def full_translate(regs: SysRegs, regime: Regime, va: int, access: AccessDescriptor, env: Env,
                   stage1_only: bool = False, trace: list[WalkStep] | None = None) -> Result:
    """Translate va in regime from register values: read the walk parameters once, then walk.

    stage1_only: the output is the IPA (stage 2 still translates the stage-1 walk).
    va must be a 64-bit address and access.el an EL the regime translates for
    (EL1&0: EL0/EL1; EL2&0: EL0/EL2; EL2: EL2), InputError otherwise.
    """
    if not 0 <= va < 1 << 64:
        raise InputError(f"va={shorten_hex(va)}: a virtual address is 64 bits (0..2^64-1)")
    if access.el not in REGIME_ELS[regime]:
        els = " and ".join(f"EL{e}" for e in REGIME_ELS[regime])
        raise InputError(f"access.el={access.el}: the {regime.value} regime translates "
                         f"accesses from {els} only")
    cfg = _config(regs, regime, va_range(va, regime), env)
    s1prep, s2prep = cfg.s1prep, cfg.s2prep
    if s1prep is None:
        s1 = s1_disabled_output(cfg.s1p, va, access, env)
    else:
        s1 = _s1_translate(s1prep, s2prep, va, access, env, cfg.hcr_ptw, trace)
    if isinstance(s1, FaultRecord) or s2prep is None or stage1_only:
        return s1
    return _s12_output(s1, s2prep, va, access, env, cfg.hcr_ptw, trace)


@dataclass(frozen=True)
class _Config:
    """One register set's walk parameters for one VA range, read and prepared once.

    s1prep and s2prep: _s1_prepare's and _s2_prepare's answers (None where the stage is
    off). Mechanics of full_translate: a run of walks under one configuration reads its
    registers once.
    """

    s1p: S1TTWParams
    s1prep: S1Prep | None
    s2prep: S2Prep | None
    hcr_ptw: bool


_last_config: list[tuple[SysRegs, Regime, VARange, FeatureSet, ImplChoices, HwUpdate | None,
                         _Config] | None] = [None]
"""The last configuration _config returned, after its inputs (compared by identity)."""


def _config(regs: SysRegs, regime: Regime, rng: VARange, env: Env) -> _Config:
    """Return the prepared configuration of regs for one VA range.

    The inputs are frozen values, so the last call's answer is reused when they are the
    same objects (no hashing); otherwise it comes from the memoised _config_of.
    """
    fs, choices, hw = env.fs, env.choices, env.hw
    last = _last_config[0]
    if (last is not None and last[0] is regs and last[1] is regime and last[2] is rng
            and last[3] is fs and last[4] is choices and last[5] is hw):
        return last[6]
    cfg = _config_of(regs, regime, rng, fs, choices, env.hw_update())
    _last_config[0] = (regs, regime, rng, fs, choices, hw, cfg)
    return cfg


@lru_cache(maxsize=1024)
def _config_of(regs: SysRegs, regime: Regime, rng: VARange, fs: FeatureSet,
               choices: ImplChoices, hw: HwUpdate) -> _Config:
    """Return the prepared configuration (_config, memoised by value)."""
    s1p = _s1_ttw_params(regs, regime, rng, fs, choices, hw)
    s2p, hcr_ptw = _stage2_of(regs, regime, fs, choices, hw)
    return _Config(s1p, _s1_prepare(s1p, fs, choices) if s1p.mmu_on else None,
                   None if s2p is None else _s2_prepare(s2p, fs, choices), hcr_ptw)


@lru_cache(maxsize=1024)
def _stage2_of(regs: SysRegs, regime: Regime, fs: FeatureSet, choices: ImplChoices,
               hw: HwUpdate) -> tuple[S2TTWParams | None, bool]:
    """Return the stage-2 parameters of regime (None when stage 2 is off) and HCR_EL2.PTW."""
    s2p = get_s2_ttw_params(regs, fs, choices, hw) if stage2_enabled(regs, regime) else None
    return s2p, bool(HCR_EL2.decode(regs.HCR_EL2).PTW) and not regs.tge()


def stage2_lookup(mem: PhysMem, vtcr: int, vttbr: int, ipa: int,
                  features: FeatureSet | None = None, write: bool = False) -> Result:
    """Translate ipa through the stage 2 that VTCR_EL2/VTTBR_EL2 describe (a read by default).

    A convenience for checking tables built elsewhere (e.g. by the page-table library).
    """
    if not 0 <= ipa < 1 << 64:
        raise InputError(f"ipa={shorten_hex(ipa)}: an intermediate physical address is "
                         "64 bits at most (0..2^64-1)")
    env = Env(mem, features or qemu_7_2_max())
    regs = SysRegs(VTCR_EL2=vtcr, VTTBR_EL2=vttbr)
    p = get_s2_ttw_params(regs, env.fs, env.choices)
    access = AccessDescriptor(AccessType.GPR, 1, write)
    return s2_translate(p, ipa, access, env)
