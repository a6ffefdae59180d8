"""Invariants of a stage-2 table, checked from memory and from the event log.

These are the properties the concurrency explorer checks after every step, and that
tests use on sequential runs:

- wrong-mapping: every valid leaf maps its IPA to the expected output address;
- refcount: every reachable table page's refcount is 1 + its counted entries (an entry
  locked for break-before-make may or may not hold its reference yet);
- freed-table: no reachable table page has been freed, and no software access touched a
  freed page (UseAfterFree events);
- valid-to-valid: a live leaf is never changed to another live leaf with a different
  output address or attributes (only permissions, AF, DBM and software bits may change
  in place), and a live table entry is never changed in place;
- break-without-tlbi: after a live entry is broken, a new live entry is not written
  there before a TLB invalidation covering it;
- reuse-before-tlbi: a table page unlinked from the tree (the detached table and every
  table below it) is not handed out again before a TLB invalidation covering what it
  translated;
- table-tlbi-level: a TLB invalidation for a live table entry that was changed carries
  no level hint (TTL): the hint names the level of the leaf being invalidated, and a
  table entry is no leaf, so a hinted TLBI need not reach the walk-cache and leaf
  entries cached through the table (stage2_unmap_put_pte passes TLBI_TTL_UNKNOWN for a
  table since commit 36e008323926, "KVM: arm64: Don't pass a TLBI level hint when zapping
  table entries"; stage2_try_break_pte uses the range flush, which has no hint);
- walk-contract: each kvm_pgtable_walk() returned what its contract says for the flags
  it was given under the behaviour profile's -EAGAIN rule: the first visitor error that
  ends the walk is the last visit and is returned; an -EAGAIN the rule ignores lets the
  walk go on and is not returned (kvm_pgtable_walk_continue, __kvm_pgtable_walk);
- warn: no WARN_ON fired.

The reader here looks at memory directly (it is the checker, not a walker).

Kernel: the rules follow from stage2_try_break_pte, stage2_make_pte, stage2_pte_is_counted
and the kernel comments on break-before-make (arch/arm64/kvm/hyp/pgtable.c).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from s2mmu.arch.bits import mask
from s2mmu.pgtable.errno import EAGAIN
from s2mmu.pgtable.events import (
    TLBI_TTL_UNKNOWN,
    Event,
    PageAlloc,
    PteWrite,
    TlbiVmid,
    TlbiVmidIpa,
    TlbiVmidRange,
    UseAfterFree,
    WalkReturn,
    Warn,
)
from s2mmu.pgtable.profile import EagainRule
from s2mmu.pgtable.pte import (
    KVM_PTE_LEAF_ATTR_HI_SW,
    KVM_PTE_LEAF_ATTR_LO_S2_AF,
    KVM_PTE_LEAF_ATTR_S2_PERMS,
    Granule,
    kvm_granule_shift,
    kvm_pte_table,
    kvm_pte_to_phys,
    kvm_pte_valid,
    stage2_pte_is_locked,
)
from s2mmu.pgtable.table import KvmPgtable, kvm_pgtable_pte_is_counted
from s2mmu.pgtable.walk import kvm_pgd_pages

# Bits a live stage-2 leaf may change without break-before-make: S2AP, XN, AF, DBM, SW.
S2_IN_PLACE_BITS = (
    KVM_PTE_LEAF_ATTR_S2_PERMS | KVM_PTE_LEAF_ATTR_LO_S2_AF | KVM_PTE_LEAF_ATTR_HI_SW | (1 << 51)
)

ExpectedPa = Callable[[int], "int | None"]


@dataclass(frozen=True)
class Violation:
    """One broken invariant: which rule, after which step, and what was seen."""

    rule: str
    detail: str
    step: int = -1

    def __str__(self) -> str:
        where = f" after step {self.step}" if self.step >= 0 else ""
        return f"{self.rule}{where}: {self.detail}"


class Entry(NamedTuple):
    """A non-zero entry of a reachable table: where it is and what it translates."""

    ptep: int
    pte: int
    ipa: int
    level: int
    size: int


class TreeModel:
    """The reachable table pages and non-zero entries of a table, kept up to date.

    Built by reading memory once; then :meth:`write` applies each traced descriptor
    write, re-reading a subtree only when a table entry is linked.
    """

    def __init__(self, pgt: KvmPgtable) -> None:
        self.pgt = pgt
        self.g = pgt.ops.g
        self.tables: dict[int, tuple[int, int]] = {}
        self.ptes: dict[int, int] = {}
        self.counted: dict[int, int] = {}
        self.locked: dict[int, int] = {}
        if pgt.pgd is None:
            return
        top = kvm_granule_shift(pgt.start_level - 1, self.g)
        for i in range(kvm_pgd_pages(pgt.ia_bits, pgt.start_level, self.g)):
            self._add_table(pgt.pgd + i * self.g.page_size, i << top, pgt.start_level)

    def _page(self, ptep: int) -> int:
        return ptep & ~(self.g.page_size - 1)

    def _account(self, ptep: int, pte: int, level: int, sign: int) -> None:
        page = self._page(ptep)
        if stage2_pte_is_locked(pte):
            self.locked[page] += sign
        elif kvm_pgtable_pte_is_counted(self.pgt, pte, level):
            self.counted[page] += sign

    def _add_table(
        self, page: int, base: int, level: int, added: list[Entry] | None = None
    ) -> None:
        self.tables[page] = (base, level)
        self.counted[page] = self.locked[page] = 0
        shift = kvm_granule_shift(level, self.g)
        words = array("Q", self.pgt.ops.mem.read_bytes(page, self.g.page_size))
        for idx, pte in enumerate(words):
            if pte:
                self._set(page + idx * 8, pte, base + (idx << shift), level, added)

    def _set(
        self, ptep: int, pte: int, ipa: int, level: int, added: list[Entry] | None = None
    ) -> None:
        self.ptes[ptep] = pte
        self._account(ptep, pte, level, +1)
        if added is not None:
            added.append(Entry(ptep, pte, ipa, level, 1 << kvm_granule_shift(level, self.g)))
        if kvm_pte_table(pte, level):
            child = kvm_pte_to_phys(pte, self.g)
            if child not in self.tables:
                self._add_table(child, ipa, level + 1, added)

    def _remove_table(self, page: int) -> None:
        _, level = self.tables.pop(page)
        del self.counted[page], self.locked[page]
        for idx in range(self.g.ptrs_per_pte):
            pte = self.ptes.pop(page + idx * 8, 0)
            child = kvm_pte_to_phys(pte, self.g)
            if kvm_pte_table(pte, level) and child in self.tables:
                self._remove_table(child)

    def subtree(self, page: int) -> list[int]:
        """Return the reachable table page and every table page below it."""
        where = self.tables.get(page)
        if where is None:
            return []
        out = [page]
        level = where[1]
        for idx in range(self.g.ptrs_per_pte):
            pte = self.ptes.get(page + idx * 8, 0)
            if kvm_pte_table(pte, level):
                out += self.subtree(kvm_pte_to_phys(pte, self.g))
        return out

    def locate(self, ptep: int) -> tuple[int, int, int] | None:
        """Return (ipa, level, size) of the entry at ptep, if its table is reachable."""
        page = self._page(ptep)
        where = self.tables.get(page)
        if where is None:
            return None
        base, level = where
        shift = kvm_granule_shift(level, self.g)
        return base + ((ptep - page) // 8 << shift), level, 1 << shift

    def write(self, ptep: int, new: int) -> list[Entry]:
        """Apply a descriptor write; return the entries it made reachable (subtree too)."""
        where = self.locate(ptep)
        if where is None:
            return []
        ipa, level, _ = where
        old = self.ptes.pop(ptep, 0)
        self._account(ptep, old, level, -1)
        child = kvm_pte_to_phys(old, self.g)
        if kvm_pte_table(old, level) and child in self.tables:
            self._remove_table(child)
        added: list[Entry] = []
        if new:
            self._set(ptep, new, ipa, level, added)
        return added

    def entries(self) -> list[Entry]:
        """Return every non-zero reachable entry."""
        out = []
        for ptep, pte in self.ptes.items():
            where = self.locate(ptep)
            if where is not None:
                out.append(Entry(ptep, pte, *where))
        return out


def scan_tree(pgt: KvmPgtable) -> TreeModel:
    """Return the reachable table pages and non-zero entries of pgt, read from memory."""
    return TreeModel(pgt)


def check_leaf(entry: Entry, g: Granule, expected_pa: ExpectedPa) -> list[Violation]:
    """Check a valid leaf maps its IPA where expected_pa says (None: no expectation)."""
    if not kvm_pte_valid(entry.pte) or kvm_pte_table(entry.pte, entry.level):
        return []
    want = expected_pa(entry.ipa)
    got = kvm_pte_to_phys(entry.pte, g)
    if want is None or got == want:
        return []
    detail = f"IPA {entry.ipa:#x} (level {entry.level}) maps PA {got:#x}, expected {want:#x}"
    return [Violation("wrong-mapping", detail)]


def check_mappings(tree: TreeModel, expected_pa: ExpectedPa) -> list[Violation]:
    """Check every valid leaf of the tree against expected_pa."""
    out = []
    for entry in tree.entries():
        out += check_leaf(entry, tree.g, expected_pa)
    return out


def check_refcounts(tree: TreeModel) -> list[Violation]:
    """Check each reachable table page's refcount against its counted entries."""
    refcount = tree.pgt.ops.pool.refcount
    out = []
    for page in tree.tables:
        rc = refcount.get(page)
        if rc is None:
            out.append(Violation("freed-table", f"table page {page:#x} is reachable but freed"))
            continue
        counted, locked = tree.counted[page], tree.locked[page]
        lo, hi = 1 + counted, 1 + counted + locked
        if not lo <= rc <= hi:
            want = str(lo) if lo == hi else f"{lo}..{hi}"
            detail = (
                f"table page {page:#x} has refcount {rc}, expected {want}"
                f" (1 + {counted} counted + {locked} locked entries)"
            )
            out.append(Violation("refcount", detail))
    return out


def _covers(event: Event, vmid: int, ipa: int, size: int, level: int) -> bool:
    """Return whether a TLBI event invalidates what an entry at (ipa, size, level) held."""
    if isinstance(event, TlbiVmid):
        return event.vmid == vmid
    if isinstance(event, TlbiVmidIpa):
        in_range = ipa <= event.ipa < ipa + size
        return event.vmid == vmid and in_range and event.level in (TLBI_TTL_UNKNOWN, level)
    if isinstance(event, TlbiVmidRange):
        end = event.ipa + event.pages * event.page_size
        return event.vmid == vmid and event.ipa < ipa + size and ipa < end
    return False


HANDLE_FAULT_FLAG = 1 << 7
IGNORE_EAGAIN_FLAG = 1 << 4
"""KVM_PGTABLE_WALK_HANDLE_FAULT and KVM_PGTABLE_WALK_IGNORE_EAGAIN as s2mmu.pgtable.walk
numbers them (written again here: the checker states the contract on its own)."""


def walk_ends(flags: int, r: int, rule: EagainRule) -> bool:
    """Return whether a visitor's return r must end a walk with these flags under rule.

    Kernel: kvm_pgtable_walk_continue (before v6.3: any error ends the walk; v6.3 to
    v6.19-rc4: -EAGAIN only with KVM_PGTABLE_WALK_HANDLE_FAULT; v6.19 onward: -EAGAIN
    unless KVM_PGTABLE_WALK_IGNORE_EAGAIN).
    """
    if r == 0:
        return False
    if r != -EAGAIN or rule is EagainRule.ANY_ERROR_STOPS:
        return True
    if rule is EagainRule.HANDLE_FAULT:
        return bool(flags & HANDLE_FAULT_FLAG)
    return not flags & IGNORE_EAGAIN_FLAG


def check_walk_return(ev: WalkReturn, rule: EagainRule) -> list[Violation]:
    """Check one walk's visits and return value against the walker's contract."""
    for visit, r in ev.errors:
        if walk_ends(ev.flags, r, rule):
            if ev.visits == visit and ev.ret == r:
                return []
            detail = (f"visitor returned {r} at visit {visit} (flags {ev.flags:#x}, "
                      f"{rule.name}): the walk must end there and return it, but it made "
                      f"{ev.visits} visits and returned {ev.ret}")
            return [Violation("walk-contract", detail)]
    if ev.ret == 0 or (not ev.visits and ev.ret < 0):
        return []
    ignored = ", ".join(str(r) for _, r in ev.errors) or "none"
    detail = (f"walk with flags {ev.flags:#x} ({rule.name}) returned {ev.ret}, but its "
              f"visitors' errors ({ignored}) do not end it")
    return [Violation("walk-contract", detail)]


def leaf_change_allowed(old: int, new: int, level: int) -> bool:
    """Return whether a live entry may go from old to new without break-before-make."""
    if kvm_pte_table(old, level) or kvm_pte_table(new, level):
        return old == new
    return not (old ^ new) & ~S2_IN_PLACE_BITS


class Checker:
    """Incremental checker: after each step, feed it what happened and get violations.

    Building one turns on descriptor-write and walk-return recording in the table's
    event log (what it follows).
    """

    def __init__(
        self,
        pgt: KvmPgtable,
        expected_pa: ExpectedPa,
        check_refcount: Callable[[], bool] = lambda: True,
    ) -> None:
        self.pgt = pgt
        self.expected_pa = expected_pa
        self.check_refcount = check_refcount
        self.tree = TreeModel(pgt)
        self.pending_breaks: dict[int, tuple[int, int, int]] = {}
        self.awaiting_tlbi: dict[int, tuple[int, int, int]] = {}
        self.table_changes: dict[int, tuple[int, int, int]] = {}
        pgt.ops.events.trace_ptes = pgt.ops.events.trace_walks = True
        self.seen = len(pgt.ops.events)

    @property
    def vmid(self) -> int:
        """Return the VMID whose TLBIs count."""
        return self.pgt.s2_mmu.vmid

    def after_step(self, step: int) -> list[Violation]:
        """Check everything that happened since the last call; return the violations."""
        events = self.pgt.ops.events.since(self.seen)
        self.seen = len(self.pgt.ops.events)
        out = []
        for ev in events:
            out += self._event(ev)
        if self.check_refcount():
            out += check_refcounts(self.tree)
        return [Violation(v.rule, v.detail, step) for v in out]

    def _event(self, ev: Event) -> list[Violation]:
        if isinstance(ev, PteWrite):
            return self._pte_write(ev)
        if isinstance(ev, (TlbiVmid, TlbiVmidIpa, TlbiVmidRange)):
            out = self._table_tlbi(ev)
            for table in (self.pending_breaks, self.awaiting_tlbi, self.table_changes):
                for key, (ipa, size, level) in list(table.items()):
                    if _covers(ev, self.vmid, ipa, size, level):
                        del table[key]
            return out
        if isinstance(ev, WalkReturn):
            return check_walk_return(ev, self.pgt.ops.profile.eagain_rule)
        if isinstance(ev, PageAlloc) and ev.pa in self.awaiting_tlbi:
            ipa, size, _ = self.awaiting_tlbi.pop(ev.pa)
            detail = f"page {ev.pa:#x} (translated IPA {ipa:#x}+{size:#x}) reused before a TLBI"
            return [Violation("reuse-before-tlbi", detail)]
        if isinstance(ev, UseAfterFree):
            return [Violation("freed-table", f"{ev.access} of freed page at {ev.pa:#x}")]
        if isinstance(ev, Warn):
            return [Violation("warn", f"WARN_ON in {ev.function}: {ev.condition}")]
        return []

    def _table_tlbi(self, ev: TlbiVmid | TlbiVmidIpa | TlbiVmidRange) -> list[Violation]:
        """Flag a level-hinted TLBI aimed at a table entry changed since its last TLBI."""
        if not isinstance(ev, TlbiVmidIpa) or ev.level == TLBI_TTL_UNKNOWN \
                or ev.vmid != self.vmid:
            return []
        out = []
        for ptep, (ipa, size, level) in list(self.table_changes.items()):
            if ipa <= ev.ipa < ipa + size:
                del self.table_changes[ptep]
                detail = (f"TLBI for the level-{level} table entry at IPA {ipa:#x}+{size:#x} "
                          f"carries level hint {ev.level}")
                out.append(Violation("table-tlbi-level", detail))
        return out

    def _pte_write(self, ev: PteWrite) -> list[Violation]:
        g = self.tree.g
        where = self.tree.locate(ev.pa)
        if where is None:
            return []
        ipa, level, size = where
        old_live, new_live = kvm_pte_valid(ev.old), kvm_pte_valid(ev.new)
        out = []
        if old_live and kvm_pte_table(ev.old, level) and ev.new != ev.old:
            for page in self.tree.subtree(kvm_pte_to_phys(ev.old, g)):
                self.awaiting_tlbi[page] = (ipa, size, level)
            self.table_changes[ev.pa] = (ipa, size, level)
        if old_live and new_live and not leaf_change_allowed(ev.old, ev.new, level):
            detail = f"entry for IPA {ipa:#x} went {ev.old:#x} -> {ev.new:#x} without a break"
            out.append(Violation("valid-to-valid", detail))
        elif old_live and not new_live:
            self.pending_breaks[ev.pa] = (ipa, size, level)
        elif new_live and ev.pa in self.pending_breaks:
            del self.pending_breaks[ev.pa]
            detail = f"entry for IPA {ipa:#x} made live again before the break's TLBI"
            out.append(Violation("break-without-tlbi", detail))
        for entry in self.tree.write(ev.pa, ev.new):
            out += check_leaf(entry, g, self.expected_pa)
        return out


def linear_expectation(ipa_base: int, pa_base: int, size: int) -> ExpectedPa:
    """Return expected_pa for one linear region: pa_base + offset inside, None outside."""
    pa_mask = mask(51, 0)

    def expected(ipa: int) -> int | None:
        if ipa_base <= ipa < ipa_base + size:
            return (pa_base + ipa - ipa_base) & pa_mask
        return None

    return expected
