"""The VM: IPA size and stage 2, memslots and their ioctl, MMU notifiers, vCPUs.

Kvm is the hypervisor's own mutable record of one VM (struct kvm): what the ioctls and
the notifiers change. The fault path reads it, never the other way round.

Kernel: kvm_init_ipa_range, kvm_init_stage2_mmu, kvm_arch_prepare_memory_region,
kvm_arch_commit_memory_region, kvm_arch_flush_shadow_memslot, kvm_unmap_gfn_range,
kvm_stage2_unmap_range, kvm_mmu_wp_memory_region, stage2_wp_range,
kvm_mmu_split_memory_region, kvm_mmu_split_huge_pages, kvm_mmu_split_nr_page_tables
(arch/arm64/kvm/mmu.c); __kvm_set_memory_region, kvm_set_memslot,
kvm_mmu_notifier_invalidate_range_start/end, kvm_mmu_invalidate_begin/end,
mmu_invalidate_retry (virt/kvm/kvm_main.c, include/linux/kvm_host.h).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from s2mmu.arch.errors import InputError
from s2mmu.arch.features import IdRegs, feature_set_of
from s2mmu.kvm.errno import EFAULT
from s2mmu.kvm.host import (
    PAGE_SHIFT,
    PAGE_SIZE,
    PMD_SIZE,
    PUD_SIZE,
    HostMm,
    Vma,
    get_kvm_ipa_limit,
    host_id_regs,
    id_aa64mmfr0_parange,
    kvm_supports_cacheable_pfnmap,
    kvm_vma_is_cacheable,
    kvm_vma_mte_allowed,
    vma_is_pfnmap,
)
from s2mmu.kvm.memslot import (
    KVM_MEM_LOG_DIRTY_PAGES,
    KVM_MEM_READONLY,
    KVM_MEM_VALID_FLAGS,
    Memslot,
    hva_to_gfn_memslot,
)
from s2mmu.pgtable.backend import DIRECT, BackendKind, Stage2Backend
from s2mmu.pgtable.env import PgtableEnv, new_env
from s2mmu.pgtable.errno import EEXIST, EINVAL
from s2mmu.pgtable.mm import (
    KvmMmuMemoryCache,
    __kvm_mmu_topup_memory_cache,
    kvm_mmu_free_memory_cache,
)
from s2mmu.pgtable.profile import CURRENT, BehaviourProfile
from s2mmu.pgtable.prot import KVM_PGTABLE_PROT_R
from s2mmu.pgtable.table import KvmPgtable
from s2mmu.pgtable.tlb import kvm_tlb_flush_vmid_range

KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE = 1 << 0
KVM_DIRTY_LOG_INITIALLY_SET = 1 << 1
ARM64_MIN_PARANGE_BITS = 32
KVM_PHYS_SHIFT_DEFAULT = 40
KVM_ADDRESS_SPACE_NUM = 1
"""Memslot address spaces on arm64 (kvm_arch_nr_memslot_as_ids: only x86 SMM has two)."""
KVM_USER_MEM_SLOTS = 0x7FFF
"""KVM_MEM_SLOTS_NUM (SHRT_MAX) less the arch's internal slots (none on arm64)."""


class Refusal(enum.Enum):
    """Why an ioctl fails: what callers branch on (the message is only for people)."""

    IPA_SIZE = "ipa-size"
    MTE_UNSUPPORTED = "mte-unsupported"
    SLOT_BEYOND_IPA_SPACE = "slot-beyond-ipa-space"
    VMA_WITHOUT_MTE = "vma-without-mte"
    LOGGING_PFNMAP = "logging-pfnmap"
    CACHEABLE_PFNMAP = "cacheable-pfnmap"
    BAD_FLAGS = "bad-flags"
    UNALIGNED = "unaligned"
    DELETE_EMPTY_SLOT = "delete-empty-slot"
    IMMUTABLE_SLOT_FIELD = "immutable-slot-field"
    OVERLAP = "overlap"
    NO_DIRTY_BITMAP = "no-dirty-bitmap"
    DIRTY_LOG_RANGE = "dirty-log-range"
    USER_BITMAP_TOO_SHORT = "user-bitmap-too-short"
    BAD_USER_RANGE = "bad-user-range"
    GPA_WRAPS = "gpa-wraps"
    SLOT_ID = "slot-id"
    """The slot number names an address space the arch lacks, or an id past the slots."""
    PROTECTED_WITHOUT_PKVM = "protected-without-pkvm"
    """KVM_VM_TYPE_ARM_PROTECTED on a host not running protected KVM."""


class MemoryChange(enum.Enum):
    """What KVM_SET_USER_MEMORY_REGION did to a slot. Kernel: enum kvm_mr_change."""

    CREATE = "create"
    DELETE = "delete"
    MOVE = "move"
    FLAGS_ONLY = "flags-only"
    UNCHANGED = "unchanged"
    """Nothing changed (the kernel returns 0 early)."""


class KvmError(Exception):
    """An ioctl failed, as the ioctl returns -errno: the errno, why (a Refusal), and a
    one-line message naming the values (the kernel's own wording where it has one).

    The convention of this layer: an ioctl's failure is a KvmError; what the guest sees
    after an abort is a value (s2mmu.kvm.abort.GuestResult), never an exception.
    """

    def __init__(self, errno: int, reason: Refusal, why: str) -> None:
        super().__init__(why)
        self.errno = errno
        self.reason = reason
        self.why = why


@dataclass
class KvmVcpu:
    """A vCPU's fault-path state: its page-table memcache and its current stage 2.

    hw_mmu is the stage 2 the vCPU runs on: None for the VM's canonical one, or one of
    the VM's nested (shadow) stage 2s while it runs an L2 guest.

    Kernel: vcpu->arch.mmu_page_cache, vcpu->arch.hw_mmu.
    """

    vcpu_id: int
    mmu_page_cache: KvmMmuMemoryCache = field(default_factory=KvmMmuMemoryCache)
    hw_mmu: KvmPgtable | None = None


@dataclass
class Kvm:
    """One VM as KVM keeps it (struct kvm and kvm->arch).

    dirty_bitmap: per memslot id, one bit per page (KVM's memslot->dirty_bitmap).
    manual_dirty_log_protect: the KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 flags.
    """

    host: HostMm
    env: PgtableEnv
    pgt: KvmPgtable
    ipa_bits: int
    id_regs: IdRegs
    """The VM's ID registers (kvm->arch.id_regs: ID_AA64MMFR0/1/2_EL1, ID_AA64ISAR0/2_EL1):
    the host's sanitised values (host_id_regs) unless userspace lowered them
    (kvm_set_id_regs)."""
    memslots: dict[int, Memslot] = field(default_factory=dict)
    dirty_bitmap: dict[int, bytearray] = field(default_factory=dict)
    mmu_invalidate_seq: int = 0
    mmu_invalidate_in_progress: int = 0
    manual_dirty_log_protect: int = 0
    has_mte: bool = False
    nisv_to_user: bool = False
    vcpus: list[KvmVcpu] = field(default_factory=list)
    nested_mmus: list[KvmPgtable] = field(default_factory=list)
    """The shadow stage 2s of a guest hypervisor's stage 2s (kvm->arch.nested_mmus)."""
    backend: Stage2Backend = DIRECT
    """The functions KVM_PGT_FN picks: the page-table library, or pKVM's hypercalls."""
    protected: bool = False
    """A protected VM (kvm->arch.pkvm.is_protected): its memory is donated to it."""

    @property
    def vtcr(self) -> int:
        """Return the VTCR_EL2 KVM programs for this VM."""
        return self.pgt.s2_mmu.vtcr

    def slots(self) -> list[Memslot]:
        """Return the memslots in gfn order."""
        return sorted(self.memslots.values(), key=lambda s: s.base_gfn)


def kvm_vm_is_protected(kvm: Kvm) -> bool:
    """Return whether the VM is a protected one. Kernel: kvm_vm_is_protected."""
    return kvm.protected


def kvm_vcpu_hw_pgt(kvm: Kvm, vcpu: KvmVcpu) -> KvmPgtable:
    """Return the stage 2 the vCPU runs on. Kernel: vcpu->arch.hw_mmu->pgt."""
    return kvm.pgt if vcpu.hw_mmu is None else vcpu.hw_mmu


def kvm_phys_size(kvm: Kvm) -> int:
    """Return the size of the guest IPA space. Kernel: kvm_phys_size."""
    return 1 << kvm.ipa_bits


def kvm_dirty_log_manual_protect_and_init_set(kvm: Kvm) -> bool:
    """Return whether dirty bitmaps start all-set and are cleared by CLEAR_DIRTY_LOG.

    Kernel: kvm_dirty_log_manual_protect_and_init_set.
    """
    return bool(kvm.manual_dirty_log_protect & KVM_DIRTY_LOG_INITIALLY_SET)


def kvm_init_ipa_range(host: HostMm, phys_shift: int) -> int:
    """Return the IPA size for a VM of the requested size (0 = default), or raise.

    Kernel: kvm_init_ipa_range (KVM_VM_TYPE_ARM_IPA_SIZE).
    """
    limit = get_kvm_ipa_limit(host.features)
    if phys_shift == 0:
        return KVM_PHYS_SHIFT_DEFAULT
    if phys_shift > limit or phys_shift < ARM64_MIN_PARANGE_BITS:
        raise KvmError(-EINVAL, Refusal.IPA_SIZE, f"IPA size {phys_shift} outside "
                       f"[{ARM64_MIN_PARANGE_BITS}, {limit}] (kvm_ipa_limit)")
    return phys_shift


def kvm_create_vm(host: HostMm, phys_shift: int = 0, vmid: int = 1,
                  env: PgtableEnv | None = None, has_mte: bool = False,
                  backend: Stage2Backend = DIRECT, protected: bool = False,
                  profile: BehaviourProfile = CURRENT) -> Kvm:
    """Create a VM: its IPA size, VTCR_EL2 and empty stage 2, registered for notifiers.

    backend is what KVM_PGT_FN picks for this VM (the library, or pKVM's hypercalls);
    it builds the stage 2. A protected VM needs protected KVM (-EINVAL otherwise).
    profile: the kernel release whose rules the VM's stage-2 code follows (when env is
    not given; a given env carries its own).

    Kernel: kvm_arch_init_vm -> kvm_init_stage2_mmu (KVM_PGT_FN(kvm_pgtable_stage2_init));
    pkvm_init_host_vm (KVM_VM_TYPE_ARM_PROTECTED without protected KVM: -EINVAL);
    KVM_CAP_ARM_MTE needs MTE.
    """
    ipa_bits = kvm_init_ipa_range(host, phys_shift)
    if has_mte and not host.features.mte:
        raise KvmError(-EINVAL, Refusal.MTE_UNSUPPORTED, "KVM_CAP_ARM_MTE on a host without MTE")
    if protected and backend.kind is BackendKind.DIRECT:
        raise KvmError(-EINVAL, Refusal.PROTECTED_WITHOUT_PKVM,
                       "KVM_VM_TYPE_ARM_PROTECTED without protected KVM (pkvm_init_host_vm)")
    env = env or new_env(caps=host.features.kvm_caps(), mem=host.mem, profile=profile)
    pgt = backend.init(env, ipa_bits, vmid, id_aa64mmfr0_parange(host.features))
    kvm = Kvm(host=host, env=env, pgt=pgt, ipa_bits=ipa_bits, has_mte=has_mte,
              backend=backend, protected=protected, id_regs=host_id_regs(host.features))
    host.notifiers.append((lambda s, e, r: kvm_mmu_notifier_invalidate_range_start(kvm, s, e),
                           lambda s, e, r: kvm_mmu_notifier_invalidate_range_end(kvm, s, e)))
    host.change_pte.append(lambda hva, pa: kvm_mmu_notifier_change_pte(kvm, hva, pa))
    return kvm


def kvm_set_id_regs(kvm: Kvm, regs: IdRegs) -> None:
    """Set the VM's ID registers (KVM_SET_ONE_REG on ID_AA64MMFR0/1/2_EL1, ISAR0/2_EL1).

    Each value must decode (s2mmu.arch.features.feature_set_of: reserved field values
    are refused) and give no feature, PA size or granule the host's sanitised registers
    lack. Raises InputError naming the register or the feature otherwise.

    Kernel: set_id_reg -> arm64_check_features (arch/arm64/kvm/sys_regs.c: a written
    value must be a subset of the sanitised limit), as summarised per feature here.
    """
    want, limit = feature_set_of(regs), feature_set_of(host_id_regs(kvm.host.features))
    extra = sorted(want.features - limit.features)
    if extra:
        raise InputError(f"the ID registers give {', '.join(extra)}, which the host's "
                         f"sanitised ID registers lack (arm64_check_features)")
    if want.pa_bits > limit.pa_bits:
        raise InputError(f"ID_AA64MMFR0_EL1.PARange gives {want.pa_bits} bits, more than "
                         f"the host's {limit.pa_bits} (arm64_check_features)")
    if want.granules - limit.granules:
        extra_g = ", ".join(f"{g}K" for g in sorted(want.granules - limit.granules))
        raise InputError(f"ID_AA64MMFR0_EL1.TGran* give the {extra_g} granule(s), which "
                         f"the host lacks (arm64_check_features)")
    kvm.id_regs = regs


def kvm_vm_ioctl_create_vcpu(kvm: Kvm) -> KvmVcpu:
    """Add a vCPU. Kernel: kvm_vm_ioctl_create_vcpu."""
    vcpu = KvmVcpu(len(kvm.vcpus))
    kvm.vcpus.append(vcpu)
    return vcpu


# -- stage-2 range operations ---------------------------------------------------------------


def kvm_stage2_unmap_range(kvm: Kvm, ipa: int, size: int) -> None:
    """Unmap [ipa, ipa + size) from stage 2, and the nested stage 2s whole.

    A canonical IPA has no reverse map to the L2 IPAs that shadow it, so every shadow
    stage 2 is emptied (a no-op without nested MMUs).

    Kernel: kvm_stage2_unmap_range; kvm_nested_s2_unmap, which kvm_unmap_gfn_range
    and kvm_arch_flush_shadow_memslot call beside it.
    """
    kvm.backend.unmap(kvm.pgt, ipa, size)
    kvm_nested_s2_unmap(kvm)


def kvm_nested_s2_unmap(kvm: Kvm) -> None:
    """Unmap every nested stage 2 over its whole IPA space. Kernel: kvm_nested_s2_unmap."""
    for pgt in kvm.nested_mmus:
        if pgt.pgd is not None:
            kvm.backend.unmap(pgt, 0, 1 << pgt.ia_bits)


def stage2_wp_range(kvm: Kvm, start: int, end: int) -> None:
    """Write-protect [start, end) at stage 2, and the nested stage 2s whole.

    Kernel: stage2_wp_range; kvm_nested_s2_wp, which kvm_mmu_wp_memory_region calls
    beside it.
    """
    kvm.backend.wrprotect(kvm.pgt, start, end - start)
    kvm_nested_s2_wp(kvm)


def kvm_nested_s2_wp(kvm: Kvm) -> None:
    """Write-protect every nested stage 2 whole. Kernel: kvm_nested_s2_wp."""
    for pgt in kvm.nested_mmus:
        if pgt.pgd is not None:
            kvm.backend.wrprotect(pgt, 0, 1 << pgt.ia_bits)


def kvm_mmu_split_nr_page_tables(chunk: int) -> int:
    """Return the table pages splitting a chunk can need. Kernel: kvm_mmu_split_nr_page_tables."""
    return -(-chunk // PUD_SIZE) + -(-chunk // PMD_SIZE)


def kvm_mmu_split_huge_pages(kvm: Kvm, start: int, end: int) -> int:
    """Split the block mappings of [start, end) chunk by chunk (no-op without a chunk size).

    Kernel: kvm_mmu_split_huge_pages, need_split_memcache_topup_or_resched.
    """
    mmu = kvm.pgt.s2_mmu
    chunk = mmu.split_page_chunk_size
    if chunk == 0:
        return 0
    cache = mmu.split_page_cache
    need = kvm_mmu_split_nr_page_tables(chunk)
    addr = start
    while addr < end:
        nxt = min((addr + chunk) & ~(chunk - 1), end)
        if cache.nobjs < need:
            ret = __kvm_mmu_topup_memory_cache(cache, kvm.env.pool, need, need)
            if ret:
                return ret
        ret = kvm.backend.split(kvm.pgt, addr, nxt - addr, cache)
        if ret:
            return ret
        addr = nxt
    return 0


def slot_range(slot: Memslot) -> tuple[int, int]:
    """Return the slot's IPA range [start, end)."""
    return slot.base_gfn << PAGE_SHIFT, slot.end_gfn << PAGE_SHIFT


def kvm_mmu_wp_memory_region(kvm: Kvm, slot: Memslot) -> None:
    """Write-protect a whole slot and flush its TLB entries.

    Kernel: kvm_mmu_wp_memory_region, kvm_flush_remote_tlbs_memslot.
    """
    start, end = slot_range(slot)
    stage2_wp_range(kvm, start, end)
    kvm_tlb_flush_vmid_range(kvm.pgt.s2_mmu, start, end - start)


# -- memory regions --------------------------------------------------------------------------


def kvm_arch_prepare_memory_region(kvm: Kvm, new: Memslot) -> None:
    """Refuse a slot outside the IPA space or over VMAs KVM cannot map as asked.

    Per VMA: an MTE VM needs VM_MTE_ALLOWED; a VM_PFNMAP VMA may not be dirty-logged,
    and a cacheable one needs FWB and DIC.

    Kernel: kvm_arch_prepare_memory_region.
    """
    if new.end_gfn > kvm_phys_size(kvm) >> PAGE_SHIFT:
        raise KvmError(-EFAULT, Refusal.SLOT_BEYOND_IPA_SPACE,
                       f"memslot ends at IPA {new.end_gfn << PAGE_SHIFT:#x}, beyond "
                                f"the {kvm.ipa_bits}-bit IPA space")
    hva, end = new.userspace_addr, new.userspace_addr + (new.npages << PAGE_SHIFT)
    for vma in kvm.host.vmas_intersecting(hva, end):
        prepare_check_vma(kvm, new, vma)


def prepare_check_vma(kvm: Kvm, new: Memslot, vma: Vma) -> None:
    """Apply kvm_arch_prepare_memory_region's checks to one VMA."""
    if kvm.has_mte and not kvm_vma_mte_allowed(vma):
        raise KvmError(-EINVAL, Refusal.VMA_WITHOUT_MTE,
                       f"MTE VM: VMA {vma.name or hex(vma.start)} lacks VM_MTE_ALLOWED")
    if not vma_is_pfnmap(vma):
        return
    if new.flags & KVM_MEM_LOG_DIRTY_PAGES:
        raise KvmError(-EINVAL, Refusal.LOGGING_PFNMAP,
                       f"dirty logging on VM_PFNMAP VMA {vma.name or hex(vma.start)}")
    if kvm_vma_is_cacheable(vma) and not kvm_supports_cacheable_pfnmap(kvm.host.features):
        raise KvmError(-EINVAL, Refusal.CACHEABLE_PFNMAP,
                       f"cacheable VM_PFNMAP VMA {vma.name or hex(vma.start)} needs "
                                "FEAT_S2FWB and CTR_EL0.DIC")


def _check_region_args(flags: int, gpa: int, size: int, hva: int) -> None:
    if flags & ~KVM_MEM_VALID_FLAGS:
        raise KvmError(-EINVAL, Refusal.BAD_FLAGS, f"unknown memslot flags {flags:#x}")
    for name, v in (("memory_size", size), ("guest_phys_addr", gpa), ("userspace_addr", hva)):
        if v & (PAGE_SIZE - 1):
            raise KvmError(-EINVAL, Refusal.UNALIGNED, f"{name} {v:#x} is not page aligned")
    if hva + size > 1 << 64:  # Kernel: !access_ok(userspace_addr, memory_size)
        raise KvmError(-EINVAL, Refusal.BAD_USER_RANGE,
                       f"userspace_addr {hva:#x} + memory_size {size:#x} is not a user "
                       "address range")
    if gpa + size > 1 << 64:  # Kernel: guest_phys_addr + memory_size wraps
        raise KvmError(-EINVAL, Refusal.GPA_WRAPS,
                       f"guest_phys_addr {gpa:#x} + memory_size {size:#x} wraps")


def kvm_set_memory_region(kvm: Kvm, slot_id: int, flags: int, gpa: int, size: int,
                          hva: int) -> MemoryChange:
    """Create, move, delete or change the flags of a memslot; return which it was.

    slot_id is the ioctl's u32 slot: address space in bits 31:16, slot id in bits 15:0.

    Kernel: kvm_vm_ioctl_set_memory_region ((u16)slot >= KVM_USER_MEM_SLOTS),
    __kvm_set_memory_region (as_id = slot >> 16 against kvm_arch_nr_memslot_as_ids, then
    the checks and the KVM_MR_* choice), kvm_set_memslot.
    """
    if slot_id & 0xFFFF >= KVM_USER_MEM_SLOTS:
        raise KvmError(-EINVAL, Refusal.SLOT_ID,
                       f"slot {slot_id:#x}: id {slot_id & 0xFFFF} is not below "
                       f"KVM_USER_MEM_SLOTS ({KVM_USER_MEM_SLOTS})")
    _check_region_args(flags, gpa, size, hva)
    if slot_id >> 16 >= KVM_ADDRESS_SPACE_NUM:
        raise KvmError(-EINVAL, Refusal.SLOT_ID,
                       f"slot {slot_id:#x}: address space {slot_id >> 16} is not below "
                       f"{KVM_ADDRESS_SPACE_NUM} (arm64 has one)")
    old = kvm.memslots.get(slot_id)
    if size == 0:
        if old is None:
            raise KvmError(-EINVAL, Refusal.DELETE_EMPTY_SLOT, f"delete of empty slot {slot_id}")
        kvm_delete_memslot(kvm, old)
        return MemoryChange.DELETE
    new = Memslot(slot_id, gpa >> PAGE_SHIFT, size >> PAGE_SHIFT, hva, flags)
    if old is None:
        change = MemoryChange.CREATE
    else:
        if hva != old.userspace_addr or new.npages != old.npages or (
                (flags ^ old.flags) & KVM_MEM_READONLY):
            raise KvmError(-EINVAL, Refusal.IMMUTABLE_SLOT_FIELD,
                           "a slot's HVA, size and READONLY flag cannot change")
        if new.base_gfn != old.base_gfn:
            change = MemoryChange.MOVE
        elif flags != old.flags:
            change = MemoryChange.FLAGS_ONLY
        else:
            return MemoryChange.UNCHANGED
    if change in (MemoryChange.CREATE, MemoryChange.MOVE):
        for other in kvm.memslots.values():
            overlap = other.base_gfn < new.end_gfn and new.base_gfn < other.end_gfn
            if other.id != slot_id and overlap:
                raise KvmError(-EEXIST, Refusal.OVERLAP, f"slot {slot_id} overlaps slot {other.id}")
    kvm_arch_prepare_memory_region(kvm, new)
    if change is MemoryChange.MOVE:
        start, end = slot_range(old)  # type: ignore[arg-type]
        kvm_stage2_unmap_range(kvm, start, end - start)
    kvm.memslots[slot_id] = new
    kvm_update_dirty_bitmap(kvm, old, new)
    kvm_arch_commit_memory_region(kvm, old, new, change)
    return change


def kvm_delete_memslot(kvm: Kvm, old: Memslot) -> None:
    """Remove a slot and unmap its range. Kernel: kvm_arch_flush_shadow_memslot."""
    del kvm.memslots[old.id]
    kvm.dirty_bitmap.pop(old.id, None)
    start, end = slot_range(old)
    kvm_stage2_unmap_range(kvm, start, end - start)
    kvm_mmu_free_memory_cache(kvm.pgt.s2_mmu.split_page_cache, kvm.env.pool)


def kvm_update_dirty_bitmap(kvm: Kvm, old: Memslot | None, new: Memslot) -> None:
    """Allocate the bitmap when logging starts (all-set if asked), free it when it stops.

    Kernel: kvm_prepare_memory_region (kvm_alloc_dirty_bitmap, bitmap_set for
    KVM_DIRTY_LOG_INITIALLY_SET).
    """
    logging = bool(new.flags & KVM_MEM_LOG_DIRTY_PAGES)
    if not logging:
        kvm.dirty_bitmap.pop(new.id, None)
        return
    if old is not None and old.flags & KVM_MEM_LOG_DIRTY_PAGES and new.id in kvm.dirty_bitmap:
        return
    nbytes = (new.npages + 63) // 64 * 8
    bitmap = bytearray(nbytes)
    if kvm_dirty_log_manual_protect_and_init_set(kvm):
        bitmap = bytearray(b"\xff" * nbytes)
        _clear_tail(bitmap, new.npages)
    kvm.dirty_bitmap[new.id] = bitmap


def _clear_tail(bitmap: bytearray, npages: int) -> None:
    for bit in range(npages, len(bitmap) * 8):
        bitmap[bit >> 3] &= ~(1 << (bit & 7)) & 0xFF


def kvm_arch_commit_memory_region(kvm: Kvm, old: Memslot | None, new: Memslot,
                                  change: MemoryChange) -> None:
    """On enabling dirty logging, write-protect the slot and eager-split it.

    With KVM_DIRTY_LOG_INITIALLY_SET nothing is done here: CLEAR_DIRTY_LOG protects
    and splits gradually. Otherwise the split page cache is freed.

    Kernel: kvm_arch_commit_memory_region.
    """
    old_flags = old.flags if old is not None else 0
    enabling = (new.flags & KVM_MEM_LOG_DIRTY_PAGES) and not (old_flags & KVM_MEM_LOG_DIRTY_PAGES)
    if new.flags & KVM_MEM_LOG_DIRTY_PAGES:
        if not enabling or kvm_dirty_log_manual_protect_and_init_set(kvm):
            return
        kvm_mmu_wp_memory_region(kvm, new)
        start, end = slot_range(new)
        kvm_mmu_split_huge_pages(kvm, start, end)
        return
    kvm_mmu_free_memory_cache(kvm.pgt.s2_mmu.split_page_cache, kvm.env.pool)


def set_slot_flags(kvm: Kvm, slot_id: int, flags: int) -> MemoryChange:
    """Change only a slot's flags (the VMM's dirty-log enable/disable)."""
    slot = kvm.memslots[slot_id]
    return kvm_set_memory_region(kvm, slot_id, flags, slot.base_gfn << PAGE_SHIFT,
                                 slot.npages << PAGE_SHIFT, slot.userspace_addr)


# -- MMU notifiers ----------------------------------------------------------------------------


def slots_backed_by(kvm: Kvm, start: int, end: int) -> list[tuple[Memslot, int, int]]:
    """Return (slot, hva_lo, hva_hi) for each memslot whose HVAs meet [start, end)."""
    out = []
    for slot in kvm.slots():
        s_hva = slot.userspace_addr
        lo, hi = max(start, s_hva), min(end, s_hva + (slot.npages << PAGE_SHIFT))
        if lo < hi:
            out.append((slot, lo, hi))
    return out


def kvm_mmu_notifier_invalidate_range_start(kvm: Kvm, start: int, end: int) -> None:
    """Unmap the stage-2 ranges the HVAs back, counting an invalidation in progress.

    Only a range that meets a memslot begins an invalidation (the on_lock callback runs
    once a memslot is found); memslots cannot change until the matching range_end.

    Kernel: kvm_mmu_notifier_invalidate_range_start, __kvm_handle_hva_range,
    kvm_mmu_invalidate_begin, kvm_unmap_gfn_range.
    """
    hits = slots_backed_by(kvm, start, end)
    if hits:
        kvm.mmu_invalidate_in_progress += 1
    if kvm_vm_is_protected(kvm):
        return
    for slot, lo, hi in hits:
        gfn = hva_to_gfn_memslot(slot, lo)
        kvm_stage2_unmap_range(kvm, gfn << PAGE_SHIFT, hi - lo)


def kvm_mmu_notifier_invalidate_range_end(kvm: Kvm, start: int, end: int) -> None:
    """Bump mmu_invalidate_seq and end the invalidation, if range_start began one.

    Kernel: kvm_mmu_notifier_invalidate_range_end, kvm_mmu_invalidate_end.
    """
    if not slots_backed_by(kvm, start, end):
        return
    kvm.mmu_invalidate_seq += 1
    kvm.mmu_invalidate_in_progress -= 1


def kvm_mmu_notifier_change_pte(kvm: Kvm, hva: int, pa: int) -> None:
    """Map the page a CoW put at hva read-only at stage 2, where the release still has
    .change_pte() (profile knob change_pte) and an invalidation is in progress.

    The invalidation around the CoW unmapped the old page, so this is a map of a 4K page
    with KVM_PGTABLE_PROT_R and no memcache: it fails with -ENOMEM (ignored) where the
    unmap freed the last-level table.

    Kernel: kvm_mmu_notifier_change_pte (returns unless mmu_invalidate_in_progress),
    kvm_change_spte_gfn, kvm_set_spte_gfn (Linux 6.1; removed by f3b65bbaed7c).
    """
    if not kvm.env.profile.change_pte or not kvm.mmu_invalidate_in_progress:
        return
    if kvm_vm_is_protected(kvm):
        return
    for slot, lo, _ in slots_backed_by(kvm, hva, hva + PAGE_SIZE):
        ipa = hva_to_gfn_memslot(slot, lo) << PAGE_SHIFT
        kvm.backend.map(kvm.pgt, ipa, PAGE_SIZE, pa, KVM_PGTABLE_PROT_R, None, 0)


def mmu_invalidate_retry(kvm: Kvm, mmu_seq: int) -> bool:
    """Return whether an invalidation ran (or runs) since mmu_seq was read.

    Kernel: mmu_invalidate_retry.
    """
    return kvm.mmu_invalidate_in_progress > 0 or kvm.mmu_invalidate_seq != mmu_seq


def replace_slot(slot: Memslot, **kw: int) -> Memslot:
    """Return slot with fields replaced (a new value; slots are never edited)."""
    return replace(slot, **kw)
