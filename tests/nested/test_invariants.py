"""The shadow stage-2 invariant: it holds after KVM's faults and catches what breaks it."""

from __future__ import annotations

from s2mmu.arch.builder import TableBuilder, s2_attrs
from s2mmu.arch.state import SysRegs
from s2mmu.kvm.vm import KvmVcpu, kvm_stage2_unmap_range
from s2mmu.nested.invariants import (
    ShadowBeyondL1,
    ShadowMismatch,
    ShadowPermsExceed,
    check_nested_invariants,
    shadow_leaves,
)
from s2mmu.nested.mmu import (
    NestedKvm,
    handle_ipas2e1is,
    kvm_nested_handle_guest_abort,
    kvm_vcpu_load_hw_mmu,
)
from s2mmu.pgtable.prot import KVM_PGTABLE_PROT_R, KVM_PGTABLE_PROT_W
from s2mmu.pgtable.stage2 import kvm_pgtable_stage2_relax_perms
from tests.kvm.helpers import RAM_IPA, dabt

from .test_mmu import FSC_TRANS_L3, L2_IPA, setup


def faulted(thp: bool = False, attrs: int | None = None, size: int = 0x1000,
            level: int | None = None) -> tuple[NestedKvm, SysRegs, TableBuilder, KvmVcpu]:
    """Return a VM after L2 wrote L2_IPA, which L1 maps to RAM_IPA."""
    nk, regs, b = setup(thp=thp)
    vcpu = nk.kvm.vcpus[0]
    b.map(L2_IPA, RAM_IPA, size, s2_attrs(s2ap=0b01) if attrs is None else attrs, level=level)
    kvm_vcpu_load_hw_mmu(nk, vcpu, regs)
    out = kvm_nested_handle_guest_abort(nk, vcpu, regs, dabt(FSC_TRANS_L3, L2_IPA, write=True))
    assert out.mapping is not None
    return nk, regs, b, vcpu


def test_kvms_nested_faults_keep_the_invariant() -> None:
    nk, regs, _, _ = faulted()
    assert check_nested_invariants(nk, regs) == []
    nk, regs, _, _ = faulted(thp=True, attrs=s2_attrs(), size=2 << 20, level=2)
    assert check_nested_invariants(nk, regs) == []


def test_a_shadow_more_writable_than_l1_is_caught() -> None:
    nk, regs, _, vcpu = faulted()
    kvm_pgtable_stage2_relax_perms(vcpu.hw_mmu, L2_IPA, KVM_PGTABLE_PROT_R | KVM_PGTABLE_PROT_W)
    got = check_nested_invariants(nk, regs)
    assert len(got) == 1 and isinstance(got[0], ShadowPermsExceed)
    assert got[0].granted & KVM_PGTABLE_PROT_W and not got[0].allowed & KVM_PGTABLE_PROT_W


def test_an_l1_unmap_without_tlbi_leaves_a_stale_shadow_and_the_tlbi_fixes_it() -> None:
    nk, regs, b, _ = faulted()
    b.set_entry(L2_IPA, 3, 0)
    assert [type(v) for v in check_nested_invariants(nk, regs)] == [ShadowBeyondL1]
    handle_ipas2e1is(nk, regs, L2_IPA >> 12)
    assert check_nested_invariants(nk, regs) == []


def test_kvms_unmap_of_the_canonical_ipa_empties_the_shadow() -> None:
    nk, regs, _, vcpu = faulted()
    assert shadow_leaves(vcpu.hw_mmu) != []
    kvm_stage2_unmap_range(nk.kvm, RAM_IPA, 0x1000)
    assert shadow_leaves(vcpu.hw_mmu) == [] and check_nested_invariants(nk, regs) == []


def test_a_shadow_output_that_is_not_the_host_page_is_caught() -> None:
    nk, regs, b, _ = faulted()
    b.map(L2_IPA, RAM_IPA + 0x1000, 0x1000, s2_attrs(s2ap=0b01))  # remap, no TLBI
    got = check_nested_invariants(nk, regs)
    assert len(got) == 1 and isinstance(got[0], ShadowMismatch)
    assert got[0].l2_ipa == L2_IPA and got[0].ipa == RAM_IPA + 0x1000
