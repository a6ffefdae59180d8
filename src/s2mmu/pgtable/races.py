"""Ready-made races: small scenarios for the concurrency explorer.

Each function returns a Scenario (a factory building a fresh World) for one of the races
KVM's stage-2 code must survive: two vCPUs faulting on the same IPA, a block fault
against a page fault (dirty logging on one vCPU), a fault against wrprotect, against an
MMU-notifier unmap, against eager splitting, the hardware's access-flag update against
KVM's attribute walkers, and a block collapsing a table under a walker still inside it.

Guest memory is one linear region: IPA GUEST_IPA + x maps PA GUEST_PA + x, so any
other output address is a wrong mapping.

Kernel: the callers' walk flags and lock modes follow arch/arm64/kvm/mmu.c per profile
(s2mmu.pgtable.callers): user_mem_abort / kvm_s2_fault_map (read_lock and
KVM_PGTABLE_WALK_SHARED from v6.2, plus KVM_PGTABLE_WALK_HANDLE_FAULT from v6.3 to
v6.18; write_lock and no flag in v6.1), handle_access_fault (likewise),
kvm_unmap_gfn_range / __unmap_stage2_range (write_lock), kvm_mmu_wp_memory_region
(write_lock), kvm_mmu_split_huge_pages (write_lock).
"""

from __future__ import annotations

from typing import Any

from s2mmu.pgtable.callers import access_fault_walk_flags, fault_walk_flags
from s2mmu.pgtable.caps import KvmCaps
from s2mmu.pgtable.concurrency import (
    READ_LOCK,
    WRITE_LOCK,
    Op,
    Scenario,
    World,
    hw_set_access_flag,
)
from s2mmu.pgtable.env import PgtableEnv, kvm_s2_mm_ops, new_env, new_stage2
from s2mmu.pgtable.errno import EAGAIN
from s2mmu.pgtable.events import EventLog
from s2mmu.pgtable.invariants import Violation, linear_expectation
from s2mmu.pgtable.mm import KvmMmuMemoryCache, __kvm_mmu_topup_memory_cache
from s2mmu.pgtable.profile import CURRENT, BehaviourProfile
from s2mmu.pgtable.prot import KVM_PGTABLE_PROT_R, KVM_PGTABLE_PROT_RW
from s2mmu.pgtable.stage2 import (
    kvm_pgtable_stage2_map,
    kvm_pgtable_stage2_mkyoung,
    kvm_pgtable_stage2_relax_perms,
    kvm_pgtable_stage2_split,
    kvm_pgtable_stage2_test_clear_young,
    kvm_pgtable_stage2_unmap,
    kvm_pgtable_stage2_wrprotect,
)
from s2mmu.pgtable.table import KvmPgtable
from s2mmu.pgtable.walk import kvm_pgtable_get_leaf

GUEST_IPA = 0x4000_0000
GUEST_PA = 0x2_0000_0000
GUEST_SIZE = 0x4000_0000
SZ_4K = 0x1000
SZ_2M = 0x20_0000

PA = GUEST_PA  # the PA of GUEST_IPA


def fault_lock(profile: BehaviourProfile) -> str:
    """Return how user_mem_abort holds mmu_lock (write before parallel faults, v6.2).

    Kernel: user_mem_abort (read_lock from v6.2; write_lock in 6.1.192).
    """
    return READ_LOCK if profile.shared_fault_walks else WRITE_LOCK


def access_fault_lock(profile: BehaviourProfile) -> str:
    """Return how handle_access_fault holds mmu_lock. Kernel: handle_access_fault."""
    return READ_LOCK if profile.shared_access_faults else WRITE_LOCK


def vcpu_memcache(env: PgtableEnv, pages: int = 8) -> KvmMmuMemoryCache:
    """Return a memcache topped up as a vCPU's would be before a fault."""
    mc = KvmMmuMemoryCache()
    __kvm_mmu_topup_memory_cache(mc, env.pool, pages, pages)
    return mc


def guest_stage2(
    profile: BehaviourProfile = CURRENT, caps: KvmCaps | None = None, rcu: bool = True
) -> tuple[PgtableEnv, KvmPgtable]:
    """Return a host with descriptor tracing and a 40-bit guest stage 2.

    The 2M region at GUEST_IPA + 4M has one page mapped, so the level-1 and level-2
    tables above GUEST_IPA already exist and races start at the interesting level.
    """
    env = new_env(profile=profile, caps=caps, events=EventLog(trace_ptes=True))
    mm_ops = kvm_s2_mm_ops(env)
    if not rcu:
        mm_ops.rcu = None
    pgt = new_stage2(env, 40, mm_ops=mm_ops)
    ipa = GUEST_IPA + 2 * SZ_2M
    kvm_pgtable_stage2_map(pgt, ipa, SZ_4K, _pa(ipa), KVM_PGTABLE_PROT_RW, vcpu_memcache(env))
    return env, pgt


def _pa(ipa: int) -> int:
    return GUEST_PA + ipa - GUEST_IPA


def _world(pgt: KvmPgtable, ops: list[Op], *finals: Any) -> World:
    return World(pgt, ops, linear_expectation(GUEST_IPA, GUEST_PA, GUEST_SIZE), list(finals))


def _fault(env: PgtableEnv, pgt: KvmPgtable, ipa: int, size: int, prot: int, name: str) -> Op:
    mc = vcpu_memcache(env)
    flags = fault_walk_flags(env.profile)
    return Op(
        name,
        lambda: kvm_pgtable_stage2_map.steps(pgt, ipa, size, _pa(ipa), prot, mc, flags),
        fault_lock(env.profile),
    )


def expect_mapped(*ipas: int) -> Any:
    """Return a final check: each ipa is mapped when everything has returned."""

    def check(world: World, results: list[Any]) -> list[Violation]:
        out = []
        for ipa in ipas:
            leaf = kvm_pgtable_get_leaf(world.pgt, ipa)
            if leaf.ret or not leaf.pte & 1:
                out.append(Violation("lost-mapping", f"IPA {ipa:#x} is not mapped at the end"))
        return out

    return check


def expect_results(allowed: set[int], *which: int) -> Any:
    """Return a final check: the listed operations returned one of allowed."""

    def check(world: World, results: list[Any]) -> list[Violation]:
        return [
            Violation("result", f"{world.ops[i].name} returned {results[i]}")
            for i in which
            if results[i] not in allowed
        ]

    return check


def same_ipa_faults(profile: BehaviourProfile = CURRENT) -> Scenario:
    """Two vCPUs fault on the same 4K IPA, one wanting RW, the other R."""

    def build() -> World:
        env, pgt = guest_stage2(profile)
        ops = [
            _fault(env, pgt, GUEST_IPA, SZ_4K, KVM_PGTABLE_PROT_RW, "vcpu0-fault-rw"),
            _fault(env, pgt, GUEST_IPA, SZ_4K, KVM_PGTABLE_PROT_R, "vcpu1-fault-r"),
        ]
        return _world(pgt, ops, expect_mapped(GUEST_IPA), expect_results({0, -EAGAIN}, 0, 1))

    return build


def block_and_page_faults(profile: BehaviourProfile = CURRENT) -> Scenario:
    """vCPU0 maps a 2M block at an IPA while vCPU1 (dirty logging) maps 4K there.

    The race that commit 1f0f4a2ef7a5 fixed: vCPU1 replaces vCPU0's fresh block by a
    table before vCPU0 re-reads the entry.
    """

    def build() -> World:
        env, pgt = guest_stage2(profile)
        ops = [
            _fault(env, pgt, GUEST_IPA, SZ_2M, KVM_PGTABLE_PROT_RW, "vcpu0-block"),
            _fault(env, pgt, GUEST_IPA, SZ_4K, KVM_PGTABLE_PROT_RW, "vcpu1-page"),
        ]
        return _world(pgt, ops, expect_mapped(GUEST_IPA))

    return build


def fault_vs_wrprotect(
    profile: BehaviourProfile = CURRENT, wrprotect_lock: str | None = WRITE_LOCK
) -> Scenario:
    """Dirty logging write-protects a 2M block while a vCPU (logging: 4K) splits it.

    The vCPU's write fault on the block replaces it by a table through break-before-make.
    With wrprotect_lock=None the wrprotect runs without the mmu_lock, as no caller may,
    and its plain store can undo the break.
    """

    def build() -> World:
        env, pgt = guest_stage2(profile)
        kvm_pgtable_stage2_map(pgt, GUEST_IPA, SZ_2M, PA, KVM_PGTABLE_PROT_RW, vcpu_memcache(env))
        ops = [
            _fault(env, pgt, GUEST_IPA + SZ_4K, SZ_4K, KVM_PGTABLE_PROT_RW, "vcpu0-fault"),
            Op(
                "wrprotect",
                lambda: kvm_pgtable_stage2_wrprotect.steps(pgt, GUEST_IPA, SZ_2M),
                wrprotect_lock,
            ),
        ]
        return _world(pgt, ops, expect_mapped(GUEST_IPA + SZ_4K))

    return build


def fault_vs_unmap(profile: BehaviourProfile = CURRENT) -> Scenario:
    """A vCPU faults in a page while an MMU notifier unmaps the 2M around it."""

    def build() -> World:
        env, pgt = guest_stage2(profile)
        ops = [
            _fault(env, pgt, GUEST_IPA, SZ_4K, KVM_PGTABLE_PROT_RW, "vcpu0-fault"),
            Op(
                "mmu-notifier-unmap",
                lambda: kvm_pgtable_stage2_unmap.steps(pgt, GUEST_IPA, SZ_2M),
                WRITE_LOCK,
            ),
        ]
        return _world(pgt, ops, expect_results({0, -EAGAIN}, 0, 1))

    return build


def fault_vs_split(profile: BehaviourProfile = CURRENT) -> Scenario:
    """A vCPU relaxes permissions inside a 2M block while eager splitting splits it."""

    def build() -> World:
        env, pgt = guest_stage2(profile)
        kvm_pgtable_stage2_map(pgt, GUEST_IPA, SZ_2M, PA, KVM_PGTABLE_PROT_R, vcpu_memcache(env))
        split_mc = vcpu_memcache(env, 4)
        flags = fault_walk_flags(env.profile)
        ops = [
            Op(
                "vcpu0-relax-perms",
                lambda: kvm_pgtable_stage2_relax_perms.steps(
                    pgt, GUEST_IPA + SZ_4K, KVM_PGTABLE_PROT_RW, flags
                ),
                READ_LOCK,
            ),
            Op(
                "eager-split",
                lambda: kvm_pgtable_stage2_split.steps(pgt, GUEST_IPA, SZ_2M, split_mc),
                WRITE_LOCK,
            ),
        ]
        every_page = [GUEST_IPA + i * SZ_4K for i in range(0, 512, 97)]
        return _world(pgt, ops, expect_mapped(*every_page))

    return build


def hw_access_flag_vs_kvm(profile: BehaviourProfile = CURRENT) -> Scenario:
    """The hardware sets AF while one vCPU relaxes permissions and another makes it young.

    The page starts old (AF clear) and read-only.
    """

    def build() -> World:
        env, pgt = guest_stage2(profile)
        mc = vcpu_memcache(env)
        kvm_pgtable_stage2_map(pgt, GUEST_IPA, SZ_4K, PA, KVM_PGTABLE_PROT_R, mc)
        kvm_pgtable_stage2_test_clear_young(pgt, GUEST_IPA, SZ_4K, True)
        flags = fault_walk_flags(env.profile)
        young = access_fault_walk_flags(env.profile)
        ops = [
            Op("hw-access-flag", lambda: hw_set_access_flag(pgt, GUEST_IPA), None),
            Op(
                "vcpu0-relax-perms",
                lambda: kvm_pgtable_stage2_relax_perms.steps(
                    pgt, GUEST_IPA, KVM_PGTABLE_PROT_RW, flags
                ),
                READ_LOCK,
            ),
            Op(
                "vcpu1-mkyoung",
                lambda: kvm_pgtable_stage2_mkyoung.steps(pgt, GUEST_IPA, young),
                access_fault_lock(env.profile),
            ),
        ]
        return _world(pgt, ops, expect_mapped(GUEST_IPA))

    return build


def block_over_table_vs_walker(profile: BehaviourProfile = CURRENT, rcu: bool = True) -> Scenario:
    """vCPU0 maps a 2M block over a table that vCPU1 is still walking.

    The block's TABLE_PRE frees the detached table; only RCU (rcu=True, as on the host)
    keeps it alive until vCPU1's walk ends.
    """

    def build() -> World:
        env, pgt = guest_stage2(profile, rcu=rcu)
        kvm_pgtable_stage2_map(pgt, GUEST_IPA, SZ_4K, PA, KVM_PGTABLE_PROT_R, vcpu_memcache(env))
        ops = [
            _fault(env, pgt, GUEST_IPA, SZ_2M, KVM_PGTABLE_PROT_RW, "vcpu0-block"),
            _fault(env, pgt, GUEST_IPA + SZ_4K, SZ_4K, KVM_PGTABLE_PROT_RW, "vcpu1-page"),
        ]
        return _world(pgt, ops)

    return build


ALL_RACES = {
    "same-ipa-faults": same_ipa_faults,
    "block-and-page-faults": block_and_page_faults,
    "fault-vs-wrprotect": fault_vs_wrprotect,
    "fault-vs-unmap": fault_vs_unmap,
    "fault-vs-split": fault_vs_split,
    "hw-access-flag-vs-kvm": hw_access_flag_vs_kvm,
    "block-over-table-vs-walker": block_over_table_vs_walker,
}
