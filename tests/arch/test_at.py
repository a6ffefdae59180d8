"""AT instructions: the regime each one uses, PAR_EL1 in both formats, the exceptions they take."""

import pytest

from s2mmu.arch.at import AtException, AtOp, ParResult, at_regime
from s2mmu.arch.builder import BumpAllocator, TableBuilder, s1_attrs, s2_attrs
from s2mmu.arch.config import ImplChoices
from s2mmu.arch.errors import InputError
from s2mmu.arch.faults import Fault
from s2mmu.arch.features import qemu_7_2_max
from s2mmu.arch.memory import MemoryWrite
from s2mmu.arch.params import Granule
from s2mmu.arch.registers import HCR_EL2, SCTLR_EL1
from s2mmu.arch.state import Regime, SysRegs

from .machine import (
    DATA_IPA,
    DATA_PA,
    DATA_VA,
    HCR_RW,
    MAIR,
    S1_TABLES_IPA,
    SCTLR_M,
    Machine,
    s1_machine,
    tcr_el1,
    two_stage,
)

G4 = Granule.G4K
VA = 0x80_4020_1000
PA = 0x9000_0000


def mapped(attrs=None, **tcr):
    m, b = s1_machine(G4, 16, **tcr)
    b.map(VA, PA, 0x1000, s1_attrs() if attrs is None else attrs)
    return m, b


# ---------------------------------------------------------------- PAR_EL1, success format

def test_par_success_normal_write_back_inner_shareable():
    # ATTR=0xFF, PA, bit 11 RES1, NS=1 (implementation choice), SH=0b11.
    m, _ = mapped()
    assert m.par("S1E1R", VA + 0x123) == 0xFF00_0000_9000_0B80


def test_par_success_device_reports_outer_shareable():
    # Device-nGnRE is Outer Shareable whatever the descriptor's SH (PAR_EL1.SH).
    m, _ = mapped(s1_attrs(attrindx=1, sh=0b11))
    assert m.par("S1E1R", VA) == 0x0400_0000_9000_0B00


def test_par_success_non_cacheable_reports_outer_shareable():
    m, _ = mapped(s1_attrs(attrindx=2, sh=0b00))
    assert m.par("S1E1R", VA) == 0x4400_0000_9000_0B00


def test_par_success_write_through_and_mixed():
    m, _ = mapped(s1_attrs(attrindx=4, sh=0b11))
    assert m.par("S1E1R", VA) == 0xAA00_0000_9000_0B80
    m, _ = mapped(s1_attrs(attrindx=5, sh=0b00))
    assert m.par("S1E1R", VA) == 0x4F00_0000_9000_0A00


def test_par_success_52_bit_pa():
    m, b = s1_machine(G4, 12, ds=True)
    b.map(VA, 0xF_1234_5678_9000, 0x1000, s1_attrs(sh=0))
    # With DS the shareability comes from TCR_EL1.SH0 (0b11).
    assert m.par("S1E1R", VA) == 0xFF0F_1234_5678_9B80


def test_par_mmu_off_is_flat_device():
    m = Machine()
    assert m.par("S1E1R", 0x1234_5678) == 0x0000_0000_1234_5B00


def test_par_reports_table_attributes_or_resulting_by_choice():
    m, _ = mapped()
    m.set(SCTLR_EL1=SCTLR_M & ~SCTLR_EL1.encode(C=1))
    assert m.par("S1E1R", VA) == 0xFF00_0000_9000_0B80
    m.choices = ImplChoices(par_sctlr_cacheability=True)
    assert m.par("S1E1R", VA) == 0x4400_0000_9000_0B00


def test_par_ns_and_bit11_are_choices():
    m, _ = mapped()
    m.choices = ImplChoices(par_ns_nonsecure=False, par_res1_bit11=False)
    assert m.par("S1E1R", VA) == 0xFF00_0000_9000_0180


# ---------------------------------------------------------------- PAR_EL1, fault format

def test_par_fault_translation_level0():
    m, _ = mapped()
    assert m.par("S1E1R", 0x1_0000_0000_0000) == 0x809


def test_par_fault_permission_and_access_flag():
    m, _ = mapped(s1_attrs(ro=True))
    assert m.par("S1E1W", VA) == 0x81F
    m, _ = mapped(s1_attrs(af=False))
    assert m.par("S1E1R", VA) == 0x817


def test_at_never_checks_execute_permission():
    m, _ = mapped(s1_attrs(pxn=True, uxn=True))
    assert m.par("S1E1R", VA) & 1 == 0


# ---------------------------------------------------------------- UNDEFINED

@pytest.mark.parametrize("op", ["S12E1R", "S12E1W", "S12E0R", "S12E0W", "S1E2R", "S1E2W"])
def test_el2_ops_are_undefined_at_el1(op):
    e = Machine().exc(op, 0, el=1)
    assert (e.taken_to, e.esr, e.far, e.hpfar) == (1, 0x2000000, None, None)
    assert e.reason == f"AT {op} is UNDEFINED at EL1"


@pytest.mark.parametrize("el", [0, -1, 4])
def test_execute_at_refuses_an_el_an_at_cannot_execute_at(el):
    # At EL0 AT is UNDEFINED and taken to EL1/EL2: an exception "taken to EL0" cannot be.
    with pytest.raises(InputError) as e:
        Machine().exc("S1E0R", 0, el=el)
    assert str(e.value) == (f"el={el}: AT instructions are executed at EL1, EL2 or EL3 "
                            "(at EL0 they are UNDEFINED and taken to EL1 or EL2)")


@pytest.mark.parametrize("va", [-1, 1 << 64])
def test_execute_at_refuses_an_address_wider_than_64_bits(va):
    with pytest.raises(InputError) as e:
        Machine().exc("S1E1R", va)
    assert str(e.value) == (f"va={'-0x1' if va < 0 else '0x10000000000000000'}: an AT input "
                            "address is 64 bits (0..2^64-1)")


def test_at_s12_is_undefined_at_el1_and_taken_to_el1():
    exc = Machine().exc("S12E1R", 0, el=1)
    assert (exc.taken_to, exc.reason) == (1, "AT S12E1R is UNDEFINED at EL1")


def test_pan_aware_at_needs_feat_pan2():
    m = Machine(fs=qemu_7_2_max().with_features(remove=("FEAT_PAN2",)))
    assert m.exc("S1E1RP", 0).reason == "AT S1E1RP needs FEAT_PAN2"


# ---------------------------------------------------------------- PAN, EPAN

def test_pan_aware_at_faults_on_el0_accessible_page_with_pan():
    m, _ = mapped(s1_attrs(el0=True))
    assert m.par("S1E1RP", VA, pan=True) == 0x81F
    assert m.par("S1E1WP", VA, pan=True) == 0x81F
    assert m.par("S1E1RP", VA, pan=False) & 1 == 0


def test_plain_at_ignores_pan():
    m, _ = mapped(s1_attrs(el0=True))
    assert m.par("S1E1R", VA, pan=True) & 1 == 0
    assert m.par("S1E1W", VA, pan=True) & 1 == 0
    assert m.par("S1E0R", VA, pan=True) & 1 == 0


def test_pan_aware_at_on_privileged_page_succeeds():
    m, _ = mapped(s1_attrs())
    assert m.par("S1E1RP", VA, pan=True) & 1 == 0


def test_epan_with_feat_pan3_faults_el0_executable_pages():
    m, _ = mapped(s1_attrs())                       # AP=00, UXN=0: EL0 may execute
    m.fs = qemu_7_2_max().with_features("FEAT_PAN3")
    m.set(SCTLR_EL1=SCTLR_M | SCTLR_EL1.encode(EPAN=1))
    assert m.par("S1E1RP", VA, pan=True) == 0x81F
    m, _ = mapped(s1_attrs(uxn=True))
    m.fs = qemu_7_2_max().with_features("FEAT_PAN3")
    m.set(SCTLR_EL1=SCTLR_M | SCTLR_EL1.encode(EPAN=1))
    assert m.par("S1E1RP", VA, pan=True) & 1 == 0


def test_epan_without_feat_pan3_does_nothing():
    m, _ = mapped(s1_attrs())
    m.set(SCTLR_EL1=SCTLR_M | SCTLR_EL1.encode(EPAN=1))
    assert m.par("S1E1RP", VA, pan=True) & 1 == 0


# ---------------------------------------------------------------- stage 2 and AT

def two_stage_mapped():
    m, s1, s2 = two_stage()
    s1.map(DATA_VA, DATA_IPA, 0x1000, s1_attrs())
    s2.map(DATA_IPA, DATA_PA, 0x1000, s2_attrs())
    return m, s1, s2


def test_s12e1r_reports_the_pa():
    m, _, _ = two_stage_mapped()
    assert m.par("S12E1R", DATA_VA) == 0xFF00_0000_9000_0B80
    assert m.par("S1E1R", DATA_VA) == 0xFF00_0000_8000_0B80     # the IPA


def test_s12_stage2_fault_on_output_sets_s_not_ptw():
    m, s1, s2 = two_stage_mapped()
    s2.set_entry(DATA_IPA, 3, 0)
    # F=1, FST translation level 3, S=1, PTW=0, bit 11.
    assert m.par("S12E1R", DATA_VA) == 0x800 | 0x200 | (0b000111 << 1) | 1


def test_stage2_fault_on_stage1_walk_from_el2_is_reported_in_par():
    m, s1, s2 = two_stage_mapped()
    s2.set_entry(S1_TABLES_IPA, 2, 0)
    assert m.par("S1E1R", DATA_VA, el=2) == 0x800 | 0x200 | 0x100 | (0b000110 << 1) | 1


def test_stage2_fault_on_stage1_walk_from_el3_is_reported_in_par():
    m, s1, s2 = two_stage_mapped()
    s2.set_entry(S1_TABLES_IPA, 2, 0)
    assert m.par("S1E1R", DATA_VA, el=3) & 0x301 == 0x301


def test_stage2_fault_on_stage1_walk_from_el1_is_taken_to_el2():
    m, s1, s2 = two_stage_mapped()
    s2.set_entry(S1_TABLES_IPA, 2, 0)
    e = m.exc("S1E1R", DATA_VA, el=1)
    # EC 0x24, IL=1, CM=1, S1PTW=1, WnR=1, DFSC translation level 2.
    assert (e.taken_to, e.esr, e.far) == (2, 0x920001C6, DATA_VA)
    assert e.hpfar == (m.regs.TTBR0_EL1 >> 12) << 4
    assert e.fault is not None and e.fault.s2fs1walk


def test_stage1_fault_from_el1_is_reported_in_par():
    m, s1, s2 = two_stage_mapped()
    assert m.par("S1E1R", DATA_VA + 0x1000, el=1) == 0x80F    # translation, level 3


def test_at_sets_af_but_never_dirty_state_stage1():
    m, b = s1_machine(G4, 16, HA=1, HD=1)
    desc = PA | s1_attrs(af=False, ro=True, dbm=True) | 0b11
    b.map(VA, PA, 0x1000, s1_attrs())
    entry = b.set_entry(VA, 3, desc)
    assert m.par("S1E1W", VA) & 1 == 0         # DBM makes the write permitted
    assert m.mem.hw_writes == [MemoryWrite(entry, desc, desc | (1 << 10))]


def test_at_sets_af_but_never_dirty_state_stage2():
    m, s1, s2 = two_stage(HA=1, HD=1)
    s1.map(DATA_VA, DATA_IPA, 0x1000, s1_attrs())
    s2.map(DATA_IPA, DATA_PA, 0x1000, s2_attrs(af=False, s2ap=0b01, dbm=True))
    assert m.par("S12E1W", DATA_VA) & 1 == 0
    (w,) = m.mem.hw_writes
    assert w.after == w.before | (1 << 10)


def test_at_with_ha_off_reports_access_flag_fault():
    m, _ = mapped(s1_attrs(af=False))
    assert m.par("S1E1W", VA) == 0x817
    assert m.mem.hw_writes == []


# ---------------------------------------------------------------- regimes

def test_at_regime_selection():
    plain = SysRegs()
    vhe = SysRegs(HCR_EL2=HCR_RW | HCR_EL2.encode(E2H=1))
    host = SysRegs(HCR_EL2=HCR_RW | HCR_EL2.encode(E2H=1, TGE=1))
    assert at_regime(AtOp.S1E1R, plain) == (Regime.EL10, 1)
    assert at_regime(AtOp.S1E0R, plain) == (Regime.EL10, 0)
    assert at_regime(AtOp.S1E2R, plain) == (Regime.EL2, 2)
    assert at_regime(AtOp.S1E2R, vhe) == (Regime.EL20, 2)
    assert at_regime(AtOp.S1E1R, vhe) == (Regime.EL10, 1)
    assert at_regime(AtOp.S1E1R, host) == (Regime.EL20, 2)
    assert at_regime(AtOp.S1E0R, host) == (Regime.EL20, 0)
    # AT S12E0R/S12E1R pseudocode: ELIsInHost(EL0) -> AArch64.AT(TranslationStage_1).
    assert at_regime(AtOp.S12E1R, host) == (Regime.EL20, 2)
    assert at_regime(AtOp.S12E0W, host) == (Regime.EL20, 0)


def el20_machine(hcr):
    m = Machine()
    b = TableBuilder(m.mem, BumpAllocator(0x3000_0000, 0x3100_0000), G4, 48, 0)
    b.map(VA, PA, 0x1000, s1_attrs(el0=True))
    m.set(HCR_EL2=HCR_RW | hcr, TCR_EL2=tcr_el1(16, G4, epd1=1), TTBR0_EL2=b.root,
          SCTLR_EL2=0x30C50831, MAIR_EL2=MAIR)
    return m


def test_s1e2r_with_e2h_uses_el20_tables():
    m = el20_machine(HCR_EL2.encode(E2H=1))
    assert m.par("S1E2R", VA) == 0xFF00_0000_9000_0B80
    # EL1&0 has no tables: S1E1R sees its MMU off.
    assert m.par("S1E1R", VA) == 0x0000_0080_4020_1B00


def test_host_s1e1rp_checks_el2_permissions_with_pan():
    m = el20_machine(HCR_EL2.encode(E2H=1, TGE=1))
    assert m.par("S1E1R", VA) == 0xFF00_0000_9000_0B80
    assert m.par("S1E1RP", VA, pan=True) == 0x81F
    assert m.par("S1E0R", VA) == 0xFF00_0000_9000_0B80


def test_host_s12e1r_is_a_stage1_translation_in_el20():
    # In a host (E2H=TGE=1) AT S12E1R walks the EL2&0 tables, stage 1 only, as EL2.
    m = el20_machine(HCR_EL2.encode(E2H=1, TGE=1))
    assert m.par("S12E1R", VA) == 0xFF00_0000_9000_0B80
    assert m.par("S12E0R", VA) == 0xFF00_0000_9000_0B80


def test_e2h0_el2_regime():
    from s2mmu.arch.registers import TCR_EL2_E2H0

    m = Machine()
    b = TableBuilder(m.mem, BumpAllocator(0x3000_0000, 0x3100_0000), G4, 48, 0)
    b.map(VA, PA, 0x1000, s1_attrs(ro=True))
    m.set(TCR_EL2=TCR_EL2_E2H0.encode(T0SZ=16, PS=0b101, SH0=3), TTBR0_EL2=b.root,
          SCTLR_EL2=0x30C50831, MAIR_EL2=MAIR)
    assert m.par("S1E2R", VA) == 0xFF00_0000_9000_0B80
    assert m.par("S1E2W", VA) == 0x81F


# ---------------------------------------------------------------- op names

def test_op_parse_is_case_insensitive_and_takes_at_prefix():
    assert AtOp.parse("at s1e1rp") is AtOp.S1E1RP
    assert (AtOp.S12E0W.stage, AtOp.S12E0W.el, AtOp.S12E0W.write) == (12, 0, True)


def test_op_parse_error_names_the_op_and_the_known_ones():
    with pytest.raises(InputError) as e:
        AtOp.parse("S1E3R")
    assert str(e.value).startswith("unknown AT operation 'S1E3R' (known: S1E0R, S1E0W,")


def test_result_types():
    m, _ = mapped()
    got = m.at("S1E1R", VA)
    assert isinstance(got, ParResult) and got.result.paddress == PA
    assert isinstance(m.at("S12E1R", VA, el=1), AtException)
    f = m.at("S1E1R", 0x1_0000_0000_0000)
    assert isinstance(f, ParResult) and f.result.statuscode is Fault.TRANSLATION


# ---------------------------------------------------------------- FEAT_ATS1A

def test_at_s1e1a_needs_feat_ats1a():
    m, _ = mapped()
    exc = m.exc("S1E1A", VA, el=1)
    assert exc.reason == "AT S1E1A needs FEAT_ATS1A"


def test_at_s1e1a_translates_a_page_s1e1r_cannot_read():
    m, _ = mapped(s1_attrs(el0=True))
    m.fs = qemu_7_2_max().with_features("FEAT_ATS1A")
    assert m.par("S1E1RP", VA, el=1, pan=True) & 1
    par = m.par("S1E1A", VA, el=1, pan=True)
    assert not par & 1 and par & 0xFFFFFFFFF000 == PA


def test_at_s1e2a_checks_no_write_permission_on_a_read_only_el2_page():
    m = Machine(fs=qemu_7_2_max().with_features("FEAT_ATS1A"))
    alloc = BumpAllocator(0x1000_0000, 0x2000_0000)
    b = TableBuilder(m.mem, alloc, G4, 48, 0)
    b.map(0x4000_0000, PA, 0x1000, s1_attrs(ro=True))
    m.set(SCTLR_EL2=0x30C50830 | 1, MAIR_EL2=MAIR, TTBR0_EL2=b.root,
          TCR_EL2=0x80800000 | 16 | (0b101 << 16))
    assert m.par("S1E2W", 0x4000_0000) & 1
    assert m.par("S1E2A", 0x4000_0000) & 0xFFFFFFFFF000 == PA


def test_at_s1e1a_still_faults_on_translation():
    m, _ = mapped()
    m.fs = qemu_7_2_max().with_features("FEAT_ATS1A")
    par = m.par("S1E1A", VA + 0x1000, el=1)
    assert par & 1 and (par >> 1) & 0x3F == 0b000111
