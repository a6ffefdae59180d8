"""The VM's ID_AA64MMFR*_EL1: the host's by default, lowered by userspace, and the only
source of the feature set the guest's instructions see (arch_features)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from s2mmu.arch.at import AtException, AtOp, execute_at
from s2mmu.arch.errors import InputError
from s2mmu.arch.features import feature_set_of
from s2mmu.arch.translate import Env
from s2mmu.kvm.cpu import arch_features, vcpu_regs
from s2mmu.kvm.host import HostFeatures, host_id_regs
from s2mmu.kvm.vm import Kvm, kvm_set_id_regs
from tests.kvm.helpers import new_vm

PAN_SHIFT = 20


def with_pan(kvm: Kvm, pan: int) -> None:
    """Give the VM ID_AA64MMFR1_EL1.PAN = pan (the other fields stay the host's)."""
    mmfr1 = kvm.id_regs.ID_AA64MMFR1_EL1 & ~(0xF << PAN_SHIFT) | pan << PAN_SHIFT
    kvm_set_id_regs(kvm, replace(kvm.id_regs, ID_AA64MMFR1_EL1=mmfr1))


def s1e1rp(kvm: Kvm) -> object:
    """Execute AT S1E1RP at EL1 in the VM, PSTATE.PAN=1."""
    return execute_at(AtOp.S1E1RP, 0x1000, 1, True, vcpu_regs(kvm),
                      Env(kvm.host.mem, arch_features(kvm)))


def test_the_vm_starts_with_the_hosts_sanitised_registers() -> None:
    kvm, _ = new_vm(HostFeatures(fwb=True, dic=True, pa_bits=44))
    assert kvm.id_regs == host_id_regs(kvm.host.features)
    fs = arch_features(kvm)
    assert fs.pa_bits == 44 and fs.has("FEAT_PAN2") and fs.has("FEAT_S2FWB")
    assert fs.has("FEAT_DIC") and not fs.has("FEAT_IDC")


def test_s1e1rp_is_undefined_with_pan_1_and_defined_with_pan_2() -> None:
    kvm, _ = new_vm()
    with_pan(kvm, 1)
    got = s1e1rp(kvm)
    assert isinstance(got, AtException) and got.reason == "AT S1E1RP needs FEAT_PAN2"
    with_pan(kvm, 2)
    assert not isinstance(s1e1rp(kvm), AtException)


def test_features_follow_every_decoded_field() -> None:
    kvm, _ = new_vm()
    with_pan(kvm, 0)
    fs = arch_features(kvm)
    assert not fs.has("FEAT_PAN") and fs.has("FEAT_HAFDBS")
    assert fs.features - {"FEAT_S2FWB", "FEAT_DIC", "FEAT_IDC"} == feature_set_of(
        kvm.id_regs).features - {"FEAT_S2FWB"}


def test_stage_2_features_stay_the_hosts() -> None:
    kvm, _ = new_vm(HostFeatures(fwb=True, dic=True))
    mmfr2 = kvm.id_regs.ID_AA64MMFR2_EL1 & ~(0xF << 40)
    kvm_set_id_regs(kvm, replace(kvm.id_regs, ID_AA64MMFR2_EL1=mmfr2))
    assert not feature_set_of(kvm.id_regs).has("FEAT_S2FWB")
    assert arch_features(kvm).has("FEAT_S2FWB")


def test_a_feature_the_host_lacks_is_refused() -> None:
    kvm, _ = new_vm()
    before = kvm.id_regs
    with pytest.raises(InputError, match=r"give FEAT_PAN3, which the host's sanitised ID "
                                         r"registers lack \(arm64_check_features\)"):
        with_pan(kvm, 3)
    assert kvm.id_regs == before


def test_a_wider_pa_than_the_hosts_is_refused() -> None:
    kvm, _ = new_vm(HostFeatures(pa_bits=40))
    mmfr0 = kvm.id_regs.ID_AA64MMFR0_EL1 & ~0xF | 5
    with pytest.raises(InputError, match=r"PARange gives 48 bits, more than the host's 40"):
        kvm_set_id_regs(kvm, replace(kvm.id_regs, ID_AA64MMFR0_EL1=mmfr0))


def test_a_reserved_value_is_refused_naming_the_field() -> None:
    kvm, _ = new_vm()
    with pytest.raises(InputError, match=r"^ID_AA64MMFR1_EL1.PAN = 0x5: reserved"):
        with_pan(kvm, 5)
