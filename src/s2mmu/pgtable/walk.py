"""The generic walker: kvm_pgtable_walk() and its contract.

A walk visits the entries covering [addr, addr + size) depth first, calling the
walker's visitor for invalid entries and leaves (LEAF), and for table entries before
(TABLE_PRE) and after (TABLE_POST) their children. The contract, as the kernel keeps it:

- invalid entries are leaves;
- the visitor gets a read-only context (the entry's address, the value read, the walk's
  start/addr/end, the level, the flags, the mm_ops) and changes entries only through
  the named helpers (stage2_try_set_pte, stage2_try_break_pte, stage2_make_pte);
- the entry is re-read after the LEAF and TABLE_PRE callbacks, so a LEAF that installs
  a table is descended and a TABLE_PRE that installs a block is not;
- a range beyond the input size is -ERANGE;
- a visitor error ends the walk and is returned, except that -EAGAIN follows the
  behaviour profile's rule (see s2mmu.pgtable.profile); an ignored -EAGAIN counts as
  success.

Every descriptor read yields a :class:`~s2mmu.pgtable.steps.Step` first, so walks can be
interleaved by the concurrency explorer.

Kernel: enum kvm_pgtable_walk_flags, struct kvm_pgtable_visit_ctx, struct
kvm_pgtable_walker, kvm_pgtable_walk_shared, kvm_pgtable_walk_begin/end (hyp and kernel
variants) (asm/kvm_pgtable.h); struct kvm_pgtable_walk_data, kvm_pgtable_visitor_cb,
kvm_pgtable_walk_continue, __kvm_pgtable_visit, __kvm_pgtable_walk, _kvm_pgtable_walk,
kvm_pgtable_walk, kvm_pgtable_idx, kvm_pgd_page_idx, kvm_pgd_pages, leaf_walker,
kvm_pgtable_get_leaf (arch/arm64/kvm/hyp/pgtable.c).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from s2mmu.arch.reprs import hex_repr
from s2mmu.pgtable.errno import EAGAIN, EINVAL, EPERM, ERANGE
from s2mmu.pgtable.events import WalkReturn
from s2mmu.pgtable.mm import KvmPgtableMmOps
from s2mmu.pgtable.profile import EagainRule
from s2mmu.pgtable.pte import (
    KVM_PGTABLE_LAST_LEVEL,
    Granule,
    kvm_granule_shift,
    kvm_pte_table,
    kvm_pte_to_phys,
)
from s2mmu.pgtable.steps import READ, Gen, Step, stepped
from s2mmu.pgtable.table import KvmPgtable


class KvmPgtableWalkFlags(enum.IntFlag):
    """Flags controlling a walk (values as in the kernel).

    HANDLE_FAULT is the v6.3..v6.19-rc4 flag that shared BIT(4) with today's
    IGNORE_EAGAIN; the model gives it its own bit so both can be named, and the
    behaviour profile decides which one the walker honours.
    """

    LEAF = 1 << 0
    TABLE_PRE = 1 << 1
    TABLE_POST = 1 << 2
    SHARED = 1 << 3
    IGNORE_EAGAIN = 1 << 4
    SKIP_BBM_TLBI = 1 << 5
    SKIP_CMO = 1 << 6
    HANDLE_FAULT = 1 << 7


# Plain ints for the hot path (IntFlag arithmetic is slow).
KVM_PGTABLE_WALK_LEAF = 1 << 0
KVM_PGTABLE_WALK_TABLE_PRE = 1 << 1
KVM_PGTABLE_WALK_TABLE_POST = 1 << 2
KVM_PGTABLE_WALK_SHARED = 1 << 3
KVM_PGTABLE_WALK_IGNORE_EAGAIN = 1 << 4
KVM_PGTABLE_WALK_SKIP_BBM_TLBI = 1 << 5
KVM_PGTABLE_WALK_SKIP_CMO = 1 << 6
KVM_PGTABLE_WALK_HANDLE_FAULT = 1 << 7


class KvmPgtableVisitCtx(NamedTuple):
    """What a visitor sees of the entry it visits; immutable.

    Kernel: struct kvm_pgtable_visit_ctx.
    """

    ptep: int
    old: int
    arg: Any
    mm_ops: KvmPgtableMmOps
    start: int
    addr: int
    end: int
    level: int
    flags: int
    pgt: KvmPgtable | None = None


Visitor = Callable[[KvmPgtableVisitCtx, int], Gen[int]]


@dataclass(frozen=True)
class KvmPgtableWalker:
    """A visitor, its argument and the walk flags.

    Kernel: struct kvm_pgtable_walker.
    """

    cb: Visitor
    arg: Any
    flags: int


class KvmPgtableWalkData:
    """The walk's cursor: where it started, where it is, where it ends.

    Kernel: struct kvm_pgtable_walk_data.
    """

    __slots__ = ("walker", "start", "addr", "end", "pgt")

    def __init__(
        self,
        walker: KvmPgtableWalker,
        start: int,
        addr: int,
        end: int,
        pgt: KvmPgtable | None = None,
    ) -> None:
        self.walker = walker
        self.start = start
        self.addr = addr
        self.end = end
        self.pgt = pgt


def kvm_pgtable_walk_shared(ctx: KvmPgtableVisitCtx) -> bool:
    """Return whether the walk may race with other software walkers (CAS updates).

    Kernel: kvm_pgtable_walk_shared.
    """
    return bool(ctx.flags & KVM_PGTABLE_WALK_SHARED)


def kvm_pgtable_walk_skip_bbm_tlbi(ctx: KvmPgtableVisitCtx) -> bool:
    """Return whether break-before-make may skip its TLB invalidation.

    Kernel: kvm_pgtable_walk_skip_bbm_tlbi.
    """
    return bool(ctx.flags & KVM_PGTABLE_WALK_SKIP_BBM_TLBI)


def kvm_pgtable_walk_skip_cmo(ctx: KvmPgtableVisitCtx) -> bool:
    """Return whether cache maintenance may be skipped.

    Kernel: kvm_pgtable_walk_skip_cmo.
    """
    return bool(ctx.flags & KVM_PGTABLE_WALK_SKIP_CMO)


def kvm_pgtable_idx(data: KvmPgtableWalkData, level: int, g: Granule) -> int:
    """Return the index of data.addr in a table at level.

    Kernel: kvm_pgtable_idx.
    """
    return (data.addr >> kvm_granule_shift(level, g)) & (g.ptrs_per_pte - 1)


def kvm_pgd_page_idx(pgt: KvmPgtable, addr: int) -> int:
    """Return which of the concatenated PGD pages covers addr.

    Kernel: kvm_pgd_page_idx.
    """
    shift = kvm_granule_shift(pgt.start_level - 1, pgt.ops.g)
    return (addr & ((1 << pgt.ia_bits) - 1)) >> shift


def kvm_pgd_pages(ia_bits: int, start_level: int, g: Granule) -> int:
    """Return how many concatenated pages the PGD needs.

    Kernel: kvm_pgd_pages.
    """
    shift = kvm_granule_shift(start_level - 1, g)
    return (((1 << ia_bits) - 1) >> shift) + 1


def kvm_pgtable_walk_continue(walker: KvmPgtableWalker, r: int, rule: EagainRule) -> bool:
    """Return whether the walk goes on after a visitor returned r.

    Kernel: kvm_pgtable_walk_continue (v6.3 and v6.19 forms); before v6.3 any non-zero
    return ended the walk.
    """
    if r == -EAGAIN:
        if rule is EagainRule.HANDLE_FAULT:
            return not walker.flags & KVM_PGTABLE_WALK_HANDLE_FAULT
        if rule is EagainRule.IGNORE_EAGAIN:
            return bool(walker.flags & KVM_PGTABLE_WALK_IGNORE_EAGAIN)
    return r == 0


def kvm_pgtable_visitor_cb(
    data: KvmPgtableWalkData, ctx: KvmPgtableVisitCtx, visit: int
) -> Gen[int]:
    """Call the walker's visitor for one visit.

    Kernel: kvm_pgtable_visitor_cb.
    """
    return (yield from data.walker.cb(ctx, visit))


def __kvm_pgtable_visit(
    data: KvmPgtableWalkData, mm_ops: KvmPgtableMmOps, ptep: int, level: int
) -> Gen[int]:
    """Visit one entry: callbacks, the re-read, and the descent into a table.

    Kernel: __kvm_pgtable_visit.
    """
    walker = data.walker
    flags = walker.flags
    yield Step(READ, ptep)
    ctx = KvmPgtableVisitCtx(
        ptep, mm_ops.read_pte(ptep), walker.arg, mm_ops,
        data.start, data.addr, data.end, level, flags, data.pgt,
    )  # fmt: skip
    ret = 0
    reload = False
    old = ctx.old
    table = kvm_pte_table(old, level)
    if table and flags & KVM_PGTABLE_WALK_TABLE_PRE:
        ret = yield from kvm_pgtable_visitor_cb(data, ctx, KVM_PGTABLE_WALK_TABLE_PRE)
        reload = mm_ops.profile.reload_after_table_pre
    if not table and flags & KVM_PGTABLE_WALK_LEAF:
        ret = yield from kvm_pgtable_visitor_cb(data, ctx, KVM_PGTABLE_WALK_LEAF)
        reload = True
    if reload:
        yield Step(READ, ptep)
        old = mm_ops.read_pte(ptep)
        table = kvm_pte_table(old, level)
    # kvm_pgtable_walk_continue() is true for 0 whatever the rule: only an error asks it.
    if ret and not kvm_pgtable_walk_continue(walker, ret, mm_ops.profile.eagain_rule):
        return ret
    if not table:
        size = 1 << kvm_granule_shift(level, mm_ops.g)
        data.addr = (data.addr & ~(size - 1)) + size
        return 0
    childp = kvm_pte_to_phys(old, mm_ops.g)
    ret = yield from __kvm_pgtable_walk(data, mm_ops, childp, level + 1)
    if ret and not kvm_pgtable_walk_continue(walker, ret, mm_ops.profile.eagain_rule):
        return ret
    if flags & KVM_PGTABLE_WALK_TABLE_POST:
        ctx = KvmPgtableVisitCtx(ptep, old, *ctx[2:])
        ret = yield from kvm_pgtable_visitor_cb(data, ctx, KVM_PGTABLE_WALK_TABLE_POST)
        if ret and not kvm_pgtable_walk_continue(walker, ret, mm_ops.profile.eagain_rule):
            return ret
    return 0


def __kvm_pgtable_walk(
    data: KvmPgtableWalkData, mm_ops: KvmPgtableMmOps, pgtable: int, level: int
) -> Gen[int]:
    """Visit the entries of one table page from data.addr until the end of the range.

    Kernel: __kvm_pgtable_walk.
    """
    if level < 0 or level > KVM_PGTABLE_LAST_LEVEL:
        mm_ops.warn("__kvm_pgtable_walk", "level out of range")
        return -EINVAL
    g = mm_ops.g
    ret = 0
    for idx in range(kvm_pgtable_idx(data, level, g), g.ptrs_per_pte):
        if data.addr >= data.end:
            break
        ret = yield from __kvm_pgtable_visit(data, mm_ops, pgtable + idx * 8, level)
        if ret:
            break
    return ret


def _kvm_pgtable_walk(pgt: KvmPgtable, data: KvmPgtableWalkData) -> Gen[int]:
    """Walk the PGD pages covering the range.

    Kernel: _kvm_pgtable_walk.
    """
    limit = 1 << pgt.ia_bits
    if data.addr > limit or data.end > limit:
        return -ERANGE
    if pgt.pgd is None:
        return -EINVAL
    mm_ops = pgt.ops
    idx = kvm_pgd_page_idx(pgt, data.addr)
    ret = 0
    while data.addr < data.end:
        pgd_page = pgt.pgd + idx * mm_ops.g.page_size
        ret = yield from __kvm_pgtable_walk(data, mm_ops, pgd_page, pgt.start_level)
        if ret:
            break
        idx += 1
    return ret


def kvm_pgtable_walk_begin(mm_ops: KvmPgtableMmOps, walker: KvmPgtableWalker) -> int:
    """Enter the walk: refuse shared walks at EL2; hold off RCU grace periods.

    Returns -EPERM, or a positive RCU token, or 0.

    Kernel: kvm_pgtable_walk_begin (both the hyp and the kernel variant).
    """
    if mm_ops.hyp_context and walker.flags & KVM_PGTABLE_WALK_SHARED:
        return -EPERM
    return mm_ops.rcu.read_lock() if mm_ops.rcu is not None else 0


def kvm_pgtable_walk_end(mm_ops: KvmPgtableMmOps, token: int) -> None:
    """Leave the walk (RCU callbacks whose grace period ended run now).

    Kernel: kvm_pgtable_walk_end.
    """
    if mm_ops.rcu is not None and token > 0:
        mm_ops.rcu.read_unlock(token)


@stepped
def kvm_pgtable_walk(pgt: KvmPgtable, addr: int, size: int, walker: KvmPgtableWalker) -> Gen[int]:
    """Walk [addr, addr + size) rounded out to pages, visiting entries per walker.flags.

    Kernel: kvm_pgtable_walk.
    """
    mm_ops = pgt.ops
    page_mask = mm_ops.g.page_size - 1
    start = addr & ~page_mask
    end = (start + size + page_mask) & ~page_mask
    data = KvmPgtableWalkData(walker, start, start, end, pgt)
    token = kvm_pgtable_walk_begin(mm_ops, walker)
    if token < 0:
        return token
    seen = _WalkSeen(walker) if mm_ops.events.trace_walks else None
    if seen is not None:
        data.walker = seen.walker
    try:
        ret = yield from _kvm_pgtable_walk(pgt, data)
    finally:
        kvm_pgtable_walk_end(mm_ops, token)
    if seen is not None:
        mm_ops.events.record(WalkReturn(walker.flags, tuple(seen.errors), seen.visits, ret))
    return ret


class _WalkSeen:
    """What a traced walk's visitor returned: the walker to run instead, and its record."""

    def __init__(self, walker: KvmPgtableWalker) -> None:
        self.visits = 0
        self.errors: list[tuple[int, int]] = []
        cb = walker.cb

        def seen(ctx: KvmPgtableVisitCtx, visit: int) -> Gen[int]:
            r = yield from cb(ctx, visit)
            self.visits += 1
            if r:
                self.errors.append((self.visits, r))
            return r

        self.walker = KvmPgtableWalker(seen, walker.arg, walker.flags)


class LeafWalkData:
    """Where leaf_walker leaves the entry it saw. Kernel: struct leaf_walk_data."""

    __slots__ = ("pte", "level")

    def __init__(self) -> None:
        self.pte = 0
        self.level = 0


def leaf_walker(ctx: KvmPgtableVisitCtx, visit: int) -> Gen[int]:
    """Record the leaf (or invalid entry) covering the address.

    Kernel: leaf_walker.
    """
    data: LeafWalkData = ctx.arg
    data.pte = ctx.old
    data.level = ctx.level
    return 0
    yield  # pragma: no cover - makes this a generator


@hex_repr(decimal=("ret", "level"))
class Leaf(NamedTuple):
    """kvm_pgtable_get_leaf's result: errno, the entry and its level."""

    ret: int
    pte: int
    level: int


@stepped
def kvm_pgtable_get_leaf(pgt: KvmPgtable, addr: int) -> Gen[Leaf]:
    """Return the leaf or invalid entry mapping addr, and its level.

    Kernel: kvm_pgtable_get_leaf.
    """
    data = LeafWalkData()
    walker = KvmPgtableWalker(leaf_walker, data, KVM_PGTABLE_WALK_LEAF)
    page_size = pgt.ops.g.page_size
    ret = yield from kvm_pgtable_walk.steps(pgt, addr & ~(page_size - 1), page_size, walker)
    if ret:
        return Leaf(ret, 0, 0)
    return Leaf(0, data.pte, data.level)
