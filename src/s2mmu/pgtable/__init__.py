"""KVM's page-table library (arch/arm64/kvm/hyp/pgtable.c, asm/kvm_pgtable.h).

The walker and its visitors, stage-2 and hyp stage-1 operations, KVM's prot set, the
mm_ops (pages, refcounts, memcaches, RCU), break-before-make with recorded TLB and cache
maintenance, behaviour profiles for older kernels, and a deterministic explorer of
concurrent operations. Tables live in an ``s2mmu.arch.memory.PhysMem``.

Modules: errno, caps, pte, prot, events, steps, profile, mm, table, walk, callers, tlb,
vtcr, stage2, hyp, env, invariants, concurrency, races.

A stage 2 as KVM builds it: the VTCR_EL2 from the IPA size, the PGD from the pool, a
mapping whose table pages come from a memcache topped up first (stage2_map_topup does
what KVM's callers do; kvm_pgtable_stage2_map with an empty memcache would fall back or
fail with -ENOMEM), and the TLB and cache maintenance recorded as events:

>>> from s2mmu import pgtable
>>> env = pgtable.new_env()                       # 4K pages, a pool at 512 GiB
>>> pgt = pgtable.new_stage2(env, ipa_bits=40)
>>> hex(pgt.s2_mmu.vtcr), hex(pgtable.stage2_vttbr(pgt)), pgt.start_level
('0x802d3558', '0x1008000000000', 1)
>>> pgtable.stage2_map_topup(pgt, 0x4000_0000, 0x1000, 0x8_0000_0000,
...                          pgtable.KVM_PGTABLE_PROT_RW)
0
>>> leaf = pgtable.kvm_pgtable_get_leaf(pgt, 0x4000_0000)
>>> leaf.level, hex(leaf.pte)
(3, '0x400008000007ff')
>>> pgtable.kvm_pgtable_stage2_unmap(pgt, 0x4000_0000, 0x1000)
0
>>> env.events.of_type(pgtable.TlbiVmidIpa)[0]   # then the emptied tables, level unknown
TlbiVmidIpa(vmid=1, ipa=0x40000000, level=3, nsh=False)
>>> env.events.of_type(pgtable.PageAlloc)[:2]
[PageAlloc(pa=0x8000000000), PageAlloc(pa=0x8000001000)]
"""

from s2mmu.pgtable.caps import KvmCaps
from s2mmu.pgtable.env import (
    PgtableEnv,
    kvm_hyp_mm_ops,
    kvm_s2_mm_ops,
    new_env,
    new_hyp,
    new_stage2,
    pkvm_guest_mm_ops,
    pkvm_host_mm_ops,
    stage2_cache_min_pages,
    stage2_map_topup,
    stage2_vttbr,
)
from s2mmu.pgtable.errno import E2BIG, EAGAIN, EINVAL, ENOMEM, EPERM, ERANGE, errname
from s2mmu.pgtable.events import EventLog, PageAlloc, PageFree, TlbiVmid, TlbiVmidIpa, TlbiVmidRange
from s2mmu.pgtable.hyp import (
    kvm_pgtable_hyp_destroy,
    kvm_pgtable_hyp_init,
    kvm_pgtable_hyp_map,
    kvm_pgtable_hyp_unmap,
)
from s2mmu.pgtable.mm import (
    KvmMmuMemoryCache,
    KvmPgtableMmOps,
    kvm_mmu_free_memory_cache,
    kvm_mmu_topup_memory_cache,
)
from s2mmu.pgtable.profile import (
    CURRENT,
    PRE_V6_3,
    PROFILES,
    V6_1,
    V6_2,
    V6_3,
    V6_6,
    V6_12,
    V6_18,
    V6_19,
    BehaviourProfile,
    behaviour_profile,
)
from s2mmu.pgtable.prot import (
    KVM_PGTABLE_PROT_R,
    KVM_PGTABLE_PROT_RW,
    KVM_PGTABLE_PROT_RWX,
    KVM_PGTABLE_PROT_W,
    KVM_PGTABLE_PROT_X,
    KvmPgtableProt,
    kvm_pgtable_hyp_pte_prot,
    kvm_pgtable_stage2_pte_prot,
)
from s2mmu.pgtable.pte import PkvmComponentId, kvm_invalid_pte_owner
from s2mmu.pgtable.stage2 import (
    kvm_pgtable_stage2_create_unlinked,
    kvm_pgtable_stage2_destroy,
    kvm_pgtable_stage2_flush,
    kvm_pgtable_stage2_free_unlinked,
    kvm_pgtable_stage2_init,
    kvm_pgtable_stage2_map,
    kvm_pgtable_stage2_mkyoung,
    kvm_pgtable_stage2_pgd_size,
    kvm_pgtable_stage2_relax_perms,
    kvm_pgtable_stage2_set_owner,
    kvm_pgtable_stage2_split,
    kvm_pgtable_stage2_test_clear_young,
    kvm_pgtable_stage2_unmap,
    kvm_pgtable_stage2_wrprotect,
)
from s2mmu.pgtable.table import (
    KVM_PGTABLE_S2_IDMAP,
    KVM_PGTABLE_S2_NOFWB,
    KvmPgtable,
    KvmS2Mmu,
    PteIsCountedCb,
    kvm_pgtable_pte_is_counted,
)
from s2mmu.pgtable.vtcr import kvm_get_vtcr, kvm_get_vttbr
from s2mmu.pgtable.walk import (
    KVM_PGTABLE_WALK_HANDLE_FAULT,
    KVM_PGTABLE_WALK_IGNORE_EAGAIN,
    KVM_PGTABLE_WALK_LEAF,
    KVM_PGTABLE_WALK_SHARED,
    KVM_PGTABLE_WALK_SKIP_BBM_TLBI,
    KVM_PGTABLE_WALK_SKIP_CMO,
    KVM_PGTABLE_WALK_TABLE_POST,
    KVM_PGTABLE_WALK_TABLE_PRE,
    KvmPgtableVisitCtx,
    KvmPgtableWalker,
    KvmPgtableWalkFlags,
    Leaf,
    kvm_pgtable_get_leaf,
    kvm_pgtable_walk,
)

__all__ = [
    "CURRENT",
    "E2BIG",
    "EAGAIN",
    "EINVAL",
    "ENOMEM",
    "EPERM",
    "ERANGE",
    "KVM_PGTABLE_PROT_R",
    "KVM_PGTABLE_PROT_RW",
    "KVM_PGTABLE_PROT_RWX",
    "KVM_PGTABLE_PROT_W",
    "KVM_PGTABLE_PROT_X",
    "KVM_PGTABLE_S2_IDMAP",
    "KVM_PGTABLE_S2_NOFWB",
    "KVM_PGTABLE_WALK_HANDLE_FAULT",
    "KVM_PGTABLE_WALK_IGNORE_EAGAIN",
    "KVM_PGTABLE_WALK_LEAF",
    "KVM_PGTABLE_WALK_SHARED",
    "KVM_PGTABLE_WALK_SKIP_BBM_TLBI",
    "KVM_PGTABLE_WALK_SKIP_CMO",
    "KVM_PGTABLE_WALK_TABLE_POST",
    "KVM_PGTABLE_WALK_TABLE_PRE",
    "PRE_V6_3",
    "PROFILES",
    "V6_1",
    "V6_2",
    "V6_3",
    "V6_6",
    "V6_12",
    "V6_18",
    "V6_19",
    "BehaviourProfile",
    "behaviour_profile",
    "EventLog",
    "PageAlloc",
    "PageFree",
    "TlbiVmid",
    "TlbiVmidIpa",
    "TlbiVmidRange",
    "KvmCaps",
    "KvmMmuMemoryCache",
    "KvmPgtable",
    "KvmPgtableMmOps",
    "KvmPgtableProt",
    "KvmPgtableVisitCtx",
    "KvmPgtableWalkFlags",
    "KvmPgtableWalker",
    "KvmS2Mmu",
    "Leaf",
    "PgtableEnv",
    "PkvmComponentId",
    "PteIsCountedCb",
    "errname",
    "kvm_get_vtcr",
    "kvm_get_vttbr",
    "kvm_hyp_mm_ops",
    "kvm_invalid_pte_owner",
    "kvm_mmu_free_memory_cache",
    "kvm_mmu_topup_memory_cache",
    "kvm_pgtable_get_leaf",
    "kvm_pgtable_hyp_destroy",
    "kvm_pgtable_hyp_init",
    "kvm_pgtable_hyp_map",
    "kvm_pgtable_hyp_pte_prot",
    "kvm_pgtable_hyp_unmap",
    "kvm_pgtable_pte_is_counted",
    "kvm_pgtable_stage2_create_unlinked",
    "kvm_pgtable_stage2_destroy",
    "kvm_pgtable_stage2_flush",
    "kvm_pgtable_stage2_free_unlinked",
    "kvm_pgtable_stage2_init",
    "kvm_pgtable_stage2_map",
    "kvm_pgtable_stage2_mkyoung",
    "kvm_pgtable_stage2_pgd_size",
    "kvm_pgtable_stage2_pte_prot",
    "kvm_pgtable_stage2_relax_perms",
    "kvm_pgtable_stage2_set_owner",
    "kvm_pgtable_stage2_split",
    "kvm_pgtable_stage2_test_clear_young",
    "kvm_pgtable_stage2_unmap",
    "kvm_pgtable_stage2_wrprotect",
    "kvm_pgtable_walk",
    "kvm_s2_mm_ops",
    "new_env",
    "new_hyp",
    "new_stage2",
    "pkvm_guest_mm_ops",
    "pkvm_host_mm_ops",
    "stage2_cache_min_pages",
    "stage2_map_topup",
    "stage2_vttbr",
]
