"""The page-table and stage-2 MMU structures.

Kernel: struct kvm_pgtable, enum kvm_pgtable_stage2_flags, kvm_pgtable_force_pte_cb_t
(asm/kvm_pgtable.h); stage2_pte_is_counted (hyp/pgtable.c), which the model makes a
per-table callback (pte_is_counted_cb, the model's seam: the kernel has one fixed rule)
so that pKVM's host stage 2 can leave its default identity entries uncounted; the
fields of struct kvm_s2_mmu that pgtable.c uses (vmid, vtcr, pgt, split_page_cache,
split_page_chunk_size; asm/kvm_host.h).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from s2mmu.pgtable.mm import KvmMmuMemoryCache, KvmPgtableMmOps


class KvmPgtableStage2Flags(enum.IntFlag):
    """Stage-2 page-table flags.

    NOFWB: don't enforce Normal-WB even if the CPUs have ARM64_HAS_STAGE2_FWB.
    IDMAP: only identity mappings (pKVM's host stage 2).
    """

    NOFWB = 1 << 0
    IDMAP = 1 << 1


KVM_PGTABLE_S2_NOFWB = KvmPgtableStage2Flags.NOFWB
KVM_PGTABLE_S2_IDMAP = KvmPgtableStage2Flags.IDMAP

# force_pte_cb(addr, end, prot) -> bool: map at page granularity only.
ForcePteCb = Callable[[int, int, int], bool]

# pte_is_counted_cb(pte, level) -> bool: the entry holds a reference on its table page.
PteIsCountedCb = Callable[[int, int], bool]


@dataclass
class KvmS2Mmu:
    """What pgtable.c needs of a stage-2 MMU: its VMID and VTCR_EL2, and the split cache.

    Kernel: struct kvm_s2_mmu (vmid, vtcr, pgt, split_page_cache, split_page_chunk_size).
    """

    vmid: int
    vtcr: int
    pgt: KvmPgtable | None = None
    split_page_cache: KvmMmuMemoryCache = field(default_factory=KvmMmuMemoryCache)
    split_page_chunk_size: int = 0


@dataclass
class KvmPgtable:
    """A KVM page table: hyp stage 1 or a stage 2.

    pgd is the physical address of the first top-level table page (None until init and
    after destroy). The granule is the mm_ops's (the kernel's PAGE_SHIFT).

    Kernel: struct kvm_pgtable.
    """

    ia_bits: int = 0
    start_level: int = 0
    pgd: int | None = None
    mm_ops: KvmPgtableMmOps | None = None
    flags: int = 0
    force_pte_cb: ForcePteCb | None = None
    mmu: KvmS2Mmu | None = None
    pte_is_counted_cb: PteIsCountedCb | None = None

    @property
    def ops(self) -> KvmPgtableMmOps:
        """Return the mm_ops of an initialised table."""
        if self.mm_ops is None:
            raise ValueError("page table is not initialised (no mm_ops)")
        return self.mm_ops

    @property
    def s2_mmu(self) -> KvmS2Mmu:
        """Return the stage-2 MMU of a stage-2 table."""
        if self.mmu is None:
            raise ValueError("not a stage-2 page table (no kvm_s2_mmu)")
        return self.mmu


def default_pte_is_counted(pte: int, level: int) -> bool:
    """Return whether pte is counted by the kernel's rule: any non-zero entry.

    Kernel: stage2_pte_is_counted (hyp/pgtable.c).
    """
    return pte != 0


def kvm_pgtable_pte_is_counted(pgt: KvmPgtable | None, pte: int, level: int) -> bool:
    """Return whether pte, at level of pgt, holds a reference on its table page.

    The table's pte_is_counted_cb decides when it has one (pKVM's host stage 2);
    otherwise any non-zero entry counts. A valid table entry is always counted.

    Kernel: stage2_pte_is_counted (one fixed rule there; the callback is the model's).
    """
    if pgt is None or pgt.pte_is_counted_cb is None:
        return pte != 0
    if pte & 1 and pte & 2 and level < 3:
        return True
    return pgt.pte_is_counted_cb(pte, level)
