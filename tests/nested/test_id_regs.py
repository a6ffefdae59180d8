"""A guest hypervisor's ID registers: the VM's, limited as KVM limits them (limit_nv_id_regs)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s2mmu.arch.at import AtOp
from s2mmu.arch.errors import InputError
from s2mmu.arch.features import (
    ID_FEATURES,
    FeatureSet,
    IdRegs,
    feature_set_of,
    id_regs_of,
    qemu_7_2_max,
)
from s2mmu.arch.memory import PhysMem
from s2mmu.kvm.host import HostFeatures, HostMm, host_id_regs
from s2mmu.kvm.vm import kvm_create_vm, kvm_set_id_regs
from s2mmu.nested.at import kvm_at_undefined
from s2mmu.nested.nested import NestedVm, limit_nv_id_regs, nested_features

ALL = qemu_7_2_max().with_features("FEAT_ATS1A", "FEAT_NV", "FEAT_PAN3")
"""A host CPU with every feature the limit hides or keeps."""


def limited(fs: FeatureSet) -> FeatureSet:
    return feature_set_of(limit_nv_id_regs(id_regs_of(fs)))


def test_the_memory_model_fields_kvm_hides_are_gone_and_ttl_is_forced() -> None:
    got = limited(ALL)
    for hidden in ("FEAT_XNX", "FEAT_HAFDBS", "FEAT_HAFDBS_DIRTY", "FEAT_BBM", "FEAT_TTST",
                   "FEAT_LVA"):
        assert ALL.has(hidden) and not got.has(hidden), hidden
    for kept in ("FEAT_PAN", "FEAT_PAN2", "FEAT_PAN3", "FEAT_HPDS", "FEAT_HPDS2", "FEAT_VHE",
                 "FEAT_VMID16", "FEAT_HCX", "FEAT_S2FWB", "FEAT_E0PD", "FEAT_NV", "FEAT_UAO",
                 "FEAT_TTCNP", "FEAT_BigEnd", "FEAT_LPA2", "FEAT_ATS1A", "FEAT_TLBIRANGE",
                 "FEAT_LSE"):
        assert got.has(kept), kept
    assert limited(FeatureSet(frozenset())).has("FEAT_TTL")   # forced, whatever the host
    assert got.pa_bits == 48 and limited(ALL.with_features()).granules == ALL.granules


def test_parange_is_capped_at_48_bits_and_smaller_ones_are_kept() -> None:
    assert limited(FeatureSet(frozenset(), pa_bits=52)).pa_bits == 48
    assert limited(FeatureSet(frozenset(), pa_bits=40)).pa_bits == 40


def test_the_stage_2_granule_fields_say_supported_and_other_hidden_fields_are_zero() -> None:
    regs = IdRegs(0xF << 60 | 0xF << 44 | 0xF << 12, 0xF << 16 | 0xF << 28, 0xF << 20,
                  0xF << 24 | 2 << 56, 1 << 60 | 0x7)
    got = limit_nv_id_regs(regs)
    assert got.ID_AA64MMFR0_EL1 == 0b0010 << 40 | 0b0010 << 36 | 0b0010 << 32
    assert got.ID_AA64MMFR1_EL1 == 0xF << 16               # LO kept, XNX hidden
    assert got.ID_AA64MMFR2_EL1 == 1 << 48                 # CCIDX hidden, TTL forced
    assert got.ID_AA64ISAR0_EL1 == 2 << 56                 # TME hidden, range TLBIs kept
    assert got.ID_AA64ISAR2_EL1 == regs.ID_AA64ISAR2_EL1   # untouched


@given(st.sets(st.sampled_from(sorted(ID_FEATURES))), st.sampled_from([32, 36, 40, 44, 48, 52]))
def test_the_limit_only_takes_away_and_is_idempotent(names: set[str], pa_bits: int) -> None:
    fs = FeatureSet(frozenset(names), pa_bits=pa_bits)
    once = limit_nv_id_regs(id_regs_of(fs))
    assert limit_nv_id_regs(once) == once
    got, had = feature_set_of(once), feature_set_of(id_regs_of(fs))
    assert got.features - {"FEAT_TTL"} <= had.features
    assert got.pa_bits == min(pa_bits, 48)


def vm(features: HostFeatures):  # type: ignore[no-untyped-def]
    return kvm_create_vm(HostMm(PhysMem(), features), 40)


def test_the_nested_features_follow_the_vm_id_registers_and_userspace_can_lower_them() -> None:
    kvm = vm(HostFeatures(fwb=True, cpu=frozenset({"FEAT_ATS1A", "FEAT_XNX", "FEAT_PAN3"})))
    fs = nested_features(kvm)
    assert fs.has("FEAT_ATS1A") and fs.has("FEAT_PAN3") and fs.has("FEAT_TTL")
    assert not fs.has("FEAT_XNX") and not fs.has("FEAT_HAFDBS") and fs.has("FEAT_S2FWB")
    lower = feature_set_of(kvm.id_regs).with_features(remove=("FEAT_PAN2", "FEAT_PAN3",
                                                              "FEAT_ATS1A"))
    kvm_set_id_regs(kvm, id_regs_of(lower))
    fs = nested_features(kvm)
    assert fs.has("FEAT_PAN") and not fs.has("FEAT_PAN2") and not fs.has("FEAT_ATS1A")


def test_an_at_the_guest_hypervisor_lacks_is_undefined() -> None:
    def reasons(features: HostFeatures) -> dict[AtOp, str]:
        kvm = vm(features)
        view = NestedVm(nested_features(kvm), 40, kvm.host.mem, kvm.host.mem)
        return {op: kvm_at_undefined(view, op) for op in AtOp}

    plain = reasons(HostFeatures())
    assert {op for op, why in plain.items() if why} == {AtOp.S1E1A, AtOp.S1E2A}
    assert plain[AtOp.S1E1A] == "AT S1E1A needs FEAT_ATS1A"
    assert not any(reasons(HostFeatures(cpu=frozenset({"FEAT_ATS1A"}))).values())


def test_a_host_cpu_feature_must_be_an_id_register_feature_no_flag_sets() -> None:
    with pytest.raises(InputError, match="FEAT_S2FWB: not an ID register feature"):
        HostFeatures(cpu=frozenset({"FEAT_S2FWB"}))
    with pytest.raises(InputError, match="FEAT_DIC"):
        HostFeatures(cpu=frozenset({"FEAT_DIC"}))
    regs = host_id_regs(HostFeatures(tlb_range=True, cpu=frozenset({"FEAT_E0PD"})))
    assert {"FEAT_TLBIRANGE", "FEAT_E0PD"} <= feature_set_of(regs).features
