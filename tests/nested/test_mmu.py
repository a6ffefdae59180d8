"""Shadow stage 2s: lookup, round-robin recycling, the nested fault path, L1's TLBIs."""

from __future__ import annotations

from dataclasses import replace

from s2mmu.arch.builder import TableBuilder, s2_attrs
from s2mmu.arch.state import SysRegs
from s2mmu.kvm.abort import InjectedS2Fault, Resumed, ResumeReason
from s2mmu.kvm.vm import kvm_vm_ioctl_create_vcpu
from s2mmu.nested.mmu import (
    HCR_VM,
    S2_MMU_PER_VCPU,
    NestedKvm,
    ShadowUnmap,
    get_s2_mmu_nested,
    handle_ipas2e1is,
    handle_vmalls12e1is,
    kvm_nested_handle_guest_abort,
    kvm_vcpu_init_nested,
    kvm_vcpu_load_hw_mmu,
    kvm_vcpu_put_hw_mmu,
    lookup_s2_mmu,
)
from s2mmu.pgtable.pte import KVM_PTE_LEAF_ATTR_HI_SW
from s2mmu.pgtable.walk import kvm_pgtable_get_leaf
from tests.kvm.helpers import RAM_IPA, add_ram, dabt, new_vm

from .helpers import l1_stage2, l1_vm

L2_IPA = 0x8000_0000
FSC_TRANS_L3, FSC_PERM_L3 = 0x07, 0x0F


def setup(thp: bool = True) -> tuple[NestedKvm, SysRegs, TableBuilder]:
    """Return a VM with one vCPU, RAM at RAM_IPA, its shadow pool, L1's stage 2 on."""
    kvm, _ = new_vm()
    add_ram(kvm, thp=thp)
    vm = l1_vm()
    regs, b = l1_stage2(vm)
    regs = replace(regs, HCR_EL2=regs.HCR_EL2 | HCR_VM, VTTBR_EL2=regs.VTTBR_EL2 | 5 << 48)
    nk = NestedKvm(kvm, vm)
    kvm_vcpu_init_nested(nk)
    return nk, regs, b


def shadow_pte(nk: NestedKvm, ipa: int) -> int:
    vcpu = nk.kvm.vcpus[0]
    assert vcpu.hw_mmu is not None
    return kvm_pgtable_get_leaf(vcpu.hw_mmu, ipa).pte


def test_the_pool_has_two_shadows_per_vcpu() -> None:
    nk, _, _ = setup()
    kvm_vm_ioctl_create_vcpu(nk.kvm)
    kvm_vcpu_init_nested(nk)
    assert len(nk.mmus) == 2 * S2_MMU_PER_VCPU == len(nk.kvm.nested_mmus)


def test_lookup_ignores_cnp_and_needs_vtcr_with_stage2_on() -> None:
    nk, regs, _ = setup()
    mmu = get_s2_mmu_nested(nk, regs)
    assert lookup_s2_mmu(nk, replace(regs, VTTBR_EL2=regs.VTTBR_EL2 | 1)) is mmu
    assert lookup_s2_mmu(nk, replace(regs, VTCR_EL2=regs.VTCR_EL2 ^ 1 << 6)) is None
    assert lookup_s2_mmu(nk, replace(regs, VTTBR_EL2=regs.VTTBR_EL2 + 0x1000)) is None


def test_lookup_with_stage2_off_matches_the_vmid_alone() -> None:
    nk, regs, _ = setup()
    off = replace(regs, HCR_EL2=regs.HCR_EL2 & ~HCR_VM)
    mmu = get_s2_mmu_nested(nk, off)
    assert lookup_s2_mmu(nk, replace(off, VTTBR_EL2=off.VTTBR_EL2 + 0x1000)) is mmu
    assert lookup_s2_mmu(nk, regs) is None  # stage 2 on never takes a stage-2-off shadow


def test_recycling_is_round_robin_over_unused_shadows_and_leaves_an_unmap_pending() -> None:
    nk, regs, _ = setup()
    keys = [replace(regs, VTTBR_EL2=regs.VTTBR_EL2 + (i << 48)) for i in range(3)]
    first = get_s2_mmu_nested(nk, keys[0])
    second = get_s2_mmu_nested(nk, keys[1])
    assert first is not second
    second.refcnt = 0
    third = get_s2_mmu_nested(nk, keys[2])  # first is in use: second is recycled
    assert third is second and third.pending_unmap


def test_a_recycled_shadow_is_emptied_when_the_vcpu_enters_l2() -> None:
    nk, regs, b = setup()
    vcpu = nk.kvm.vcpus[0]
    b.map(L2_IPA, RAM_IPA, 0x1000, s2_attrs())
    kvm_vcpu_load_hw_mmu(nk, vcpu, regs)
    kvm_nested_handle_guest_abort(nk, vcpu, regs, dabt(FSC_TRANS_L3, L2_IPA))
    assert shadow_pte(nk, L2_IPA)
    kvm_vcpu_put_hw_mmu(nk, vcpu)
    for i in (1, 2):  # two other keys: the first shadow is recycled
        kvm_vcpu_load_hw_mmu(nk, vcpu, replace(regs, VTTBR_EL2=regs.VTTBR_EL2 + (i << 48)))
        kvm_vcpu_put_hw_mmu(nk, vcpu)
    assert all(not m.pending_unmap for m in nk.mmus)
    assert kvm_pgtable_get_leaf(nk.mmus[0].pgt, L2_IPA).pte == 0


def test_nested_fault_maps_l1s_translation_into_the_shadow() -> None:
    nk, regs, b = setup(thp=False)
    vcpu = nk.kvm.vcpus[0]
    b.map(L2_IPA, RAM_IPA + 0x5000, 0x1000, s2_attrs(s2ap=0b01))  # read-only in L1
    kvm_vcpu_load_hw_mmu(nk, vcpu, regs)
    out = kvm_nested_handle_guest_abort(nk, vcpu, regs, dabt(FSC_TRANS_L3, L2_IPA, write=True))
    assert out.result == Resumed(ResumeReason.MAPPED)
    assert out.mapping is not None and out.mapping.size == 0x1000
    assert shadow_pte(nk, L2_IPA) & KVM_PTE_LEAF_ATTR_HI_SW == 3 << 55
    out = kvm_nested_handle_guest_abort(nk, vcpu, regs, dabt(FSC_PERM_L3, L2_IPA, write=True))
    assert isinstance(out.result, InjectedS2Fault) and out.result.esr & 0x3F == 0x0F


def test_a_hole_in_l1s_stage2_is_injected_into_l1() -> None:
    nk, regs, _ = setup()
    vcpu = nk.kvm.vcpus[0]
    kvm_vcpu_load_hw_mmu(nk, vcpu, regs)
    out = kvm_nested_handle_guest_abort(nk, vcpu, regs, dabt(FSC_TRANS_L3, L2_IPA))
    assert isinstance(out.result, InjectedS2Fault) and out.result.ipa == L2_IPA
    assert out.result.esr & 0x3C == 0x04  # a translation fault at L1's level


def test_with_l1s_stage2_off_the_l2_ipa_is_the_canonical_ipa() -> None:
    nk, regs, _ = setup(thp=False)
    vcpu = nk.kvm.vcpus[0]
    off = replace(regs, HCR_EL2=regs.HCR_EL2 & ~HCR_VM)
    kvm_vcpu_load_hw_mmu(nk, vcpu, off)
    out = kvm_nested_handle_guest_abort(nk, vcpu, off, dabt(FSC_TRANS_L3, RAM_IPA))
    assert out.mapping is not None and out.mapping.ipa == RAM_IPA
    assert not any(d.step == "kvm_walk_nested_s2" for d in out.decisions)


def test_tlbi_by_ipa_without_ttl_uses_the_level_in_the_software_bits() -> None:
    nk, regs, b = setup()
    vcpu = nk.kvm.vcpus[0]
    b.map(L2_IPA, RAM_IPA, 2 << 20, s2_attrs(), level=2)
    kvm_vcpu_load_hw_mmu(nk, vcpu, regs)
    kvm_nested_handle_guest_abort(nk, vcpu, regs, dabt(FSC_TRANS_L3, L2_IPA + 0x3000))
    assert shadow_pte(nk, L2_IPA)
    got = handle_ipas2e1is(nk, regs, (L2_IPA + 0x3000) >> 12)
    assert got == [ShadowUnmap(5, L2_IPA, 2 << 20)]
    assert shadow_pte(nk, L2_IPA) == 0


def test_tlbi_by_ipa_with_a_ttl_uses_it() -> None:
    nk, regs, _ = setup()
    get_s2_mmu_nested(nk, regs)
    ttl_4k_l3 = (1 << 2 | 3) << 44
    assert handle_ipas2e1is(nk, regs, L2_IPA >> 12 | ttl_4k_l3) == [ShadowUnmap(5, L2_IPA, 4096)]


def test_tlbi_by_ipa_without_any_hint_invalidates_1g() -> None:
    nk, regs, _ = setup()
    get_s2_mmu_nested(nk, regs)
    assert handle_ipas2e1is(nk, regs, (L2_IPA + 0x3000) >> 12) == [
        ShadowUnmap(5, L2_IPA, 1 << 30)]


def test_tlbi_vmalls12e1_empties_only_shadows_of_l1s_vmid() -> None:
    nk, regs, _ = setup()
    get_s2_mmu_nested(nk, regs)
    other = get_s2_mmu_nested(nk, replace(regs, VTTBR_EL2=regs.VTTBR_EL2 + (1 << 48)))
    got = handle_vmalls12e1is(nk, regs)
    assert [u.vmid for u in got] == [5] and other.tlb_vttbr >> 48 == 6
