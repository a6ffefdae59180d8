"""Per-vCPU TLBs: filled by guest accesses, invalidated by KVM's recorded TLBIs, and
stale entries found once KVM is done."""

from __future__ import annotations

from s2mmu.arch.tlb import Tlbi, TlbiOp, TlbStage, WalkCacheEntry
from s2mmu.kvm.cpu import Completed, guest_access, vcpu_regs
from s2mmu.kvm.tlb import StaleReason, VcpuTlbs, tlbi_ops
from s2mmu.kvm.vm import Kvm, kvm_vm_ioctl_create_vcpu
from s2mmu.pgtable.events import TLBI_TTL_UNKNOWN, TlbiVmid, TlbiVmidIpa, TlbiVmidRange
from s2mmu.pgtable.inject import InjectedBug
from s2mmu.pgtable.stage2 import kvm_pgtable_stage2_unmap, kvm_pgtable_stage2_wrprotect

from .helpers import NO_FWB, RAM_IPA, add_ram, new_vm, touch

SZ_4K = 0x1000


def test_each_recorded_tlbi_becomes_the_helpers_instructions() -> None:
    assert tlbi_ops(TlbiVmidIpa(1, 0x4000, 3)) == [
        Tlbi(TlbiOp.IPAS2E1, 1, 0x4000, 0, 3), Tlbi(TlbiOp.VMALLE1, 1)]
    assert tlbi_ops(TlbiVmidIpa(1, 0x4000, TLBI_TTL_UNKNOWN, nsh=True)) == [
        Tlbi(TlbiOp.IPAS2E1, 1, 0x4000, 0, None, False), Tlbi(TlbiOp.VMALLE1, 1, broadcast=False)]
    assert tlbi_ops(TlbiVmidRange(1, 0x4000, 2, SZ_4K)) == [
        Tlbi(TlbiOp.RIPAS2E1, 1, 0x4000, 2 * SZ_4K), Tlbi(TlbiOp.VMALLE1, 1)]
    assert tlbi_ops(TlbiVmid(1)) == [Tlbi(TlbiOp.VMALLS12E1, 1)]


def used(kvm: Kvm, tlbs: VcpuTlbs, vcpu: int, ipa: int, kind: str = "read") -> None:
    """Fault ipa in, then access it (MMU off) and let the vCPU's TLB keep what it used."""
    regs = vcpu_regs(kvm)
    o = guest_access(kvm, regs, ipa, kind)
    assert isinstance(o, Completed), o
    tlbs.sync(vcpu)
    tlbs.fill(vcpu, regs, ipa, o.out)


def vm_with_tlbs(nvcpus: int = 1) -> tuple[Kvm, VcpuTlbs]:
    kvm, vcpu = new_vm(NO_FWB)
    add_ram(kvm, thp=False)
    for _ in range(nvcpus - 1):
        kvm_vm_ioctl_create_vcpu(kvm)
    touch(kvm, vcpu, RAM_IPA, "write")
    return kvm, VcpuTlbs(kvm, nvcpus, frozenset({0}))


def test_an_access_fills_a_stage_2_entry_and_walk_cache_entries() -> None:
    kvm, tlbs = vm_with_tlbs()
    used(kvm, tlbs, 0, RAM_IPA)
    entries = list(tlbs.tlbs[0].entries)
    leaf = entries[0]
    assert leaf.stage is TlbStage.STAGE2 and leaf.ia == RAM_IPA and leaf.s2_level == 3
    assert [e.level for e in entries[1:] if isinstance(e, WalkCacheEntry)] == [1, 2]
    assert tlbs.stale() == []
    assert tlbs.lookup(0, vcpu_regs(kvm), RAM_IPA + 8, "read", mmu_on=False) == leaf.oa + 8


def test_an_unmap_with_its_tlbi_leaves_nothing_stale() -> None:
    kvm, tlbs = vm_with_tlbs()
    used(kvm, tlbs, 0, RAM_IPA)
    kvm_pgtable_stage2_unmap(kvm.pgt, RAM_IPA, SZ_4K)
    tlbs.sync(None)
    assert tlbs.stale() == []
    assert tlbs.lookup(0, vcpu_regs(kvm), RAM_IPA, "read", mmu_on=False) is None


def test_an_unmap_without_its_tlbi_leaves_a_stale_translation_reported_once() -> None:
    kvm, tlbs = vm_with_tlbs()
    used(kvm, tlbs, 0, RAM_IPA)
    pa = tlbs.lookup(0, vcpu_regs(kvm), RAM_IPA, "read", mmu_on=False)
    kvm.pgt.ops.bugs = frozenset({InjectedBug.SKIP_TLBI_VMID_IPA})
    kvm_pgtable_stage2_unmap(kvm.pgt, RAM_IPA, SZ_4K)
    tlbs.sync(None)
    stale = tlbs.stale()
    # the leaf, and the two table descriptors the emptied tables hung from
    assert [(s.vcpu, s.reason) for s in stale] == [(0, StaleReason.UNMAPPED)] + [
        (0, StaleReason.TABLE_GONE)] * 2
    assert tlbs.lookup(0, vcpu_regs(kvm), RAM_IPA, "read", mmu_on=False) == pa
    assert tlbs.stale() == []


def test_a_write_protect_without_a_tlbi_leaves_a_writable_entry_stale() -> None:
    kvm, tlbs = vm_with_tlbs()
    used(kvm, tlbs, 0, RAM_IPA, "write")
    kvm_pgtable_stage2_wrprotect(kvm.pgt, RAM_IPA, SZ_4K)  # the caller's flush not issued
    tlbs.sync(None)
    assert [s.reason for s in tlbs.stale()] == [StaleReason.PERMISSION_REVOKED]


def test_a_local_tlbi_reaches_only_the_running_vcpu() -> None:
    kvm, tlbs = vm_with_tlbs(2)
    used(kvm, tlbs, 0, RAM_IPA)
    used(kvm, tlbs, 1, RAM_IPA)
    kvm.env.events.record(TlbiVmidIpa(kvm.pgt.s2_mmu.vmid, RAM_IPA, TLBI_TTL_UNKNOWN, nsh=True))
    tlbs.sync(1)
    assert tlbs.lookup(1, vcpu_regs(kvm), RAM_IPA, "read", mmu_on=False) is None
    assert tlbs.lookup(0, vcpu_regs(kvm), RAM_IPA, "read", mmu_on=False) is not None


def test_a_level_hinted_tlbi_for_a_table_leaves_the_leaf_below_it() -> None:
    kvm, tlbs = vm_with_tlbs()
    used(kvm, tlbs, 0, RAM_IPA)
    vmid = kvm.pgt.s2_mmu.vmid
    kvm.env.events.record(TlbiVmidIpa(vmid, RAM_IPA, 2))  # as if for the level-2 table entry
    tlbs.sync(None)
    left = list(tlbs.tlbs[0].entries)
    assert [getattr(e, "s2_level", getattr(e, "level", None)) for e in left] == [3, 1]
