"""s2mmu.translate and s2mmu.at: one call, registers by name, memory or a KVM stage 2."""

from __future__ import annotations

import pytest

import s2mmu
from s2mmu import pgtable
from s2mmu.arch.access import acc_gpr
from s2mmu.arch.builder import BumpAllocator, TableBuilder, s1_attrs
from s2mmu.arch.errors import InputError
from s2mmu.arch.memory import PhysMem
from s2mmu.arch.params import Granule
from s2mmu.arch.state import SysRegs

S1 = {"SCTLR_EL1": 0x30D00805, "TCR_EL1": 0x500803510, "MAIR_EL1": 0xFF}


def s1_memory() -> tuple[PhysMem, dict[str, int]]:
    mem = PhysMem()
    tables = TableBuilder(mem, BumpAllocator(0x1000_0000, 0x1010_0000), Granule.G4K,
                          iasize=48, startlevel=0)
    tables.map(0x40_0000, 0x8000_0000, 0x1000, s1_attrs(ro=True))
    return mem, {**S1, "TTBR0_EL1": tables.root}


def test_translate_gives_pa_attrs_par_and_hex_repr() -> None:
    mem, regs = s1_memory()
    t = s2mmu.translate(0x40_0123, regs=regs, memory=mem)
    assert t.pa == 0x8000_0123 and t.fault is None and t.esr() is None
    assert t.attrs is not None and t.attrs.describe() == "Normal iWB-RAWA oWB-RAWA ISH"
    assert repr(t) == ("Translation(va=0x400123, pa=0x80000123, attrs='Normal iWB-RAWA "
                       f"oWB-RAWA ISH', par={t.par:#x})")
    assert t.par == 0xFF00000080000B80


def test_fault_has_esr_far_and_no_hpfar_at_stage_1() -> None:
    mem, regs = s1_memory()
    t = s2mmu.translate(0x40_0123, regs=regs, memory=mem, access="w")
    assert t.pa is None and t.fault is not None and t.fault.level == 3
    assert (t.esr(), t.far(), t.hpfar(), t.taken_to()) == (0x9600004F, 0x40_0123, None, 1)
    assert repr(t) == ("Translation(va=0x400123, fault='Permission', level=3, stage=1, "
                       "esr=0x9600004f, hpfar=None, par=0x81f)")


def test_explain_is_the_library_text() -> None:
    mem, regs = s1_memory()
    text = s2mmu.translate(0x40_0123, regs=regs, memory=mem).explain()
    assert text.splitlines()[0] == "VA 0x400123 EL1 read in the EL1&0 regime"
    assert "  HCR_EL2 not given: 0x80000000 (VM=0), stage 2 off" in text
    assert text.splitlines()[-1] == "-> 0x80000123  Normal iWB-RAWA oWB-RAWA ISH"


def test_registers_may_be_a_sysregs() -> None:
    mem, regs = s1_memory()
    t = s2mmu.translate(0x40_0123, regs=SysRegs(**regs), memory=mem)
    assert t.pa == 0x8000_0123
    assert "not given" not in t.explain()


def test_unknown_register_name_is_an_input_error() -> None:
    with pytest.raises(InputError, match="unknown register 'TCR_EL3'"):
        s2mmu.translate(0, regs={"TCR_EL3": 0})


def test_bad_access_and_el_are_input_errors() -> None:
    with pytest.raises(InputError, match="access must be one of r, w, x, got 'rw'"):
        s2mmu.translate(0, access="rw")
    with pytest.raises(InputError, match="el must be 0, 1 or 2, got 3"):
        s2mmu.translate(0, el=3)


def test_access_descriptor_is_accepted() -> None:
    mem, regs = s1_memory()
    t = s2mmu.translate(0x40_0123, regs=regs, memory=mem, access=acc_gpr(1, True, pan=True))
    assert t.fault is not None and t.fault.statuscode.value == "Permission"


def stage2_with_guest() -> tuple[pgtable.KvmPgtable, dict[str, int]]:
    env = pgtable.new_env()
    s2 = pgtable.new_stage2(env, ipa_bits=40)
    assert pgtable.stage2_map_topup(s2, 0x4000_0000, 0x20_0000, 0x8_0000_0000,
                                    pgtable.KVM_PGTABLE_PROT_RWX) == 0
    s1 = TableBuilder(s2mmu.guest_memory(s2), BumpAllocator(0x4010_0000, 0x4020_0000),
                      Granule.G4K, iasize=48, startlevel=0)
    s1.map(0x1000, 0x4000_3000, 0x1000, s1_attrs())
    s1.map(0x2000, 0x4100_0000, 0x1000, s1_attrs())      # IPA not mapped at stage 2
    return s2, {**S1, "TTBR0_EL1": s1.root}


def test_kvm_stage2_is_memory_vtcr_and_vttbr_of_a_two_stage_translate() -> None:
    s2, regs = stage2_with_guest()
    t = s2mmu.translate(0x1234, regs=regs, memory=s2)
    assert t.pa == 0x8_0000_3234
    assert t.regs.VTCR_EL2 == s2.s2_mmu.vtcr and t.regs.HCR_EL2 & 1
    assert t.regs.VTTBR_EL2 == pgtable.stage2_vttbr(s2)
    assert {s.stage for s in t.steps} == {1, 2}


def test_stage2_fault_reports_hpfar() -> None:
    s2, regs = stage2_with_guest()
    t = s2mmu.translate(0x2000, regs=regs, memory=s2)
    assert t.fault is not None and t.fault.secondstage
    assert (t.taken_to(), t.hpfar(), t.far()) == (2, 0x410000, 0x2000)


def test_guest_memory_refuses_an_unmapped_ipa() -> None:
    s2, _ = stage2_with_guest()
    with pytest.raises(ValueError, match="IPA 0x50000000 is not mapped by the stage 2"):
        s2mmu.guest_memory(s2).read64(0x5000_0000)


def test_at_from_el2_reports_par() -> None:
    s2, regs = stage2_with_guest()
    a = s2mmu.at("S12E1R", 0x1234, regs=regs, memory=s2)
    assert a.pa == 0x8_0000_3234 and a.par == 0xFF00000800003B80 and a.esr() is None
    assert repr(a) == "AtInstruction(op='S12E1R', va=0x1234, el=2, par=0xff00000800003b80)"
    assert a.explain().splitlines()[-1].startswith("PAR_EL1=0xff00000800003b80")


def test_at_from_el1_takes_the_stage2_fault_on_the_walk_to_el2() -> None:
    s2, regs = stage2_with_guest()
    regs = {**regs, "TTBR0_EL1": 0x4200_0000}   # stage-1 root IPA not mapped at stage 2
    a = s2mmu.at("AT S1E1R", 0x1000, regs=regs, memory=s2, el=1)
    assert a.par is None and a.esr() == 0x920001C6 and a.far() == 0x1000
    assert a.hpfar() == 0x420000
    assert a.fault is not None and a.fault.s2fs1walk
    assert repr(a) == ("AtInstruction(op='S1E1R', va=0x1000, el=1, taken_to=2, "
                       "esr=0x920001c6, far=0x1000, hpfar=0x420000)")


def test_at_undefined_at_el1_has_no_translation() -> None:
    a = s2mmu.at("S12E1R", 0x0, el=1)
    assert a.run is None and a.esr() == 0x2000000
    assert a.explain().startswith("AT S12E1R 0x0 at EL1 PAN=0\nexception to EL1")


def test_unknown_at_op_and_feature_preset_are_input_errors() -> None:
    with pytest.raises(InputError, match="unknown AT operation 'S1E3R'"):
        s2mmu.at("S1E3R", 0)
    with pytest.raises(InputError, match="unknown feature preset 'cortex'"):
        s2mmu.translate(0, features="cortex")
