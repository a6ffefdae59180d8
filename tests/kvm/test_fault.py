"""The abort path, one kernel rule per test (expected values from mmu.c, not from the model)."""

from __future__ import annotations

from dataclasses import replace

from s2mmu.kvm.abort import (
    Error,
    ErrorReason,
    HwpoisonSignal,
    InjectedAbort,
    InjectedS2Fault,
    InjectKind,
    MmioExit,
    NisvExit,
    Resumed,
    ResumeReason,
)
from s2mmu.kvm.dirty import SlotPage
from s2mmu.kvm.fault import (
    KVM_NV_GUEST_MAP_SZ,
    AccessFlag,
    FaultHooks,
    MemslotLookup,
    NestedMapCap,
    NestedS2Walker,
    PgtableCall,
    PgtableOp,
    kvm_handle_guest_abort,
    kvm_s2_handle_perm_fault,
)
from s2mmu.kvm.host import HostFeatures, MemType, Vma, VmaKind
from s2mmu.kvm.invariants import check_invariants, leaf_writable, stage2_leaves
from s2mmu.kvm.memslot import KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY
from s2mmu.kvm.vm import (
    Kvm,
    KvmVcpu,
    kvm_set_memory_region,
    kvm_stage2_unmap_range,
    stage2_wp_range,
)
from s2mmu.pgtable.env import new_stage2
from s2mmu.pgtable.profile import CURRENT, V6_12, V6_19, BehaviourProfile
from s2mmu.pgtable.prot import (
    KVM_PGTABLE_PROT_DEVICE,
    KVM_PGTABLE_PROT_NORMAL_NC,
    KVM_PGTABLE_PROT_PX,
    KVM_PGTABLE_PROT_R,
    KVM_PGTABLE_PROT_W,
    KVM_PGTABLE_PROT_X,
    kvm_pgtable_stage2_pte_prot,
)
from s2mmu.pgtable.pte import KVM_PTE_LEAF_ATTR_HI_SW, kvm_pte_to_phys
from s2mmu.pgtable.s2trans import KvmS2Trans
from s2mmu.pgtable.walk import kvm_pgtable_get_leaf
from tests.kvm.helpers import (
    BAR_IPA,
    FWB_DIC,
    RAM_HVA,
    RAM_IPA,
    add_bar,
    add_ram,
    dabt,
    iabt,
    new_vm,
    touch,
)

FSC_TRANS_L3, FSC_PERM_L3, FSC_AF_L3, FSC_SEA = 0x07, 0x0F, 0x0B, 0x10


def test_thp_backed_fault_maps_a_2m_block() -> None:
    kvm, vcpu = new_vm()
    add_ram(kvm)
    out = touch(kvm, vcpu, RAM_IPA + 0x1234)
    assert out is not None and out.result == Resumed(ResumeReason.MAPPED)
    assert out.mapping is not None and out.mapping.size == 2 << 20
    assert out.mapping.ipa == RAM_IPA


def test_no_thp_maps_a_page() -> None:
    kvm, vcpu = new_vm()
    add_ram(kvm, thp=False)
    out = touch(kvm, vcpu, RAM_IPA + 0x1234)
    assert out is not None and out.mapping is not None and out.mapping.size == 4096


def test_misaligned_slot_forbids_blocks() -> None:
    # gpa and hva differ modulo 2M: fault_supports_stage2_huge_mapping says no.
    kvm, vcpu = new_vm()
    add_ram(kvm, ipa=RAM_IPA + 0x1000)
    out = touch(kvm, vcpu, RAM_IPA + 0x10_0000)
    assert out is not None and out.mapping is not None and out.mapping.size == 4096


def test_hugetlb_1g_falls_back_to_2m_when_the_slot_is_smaller() -> None:
    kvm, vcpu = new_vm()
    kvm.host.mmap(Vma(RAM_HVA, RAM_HVA + (1 << 30), VmaKind.HUGETLB, hugetlb_shift=30))
    kvm_set_memory_region(kvm, 0, 0, RAM_IPA, 512 << 20, RAM_HVA)
    out = touch(kvm, vcpu, RAM_IPA)
    assert out is not None and out.mapping is not None and out.mapping.size == 2 << 20


def test_hugetlb_1g_maps_a_1g_block() -> None:
    kvm, vcpu = new_vm()
    kvm.host.mmap(Vma(RAM_HVA, RAM_HVA + (1 << 30), VmaKind.HUGETLB, hugetlb_shift=30))
    kvm_set_memory_region(kvm, 0, 0, RAM_IPA, 1 << 30, RAM_HVA)
    out = touch(kvm, vcpu, RAM_IPA + 0x123000)
    assert out is not None and out.mapping is not None and out.mapping.size == 1 << 30


def test_cacheable_pfnmap_with_fwb_and_dic_is_cacheable() -> None:
    kvm, vcpu = new_vm()
    add_bar(kvm, MemType.NORMAL)
    out = touch(kvm, vcpu, BAR_IPA)
    assert out is not None and out.mapping is not None
    assert not out.mapping.prot & (KVM_PGTABLE_PROT_DEVICE | KVM_PGTABLE_PROT_NORMAL_NC)


def test_cacheable_pfnmap_without_fwb_is_efault_at_fault_time_never_device() -> None:
    # The slot was accepted over a Device VMA; the VMA became cacheable later.
    kvm, vcpu = new_vm(HostFeatures(dic=True))
    add_bar(kvm, MemType.DEVICE)
    kvm.host.munmap(0x7F20_0000_0000, 2 << 20)
    kvm.host.mmap(Vma(0x7F20_0000_0000, 0x7F20_0020_0000, VmaKind.PFNMAP,
                      mem_type=MemType.NORMAL, pfn_base=0x6000_0000_0000))
    out = touch(kvm, vcpu, BAR_IPA)
    assert out is not None and isinstance(out.result, Error) and out.result.errno == -14
    assert stage2_leaves(kvm) == []


def test_device_pfnmap_maps_device_and_nc_needs_allow_any_uncached() -> None:
    for any_uc, want in ((False, KVM_PGTABLE_PROT_DEVICE), (True, KVM_PGTABLE_PROT_NORMAL_NC)):
        kvm, vcpu = new_vm()
        add_bar(kvm, MemType.NORMAL_NC, any_uc=any_uc)
        out = touch(kvm, vcpu, BAR_IPA, "write")
        assert out is not None and out.mapping is not None
        assert out.mapping.prot & want
        assert not out.mapping.prot & KVM_PGTABLE_PROT_X


def test_exec_fault_on_noncacheable_memory_injects_sea() -> None:
    kvm, vcpu = new_vm()
    add_bar(kvm, MemType.DEVICE)
    out = touch(kvm, vcpu, BAR_IPA, "exec")
    assert out is not None and out.result == InjectedAbort(InjectKind.PABT, BAR_IPA)
    assert stage2_leaves(kvm) == []


def test_readonly_slot_read_maps_readonly_and_write_goes_to_mmio() -> None:
    kvm, vcpu = new_vm()
    add_ram(kvm, flags=KVM_MEM_READONLY)
    out = touch(kvm, vcpu, RAM_IPA)
    assert out is not None and out.mapping is not None
    assert not out.mapping.prot & KVM_PGTABLE_PROT_W
    out = touch(kvm, vcpu, RAM_IPA + 8, "write", syndrome=(8, 3))
    assert out is not None and out.result == MmioExit(RAM_IPA + 8, 8, True)


def test_hole_without_syndrome_is_enosys_or_nisv_exit() -> None:
    kvm, vcpu = new_vm()
    out = touch(kvm, vcpu, 0x900_0000, "write")
    assert out is not None and isinstance(out.result, Error) and out.result.errno == -38
    kvm.nisv_to_user = True
    out = touch(kvm, vcpu, 0x900_0000, "write")
    assert out is not None and isinstance(out.result, NisvExit)


def test_hole_instruction_fetch_injects_pabt() -> None:
    kvm, vcpu = new_vm()
    out = touch(kvm, vcpu, 0x900_0000, "exec")
    assert out is not None and out.result == InjectedAbort(InjectKind.PABT, 0x900_0000)


def test_stage1_walk_into_a_hole_injects_dabt() -> None:
    kvm, vcpu = new_vm()
    out = kvm_handle_guest_abort(dabt(FSC_TRANS_L3, 0x900_0000, s1ptw=True), kvm, vcpu)
    assert out.result == InjectedAbort(InjectKind.DABT, 0x900_0000)


def test_cache_maintenance_outside_memslots_is_skipped() -> None:
    kvm, vcpu = new_vm()
    out = kvm_handle_guest_abort(dabt(FSC_TRANS_L3, 0x900_0000, cm=True), kvm, vcpu)
    assert out.result == Resumed(ResumeReason.CM_SKIPPED)


def test_out_of_ipa_space_translation_faults() -> None:
    kvm, vcpu = new_vm(ipa_bits=36)
    # Between the VM's IPA size and the host limit: an SEA, never MMIO.
    out = kvm_handle_guest_abort(dabt(FSC_TRANS_L3, 1 << 40), kvm, vcpu)
    assert out.result == InjectedAbort(InjectKind.DABT, 1 << 40)
    out = kvm_handle_guest_abort(iabt(FSC_TRANS_L3, 1 << 40), kvm, vcpu)
    assert out.result == InjectedAbort(InjectKind.PABT, 1 << 40)
    # Beyond the host's IPA limit (48 bits): an address size fault.
    out = kvm_handle_guest_abort(dabt(FSC_TRANS_L3, 1 << 49), kvm, vcpu)
    assert out.result == InjectedAbort(InjectKind.SIZE, 1 << 49)


def test_sea_is_serror_unless_the_host_claims_it() -> None:
    kvm, vcpu = new_vm()
    add_ram(kvm)
    out = kvm_handle_guest_abort(dabt(FSC_SEA, RAM_IPA), kvm, vcpu)
    assert out.result == InjectedAbort(InjectKind.SERROR, RAM_IPA)
    kvm, vcpu = new_vm(replace(FWB_DIC, ras_claims_sea=True))
    add_ram(kvm)
    out = kvm_handle_guest_abort(dabt(FSC_SEA, RAM_IPA), kvm, vcpu)
    assert out.result == Resumed(ResumeReason.SEA_CLAIMED)


def test_read_permission_fault_is_efault() -> None:
    kvm, vcpu = new_vm()
    add_ram(kvm)
    out = kvm_handle_guest_abort(dabt(FSC_PERM_L3, RAM_IPA), kvm, vcpu)
    assert isinstance(out.result, Error) and out.result.errno == -14


def test_access_flag_fault_makes_the_leaf_young() -> None:
    kvm, vcpu = new_vm()
    add_ram(kvm)
    touch(kvm, vcpu, RAM_IPA)
    out = kvm_handle_guest_abort(dabt(FSC_AF_L3, RAM_IPA), kvm, vcpu)
    assert out.result == Resumed(ResumeReason.ACCESS_FLAG)
    assert [d.step for d in out.decisions][-1] == "handle_access_fault"


def test_unsupported_fsc_is_efault() -> None:
    kvm, vcpu = new_vm()
    add_ram(kvm)
    out = kvm_handle_guest_abort(dabt(0x21, RAM_IPA), kvm, vcpu)  # alignment fault
    assert out.result == Error(-14, ErrorReason.UNSUPPORTED_FSC)


def test_hwpoison_signals_the_vmm() -> None:
    kvm, vcpu = new_vm()
    add_ram(kvm, thp=False)
    kvm.host.hwpoison(RAM_HVA)
    out = touch(kvm, vcpu, RAM_IPA)
    assert out is not None and out.result == HwpoisonSignal(RAM_HVA, 12)


def test_invalidation_between_pin_and_lock_retries_without_mapping() -> None:
    kvm, vcpu = new_vm()
    add_ram(kvm, thp=False)
    hooks = FaultHooks(between_pin_and_lock=lambda: kvm.host.madvise_dontneed(RAM_HVA, 4096))
    out = touch(kvm, vcpu, RAM_IPA, hooks=hooks)
    assert out is not None and out.result == Resumed(ResumeReason.RETRY) and out.mapping is None
    assert stage2_leaves(kvm) == []
    assert check_invariants(kvm) == []  # the pin was dropped on the retry path too


def test_pins_are_released_on_the_mte_error_path() -> None:
    host_mte = HostFeatures(fwb=True, dic=True, mte=True)
    kvm, vcpu = new_vm(host_mte, mte=True)
    add_ram(kvm, thp=False, mte_allowed=True)
    kvm.host.munmap(RAM_HVA, 64 << 20)  # replace the VMA by one without VM_MTE_ALLOWED
    kvm.host.mmap(Vma(RAM_HVA, RAM_HVA + (64 << 20), VmaKind.ANON))
    out = touch(kvm, vcpu, RAM_IPA)
    assert out is not None and isinstance(out.result, Error) and out.result.errno == -14
    assert all(f.refcount == 1 for f in kvm.host.folios.values())


def test_write_to_a_readonly_leaf_relaxes_in_place() -> None:
    kvm, vcpu = new_vm()
    add_ram(kvm, thp=False, flags=0)
    from s2mmu.kvm.vm import stage2_wp_range

    touch(kvm, vcpu, RAM_IPA, "write")  # a private page (a read would map the zero page)
    stage2_wp_range(kvm, RAM_IPA, RAM_IPA + 4096)
    out = touch(kvm, vcpu, RAM_IPA, "write")
    assert out is not None and out.mapping is not None and out.mapping.op is PgtableOp.RELAX_PERMS
    assert leaf_writable(stage2_leaves(kvm)[0])


def test_a_read_maps_the_zero_page_read_only_and_a_write_copies_it() -> None:
    """A read of untouched anon memory: R- on the shared zero page (hva_to_pfn_slow gives
    writable = false); the write is a permission fault whose FOLL_WRITE pin copies the
    page inside an invalidation, so the guest retries into a translation fault mapping RW."""
    kvm, vcpu = new_vm()
    add_ram(kvm, thp=False)
    first, second = touch(kvm, vcpu, RAM_IPA), touch(kvm, vcpu, RAM_IPA + 0x1000, "exec")
    assert first is not None and first.mapping is not None
    assert second is not None and second.mapping is not None
    zero = kvm.host.zero
    assert zero is not None and first.mapping.pa == second.mapping.pa == zero.pa
    assert not first.mapping.prot & KVM_PGTABLE_PROT_W
    assert not second.mapping.prot & KVM_PGTABLE_PROT_W and second.mapping.prot & KVM_PGTABLE_PROT_X
    perm = touch(kvm, vcpu, RAM_IPA, "write")
    assert perm is not None and perm.result == Resumed(ResumeReason.RETRY)
    assert perm.mapping is None and [leaf.ipa for leaf in stage2_leaves(kvm)] == [RAM_IPA + 0x1000]
    again = touch(kvm, vcpu, RAM_IPA, "write")
    assert again is not None and again.mapping is not None
    assert again.mapping.op is PgtableOp.MAP and again.mapping.prot & KVM_PGTABLE_PROT_W
    assert again.mapping.pa == kvm.host.hva_to_pa(RAM_HVA) != zero.pa
    assert check_invariants(kvm) == []


def test_out_of_ipa_space_sea_reports_the_ipa_not_the_va() -> None:
    # kvm_handle_guest_abort injects the SEA at fault_ipa | FAR[11:0], not at FAR.
    kvm, vcpu = new_vm(ipa_bits=36)
    out = kvm_handle_guest_abort(dabt(FSC_TRANS_L3, 1 << 40, far=0x1234_5678), kvm, vcpu)
    assert out.result == InjectedAbort(InjectKind.DABT, (1 << 40) | 0x678)


def test_hwpoison_lsb_is_the_shift_chosen_for_the_mapping() -> None:
    # vma_shift after logging forced pages: a 2M hugetlb page under logging reports 12.
    from s2mmu.kvm.memslot import KVM_MEM_LOG_DIRTY_PAGES

    for flags, lsb in ((0, 21), (KVM_MEM_LOG_DIRTY_PAGES, 12)):
        kvm, vcpu = new_vm()
        kvm.host.mmap(Vma(RAM_HVA, RAM_HVA + (4 << 20), VmaKind.HUGETLB, hugetlb_shift=21))
        kvm_set_memory_region(kvm, 0, flags, RAM_IPA, 4 << 20, RAM_HVA)
        kvm.host.hwpoison(RAM_HVA + 0x3000)
        out = touch(kvm, vcpu, RAM_IPA + 0x3000)
        assert out is not None and out.result == HwpoisonSignal(RAM_HVA + 0x3000, lsb)


# -- under a guest hypervisor's stage 2 (kvm_handle_guest_abort's nested branch) ------------

L2_IPA = 0x8000_0000


def nested_vm(size: int, output: int = RAM_IPA + (2 << 20), readable: bool = True,
              writable: bool = True, px: bool = True, ux: bool = True, level: int = 3,
              esr: int = 0, xnx: bool = False, vm_xnx: bool | None = None,
              profile: BehaviourProfile = CURRENT,
              **ram: object) -> tuple[Kvm, KvmVcpu, NestedS2Walker]:
    """Return a VM whose vCPU runs on a shadow stage 2, and an L1 walk of one leaf whose
    XN[1:0] gives px/ux (xnx: the host's FEAT_XNX; vm_xnx: the VM's, xnx by default)."""
    kvm, vcpu = new_vm()
    kvm.env.profile = profile
    add_ram(kvm, **ram)
    kvm.env.caps = replace(kvm.env.caps, xnx=xnx)
    shadow = new_stage2(kvm.env, kvm.ipa_bits, vmid=2)
    kvm.nested_mmus.append(shadow)
    vcpu.hw_mmu = shadow

    xn = {(True, True): 0b00, (False, True): 0b01, (False, False): 0b10, (True, False): 0b11}
    desc = xn[px, ux] << 53

    def walk(ipa: int) -> KvmS2Trans:
        out = output | (ipa & (size - 1)) if not esr else 0
        return KvmS2Trans(out, size, readable, writable, px, ux, level, desc, esr,
                          xnx=xnx if vm_xnx is None else vm_xnx)
    return kvm, vcpu, walk


def shadow_leaf(vcpu: KvmVcpu, ipa: int) -> tuple[int, int]:
    """Return (pte, level) of the shadow stage 2 at ipa."""
    assert vcpu.hw_mmu is not None
    leaf = kvm_pgtable_get_leaf(vcpu.hw_mmu, ipa)
    return leaf.pte, leaf.level


def test_nested_fault_maps_the_l2_ipa_to_the_canonical_ipas_page() -> None:
    kvm, vcpu, walk = nested_vm(4096, thp=False)
    out = kvm_handle_guest_abort(dabt(FSC_TRANS_L3, L2_IPA + 0x10), kvm, vcpu, None, walk)
    assert out.result == Resumed(ResumeReason.MAPPED)
    assert out.mapping is not None and out.mapping.ipa == L2_IPA
    lookup = next(d for d in out.decisions if isinstance(d, MemslotLookup))
    assert lookup.ipa == RAM_IPA + (2 << 20)
    assert stage2_leaves(kvm) == []  # the canonical stage 2 is untouched
    pte, _ = shadow_leaf(vcpu, L2_IPA)
    host_pa = kvm.host.hva_to_pa(RAM_HVA + (2 << 20))
    assert kvm_pte_to_phys(pte, kvm.env.g) == host_pa


def test_nested_mapping_is_capped_by_l1s_page_though_a_thp_backs_it() -> None:
    kvm, vcpu, walk = nested_vm(4096)
    out = kvm_handle_guest_abort(dabt(FSC_TRANS_L3, L2_IPA), kvm, vcpu, None, walk)
    assert out.mapping is not None and out.mapping.size == 4096
    assert NestedMapCap(4096, 4096) in out.decisions


def test_nested_mapping_follows_l1s_2m_block_with_a_thp() -> None:
    kvm, vcpu, walk = nested_vm(2 << 20)
    out = kvm_handle_guest_abort(dabt(FSC_TRANS_L3, L2_IPA + 0x3000), kvm, vcpu, None, walk)
    assert out.mapping is not None and out.mapping.size == 2 << 20
    assert out.mapping.ipa == L2_IPA


def test_l1s_1g_block_with_4k_backing_maps_pages() -> None:
    kvm, vcpu, walk = nested_vm(1 << 30, output=RAM_IPA, thp=False, level=1)
    out = kvm_handle_guest_abort(dabt(FSC_TRANS_L3, L2_IPA), kvm, vcpu, None, walk)
    assert out.mapping is not None and out.mapping.size == 4096
    assert NestedMapCap(1 << 30, 1 << 30) in out.decisions


def test_l1s_level_is_kept_in_the_leafs_software_bits() -> None:
    kvm, vcpu, walk = nested_vm(2 << 20, level=2)
    kvm_handle_guest_abort(dabt(FSC_TRANS_L3, L2_IPA), kvm, vcpu, None, walk)
    pte, _ = shadow_leaf(vcpu, L2_IPA)
    assert pte & KVM_PTE_LEAF_ATTR_HI_SW == 2 << 55
    assert KVM_NV_GUEST_MAP_SZ == 3 << 55


def test_l1_read_only_leaf_maps_read_only_and_a_write_is_forwarded_to_l1() -> None:
    kvm, vcpu, walk = nested_vm(4096, writable=False)
    out = kvm_handle_guest_abort(dabt(FSC_TRANS_L3, L2_IPA, write=True), kvm, vcpu, None, walk)
    assert out.result == Resumed(ResumeReason.MAPPED)
    pte, _ = shadow_leaf(vcpu, L2_IPA)
    assert not kvm_pgtable_stage2_pte_prot(pte) & KVM_PGTABLE_PROT_W
    perm = dabt(FSC_PERM_L3, L2_IPA, write=True)
    out = kvm_handle_guest_abort(perm, kvm, vcpu, None, walk)
    assert out.result == InjectedS2Fault((perm.esr & ~0x3F) | 0x0F, L2_IPA)
    assert [d.step for d in out.decisions][-1] == "kvm_s2_handle_perm_fault"


def test_l1_unreadable_leaf_drops_r() -> None:
    kvm, vcpu, walk = nested_vm(4096, readable=False)
    out = kvm_handle_guest_abort(dabt(FSC_TRANS_L3, L2_IPA, write=True), kvm, vcpu, None, walk)
    assert out.mapping is not None and not out.mapping.prot & KVM_PGTABLE_PROT_R
    assert out.mapping.prot & KVM_PGTABLE_PROT_W


def test_l1_exec_permissions_limit_px_and_ux() -> None:
    kvm, vcpu, walk = nested_vm(4096, px=True, ux=False, xnx=True)
    out = kvm_handle_guest_abort(iabt(FSC_TRANS_L3, L2_IPA), kvm, vcpu, None, walk)
    assert out.mapping is not None
    assert out.mapping.prot & KVM_PGTABLE_PROT_X == KVM_PGTABLE_PROT_PX
    out = kvm_handle_guest_abort(iabt(FSC_PERM_L3, L2_IPA), kvm, vcpu, None, nested_walk=walk)
    assert isinstance(out.result, Resumed)  # L1 allows EL1: not forwarded to L1


def test_without_xnx_an_l1_leaf_executable_at_one_el_maps_without_x() -> None:
    # The VM has FEAT_XNX but the host has not: PX and UX must agree, so neither.
    kvm, vcpu, walk = nested_vm(4096, px=False, ux=True, vm_xnx=True)
    out = kvm_handle_guest_abort(dabt(FSC_TRANS_L3, L2_IPA), kvm, vcpu, None, walk)
    assert out.mapping is not None and not out.mapping.prot & KVM_PGTABLE_PROT_X


def test_an_instruction_fetch_l1_forbids_everywhere_is_forwarded() -> None:
    kvm2, vcpu2, walk2 = nested_vm(4096, px=False, ux=False)
    out = kvm_handle_guest_abort(iabt(FSC_PERM_L3, L2_IPA), kvm2, vcpu2, None, walk2)
    assert isinstance(out.result, InjectedS2Fault)


# L1 made the page non-executable (XN = 0b10) in a VM without FEAT_XNX, per release
# (profile knob nested_exec). Expected values from the kernel: 6.12.118's
# kvm_s2_handle_perm_fault and user_mem_abort; d93febe2ed2e's exec accessors (every leaf
# executable without FEAT_XNX); 49b32ddb87a3's (XN[1] decides).


def xn_page(profile: BehaviourProfile, dic: bool = False,
            **kw: object) -> tuple[Kvm, KvmVcpu, NestedS2Walker]:
    kvm, vcpu, walk = nested_vm(4096, px=False, ux=False, profile=profile, thp=False, **kw)
    kvm.host.features = replace(kvm.host.features, dic=dic)
    return kvm, vcpu, walk


def test_v6_12_forwards_an_exec_permission_fault_on_an_xn_page() -> None:
    kvm, vcpu, walk = xn_page(V6_12)
    out = kvm_handle_guest_abort(iabt(FSC_PERM_L3, L2_IPA), kvm, vcpu, None, walk)
    assert isinstance(out.result, InjectedS2Fault)


def test_v6_12_maps_a_first_fetch_from_an_xn_page_executable() -> None:
    # A translation fault is not a permission fault: nothing asks L1, and
    # user_mem_abort adds X for any exec fault (no adjust_nested_exec_perms yet).
    kvm, vcpu, walk = xn_page(V6_12)
    out = kvm_handle_guest_abort(iabt(FSC_TRANS_L3, L2_IPA), kvm, vcpu, None, walk)
    assert out.mapping is not None and out.mapping.prot & KVM_PGTABLE_PROT_X == KVM_PGTABLE_PROT_X


def test_v6_12_dic_adds_x_only_where_bit54_is_clear() -> None:
    kvm, vcpu, walk = xn_page(V6_12, dic=True)
    out = kvm_handle_guest_abort(dabt(FSC_TRANS_L3, L2_IPA), kvm, vcpu, None, walk)
    assert out.mapping is not None and not out.mapping.prot & KVM_PGTABLE_PROT_X


def test_v6_19_without_xnx_neither_forwards_nor_strips_x() -> None:
    kvm, vcpu, walk = xn_page(V6_19)
    read = kvm_handle_guest_abort(dabt(FSC_TRANS_L3, L2_IPA), kvm, vcpu, None, walk)
    assert read.mapping is not None and not read.mapping.prot & KVM_PGTABLE_PROT_X
    out = kvm_handle_guest_abort(iabt(FSC_PERM_L3, L2_IPA), kvm, vcpu, None, walk)
    assert out.result == Resumed(ResumeReason.MAPPED)  # not forwarded: relaxed to X
    assert out.mapping is not None and out.mapping.op is PgtableOp.RELAX_PERMS
    pte, _ = shadow_leaf(vcpu, L2_IPA)
    assert kvm_pgtable_stage2_pte_prot(pte) & KVM_PGTABLE_PROT_X == KVM_PGTABLE_PROT_X


def test_v6_19_with_xnx_in_the_vm_forwards() -> None:
    kvm, vcpu, walk = xn_page(V6_19, xnx=True)
    out = kvm_handle_guest_abort(iabt(FSC_PERM_L3, L2_IPA), kvm, vcpu, None, walk)
    assert isinstance(out.result, InjectedS2Fault)


def test_v6_19_with_dic_maps_a_read_of_an_xn_page_executable() -> None:
    kvm, vcpu, walk = xn_page(V6_19, dic=True)
    out = kvm_handle_guest_abort(dabt(FSC_TRANS_L3, L2_IPA), kvm, vcpu, None, walk)
    assert out.mapping is not None and out.mapping.prot & KVM_PGTABLE_PROT_X == KVM_PGTABLE_PROT_X


def test_current_forwards_and_never_maps_an_xn_page_executable() -> None:
    assert CURRENT.name == "v7.1"
    kvm, vcpu, walk = xn_page(CURRENT, dic=True)
    out = kvm_handle_guest_abort(iabt(FSC_TRANS_L3, L2_IPA), kvm, vcpu, None, walk)
    assert out.mapping is not None and not out.mapping.prot & KVM_PGTABLE_PROT_X
    out = kvm_handle_guest_abort(iabt(FSC_PERM_L3, L2_IPA), kvm, vcpu, None, walk)
    assert isinstance(out.result, InjectedS2Fault)


def test_perm_fault_forwarding_asks_the_faulting_els_permission() -> None:
    # XN = 0b01 with FEAT_XNX: EL0 may execute, EL1 may not (vcpu_mode_priv picks).
    _, _, walk = nested_vm(4096, px=False, ux=True, xnx=True)
    trans = walk(L2_IPA)
    assert isinstance(trans, KvmS2Trans)
    rule = CURRENT.nested_exec
    assert kvm_s2_handle_perm_fault(iabt(FSC_PERM_L3, L2_IPA), trans, rule, priv=True)
    assert not kvm_s2_handle_perm_fault(iabt(FSC_PERM_L3, L2_IPA), trans, rule, priv=False)
    # 6.12 reads bit 54 only: clear, so executable whatever the EL.
    assert not kvm_s2_handle_perm_fault(iabt(FSC_PERM_L3, L2_IPA), trans, V6_12.nested_exec)


def test_l1_walk_fault_is_injected_into_l1_with_its_fsc() -> None:
    kvm, vcpu, walk = nested_vm(4096, esr=0x06, level=2)
    abort = dabt(FSC_TRANS_L3, L2_IPA, write=True)
    out = kvm_handle_guest_abort(abort, kvm, vcpu, None, walk)
    assert out.result == InjectedS2Fault((abort.esr & ~0x3F) | 0x06, L2_IPA)
    assert [d.step for d in out.decisions] == ["kvm_walk_nested_s2"]
    assert stage2_leaves(kvm) == [] and shadow_leaf(vcpu, L2_IPA)[0] == 0


def test_nested_write_marks_the_canonical_page_dirty() -> None:
    kvm, vcpu, walk = nested_vm(4096, flags=KVM_MEM_LOG_DIRTY_PAGES)
    out = kvm_handle_guest_abort(dabt(FSC_TRANS_L3, L2_IPA, write=True), kvm, vcpu, None, walk)
    assert out.dirtied == (SlotPage(0, (2 << 20) >> 12),)


def test_relax_perms_keeps_l1s_level_in_the_leaf() -> None:
    kvm, vcpu, walk = nested_vm(4096, flags=KVM_MEM_LOG_DIRTY_PAGES, level=3)
    kvm_handle_guest_abort(dabt(FSC_TRANS_L3, L2_IPA), kvm, vcpu, None, walk)
    out = kvm_handle_guest_abort(dabt(FSC_PERM_L3, L2_IPA, write=True), kvm, vcpu, None, walk)
    call = next(d for d in out.decisions if isinstance(d, PgtableCall))
    assert call.op is PgtableOp.RELAX_PERMS and not call.prot & KVM_NV_GUEST_MAP_SZ
    pte, _ = shadow_leaf(vcpu, L2_IPA)
    assert pte & KVM_PTE_LEAF_ATTR_HI_SW == 3 << 55
    assert kvm_pgtable_stage2_pte_prot(pte) & KVM_PGTABLE_PROT_W


def test_nested_access_flag_fault_touches_the_shadow_stage2() -> None:
    kvm, vcpu, walk = nested_vm(4096)
    kvm_handle_guest_abort(dabt(FSC_TRANS_L3, L2_IPA), kvm, vcpu, None, walk)
    out = kvm_handle_guest_abort(dabt(FSC_AF_L3, L2_IPA), kvm, vcpu, None, walk)
    assert out.decisions[-1] == AccessFlag(L2_IPA)


def test_unmap_and_write_protect_reach_the_nested_stage2s() -> None:
    kvm, vcpu, walk = nested_vm(4096)
    kvm_handle_guest_abort(dabt(FSC_TRANS_L3, L2_IPA, write=True), kvm, vcpu, None, walk)
    stage2_wp_range(kvm, RAM_IPA, RAM_IPA + 4096)  # elsewhere in canonical space
    pte, _ = shadow_leaf(vcpu, L2_IPA)
    assert pte and not kvm_pgtable_stage2_pte_prot(pte) & KVM_PGTABLE_PROT_W
    kvm_stage2_unmap_range(kvm, RAM_IPA, 4096)
    assert shadow_leaf(vcpu, L2_IPA)[0] == 0


def test_without_a_nested_walk_the_path_uses_the_canonical_stage2() -> None:
    kvm, vcpu = new_vm()
    add_ram(kvm)
    out = touch(kvm, vcpu, RAM_IPA)
    assert out is not None
    assert not any(d.step.startswith("kvm_walk_nested") for d in out.decisions)
    assert all(leaf.pte & KVM_PTE_LEAF_ATTR_HI_SW == 0 for leaf in stage2_leaves(kvm))
