"""The walker's contract, each point as its own test.

Kernel: __kvm_pgtable_visit, __kvm_pgtable_walk, _kvm_pgtable_walk, kvm_pgtable_walk,
kvm_pgtable_walk_continue, kvm_pgtable_get_leaf.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s2mmu.pgtable.env import PgtableEnv, new_env, new_stage2, pkvm_guest_mm_ops
from s2mmu.pgtable.errno import EAGAIN, EINVAL, EPERM, ERANGE
from s2mmu.pgtable.mm import KvmMmuMemoryCache
from s2mmu.pgtable.profile import CURRENT, PRE_V6_3, V6_3, BehaviourProfile, EagainRule
from s2mmu.pgtable.prot import KVM_PGTABLE_PROT_R, KVM_PGTABLE_PROT_RW
from s2mmu.pgtable.pte import kvm_init_table_pte, kvm_pte_valid
from s2mmu.pgtable.stage2 import kvm_pgtable_stage2_destroy, kvm_pgtable_stage2_map
from s2mmu.pgtable.steps import Gen
from s2mmu.pgtable.table import KvmPgtable
from s2mmu.pgtable.walk import (
    KVM_PGTABLE_WALK_HANDLE_FAULT,
    KVM_PGTABLE_WALK_IGNORE_EAGAIN,
    KVM_PGTABLE_WALK_LEAF,
    KVM_PGTABLE_WALK_SHARED,
    KVM_PGTABLE_WALK_TABLE_POST,
    KVM_PGTABLE_WALK_TABLE_PRE,
    KvmPgtableVisitCtx,
    KvmPgtableWalker,
    kvm_pgd_pages,
    kvm_pgtable_get_leaf,
    kvm_pgtable_walk,
    kvm_pgtable_walk_continue,
)

from .conftest import SZ_1G, SZ_2M, SZ_4K, memcache

LEAF, PRE, POST = KVM_PGTABLE_WALK_LEAF, KVM_PGTABLE_WALK_TABLE_PRE, KVM_PGTABLE_WALK_TABLE_POST
ALL = LEAF | PRE | POST

Visit = tuple[int, int, int]
Action = Callable[[KvmPgtableVisitCtx, int], int]


def visitor(log: list[Visit], action: Action | None = None):  # type: ignore[no-untyped-def]
    """Return a visitor recording (visit, addr, level) and returning action's value."""

    def cb(ctx: KvmPgtableVisitCtx, visit: int) -> Gen[int]:
        log.append((visit, ctx.addr, ctx.level))
        return action(ctx, visit) if action else 0
        yield  # pragma: no cover

    return cb


def walk(pgt: KvmPgtable, addr: int, size: int, flags: int, action: Action | None = None):  # type: ignore[no-untyped-def]
    log: list[Visit] = []
    ret = kvm_pgtable_walk(pgt, addr, size, KvmPgtableWalker(visitor(log, action), None, flags))
    return ret, log


def mapped(env: PgtableEnv, pages: list[int]) -> KvmPgtable:
    pgt = new_stage2(env, 40)
    mc = memcache(env)
    for ipa in pages:
        assert kvm_pgtable_stage2_map(pgt, ipa, SZ_4K, ipa, KVM_PGTABLE_PROT_R, mc) == 0
    return pgt


def test_invalid_entries_are_leaves_and_skip_their_whole_granule(pgt: KvmPgtable) -> None:
    ret, log = walk(pgt, 0, 2 * SZ_4K, LEAF)
    assert ret == 0
    assert log == [(LEAF, 0, 1)]


def test_tables_are_visited_pre_and_post_order(env: PgtableEnv) -> None:
    pgt = mapped(env, [SZ_1G + SZ_4K])
    ret, log = walk(pgt, SZ_1G, 2 * SZ_4K, ALL)
    assert ret == 0
    assert log == [
        (PRE, SZ_1G, 1),
        (PRE, SZ_1G, 2),
        (LEAF, SZ_1G, 3),
        (LEAF, SZ_1G + SZ_4K, 3),
        (POST, SZ_1G, 2),
        (POST, SZ_1G, 1),
    ]


def test_walk_ignores_the_offset_in_the_page_and_rounds_the_size_up(env: PgtableEnv) -> None:
    pgt = mapped(env, [0x3000])
    _, log = walk(pgt, 0x3FFF, 2, LEAF)
    assert log == [(LEAF, 0x3000, 3)]
    _, log = walk(pgt, 0x3FFF, SZ_4K + 1, LEAF)
    assert log == [(LEAF, 0x3000, 3), (LEAF, 0x4000, 3)]


@settings(max_examples=25, deadline=None)
@given(st.sets(st.integers(0, 1023), max_size=12))
def test_each_leaf_is_visited_once_in_address_order(pages: set[int]) -> None:
    env = new_env()
    pgt = mapped(env, [SZ_1G + p * SZ_4K for p in sorted(pages)])
    _, log = walk(pgt, SZ_1G, 1024 * SZ_4K, LEAF)
    addrs = [addr for _, addr, _ in log]
    assert addrs == sorted(set(addrs))
    assert {SZ_1G + p * SZ_4K for p in pages} <= set(addrs)


def test_a_leaf_that_installs_a_table_is_descended(env: PgtableEnv, pgt: KvmPgtable) -> None:
    child = env.pool.alloc_page()
    assert child is not None

    def install(ctx: KvmPgtableVisitCtx, visit: int) -> int:
        if ctx.level == 2:
            ctx.mm_ops.write_pte(ctx.ptep, kvm_init_table_pte(child, ctx.mm_ops.g))
        return 0

    pgt2 = mapped(env, [SZ_1G + SZ_2M])
    _, log = walk(pgt2, SZ_1G, SZ_4K, LEAF, install)
    assert log == [(LEAF, SZ_1G, 2), (LEAF, SZ_1G, 3)]


@pytest.mark.parametrize(
    ("profile", "descended"), [(CURRENT, False), (V6_3, False), (PRE_V6_3, True)]
)
def test_a_table_pre_that_removes_the_table_is_not_descended(
    profile: BehaviourProfile, descended: bool
) -> None:
    env = new_env(profile=profile)
    pgt = mapped(env, [SZ_1G])

    def unlink(ctx: KvmPgtableVisitCtx, visit: int) -> int:
        if visit == PRE and ctx.level == 2:
            ctx.mm_ops.write_pte(ctx.ptep, 0)
        return 0

    _, log = walk(pgt, SZ_1G, SZ_4K, PRE | LEAF, unlink)
    assert ((LEAF, SZ_1G, 3) in log) == descended


def test_table_post_sees_the_entry_as_reread(env: PgtableEnv) -> None:
    pgt = mapped(env, [SZ_1G])
    seen: list[int] = []

    def cb(ctx: KvmPgtableVisitCtx, visit: int) -> Gen[int]:
        if visit == POST:
            seen.append(ctx.old)
        return 0
        yield  # pragma: no cover

    kvm_pgtable_walk(pgt, SZ_1G, SZ_4K, KvmPgtableWalker(cb, None, ALL))
    assert all(kvm_pte_valid(old) for old in seen) and len(seen) == 2


@pytest.mark.parametrize(
    ("addr", "size"), [(1 << 40, SZ_4K), ((1 << 40) - SZ_4K, 2 * SZ_4K), (1 << 41, 0)]
)
def test_a_range_beyond_the_input_size_is_erange(pgt: KvmPgtable, addr: int, size: int) -> None:
    assert walk(pgt, addr, size, LEAF) == (-ERANGE, [])


def test_the_range_may_end_exactly_at_the_input_size(pgt: KvmPgtable) -> None:
    assert walk(pgt, (1 << 40) - SZ_4K, SZ_4K, LEAF)[0] == 0


def test_an_error_ends_the_walk_and_is_returned(env: PgtableEnv) -> None:
    pgt = mapped(env, [SZ_1G, SZ_1G + SZ_4K, SZ_1G + 2 * SZ_4K])
    ret, log = walk(pgt, SZ_1G, 3 * SZ_4K, LEAF, lambda ctx, v: -EINVAL)
    assert ret == -EINVAL
    assert len(log) == 1


@pytest.mark.parametrize(
    ("profile", "flags", "ret", "visits"),
    [
        (CURRENT, 0, -EAGAIN, 1),
        (CURRENT, KVM_PGTABLE_WALK_IGNORE_EAGAIN, 0, 3),
        (CURRENT, KVM_PGTABLE_WALK_HANDLE_FAULT, -EAGAIN, 1),
        (V6_3, 0, 0, 3),
        (V6_3, KVM_PGTABLE_WALK_HANDLE_FAULT, -EAGAIN, 1),
        (V6_3, KVM_PGTABLE_WALK_IGNORE_EAGAIN, 0, 3),
        (PRE_V6_3, 0, -EAGAIN, 1),
        (PRE_V6_3, KVM_PGTABLE_WALK_IGNORE_EAGAIN, -EAGAIN, 1),
    ],
)
def test_eagain_ends_the_walk_per_profile_and_an_ignored_one_counts_as_success(
    profile: BehaviourProfile, flags: int, ret: int, visits: int
) -> None:
    env = new_env(profile=profile)
    pgt = mapped(env, [SZ_1G, SZ_1G + SZ_4K, SZ_1G + 2 * SZ_4K])
    got, log = walk(pgt, SZ_1G, 3 * SZ_4K, LEAF | flags, lambda ctx, v: -EAGAIN)
    assert (got, len(log)) == (ret, visits)


def test_walk_continue_rule_table() -> None:
    w = KvmPgtableWalker(visitor([]), None, 0)
    assert kvm_pgtable_walk_continue(w, 0, EagainRule.ANY_ERROR_STOPS)
    assert not kvm_pgtable_walk_continue(w, -EINVAL, EagainRule.IGNORE_EAGAIN)
    assert not kvm_pgtable_walk_continue(w, -EAGAIN, EagainRule.IGNORE_EAGAIN)
    assert kvm_pgtable_walk_continue(w, -EAGAIN, EagainRule.HANDLE_FAULT)


def test_shared_walks_are_refused_at_el2_with_eperm() -> None:
    env = new_env()
    pgt = new_stage2(env, 40, mm_ops=pkvm_guest_mm_ops(env))
    assert walk(pgt, 0, SZ_4K, LEAF | KVM_PGTABLE_WALK_SHARED) == (-EPERM, [])
    assert walk(pgt, 0, SZ_4K, LEAF)[0] == 0


def test_walking_a_destroyed_table_is_einval(pgt: KvmPgtable) -> None:
    kvm_pgtable_stage2_destroy(pgt)
    assert walk(pgt, 0, SZ_4K, LEAF) == (-EINVAL, [])


def test_the_visit_context_is_read_only(pgt: KvmPgtable) -> None:
    def poke(ctx: KvmPgtableVisitCtx, visit: int) -> int:
        with pytest.raises(AttributeError):
            ctx.old = 5  # type: ignore[misc]
        assert (ctx.start, ctx.end, ctx.flags) == (SZ_4K, 3 * SZ_4K, LEAF)
        return 0

    walk(pgt, SZ_4K, 2 * SZ_4K, LEAF, poke)


def test_get_leaf_returns_the_entry_and_level(env: PgtableEnv, mc: KvmMmuMemoryCache) -> None:
    pgt = new_stage2(env, 40)
    kvm_pgtable_stage2_map(pgt, SZ_2M, SZ_2M, 4 * SZ_2M, KVM_PGTABLE_PROT_RW, mc)
    leaf = kvm_pgtable_get_leaf(pgt, SZ_2M + 0x1234)
    assert (leaf.ret, leaf.level, leaf.pte & ~0xFFF & ((1 << 48) - 1)) == (0, 2, 4 * SZ_2M)
    assert kvm_pgtable_get_leaf(pgt, 0) == (0, 0, 2)
    assert kvm_pgtable_get_leaf(pgt, 1 << 40).ret == -ERANGE


@pytest.mark.parametrize(
    ("ia_bits", "start", "pages"), [(40, 1, 2), (41, 1, 4), (44, 1, 32), (48, 0, 1), (32, 2, 4)]
)
def test_concatenated_pgd_page_count(ia_bits: int, start: int, pages: int, env: PgtableEnv) -> None:
    assert kvm_pgd_pages(ia_bits, start, env.g) == pages


def test_a_walk_records_its_return_only_when_walks_are_traced(env: PgtableEnv,
                                                              pgt: KvmPgtable) -> None:
    from s2mmu.pgtable.events import WalkReturn

    def eagain_at_second(ctx: KvmPgtableVisitCtx, visit: int) -> Gen[int]:
        ctx.arg.append(ctx.addr)
        return -EAGAIN if len(ctx.arg) == 2 else 0
        yield  # pragma: no cover

    three_gib = 3 << 30  # three invalid level-1 entries: three leaf visits
    walker = KvmPgtableWalker(eagain_at_second, [], KVM_PGTABLE_WALK_LEAF)
    kvm_pgtable_walk(pgt, 0, three_gib, walker)
    assert env.events.of_type(WalkReturn) == []
    env.events.trace_walks = True
    walker = KvmPgtableWalker(eagain_at_second, [], KVM_PGTABLE_WALK_LEAF)
    assert kvm_pgtable_walk(pgt, 0, three_gib, walker) == -EAGAIN  # v6.19: -EAGAIN ends it
    assert env.events.of_type(WalkReturn) == [WalkReturn(KVM_PGTABLE_WALK_LEAF, ((2, -EAGAIN),),
                                                         2, -EAGAIN)]
