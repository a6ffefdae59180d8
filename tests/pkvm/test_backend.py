"""The pKVM stage-2 backend: pkvm_pgtable_stage2_* rules, and KVM's fault path through it."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from s2mmu.arch.memory import PhysMem
from s2mmu.kvm.abort import Resumed, ResumeReason
from s2mmu.kvm.cpu import Completed, guest_access, vcpu_regs
from s2mmu.kvm.fault import PgtableCall, kvm_handle_guest_abort
from s2mmu.kvm.host import HOST_RAM_BASE, HostFeatures, HostMm, Vma, VmaKind
from s2mmu.kvm.invariants import stage2_leaves
from s2mmu.kvm.vm import (
    Kvm,
    KvmError,
    KvmVcpu,
    Refusal,
    kvm_create_vm,
    kvm_set_memory_region,
    kvm_vm_ioctl_create_vcpu,
)
from s2mmu.pgtable.backend import DIRECT, BackendKind, MmuLockMode
from s2mmu.pgtable.env import new_env
from s2mmu.pgtable.errno import EAGAIN, EINVAL, EPERM
from s2mmu.pgtable.events import Warn
from s2mmu.pgtable.profile import PRE_V6_3, V6_3, V6_19, BehaviourProfile
from s2mmu.pgtable.prot import KVM_PGTABLE_PROT_R, KVM_PGTABLE_PROT_RWX, KVM_PGTABLE_PROT_W
from s2mmu.pkvm.backend import PkvmBackend
from s2mmu.pkvm.mem_protect import Pkvm, new_pkvm
from s2mmu.pkvm.memory import MemblockRegion
from s2mmu.pkvm.pkvm import guest_leaves
from s2mmu.pkvm.states import PKVM_NOPAGE, PKVM_PAGE_OWNED, PKVM_PAGE_SHARED_OWNED

PAGE = 0x1000
PMD = 0x20_0000
GPA = 0x4000_0000
HVA = 0x7F00_0000_0000
RW = int(KVM_PGTABLE_PROT_R | KVM_PGTABLE_PROT_W)
RWX = int(KVM_PGTABLE_PROT_RWX)


@dataclass
class Setup:
    host: HostMm
    pkvm: Pkvm
    backend: PkvmBackend
    kvm: Kvm
    vcpu: KvmVcpu


def setup(protected: bool = False, profile: BehaviourProfile = V6_19,
          thp: bool = False) -> Setup:
    host = HostMm(PhysMem(), HostFeatures())
    pkvm = new_pkvm(mem=host.mem, caps=host.features.kvm_caps(), profile=profile,
                    host_ram=MemblockRegion(HOST_RAM_BASE, 1 << 26))
    backend = PkvmBackend(pkvm, 1, protected)
    kvm = kvm_create_vm(host, 40, env=pkvm.env, backend=backend, protected=protected)
    host.mmap(Vma(HVA, HVA + (4 << 20), VmaKind.ANON, thp=thp))
    kvm_set_memory_region(kvm, 0, 0, GPA, 4 << 20, HVA)
    return Setup(host, pkvm, backend, kvm, kvm_vm_ioctl_create_vcpu(kvm))


def warns(s: Setup) -> list[str]:
    return [e.function for e in s.pkvm.env.events if isinstance(e, Warn)]


def page_pa(s: Setup, off: int = 0) -> int:
    return s.host.populate(HVA + off)


def host_state(s: Setup, pa: int) -> object:
    return s.pkvm.vmemmap.hyp_phys_to_page(pa).host_state


# -- non-protected guests ---------------------------------------------------------------


def test_map_shares_the_page_and_records_it() -> None:
    s = setup()
    pa = page_pa(s)
    assert s.backend.map(s.kvm.pgt, GPA, PAGE, pa, RW, None, 0) == 0
    assert s.backend.hvm.mappings.as_dict() == {GPA // PAGE: (pa // PAGE, 1)}
    assert host_state(s, pa) is PKVM_PAGE_SHARED_OWNED
    assert [(lf.ipa, lf.size, lf.phys) for lf in guest_leaves(s.pkvm.vms[1])] == [(GPA, PAGE, pa)]


def test_map_of_a_pud_block_is_refused_with_a_warning() -> None:
    s = setup()
    assert s.backend.map(s.kvm.pgt, 0, 1 << 30, HOST_RAM_BASE, RW, None, 0) == -EINVAL
    assert warns(s) == ["pkvm_pgtable_stage2_map"]
    assert len(s.backend.hvm.mappings) == 0


def test_map_over_a_mapping_of_the_same_size_is_eagain() -> None:
    s = setup()
    pa, other = page_pa(s), page_pa(s, PAGE)
    assert s.backend.map(s.kvm.pgt, GPA, PAGE, pa, RW, None, 0) == 0
    assert s.backend.map(s.kvm.pgt, GPA, PAGE, other, RWX, None, 0) == -EAGAIN
    assert s.backend.hvm.mappings.as_dict() == {GPA // PAGE: (pa // PAGE, 1)}
    assert host_state(s, other) is PKVM_PAGE_OWNED
    assert warns(s) == []


def test_a_size_change_unshares_the_old_mappings_first() -> None:
    s = setup(thp=True)
    block = page_pa(s) & ~(PMD - 1)
    for i in range(3):
        assert s.backend.map(s.kvm.pgt, GPA + i * PAGE, PAGE, block + i * PAGE, RW, None, 0) == 0
    assert s.backend.map(s.kvm.pgt, GPA, PMD, block, RW, None, 0) == 0
    assert s.backend.hvm.mappings.as_dict() == {GPA // PAGE: (block // PAGE, 512)}
    assert [(lf.ipa, lf.size) for lf in guest_leaves(s.pkvm.vms[1])] == [(GPA, PMD)]
    page = s.pkvm.vmemmap.hyp_phys_to_page(block)
    assert (page.host_state, page.host_share_guest_count) == (PKVM_PAGE_SHARED_OWNED, 1)
    assert s.backend.map(s.kvm.pgt, GPA + PAGE, PAGE, block + PAGE, RW, None, 0) == 0
    assert s.backend.hvm.mappings.as_dict() == {GPA // PAGE + 1: (block // PAGE + 1, 1)}
    assert host_state(s, block) is PKVM_PAGE_OWNED


def test_split_is_refused_with_a_warning() -> None:
    s = setup()
    assert s.backend.split(s.kvm.pgt, GPA, PMD, s.vcpu.mmu_page_cache) == -EINVAL
    assert warns(s) == ["pkvm_pgtable_stage2_split"]


def test_unmap_wrprotect_young_go_through_each_recorded_mapping() -> None:
    s = setup()
    pas = [page_pa(s, i * PAGE) for i in range(2)]
    for i, pa in enumerate(pas):
        assert s.backend.map(s.kvm.pgt, GPA + i * PAGE, PAGE, pa, RW, None, 0) == 0
    assert s.backend.wrprotect(s.kvm.pgt, GPA, 2 * PAGE) == 0
    assert s.backend.test_clear_young(s.kvm.pgt, GPA, 2 * PAGE, True)
    assert not s.backend.test_clear_young(s.kvm.pgt, GPA, 2 * PAGE, False)
    s.backend.mkyoung(s.kvm.pgt, GPA, 0)
    assert s.backend.test_clear_young(s.kvm.pgt, GPA, PAGE, False)
    assert s.backend.unmap(s.kvm.pgt, GPA, 2 * PAGE) == 0
    assert len(s.backend.hvm.mappings) == 0 and guest_leaves(s.pkvm.vms[1]) == []
    assert all(host_state(s, pa) is PKVM_PAGE_OWNED for pa in pas)
    assert warns(s) == []


@pytest.mark.parametrize(("profile", "pkvm_ret", "direct_ret"), [
    (PRE_V6_3, 0, 0), (V6_3, 0, -EAGAIN), (V6_19, -EAGAIN, -EAGAIN)])
def test_relax_perms_flags_are_dropped_at_the_hypercall(profile: BehaviourProfile,
                                                        pkvm_ret: int, direct_ret: int) -> None:
    """Seed 000: EL2's walk runs with flags 0, whatever the caller passed.

    On a hole, the fault path's HANDLE_FAULT relax returns -EAGAIN in the direct backend
    from v6.3 (before it, the attribute walker skipped invalid entries: 0 everywhere);
    through pKVM, the v6.3..v6.18 rule swallows it (0: the caller believes it
    relaxed a mapping and marks the page dirty), and v6.19 returns it again.
    """
    s = setup(profile=profile)
    flags = 0x88  # KVM_PGTABLE_WALK_HANDLE_FAULT | KVM_PGTABLE_WALK_SHARED
    assert s.backend.relax_perms(s.kvm.pgt, GPA, RW, flags) == pkvm_ret
    host = HostMm(PhysMem(), HostFeatures())
    direct = kvm_create_vm(host, 40, env=new_env(profile=profile, mem=host.mem))
    assert DIRECT.relax_perms(direct.pgt, GPA, RW, flags) == direct_ret


# -- protected guests -----------------------------------------------------------------------


def test_protected_map_donates_a_page_rwx_only() -> None:
    s = setup(protected=True)
    pa = page_pa(s)
    assert s.backend.map(s.kvm.pgt, GPA, PAGE, pa, RW, None, 0) == -EINVAL
    assert s.backend.map(s.kvm.pgt, GPA, PMD, pa, RWX, None, 0) == -EINVAL
    assert warns(s) == ["pkvm_pgtable_stage2_map"] * 2
    assert s.backend.map(s.kvm.pgt, GPA, PAGE, pa, RWX, None, 0) == 0
    assert host_state(s, pa) is PKVM_NOPAGE
    assert s.backend.map(s.kvm.pgt, GPA, PAGE, page_pa(s, PAGE), RWX, None, 0) == -EAGAIN


def test_protected_guests_refuse_unmap_wrprotect_relax_and_age() -> None:
    s = setup(protected=True)
    assert s.backend.map(s.kvm.pgt, GPA, PAGE, page_pa(s), RWX, None, 0) == 0
    assert s.backend.unmap(s.kvm.pgt, GPA, PAGE) == -EPERM
    assert s.backend.wrprotect(s.kvm.pgt, GPA, PAGE) == -EPERM
    assert s.backend.relax_perms(s.kvm.pgt, GPA, RWX, 0) == -EPERM
    assert s.backend.test_clear_young(s.kvm.pgt, GPA, PAGE, True) is False
    s.backend.mkyoung(s.kvm.pgt, GPA, 0)
    assert warns(s) == ["pkvm_pgtable_stage2_unmap", "pkvm_pgtable_stage2_wrprotect",
                        "pkvm_pgtable_stage2_relax_perms",
                        "pkvm_pgtable_stage2_test_clear_young", "pkvm_pgtable_stage2_mkyoung"]
    assert len(guest_leaves(s.pkvm.vms[1])) == 1


def test_mmu_notifiers_are_ignored_for_a_protected_guest() -> None:
    for protected in (False, True):
        s = setup(protected=protected)
        o = guest_access(s.kvm, vcpu_regs(s.kvm), GPA, "read")
        assert not isinstance(o, Completed)
        kvm_handle_guest_abort(o.abort, s.kvm, s.vcpu)
        assert len(stage2_leaves(s.kvm)) == 1
        assert s.host.munmap(HVA, PAGE) == 0
        assert len(stage2_leaves(s.kvm)) == (1 if protected else 0)
        assert warns(s) == []


def test_a_protected_vm_needs_protected_kvm() -> None:
    with pytest.raises(KvmError) as e:
        kvm_create_vm(HostMm(PhysMem(), HostFeatures()), 40, protected=True)
    assert e.value.reason is Refusal.PROTECTED_WITHOUT_PKVM
    assert e.value.errno == -EINVAL


# -- the fault path through the backend ----------------------------------------------------


def fault_once(s: Setup, ipa: int, kind: str) -> PgtableCall:
    o = guest_access(s.kvm, vcpu_regs(s.kvm), ipa, kind)
    assert not isinstance(o, Completed)
    out = kvm_handle_guest_abort(o.abort, s.kvm, s.vcpu)
    assert out.result == Resumed(ResumeReason.MAPPED)
    call = out.decisions[-1]
    assert isinstance(call, PgtableCall)
    return call


def test_fault_path_maps_a_non_protected_guest_through_hypercalls() -> None:
    s = setup(thp=True)
    call = fault_once(s, GPA + 0x3000, "read")
    assert (call.step, call.size, call.backend, call.lock) == (
        "pkvm_pgtable_stage2_map", PMD, BackendKind.PKVM, MmuLockMode.WRITE)
    assert isinstance(guest_access(s.kvm, vcpu_regs(s.kvm), GPA + 0x3000, "write"), Completed)


def test_fault_path_maps_a_protected_guest_page_by_page_rwx() -> None:
    s = setup(protected=True, thp=True)
    call = fault_once(s, GPA + 0x3000, "read")
    assert (call.step, call.size, call.prot) == ("pkvm_pgtable_stage2_map", PAGE, RWX)
    pa = s.backend.hvm.mappings.as_dict()[(GPA + 0x3000) // PAGE][0] * PAGE
    assert host_state(s, pa) is PKVM_NOPAGE
    assert isinstance(guest_access(s.kvm, vcpu_regs(s.kvm), GPA + 0x3000, "exec"), Completed)


def test_topup_refills_the_el2_memcache_the_maps_drain() -> None:
    """Each page in a new 2M region takes a table page from the VM's EL2 memcache; the
    fault path's top-up before each map keeps it from running dry (32 regions here, twice
    the cache's capacity)."""
    host = HostMm(PhysMem(), HostFeatures())
    pkvm = new_pkvm(mem=host.mem, caps=host.features.kvm_caps(),
                    host_ram=MemblockRegion(HOST_RAM_BASE, 1 << 27))
    backend = PkvmBackend(pkvm, 1, False)
    kvm = kvm_create_vm(host, 40, env=pkvm.env, backend=backend)
    host.mmap(Vma(HVA, HVA + (64 << 20), VmaKind.ANON))
    vcpu = kvm_vm_ioctl_create_vcpu(kvm)
    for i in range(32):
        assert backend.topup_memcache(vcpu.mmu_page_cache, kvm.env.pool, 2) == 0
        pa = host.populate(HVA + i * PMD)
        assert backend.map(kvm.pgt, GPA + i * PMD, PAGE, pa, RW, None, 0) == 0
    assert len(backend.hvm.mappings) == 32 and warns_of(pkvm) == []
    assert vcpu.mmu_page_cache.nobjs == 0  # the vCPU's own cache is not used under pKVM


def warns_of(pkvm: Pkvm) -> list[str]:
    return [e.function for e in pkvm.env.events if isinstance(e, Warn)]
