"""Visitor walks and kvm_pgtable_get_leaf against the kernel's own kvm_pgtable_walk.

The glue drives kvm_pgtable_walk with a recording visitor; the model runs its walker
with the same visitor. Every call (visit, level, address, descriptor, flags) and the
walk's return value are compared, so the walker's contract is checked against the
kernel's: TABLE_PRE before and TABLE_POST after a table's children, invalid entries as
leaves, the re-read after LEAF and TABLE_PRE, an error ending the walk, and -EAGAIN per
the release's rule.
"""

from __future__ import annotations

from typing import Any

from s2mmu.kernel.binding import KernelPgtable, Visit
from s2mmu.kernel.build import KernelBuild
from s2mmu.kernel.diff import (
    K_WALK_HANDLE_FAULT,
    K_WALK_LEAF,
    K_WALK_TABLE_POST,
    K_WALK_TABLE_PRE,
    Difference,
    Op,
    WalkOutcome,
    compare,
    new_sides,
    parse_ops,
    run_diff,
    step,
)
from s2mmu.pgtable.caps import KvmCaps
from s2mmu.pgtable.errno import EAGAIN
from s2mmu.pgtable.events import Warn
from s2mmu.pgtable.mm import KVM_ARCH_NR_OBJS_PER_MEMORY_CACHE
from s2mmu.pgtable.profile import V6_1, V6_2, V6_12, V6_19, BehaviourProfile

MAP_PAGE = "map 0x0 0x1000 0x100000000 RW"
LEAF, PRE, POST = K_WALK_LEAF, K_WALK_TABLE_PRE, K_WALK_TABLE_POST


def _run(kernel: KernelPgtable, text: str,
         profile: BehaviourProfile = V6_12) -> tuple[Any, Any, Difference | None]:
    """Run text's operations; return the last one's kernel and model outcomes."""
    s = new_sides(kernel, profile, KvmCaps())
    assert compare(s, Op("init", 0), None, None) is None
    out = None
    for op in parse_ops(text):
        out = step(s, op)
    assert out is not None
    return out


def test_a_walk_visits_each_table_before_and_after_its_children(kernel: KernelPgtable) -> None:
    k_ret, m_ret, diff = _run(kernel, f"{MAP_PAGE}; walk 0x0 0x1000 LEAF|TABLE_PRE|TABLE_POST")
    assert diff is None and k_ret == m_ret
    ret, visits = k_ret.ret, k_ret.visits
    assert ret == 0
    # 40-bit IPA, 4K: the walk starts at level 1.
    assert [(v.visit, v.level, v.addr, v.flags) for v in visits] == [
        (PRE, 1, 0, 7), (PRE, 2, 0, 7), (LEAF, 3, 0, 7), (POST, 2, 0, 7), (POST, 1, 0, 7)]
    assert visits[2].old & 0x3 == 0x3 and visits[2].old & 0xfffffffff000 == 0x1_0000_0000


def test_an_invalid_entry_is_visited_once_as_a_leaf_at_its_level(kernel: KernelPgtable) -> None:
    k_ret, _, diff = _run(kernel, "walk 0x40000000 0x1000 LEAF|TABLE_PRE|TABLE_POST")
    assert diff is None
    assert k_ret == WalkOutcome(0, (Visit(LEAF, 1, 0x4000_0000, 0, 7),))


def test_an_eagain_is_swallowed_without_handle_fault_and_ends_the_walk_with_it(
        kernel: KernelPgtable) -> None:
    walk = "walk 0x0 0x400000 LEAF fail@1=-EAGAIN"
    k_ret, _, diff = _run(kernel, f"{MAP_PAGE}; {walk}")
    assert diff is None and k_ret.ret == 0 and len(k_ret.visits) > 1
    k_ret, _, diff = _run(kernel, f"{MAP_PAGE}; walk 0x0 0x400000 LEAF|HANDLE_FAULT "
                                  "fail@1=-EAGAIN")
    assert diff is None and k_ret.ret == -EAGAIN and len(k_ret.visits) == 1
    assert k_ret.visits[0].flags == LEAF | K_WALK_HANDLE_FAULT


def test_the_v6_19_eagain_rule_differs_from_6_12s_walker(kernel: KernelPgtable) -> None:
    _, _, diff = _run(kernel, f"{MAP_PAGE}; walk 0x0 0x400000 LEAF fail@1=-EAGAIN", V6_19)
    assert diff is not None
    assert (diff.what, diff.kernel, diff.model) == ("return value", "0", str(-EAGAIN))


def test_any_other_error_ends_the_walk(kernel: KernelPgtable) -> None:
    k_ret, _, diff = _run(kernel, f"{MAP_PAGE}; walk 0x0 0x400000 LEAF fail@2=-EINVAL")
    assert diff is None and k_ret.ret == -22 and len(k_ret.visits) == 2


def test_a_table_cleared_in_table_pre_is_not_descended(kernel: KernelPgtable) -> None:
    walk = "walk 0x0 0x1000 LEAF|TABLE_PRE|TABLE_POST zap@2"
    k_ret, _, diff = _run(kernel, f"{MAP_PAGE}; {walk}")
    assert diff is None
    # 6.12 re-reads the entry after TABLE_PRE: the level-2 entry is gone, nothing below it.
    assert [(v.visit, v.level) for v in k_ret.visits] == [(PRE, 1), (PRE, 2), (POST, 1)]


def test_the_pre_v6_4_walker_without_the_re_read_differs_from_6_12(kernel: KernelPgtable) -> None:
    _, _, diff = _run(kernel, f"{MAP_PAGE}; walk 0x0 0x1000 LEAF|TABLE_PRE zap@2", V6_2)
    assert diff is not None and diff.what == "visitor call 3"
    assert diff.kernel == "(none)" and diff.model.startswith("LEAF level 3 addr 0x0")


def test_6_1_descends_into_a_table_cleared_in_table_pre(kernel_6_1: KernelPgtable) -> None:
    k_ret, _, diff = _run(kernel_6_1, f"{MAP_PAGE}; walk 0x0 0x1000 LEAF|TABLE_PRE|TABLE_POST "
                                      "zap@2", V6_1)
    assert diff is None
    # 6.1 reads the entry once: it walks the detached table; its visitor reads 0 at POST.
    v = k_ret.visits
    assert [(x.visit, x.level, x.old) for x in v][2:] == [
        (LEAF, 3, v[2].old), (POST, 2, 0), (POST, 1, v[0].old)]


def test_get_leaf_returns_the_block_and_its_level(kernel: KernelPgtable) -> None:
    k_ret, m_ret, diff = _run(kernel, "map 0x200000 0x200000 0x140000000 RW; "
                                      "get_leaf 0x2a3000")
    assert diff is None and k_ret == m_ret
    assert (k_ret.ret, k_ret.level) == (0, 2) and k_ret.pte & 0xfffffffff000 == 0x1_4000_0000


def test_walks_agree_on_random_sequences(kernel: KernelPgtable,
                                         kernel_build: KernelBuild) -> None:
    report = run_diff(kernel, kernel_build.profile, ops=200, seed=11)
    assert [(r.difference, ops) for r, ops in report.differences] == []
    assert report.by_op["walk"] >= 10 and report.by_op["get_leaf"] >= 3


def test_walks_agree_with_6_1_on_random_sequences(kernel_6_1: KernelPgtable) -> None:
    report = run_diff(kernel_6_1, V6_1, ops=200, seed=11)
    assert [(r.difference, ops) for r, ops in report.differences] == []
    assert report.by_op["walk"] >= 10


def test_a_walk_prints_as_replayable_text() -> None:
    op = Op("walk", 0x1000, 0x2000, walk_flags=LEAF | POST | K_WALK_HANDLE_FAULT, fail_at=3,
            fail_ret=-EAGAIN, zap_at=2)
    assert str(op) == "walk 0x1000 0x2000 LEAF|TABLE_POST|HANDLE_FAULT fail@3=-EAGAIN zap@2"
    assert parse_ops(str(op)) == [op]


def test_an_empty_memcache_warns_and_allocates_atomically_on_both_sides(
        kernel: KernelPgtable) -> None:
    # A level-1 unlinked table forced to pages needs 513 pages; the topped-up memcache
    # holds 40 (KVM_ARCH_NR_OBJS_PER_MEMORY_CACHE): 473 atomic allocations, each WARNs.
    s = new_sides(kernel, V6_12, KvmCaps())
    assert compare(s, Op("init", 0), None, None) is None
    seen = len(s.env.events)
    k_ret, m_ret, diff = step(s, Op("create_unlinked", 0, phys=0x1_4000_0000, level=1, prot=6,
                                    force_pte=True))
    assert diff is None
    assert isinstance(k_ret, int) and k_ret > 0 and k_ret == m_ret
    warns = [e for e in s.env.events.since(seen) if isinstance(e, Warn)]
    assert [w.function for w in warns] == ["kvm_mmu_memory_cache_alloc"] * (
        513 - KVM_ARCH_NR_OBJS_PER_MEMORY_CACHE)
