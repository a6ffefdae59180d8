"""AT emulation for a guest hypervisor at virtual EL2, as at.c does it."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from s2mmu.arch.at import AtOp, ParResult, execute_at
from s2mmu.arch.builder import s1_attrs, s2_attrs
from s2mmu.arch.faults import Fault
from s2mmu.arch.features import qemu_7_2_max
from s2mmu.arch.state import Regime, SysRegs
from s2mmu.arch.translate import AddressDescriptor
from s2mmu.nested.at import (
    CURRENT,
    V6_12,
    AtProfile,
    PanCheck,
    compute_translation_regime,
    handle_at_slow,
    kvm_at,
    slow_par,
)
from s2mmu.nested.differences import BY_NAME, DIFFERENCES, s12_attribute_difference

from .state import IPA, PA, S1_EL1_TABLES, VA1, VA2, L1State, l1_state, random_l1_state

E2H, TGE = 1 << 34, 1 << 27
PA_MASK = ((1 << 48) - 1) & ~0xFFF
NS = 1 << 9


def fst(par: int) -> int:
    return (par >> 1) & 0x3F


def slow(s: L1State, op: AtOp, va: int, profile: AtProfile = CURRENT) -> int:
    ctx = s.ctx(profile)
    return slow_par(ctx, handle_at_slow(ctx, s.regs, s.pan, op, va))


def arch_par(s: L1State, op: AtOp, va: int) -> int:
    got = execute_at(op, va, 2, s.pan, s.regs, s.arch_env())
    assert isinstance(got, ParResult)
    return got.par


@pytest.mark.parametrize("hcr,op,regime", [
    (0, AtOp.S1E1R, Regime.EL10), (E2H, AtOp.S1E1R, Regime.EL10),
    (TGE, AtOp.S1E0R, Regime.EL10), (E2H | TGE, AtOp.S1E1R, Regime.EL20),
    (E2H | TGE, AtOp.S1E0W, Regime.EL20), (0, AtOp.S1E2R, Regime.EL2),
    (E2H, AtOp.S1E2W, Regime.EL20), (E2H | TGE, AtOp.S1E2A, Regime.EL20),
])
def test_regime_comes_from_l1_e2h_and_tge(hcr, op, regime):
    assert compute_translation_regime(op, SysRegs(HCR_EL2=hcr)) is regime


def test_slow_path_reads_l2_tables_through_l1_stage2():
    s = l1_state()
    s.el1.map(VA1, IPA, 0x1000, s1_attrs())
    par = slow(s, AtOp.S1E1R, VA1 + 0x123)
    assert not par & 1 and par & PA_MASK == IPA


def test_slow_path_without_l1_stage2_mapping_reports_stage2_fault_at_stage1_level():
    s = l1_state()
    s.el1.map(VA1, IPA, 0x1000, s1_attrs())
    s.s2.set_entry(S1_EL1_TABLES, 2, 0)       # L1 unmaps its guest's tables
    par = slow(s, AtOp.S1E1R, VA1)
    assert par & 1 and par & (1 << 9) and par & (1 << 8)
    assert fst(par) == 0b000100                # Translation, level 0 (the stage-1 level)
    arch = arch_par(s, AtOp.S1E1R, VA1)
    assert fst(arch) == 0b000110               # the architecture: stage-2 level 2
    assert "AT_S2_FAULT_LEVEL" in BY_NAME


def test_slow_path_non_readable_table_is_stage2_permission_at_stage1_level():
    s = l1_state()
    s.el1.map(VA1, IPA, 0x1000, s1_attrs())
    s.s2.set_entry(S1_EL1_TABLES, 2, S1_EL1_TABLES | s2_attrs(s2ap=0b10) | 1)
    par = slow(s, AtOp.S1E0R, VA1)
    assert fst(par) == 0b001100 and par & (1 << 9) and par & (1 << 8)


def test_slow_path_refused_stage2_walk_reads_as_address_size_at_stage1_level():
    s = l1_state()
    s.el1.map(VA1, IPA, 0x1000, s1_attrs())
    s.regs = SysRegs(**{**s.regs.to_mapping(), "VTCR_EL2": s.regs.VTCR_EL2 | 0b11 << 6})
    par = slow(s, AtOp.S1E1R, VA1)          # SL0=3 with 4KB: KVM refuses the walk
    assert fst(par) == 0b000000 and par & (1 << 9)
    assert BY_NAME["AT_S2_REFUSED_WALK"].kvm.startswith("PAR_EL1.FST is the bare level")


def test_el2_regime_va_bit55_is_address_size_fault():
    s = l1_state()
    par = slow(s, AtOp.S1E2R, 1 << 55)
    assert fst(par) == 0b000000 and not par & (1 << 9)
    assert fst(arch_par(s, AtOp.S1E2R, 1 << 55)) == 0b000100     # AT_VA_ADDRSZ


# ---------------------------------------------------------------- access flag

def af_state(**kw: object) -> L1State:
    s = l1_state(ha=True, **kw)  # type: ignore[arg-type]
    s.el1.map(VA1, IPA, 0x1000, s1_attrs(af=False))
    return s


def test_first_software_walker_release_never_reads_af():
    # 6.12's walk_s1 does not look at AF (measured against its at.c by s2mmu kernel diff
    # --at): an AF=0 leaf translates, with or without TCR.HA, and nothing is written.
    for ha in (True, False):
        s = l1_state(ha=ha)
        s.el1.map(VA1, IPA, 0x1000, s1_attrs(af=False))
        assert not slow(s, AtOp.S1E1R, VA1, V6_12) & 1
        assert s.vm.host.hw_writes == []


def test_current_release_sets_af_in_guest_memory_with_ha_and_feat_hafdbs():
    s = af_state()
    par = slow(s, AtOp.S1E1R, VA1, CURRENT)
    assert not par & 1
    (w,) = s.vm.host.hw_writes
    assert w.after == w.before | 1 << 10 and S1_EL1_TABLES <= w.pa < S1_EL1_TABLES + (2 << 20)


def test_no_af_update_without_feat_hafdbs_in_the_vm():
    s = af_state(fs=qemu_7_2_max().with_features("FEAT_PAN3").with_features(
        remove=("FEAT_HAFDBS", "FEAT_HAFDBS_DIRTY")))
    assert fst(slow(s, AtOp.S1E1R, VA1, CURRENT)) == 0b001011


def test_af_update_needs_the_descriptor_writable_at_l1_stage2():
    s = af_state()
    s.s2.set_entry(S1_EL1_TABLES, 2, S1_EL1_TABLES | s2_attrs(s2ap=0b01) | 1)
    par = slow(s, AtOp.S1E1R, VA1, CURRENT)
    assert fst(par) == 0b001111 and par & (1 << 9) and par & (1 << 8)
    assert s.vm.host.hw_writes == []


@pytest.mark.parametrize(("tcr_el1_ha", "tcr_el2_ha", "updated"),
                         [(True, False, False), (False, True, True)])
def test_the_el2_regime_takes_ha_from_tcr_el2_not_tcr_el1(tcr_el1_ha, tcr_el2_ha, updated):
    # at.c's fix "KVM: arm64: at: Use correct HA bit in TCR_EL2 when regime is EL2"
    # (Alexandru Elisei, in the v6.19 KVM pull): the regime's own TCR decides.
    s = l1_state()
    s.el2.map(VA2, IPA, 0x1000, s1_attrs(af=False))
    s.regs = replace(s.regs, TCR_EL1=s.regs.TCR_EL1 | int(tcr_el1_ha) << 39,
                     TCR_EL2=s.regs.TCR_EL2 | int(tcr_el2_ha) << 21)
    par = slow(s, AtOp.S1E2R, VA2, CURRENT)
    assert (not par & 1) == updated
    assert bool(s.vm.host.hw_writes) == updated
    if not updated:
        assert fst(par) == 0b001011


def test_af_update_swaps_in_the_tables_byte_order():
    from s2mmu.arch.registers import SCTLR_EL1
    s = l1_state(ha=True)
    s.el1.big_endian = True
    s.el1.map(VA1, IPA, 0x1000, s1_attrs(af=False))
    s.regs = SysRegs(**{**s.regs.to_mapping(),
                        "SCTLR_EL1": s.regs.SCTLR_EL1 | SCTLR_EL1.encode(EE=1)})
    s.el1.root  # noqa: B018 - the root table was written little-endian (empty)
    par = slow(s, AtOp.S1E1R, VA1, CURRENT)
    assert not par & 1
    (w,) = s.vm.host.hw_writes
    assert w.big_endian and w.after & 1 << 10


# ---------------------------------------------------------------- PAN

@pytest.mark.parametrize("el0,epan,uxn,denied", [
    (True, False, True, True),     # EL0 can read: PAN denies
    (False, False, True, False),   # privileged only
    (False, True, False, True),    # EPAN: EL0 can execute (AP=00, UXN=0) denies
    (False, False, False, False),  # without EPAN execute does not count
])
def test_s1e1rp_pan_is_the_architecture_rule(el0, epan, uxn, denied):
    s = l1_state(pan=True, epan=epan)
    s.el1.map(VA1, IPA, 0x1000, s1_attrs(el0=el0, uxn=uxn, pxn=True))
    par = slow(s, AtOp.S1E1RP, VA1)
    assert bool(par & 1) == denied
    assert par == arch_par(s, AtOp.S1E1RP, VA1)
    assert not slow(s, AtOp.S1E1R, VA1) & 1


def test_pan_clear_lets_s1e1rp_through():
    s = l1_state(pan=False)
    s.el1.map(VA1, IPA, 0x1000, s1_attrs(el0=True))
    assert not slow(s, AtOp.S1E1RP, VA1) & 1


@settings(max_examples=80, deadline=None)
@given(ap=st.integers(0, 3), uxn=st.booleans(), epan=st.booleans(), e0pd=st.booleans(),
       write=st.booleans())
def test_el0_probe_differs_from_the_architecture_exactly_on_epan_xo_and_e0pd(
        ap, uxn, epan, e0pd, write):
    s = l1_state(pan=True, epan=epan, e0pd=int(e0pd))
    s.el1.map(VA1, IPA, 0x1000, s1_attrs(el0=bool(ap & 1), ro=bool(ap & 2), uxn=uxn, pxn=True))
    op = AtOp.S1E1WP if write else AtOp.S1E1RP
    archpar = slow(s, op, VA1)
    probe = slow(s, op, VA1, AtProfile("probe", True, PanCheck.EL0_PROBE))
    el0_rw = bool(ap & 1)
    el0_x_only = not el0_rw and not uxn           # EL0 execute is UXN alone
    privileged_ok = not write or not ap & 2
    predicted = privileged_ok and ((epan and el0_x_only) or (e0pd and el0_rw))
    assert (archpar != probe) == predicted


# ---------------------------------------------------------------- fast path

def test_fast_path_success_is_kept():
    s = l1_state()
    s.el1.map(VA1, IPA, 0x1000, s1_attrs())
    got = kvm_at(s.ctx(), s.regs, False, AtOp.S1E1R, VA1)
    assert got.path == "fast" and got.par & PA_MASK == IPA


def test_fast_path_stage1_permission_fault_is_kept():
    s = l1_state()
    s.el1.map(VA1, IPA, 0x1000, s1_attrs(ro=True))
    got = kvm_at(s.ctx(), s.regs, False, AtOp.S1E1W, VA1)
    assert got.path == "fast" and fst(got.par) == 0b001111


def test_fast_path_stage1_access_flag_fault_is_kept_for_s1e1_not_s1e2():
    s = l1_state()
    s.el1.map(VA1, IPA, 0x1000, s1_attrs(af=False))
    s.el2.map(VA2, IPA, 0x1000, s1_attrs(af=False))
    assert kvm_at(s.ctx(), s.regs, False, AtOp.S1E1R, VA1).path == "fast"
    assert kvm_at(s.ctx(), s.regs, False, AtOp.S1E2R, VA2).path == "slow"


def test_no_shadow_stage2_goes_slow():
    s = l1_state()
    s.el1.map(VA1, IPA, 0x1000, s1_attrs())
    got = kvm_at(s.ctx(shadow=False), s.regs, False, AtOp.S1E1R, VA1)
    assert got.path == "slow" and got.fast_par is None and got.par & PA_MASK == IPA


def test_translation_fault_on_the_fast_path_goes_slow():
    s = l1_state()
    got = kvm_at(s.ctx(), s.regs, False, AtOp.S1E1R, VA1)
    assert got.path == "slow" and fst(got.par) == 0b000100


# ---------------------------------------------------------------- both stages

def listed_s12_attr_difference(fwb: bool, memattr: int, s1attr: int) -> str:
    """Return the listed difference an S12 attribute mismatch falls under, or ""."""
    return s12_attribute_difference(fwb, memattr, s1attr)


@pytest.mark.parametrize("fwb", [False, True])
@pytest.mark.parametrize("memattr", range(16))
@pytest.mark.parametrize("attrindx", range(8))
def test_s12_attributes_combine_as_the_architecture_outside_listed_differences(
        fwb, memattr, attrindx):
    from .state import MAIR
    s = l1_state(fwb=fwb)
    s.el1.map(VA1, IPA, 0x1000, s1_attrs(attrindx=attrindx))
    s.s2.map(IPA, PA, 0x1000, s2_attrs(memattr=memattr))
    got = kvm_at(s.ctx(), s.regs, False, AtOp.S12E1R, VA1).par
    arch = arch_par(s, AtOp.S12E1R, VA1) & ~(1 << 11)          # AT_S12_PAR_BIT11
    assert got & PA_MASK == PA and not got & 1
    listed = listed_s12_attr_difference(fwb, memattr, (MAIR >> 8 * attrindx) & 0xFF)
    assert got == arch or listed, (hex(got), hex(arch))
    assert listed == "" or listed in BY_NAME


def test_s12_fwb_forced_write_back_is_kvms_fixed_attribute():
    s = l1_state(fwb=True)
    s.el1.map(VA1, IPA, 0x1000, s1_attrs(attrindx=4))           # MAIR 0xAA, WT RA
    s.s2.map(IPA, PA, 0x1000, s2_attrs(memattr=0b0110))
    assert kvm_at(s.ctx(), s.regs, False, AtOp.S12E1R, VA1).par >> 56 == 0xFF
    assert arch_par(s, AtOp.S12E1R, VA1) >> 56 == 0xEE            # AT_S12_FWB_HINTS


def test_s12_hcr_cd_makes_normal_non_cacheable_with_and_without_fwb():
    for fwb in (False, True):
        s = l1_state(fwb=fwb, cd=True)
        s.el1.map(VA1, IPA, 0x1000, s1_attrs())
        s.s2.map(IPA, PA, 0x1000, s2_attrs(memattr=0b1111 if not fwb else 0b0111))
        par = kvm_at(s.ctx(), s.regs, False, AtOp.S12E1R, VA1).par
        assert par >> 56 == 0x44 and (par >> 7) & 3 == 0b10


def test_s12_stage2_permission_fault():
    s = l1_state()
    s.el1.map(VA1, IPA, 0x1000, s1_attrs())
    s.s2.map(IPA, PA, 0x1000, s2_attrs(s2ap=0b01))
    par = kvm_at(s.ctx(), s.regs, False, AtOp.S12E1W, VA1).par
    assert fst(par) == 0b001111 and par & (1 << 9) and not par & (1 << 8)
    assert par == arch_par(s, AtOp.S12E1W, VA1)


def test_s12_with_e2h_tge_is_stage1_only():
    s = l1_state(e2h=True, tge=True)
    s.el2.map(VA2, IPA, 0x1000, s1_attrs())
    par = kvm_at(s.ctx(), s.regs, False, AtOp.S12E1R, VA2).par
    assert par & PA_MASK == IPA


# ---------------------------------------------------------------- evidence

def normalised_arch(s: L1State, arch: int, op: AtOp, va: int, kvm: int) -> int:
    """Return the architecture's PAR with the listed KVM differences applied."""
    if arch & 1 and arch & (1 << 8) and kvm & 1 and kvm & (1 << 8):
        arch = (arch & ~(0b11 << 1)) | (kvm & (0b11 << 1))     # AT_S2_FAULT_LEVEL
    if not arch & 1 and not kvm & 1:
        arch = (arch & ~NS) | (kvm & NS)     # AT_PAR_NS: a fast-path S12 stage 1 has the CPU's
    if op.stage == 12 and not kvm & 1 and not arch & 1 and s12_two_stages(s):
        arch &= ~(1 << 11)                                      # AT_S12_PAR_BIT11
        if listed_for_state(s, op, va, kvm):
            arch = (arch & ~(0xFF << 56 | 0b11 << 7)) | (kvm & (0xFF << 56 | 0b11 << 7))
    return arch


def s12_two_stages(s: L1State) -> bool:
    h = s.regs.HCR_EL2
    return not (s.regs.e2h() and s.regs.tge()) and bool(h & 1 or h & (1 << 12))


def listed_for_state(s: L1State, op: AtOp, va: int, kvm: int) -> str:
    """Return the listed S12 attribute difference this state's leaves fall under, or ""."""
    from s2mmu.nested.at import S12_STAGE1
    from s2mmu.nested.nested import kvm_walk_nested_s2
    s1 = kvm_at(s.ctx(shadow=False), s.regs, s.pan, S12_STAGE1[op], va).par
    tr = kvm_walk_nested_s2(s.vm, s.regs, (s1 & PA_MASK) | (va & 0xFFF))
    memattr = (tr.desc >> 2) & 0xF
    return listed_s12_attr_difference(bool(s.regs.HCR_EL2 & (1 << 46)), memattr, s1 >> 56)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(random_l1_state(), st.sampled_from(list(AtOp)))
def test_slow_path_par_equals_the_architectures_at_outside_listed_differences(s, op):
    va = VA2 if op.el == 2 or (s.regs.e2h() and s.regs.tge()) else VA1
    ctx = s.ctx()
    if op.stage == 12:
        kvm = kvm_at(s.ctx(shadow=False), s.regs, s.pan, op, va).par
    else:
        kvm = slow_par(ctx, handle_at_slow(ctx, s.regs, s.pan, op, va))
    arch = arch_par(s, op, va)
    assert kvm == normalised_arch(s, arch, op, va, kvm), (op, hex(kvm), hex(arch))


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(random_l1_state(), st.sampled_from([op for op in AtOp if op.stage == 1]))
def test_fast_and_slow_path_agree_where_kvm_trusts_the_fast_path(s, op):
    va = VA2 if op.el == 2 or (s.regs.e2h() and s.regs.tge()) else VA1
    got = kvm_at(s.ctx(), s.regs, s.pan, op, va)
    event(f"path {got.path}")
    if got.path == "fast":
        cpu = got.par & ~NS if not got.par & 1 else got.par   # AT_PAR_NS: the CPU reports 1
        assert cpu == slow(s, op, va), (op, hex(got.par))
        assert got.par & NS or got.par & 1


def test_the_fast_path_reports_the_cpus_ns_bit_and_the_slow_path_none():
    s = l1_state()
    s.el1.map(VA1, IPA, 0x1000, s1_attrs())
    fast = kvm_at(s.ctx(), s.regs, False, AtOp.S1E1R, VA1)
    assert fast.path == "fast" and fast.par & NS
    assert not slow(s, AtOp.S1E1R, VA1) & NS and "AT_PAR_NS" in BY_NAME


def test_every_listed_difference_names_both_answers_and_a_reason():
    assert len({d.name for d in DIFFERENCES}) == len(DIFFERENCES)
    for d in DIFFERENCES:
        assert d.architecture and d.kvm and d.reason and d.where


def test_slow_path_result_is_a_value_not_an_exception():
    s = l1_state()
    ctx = s.ctx()
    got = handle_at_slow(ctx, s.regs, False, AtOp.S1E1R, VA1)
    assert not isinstance(got, AddressDescriptor) and got.statuscode is Fault.TRANSLATION


def test_s12_write_back_transient_over_write_through_is_kvms_write_back_transient():
    from dataclasses import replace
    s = l1_state()
    s.regs = replace(s.regs, MAIR_EL1=0x77)                      # WB Transient, RW hints
    s.el1.map(VA1, IPA, 0x1000, s1_attrs(attrindx=0))
    s.s2.map(IPA, PA, 0x1000, s2_attrs(memattr=0b1010))          # WT, WT
    assert kvm_at(s.ctx(), s.regs, False, AtOp.S12E1R, VA1).par >> 56 == 0x77
    assert arch_par(s, AtOp.S12E1R, VA1) >> 56 == 0x33              # WT Transient, RW
    assert s12_attribute_difference(False, 0b1010, 0x77) == "AT_S12_TRANSIENT"


@pytest.mark.parametrize("op,pir,por,faults", [
    (AtOp.S1E1R, 0b1000, None, False),     # PIR Perm0 = R
    (AtOp.S1E1W, 0b1000, None, True),
    (AtOp.S1E1W, 0b0101, None, False),     # RW with overlay, overlay off
    (AtOp.S1E1W, 0b0101, 0b0001, True),    # ... POR_EL1 Perm0 = R takes write away
    (AtOp.S1E1R, 0b0101, 0b0001, False),
])
def test_slow_path_walks_with_l1_pie_and_overlay(op, pir, por, faults):
    # KVM's at.c handle_at_slow -> compute_s1_permissions: indirect permissions when
    # s1pie_enabled (HCRX_EL2.TCR2En and TCR2_EL1.PIE), the overlay with TCR2_EL1.POE.
    # The model's slow path is the architecture's s1_translate with L1's registers.
    from s2mmu.arch.features import server_v9_4_pie
    from s2mmu.arch.registers import HCRX_EL2, TCR2_EL1
    s = l1_state(server_v9_4_pie().with_features("FEAT_ATS1A"))
    s.el1.map(VA1, IPA, 0x1000, s1_attrs())
    s.regs = replace(s.regs, HCRX_EL2=HCRX_EL2.encode(TCR2En=1), PIR_EL1=pir,
                     POR_EL1=por or 0, TCR2_EL1=TCR2_EL1.encode(PIE=1, POE=int(por is not None)))
    par = slow(s, op, VA1)
    assert bool(par & 1) == faults
    assert par == arch_par(s, op, VA1)
    if faults:
        assert fst(par) == 0b001111
