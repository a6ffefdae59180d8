"""The walker flags the kernel's callers pass to the stage-2 operations, per profile.

The stage-2 helpers decide from these flags how they update an entry: a walk with
KVM_PGTABLE_WALK_SHARED swaps it (stage2_try_set_pte's cmpxchg, break-before-make through
the locked entry), any other walk stores it; and HANDLE_FAULT / IGNORE_EAGAIN decide what
-EAGAIN does (the profile's eagain_rule). So the caller's flags are part of the behaviour,
and each caller takes them from here:

- v6.1: no flags anywhere (map takes none); faults and access faults take mmu_lock for
  write (a dirty-logging write permission fault's relax for read, with a plain store);
- v6.2: user_mem_abort's map and relax_perms pass SHARED under the read lock;
  handle_access_fault's mkyoung still runs under the write lock with no flag;
- v6.3 to v6.18: SHARED|HANDLE_FAULT for the three (mkyoung under the read lock);
- v6.19: SHARED for the three (HANDLE_FAULT is gone).

Callers under the write lock (kvm_unmap_gfn_range, stage2_wp_range, kvm_age_gfn,
kvm_mmu_split_huge_pages, kvm_phys_addr_ioremap) and pKVM's EL2 walks (host_stage2_idmap
under the host lock; the guest share, relax, mkyoung hypercalls) pass no flag in every
release the profiles cover; wrprotect adds IGNORE_EAGAIN itself from v6.19.

Kernel: user_mem_abort, handle_access_fault, kvm_pgtable_stage2_relax_perms,
kvm_pgtable_stage2_mkyoung (arch/arm64/kvm/mmu.c and hyp/pgtable.c of Linux 6.1.192 and
6.12.118; in 6.12 relax_perms and mkyoung pass HANDLE_FAULT|SHARED themselves, later
releases take the flags from the caller); __host_stage2_idmap (hyp/nvhe/mem_protect.c,
6.12.118: flags 0).
"""

from __future__ import annotations

from s2mmu.pgtable.profile import BehaviourProfile, EagainRule
from s2mmu.pgtable.walk import KVM_PGTABLE_WALK_HANDLE_FAULT, KVM_PGTABLE_WALK_SHARED


def _with_handle_fault(profile: BehaviourProfile, flags: int) -> int:
    if profile.eagain_rule is EagainRule.HANDLE_FAULT:
        return flags | KVM_PGTABLE_WALK_HANDLE_FAULT
    return flags


def fault_walk_flags(profile: BehaviourProfile) -> int:
    """Return the flags user_mem_abort passes to map and relax_perms.

    Kernel: user_mem_abort (kvm_s2_fault_map), kvm_pgtable_stage2_relax_perms.
    """
    shared = KVM_PGTABLE_WALK_SHARED if profile.shared_fault_walks else 0
    return _with_handle_fault(profile, shared) if shared else 0


def access_fault_walk_flags(profile: BehaviourProfile) -> int:
    """Return the flags handle_access_fault passes to mkyoung.

    Kernel: handle_access_fault, kvm_pgtable_stage2_mkyoung.
    """
    shared = KVM_PGTABLE_WALK_SHARED if profile.shared_access_faults else 0
    return _with_handle_fault(profile, shared) if shared else 0


FLAG_NAMES = ((KVM_PGTABLE_WALK_SHARED, "SHARED"), (KVM_PGTABLE_WALK_HANDLE_FAULT, "HANDLE_FAULT"))


def walk_flag_names(flags: int) -> str:
    """Return the caller flags as the kernel spells them without the prefix ("none": 0)."""
    return "|".join(n for f, n in FLAG_NAMES if flags & f) or "none"
