"""[vm] id_regs: the VM's ID_AA64MMFR*_EL1 from a scenario, and the features they give."""

from __future__ import annotations

import pytest

from s2mmu.arch.at import AtException, AtOp, execute_at
from s2mmu.arch.translate import Env
from s2mmu.kvm.cpu import arch_features, vcpu_regs
from s2mmu.kvm.host import HostFeatures, host_id_regs
from s2mmu.scenario.kvm_events import KvmWorld
from s2mmu.scenario.runner import run_scenario
from s2mmu.scenario.schema import ScenarioError, load_scenario

BODY = """
[[vma]]
start = 0x7f0000000000
size = "4M"

[[memslot]]
id = 0
gpa = 0x40000000
size = "4M"
hva = 0x7f0000000000

[[event]]
do = "read"
ipa = 0x40000000
"""


def vm(id_regs: str) -> str:
    return f"[vm]\nid_regs = {id_regs}\n" + BODY


@pytest.mark.parametrize("pan, defined", [(1, False), (2, True)])
def test_the_vms_pan_field_decides_s1e1rp(pan: int, defined: bool) -> None:
    host = host_id_regs(HostFeatures())
    mmfr1 = host.ID_AA64MMFR1_EL1 & ~(0xF << 20) | pan << 20
    run = run_scenario(load_scenario("v.toml", vm(f"{{ ID_AA64MMFR1_EL1 = {mmfr1:#x} }}")))
    assert run.ok
    kvm = run.world.part(KvmWorld).kvm
    assert kvm.id_regs.ID_AA64MMFR1_EL1 == mmfr1
    assert kvm.id_regs.ID_AA64MMFR0_EL1 == host.ID_AA64MMFR0_EL1
    got = execute_at(AtOp.S1E1RP, 0x1000, 1, True, vcpu_regs(kvm),
                     Env(kvm.host.mem, arch_features(kvm)))
    assert isinstance(got, AtException) is not defined


def test_an_unknown_register_is_refused_naming_the_field() -> None:
    with pytest.raises(ScenarioError, match=r"^v.toml:2: vm.id_regs: 'ID_AA64PFR0_EL1': not an "
                                            r"ID register the model decodes"):
        load_scenario("v.toml", vm("{ ID_AA64PFR0_EL1 = 0 }"))


def test_a_reserved_field_value_is_refused_naming_register_field_and_value() -> None:
    with pytest.raises(ScenarioError, match=r"^v.toml:2: vm.id_regs: ID_AA64MMFR1_EL1.VMIDBits "
                                            r"= 0x1: reserved"):
        run_scenario(load_scenario("v.toml", vm("{ ID_AA64MMFR1_EL1 = 0x10 }")))


def test_a_feature_beyond_the_hosts_is_refused() -> None:
    with pytest.raises(ScenarioError, match=r"vm.id_regs: .*FEAT_PAN3, which the host's"):
        run_scenario(load_scenario("v.toml", vm("{ ID_AA64MMFR1_EL1 = 0x300000 }")))


def test_id_regs_must_be_a_table() -> None:
    with pytest.raises(ScenarioError, match=r"vm.id_regs: must be a table"):
        load_scenario("v.toml", vm("3"))
