"""The historic bugs, each as a rule that fails under the kernel that had the bug and
holds under the current profile (xfail(strict=True) marks the profiles with the bug).

- PA offset counted per leaf instead of inferred from the IPA (fixed by 1f0f4a2ef7a5);
- no re-read of the entry after a TABLE_PRE callback (fixed by a9f0e3d5a089);
- a permissions-only change going through break-before-make (fixed by 694d071f8d85);
- seed 000: pKVM's hypercall-side walks, which pass no walker flags, swallowed -EAGAIN
  under KVM_PGTABLE_WALK_HANDLE_FAULT (fixed by inverting it to IGNORE_EAGAIN, v6.19).
"""

from __future__ import annotations

from dataclasses import fields, replace

import pytest

from s2mmu.arch.errors import InputError
from s2mmu.pgtable.concurrency import explore
from s2mmu.pgtable.env import PgtableEnv, new_env, new_stage2, pkvm_guest_mm_ops
from s2mmu.pgtable.errno import EAGAIN
from s2mmu.pgtable.events import (
    TLBI_TTL_UNKNOWN,
    DcacheCleanInvalPoc,
    Dsb,
    IcacheInvalPou,
    PageFree,
    TlbiVmid,
    TlbiVmidIpa,
    UseAfterFree,
)
from s2mmu.pgtable.profile import (
    CURRENT,
    KNOBS,
    PRE_V6_3,
    PROFILES,
    V6_1,
    V6_3,
    V6_19,
    V7_1,
    BehaviourProfile,
    behaviour_profile,
    knob_value,
    profile_for_release,
)
from s2mmu.pgtable.prot import (
    KVM_PGTABLE_PROT_R,
    KVM_PGTABLE_PROT_RW,
    KVM_PGTABLE_PROT_X,
    kvm_pgtable_stage2_pte_prot,
)
from s2mmu.pgtable.races import block_and_page_faults, fault_walk_flags
from s2mmu.pgtable.stage2 import (
    kvm_pgtable_stage2_map,
    kvm_pgtable_stage2_relax_perms,
    kvm_pgtable_stage2_set_owner,
    kvm_pgtable_stage2_wrprotect,
    stage2_update_leaf_attrs,
)
from s2mmu.pgtable.steps import run
from s2mmu.pgtable.table import KvmPgtable
from s2mmu.pgtable.walk import kvm_pgtable_get_leaf

from .conftest import SZ_2M, SZ_4K, memcache

PA = 0x1_0000_0000


def has_bug(profile: BehaviourProfile, reason: str):  # type: ignore[no-untyped-def]
    return pytest.param(
        profile, marks=pytest.mark.xfail(strict=True, reason=reason), id=f"{profile.name}-bug"
    )


def test_profiles_are_named_for_their_kernel_releases() -> None:
    assert list(PROFILES) == ["v6.1", "v6.2", "v6.6", "v6.12", "v6.18", "v6.19", "v7.1"]
    assert CURRENT is V7_1
    assert PRE_V6_3 is PROFILES["v6.2"] and V6_3 is PROFILES["v6.12"]


def test_every_knob_is_a_profile_field_with_its_history() -> None:
    assert [k.name for k in KNOBS] == [f.name for f in fields(BehaviourProfile)][1:]
    for k in KNOBS:
        assert k.changes and all(c.commit is None or len(c.commit) >= 12 for c in k.changes)


def test_each_knob_changes_value_where_its_history_says() -> None:
    releases = list(PROFILES)
    for k in KNOBS:
        values = [knob_value(p, k) for p in PROFILES.values()]
        changed = {releases[i] for i in range(1, len(values)) if values[i] != values[i - 1]}
        assert changed <= {profile_for_release(*version(c.release)).name
                           for c in k.changes}, k.name


def version(release: str) -> tuple[int, int]:
    major, minor = release[1:].split(".")
    return int(major), int(minor)


@pytest.mark.parametrize(("release", "name"), [
    ((5, 15), "v6.1"), ((6, 1), "v6.1"), ((6, 2), "v6.2"), ((6, 3), "v6.6"), ((6, 6), "v6.6"),
    ((6, 7), "v6.12"), ((6, 12), "v6.12"), ((6, 13), "v6.12"), ((6, 14), "v6.18"),
    ((6, 18), "v6.18"),
    ((6, 19), "v6.19"), ((7, 0), "v6.19"), ((7, 1), "v7.1"), ((7, 2), "v7.1")])
def test_profile_for_release(release: tuple[int, int], name: str) -> None:
    assert profile_for_release(*release).name == name


def test_unknown_profile_names_the_valid_ones() -> None:
    with pytest.raises(InputError, match=r"unknown kernel profile 'v7' \(known: v6\.1, v6\.2, "
                                         r"v6\.6, v6\.12, v6\.18, v6\.19, v7\.1\)"):
        behaviour_profile("v7")
    assert behaviour_profile("v6.12") is PROFILES["v6.12"]


# 1. PA offset: a vCPU's fresh block replaced by another vCPU's table mid-walk.

PA_COUNTER = replace(CURRENT, name="current-with-pa-counter", pa_from_ipa=False)


@pytest.mark.parametrize(
    "profile",
    [
        CURRENT,
        V6_3,
        has_bug(PA_COUNTER, "PA counter bumped per leaf (before 1f0f4a2ef7a5)"),
        has_bug(PRE_V6_3, "v6.2 counts the PA per leaf"),
    ],
    ids=lambda p: p.name,
)
def test_racing_block_and_page_faults_never_map_a_wrong_pa(profile: BehaviourProfile) -> None:
    ex = explore(block_and_page_faults(profile), max_preemptions=1)
    assert ex.ok, ex.failures[0].format()


# 2. TABLE_PRE reload: collapsing a table into a block at EL2 (no RCU, freed at once).

NO_RELOAD = replace(CURRENT, name="current-without-table-pre-reload", reload_after_table_pre=False)


def pkvm_guest(profile: BehaviourProfile) -> tuple[PgtableEnv, KvmPgtable]:
    env = new_env(profile=profile)
    return env, new_stage2(env, 40, mm_ops=pkvm_guest_mm_ops(env))


@pytest.mark.parametrize(
    "profile",
    [
        CURRENT,
        V6_1,   # 6.1's anchor walker installs the block only on the way back up
        has_bug(NO_RELOAD, "no re-read after TABLE_PRE (before a9f0e3d5a089)"),
        has_bug(PRE_V6_3, "v6.2 does not re-read after TABLE_PRE"),
    ],
    ids=lambda p: p.name,
)
def test_a_block_replacing_a_table_is_not_followed_into_the_freed_table(
    profile: BehaviourProfile,
) -> None:
    env, pgt = pkvm_guest(profile)
    mc = memcache(env)
    for i in range(3):
        kvm_pgtable_stage2_map(
            pgt, SZ_2M + i * SZ_4K, SZ_4K, PA + i * SZ_4K, KVM_PGTABLE_PROT_R, mc
        )
    assert kvm_pgtable_stage2_map(pgt, SZ_2M, SZ_2M, PA, KVM_PGTABLE_PROT_RW, mc) == 0
    assert env.events.of_type(UseAfterFree) == []
    assert kvm_pgtable_get_leaf(pgt, SZ_2M + SZ_4K).level == 2


# 3. A permissions-only change must not go through break-before-make.

NO_FILTER = replace(CURRENT, name="current-without-perm-filter", perm_only_filter=False)


@pytest.mark.parametrize(
    "profile",
    [CURRENT, PRE_V6_3, has_bug(NO_FILTER, "no permission filter (before 694d071f8d85, v5.12)")],
    ids=lambda p: p.name,
)
def test_a_narrower_fault_neither_breaks_the_entry_nor_takes_permissions_away(
    profile: BehaviourProfile,
) -> None:
    env = new_env(profile=profile)
    pgt = new_stage2(env, 40)
    mc = memcache(env)
    kvm_pgtable_stage2_map(pgt, 0, SZ_4K, PA, KVM_PGTABLE_PROT_RW, mc)
    before = kvm_pgtable_get_leaf(pgt, 0).pte
    env.events.clear()
    assert kvm_pgtable_stage2_map(pgt, 0, SZ_4K, PA, KVM_PGTABLE_PROT_R, mc) == -EAGAIN
    assert kvm_pgtable_get_leaf(pgt, 0).pte == before
    assert env.events.of_type(TlbiVmidIpa) == []


# 4. Seed 000: the hypercall-side walk passes no flags.


@pytest.mark.parametrize(
    "profile",
    [V6_19, has_bug(V6_3, "HANDLE_FAULT not propagated: -EAGAIN swallowed")],
    ids=lambda p: p.name,
)
def test_pkvm_relax_perms_hypercall_reports_eagain_for_an_unmapped_ipa(
    profile: BehaviourProfile,
) -> None:
    _, pgt = pkvm_guest(profile)
    assert kvm_pgtable_stage2_relax_perms(pgt, SZ_2M, KVM_PGTABLE_PROT_RW, 0) == -EAGAIN


@pytest.mark.parametrize(
    "profile",
    [V6_19, has_bug(V6_3, "HANDLE_FAULT not propagated: -EAGAIN swallowed")],
    ids=lambda p: p.name,
)
def test_pkvm_share_hypercall_reports_eagain_for_an_existing_mapping(
    profile: BehaviourProfile,
) -> None:
    env, pgt = pkvm_guest(profile)
    mc = memcache(env)
    assert kvm_pgtable_stage2_map(pgt, SZ_2M, SZ_4K, PA, KVM_PGTABLE_PROT_RW, mc, 0) == 0
    assert kvm_pgtable_stage2_map(pgt, SZ_2M, SZ_4K, PA, KVM_PGTABLE_PROT_RW, mc, 0) == -EAGAIN


@pytest.mark.parametrize("profile", [V6_19, V6_3], ids=lambda p: p.name)
def test_the_host_fault_path_sees_eagain_under_both_flag_senses(profile: BehaviourProfile) -> None:
    env = new_env(profile=profile)
    pgt = new_stage2(env, 40)
    flags = fault_walk_flags(profile)
    assert kvm_pgtable_stage2_relax_perms(pgt, SZ_2M, KVM_PGTABLE_PROT_RW, flags) == -EAGAIN


@pytest.mark.parametrize("profile", [V6_19, V6_3, PRE_V6_3], ids=lambda p: p.name)
def test_wrprotect_write_protects_past_holes_under_every_profile(profile: BehaviourProfile) -> None:
    env = new_env(profile=profile)
    pgt = new_stage2(env, 40)
    kvm_pgtable_stage2_map(pgt, SZ_4K, SZ_4K, PA, KVM_PGTABLE_PROT_RW, memcache(env))
    assert kvm_pgtable_stage2_wrprotect(pgt, 0, 2 * SZ_4K) == 0
    prot = kvm_pgtable_stage2_pte_prot(kvm_pgtable_get_leaf(pgt, SZ_4K).pte)
    assert prot == KVM_PGTABLE_PROT_R


def test_from_v6_19_only_ignore_eagain_lets_an_attribute_walk_pass_a_hole() -> None:
    env = new_env()
    pgt = new_stage2(env, 40)
    kvm_pgtable_stage2_map(pgt, SZ_4K, SZ_4K, PA, KVM_PGTABLE_PROT_RW, memcache(env))
    ret, _, _ = run(stage2_update_leaf_attrs(pgt, 0, 2 * SZ_4K, 0, 1 << 7, 0))
    assert ret == -EAGAIN
    assert kvm_pgtable_stage2_pte_prot(kvm_pgtable_get_leaf(pgt, SZ_4K).pte) == KVM_PGTABLE_PROT_RW


# relax_perms and XN: written from prot from v6.19 (FEAT_XNX, 2608563b466b), only ever
# cleared before it (what Linux 6.12's own pgtable.c does under `s2mmu kernel diff`).


@pytest.mark.parametrize(
    ("profile", "executable"), [(V6_19, False), (V6_3, True), (PRE_V6_3, True)],
    ids=lambda p: getattr(p, "name", str(p)),
)
def test_relax_perms_to_rw_keeps_an_executable_leaf_executable_before_v6_19(
    profile: BehaviourProfile, executable: bool
) -> None:
    env = new_env(profile=profile)
    pgt = new_stage2(env, 40)
    rwx = KVM_PGTABLE_PROT_RW | KVM_PGTABLE_PROT_X
    assert kvm_pgtable_stage2_map(pgt, SZ_2M, SZ_4K, PA, rwx, memcache(env), 0) == 0
    assert kvm_pgtable_stage2_relax_perms(pgt, SZ_2M, KVM_PGTABLE_PROT_RW,
                                          fault_walk_flags(profile)) == 0
    _, pte, _ = kvm_pgtable_get_leaf(pgt, SZ_2M)
    assert bool(kvm_pgtable_stage2_pte_prot(pte) & KVM_PGTABLE_PROT_X) is executable


@pytest.mark.parametrize("profile", [V6_3, PRE_V6_3], ids=lambda p: p.name)
def test_relax_perms_with_x_clears_xn_under_the_old_rule(profile: BehaviourProfile) -> None:
    env = new_env(profile=profile)
    pgt = new_stage2(env, 40)
    assert kvm_pgtable_stage2_map(pgt, SZ_2M, SZ_4K, PA, KVM_PGTABLE_PROT_R, memcache(env), 0) == 0
    assert kvm_pgtable_stage2_relax_perms(pgt, SZ_2M, KVM_PGTABLE_PROT_R | KVM_PGTABLE_PROT_X,
                                          fault_walk_flags(profile)) == 0
    _, pte, _ = kvm_pgtable_get_leaf(pgt, SZ_2M)
    assert kvm_pgtable_stage2_pte_prot(pte) & KVM_PGTABLE_PROT_X == KVM_PGTABLE_PROT_X


@pytest.mark.parametrize(("profile", "ret"), [(V6_3, -22), (PRE_V6_3, -22), (V6_19, 0)],
                         ids=lambda p: getattr(p, "name", str(p)))
def test_set_owner_accepts_owner_ids_above_one_only_from_the_v6_19_profile(
    profile: BehaviourProfile, ret: int
) -> None:
    env = new_env(profile=profile)
    pgt = new_stage2(env, 40)
    assert kvm_pgtable_stage2_set_owner(pgt, SZ_2M, SZ_4K, memcache(env), 2) == ret
    assert kvm_pgtable_stage2_set_owner(pgt, SZ_2M, SZ_4K, memcache(env), 1) == 0


UNKNOWN = TLBI_TTL_UNKNOWN

# 5. The TLB invalidation after relax_perms: broadcast on success only before v6.5, local
#    from v6.5 (a12ab1378a88), and on -EAGAIN too from v6.7 (be097997a273).


@pytest.mark.parametrize(("release", "on_success", "on_eagain"), [
    ("v6.1", [TlbiVmidIpa(1, 0, 3, nsh=False)], []),
    ("v6.2", [TlbiVmidIpa(1, 0, 3, nsh=False)], []),
    ("v6.6", [TlbiVmidIpa(1, 0, 3, nsh=True)], []),
    ("v6.12", [TlbiVmidIpa(1, 0, 3, nsh=True)], [TlbiVmidIpa(1, SZ_2M, UNKNOWN, nsh=True)]),
    ("v6.19", [TlbiVmidIpa(1, 0, 3, nsh=True)], [TlbiVmidIpa(1, SZ_2M, UNKNOWN, nsh=True)]),
])
def test_relax_perms_invalidates_as_its_release_does(release: str, on_success: list[TlbiVmidIpa],
                                                     on_eagain: list[TlbiVmidIpa]) -> None:
    profile = PROFILES[release]
    env = new_env(profile=profile)
    pgt = new_stage2(env, 40)
    kvm_pgtable_stage2_map(pgt, 0, SZ_4K, PA, KVM_PGTABLE_PROT_R, memcache(env))
    kvm_pgtable_stage2_map(pgt, SZ_2M + SZ_4K, SZ_4K, PA, KVM_PGTABLE_PROT_R, memcache(env))
    flags = fault_walk_flags(profile)
    env.events.clear()
    assert kvm_pgtable_stage2_relax_perms(pgt, 0, KVM_PGTABLE_PROT_RW, flags) == 0
    assert env.events.of_type(TlbiVmidIpa) == on_success
    env.events.clear()
    ret = kvm_pgtable_stage2_relax_perms(pgt, SZ_2M, KVM_PGTABLE_PROT_RW, flags)
    assert ret == (-EAGAIN if profile.attr_eagain_on_invalid else 0)
    assert env.events.of_type(TlbiVmidIpa) == (on_eagain if ret else
                                               [TlbiVmidIpa(1, SZ_2M, 0, nsh=False)])


# Linux 6.1 (measured against its own pgtable.c by tests/kernel/test_diff_6_1.py).


def test_v6_1_replaces_a_table_by_a_block_through_an_anchor() -> None:
    env = new_env(profile=V6_1)
    pgt = new_stage2(env, 40)
    mc = memcache(env)
    kvm_pgtable_stage2_map(pgt, 0x1A000, SZ_4K, PA, KVM_PGTABLE_PROT_R, mc)
    table = kvm_pgtable_get_leaf(pgt, 0x1A000)
    n = len(env.events)
    assert kvm_pgtable_stage2_map(pgt, 0, SZ_2M, PA, KVM_PGTABLE_PROT_RW, mc) == 0
    kinds = [type(e) for e in env.events.since(n)]
    # Whole-VMID invalidation at TABLE_PRE, the block's one CMO and the detached table's
    # free at TABLE_POST, then the map's trailing DSB.
    assert kinds == [TlbiVmid, DcacheCleanInvalPoc, PageFree, Dsb]
    assert kvm_pgtable_get_leaf(pgt, 0x1A000).level == 2 and table.level == 3


@pytest.mark.parametrize(("owner", "size"), [(1, SZ_4K), (0, 4 * SZ_4K)])
def test_v6_1_owner_annotations_invalidate_the_icache(owner: int, size: int) -> None:
    for profile, expected in ((V6_1, size // SZ_4K), (CURRENT, 0)):
        env = new_env(profile=profile)
        pgt = new_stage2(env, 40)
        n = len(env.events)
        assert kvm_pgtable_stage2_set_owner(pgt, SZ_2M, size, memcache(env), owner) == 0
        icache = [e for e in env.events.since(n) if isinstance(e, IcacheInvalPou)]
        assert len(icache) == expected, profile.name


def test_every_change_without_a_commit_says_what_was_observed() -> None:
    from s2mmu.nested.profile import all_knobs

    for k in all_knobs():
        for c in k.changes:
            assert c.commit is None or c.title is not None, k.name   # a hash has its subject
            assert c.commit is not None or c.observed, k.name


@pytest.mark.parametrize("knob", ["cmo_valid_leaf_only", "map_sw_bits_shortcut"])
def test_the_6_10_map_walker_rules_start_with_the_v6_12_profile(knob: str) -> None:
    # 96171cfa55d0 and 7cc1d214a6cd are in the KVM/arm64 updates for 6.10.
    assert [getattr(p, knob) for p in PROFILES.values()] == [False] * 3 + [True] * 4


@pytest.mark.parametrize(("owner", "size"), [(1, SZ_4K), (0, 4 * SZ_4K)])
def test_v6_6_owner_annotations_invalidate_the_icache_as_6_1_does(owner: int, size: int) -> None:
    for profile, expected in ((PROFILES["v6.6"], size // SZ_4K), (PROFILES["v6.12"], 0)):
        env = new_env(profile=profile)
        pgt = new_stage2(env, 40)
        n = len(env.events)
        assert kvm_pgtable_stage2_set_owner(pgt, SZ_2M, size, memcache(env), owner) == 0
        icache = [e for e in env.events.since(n) if isinstance(e, IcacheInvalPou)]
        assert len(icache) == expected, profile.name
