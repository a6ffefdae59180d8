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
- reuse-before-tlbi: a table page unlinked from the tree is not handed out again before
  a TLB invalidation covering what it translated;
- warn: no WARN_ON fired.

The reader here looks at memory directly (it is the checker, not a walker).

Kernel: the rules follow from stage2_try_break_pte, stage2_make_pte, stage2_pte_is_counted
and the kernel comments on break-before-make (arch/arm64/kvm/hyp/pgtable.c).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from s2mmu.arch.bits import mask
from s2mmu.pgtable.events import (
    TLBI_TTL_UNKNOWN,
    Event,
    PageAlloc,
    PteWrite,
    TlbiVmid,
    TlbiVmidIpa,
    TlbiVmidRange,
    UseAfterFree,
    Warn,
)
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
from s2mmu.pgtable.table import KvmPgtable
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


@dataclass(frozen=True)
class Entry:
    """A non-zero entry found in the tree: where it is and what it translates."""

    ptep: int
    pte: int
    ipa: int
    level: int
    size: int


@dataclass
class TreeScan:
    """The reachable table pages and non-zero entries of a table, read from memory."""

    g: Granule
    tables: dict[int, tuple[int, int]] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)

    def locate(self, ptep: int) -> tuple[int, int, int] | None:
        """Return (ipa, level, size) of the entry at ptep, if its table is reachable."""
        page = ptep & ~(self.g.page_size - 1)
        where = self.tables.get(page)
        if where is None:
            return None
        base, level = where
        shift = kvm_granule_shift(level, self.g)
        return base + ((ptep - page) // 8 << shift), level, 1 << shift


def _nonzero(mem_bytes: bytes) -> Iterable[tuple[int, int]]:
    words = array("Q", mem_bytes)
    return ((i, w) for i, w in enumerate(words) if w)


def scan_tree(pgt: KvmPgtable) -> TreeScan:
    """Return every reachable table page and non-zero entry of pgt."""
    ops = pgt.ops
    g = ops.g
    out = TreeScan(g)
    if pgt.pgd is None:
        return out
    top = kvm_granule_shift(pgt.start_level - 1, g)
    for i in range(kvm_pgd_pages(pgt.ia_bits, pgt.start_level, g)):
        _scan_table(pgt, pgt.pgd + i * g.page_size, i << top, pgt.start_level, out)
    return out


def _scan_table(pgt: KvmPgtable, page: int, base: int, level: int, out: TreeScan) -> None:
    ops = pgt.ops
    g = ops.g
    out.tables[page] = (base, level)
    shift = kvm_granule_shift(level, g)
    for idx, pte in _nonzero(ops.mem.read_bytes(page, g.page_size)):
        ipa = base + (idx << shift)
        out.entries.append(Entry(page + idx * 8, pte, ipa, level, 1 << shift))
        if kvm_pte_table(pte, level):
            _scan_table(pgt, kvm_pte_to_phys(pte, g), ipa, level + 1, out)


def check_mappings(pgt: KvmPgtable, scan: TreeScan, expected_pa: ExpectedPa) -> list[Violation]:
    """Check every valid leaf maps its IPA where expected_pa says (None: no expectation)."""
    out = []
    g = pgt.ops.g
    for e in scan.entries:
        if not kvm_pte_valid(e.pte) or kvm_pte_table(e.pte, e.level):
            continue
        want = expected_pa(e.ipa)
        got = kvm_pte_to_phys(e.pte, g)
        if want is not None and got != want:
            out.append(
                Violation(
                    "wrong-mapping",
                    f"IPA {e.ipa:#x} (level {e.level}) maps PA {got:#x}, expected {want:#x}",
                )
            )
    return out


def check_refcounts(pgt: KvmPgtable, scan: TreeScan) -> list[Violation]:
    """Check each reachable table page's refcount against its counted entries."""
    ops = pgt.ops
    page_size = ops.g.page_size
    counted: dict[int, int] = dict.fromkeys(scan.tables, 0)
    locked: dict[int, int] = dict.fromkeys(scan.tables, 0)
    for e in scan.entries:
        page = e.ptep & ~(page_size - 1)
        if stage2_pte_is_locked(e.pte):
            locked[page] += 1
        else:
            counted[page] += 1
    out = []
    for page in scan.tables:
        rc = ops.pool.refcount.get(page)
        if rc is None:
            out.append(Violation("freed-table", f"table page {page:#x} is reachable but freed"))
            continue
        lo, hi = 1 + counted[page], 1 + counted[page] + locked[page]
        if not lo <= rc <= hi:
            out.append(
                Violation(
                    "refcount",
                    f"table page {page:#x} has refcount {rc}, expected "
                    f"{lo if lo == hi else f'{lo}..{hi}'} (1 + {counted[page]} counted"
                    f" + {locked[page]} locked entries)",
                )
            )
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


def leaf_change_allowed(old: int, new: int, level: int) -> bool:
    """Return whether a live entry may go from old to new without break-before-make."""
    if kvm_pte_table(old, level) or kvm_pte_table(new, level):
        return old == new
    return not (old ^ new) & ~S2_IN_PLACE_BITS


@dataclass
class Checker:
    """Incremental checker: feed it events and tree scans step by step."""

    pgt: KvmPgtable
    expected_pa: ExpectedPa
    check_refcount: Callable[[], bool] = lambda: True
    pending_breaks: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    awaiting_tlbi: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    seen: int = 0

    @property
    def vmid(self) -> int:
        """Return the VMID whose TLBIs count."""
        return self.pgt.s2_mmu.vmid

    def after_step(self, step: int) -> list[Violation]:
        """Check everything that happened since the last call; return the violations."""
        scan = scan_tree(self.pgt)
        events = self.pgt.ops.events.since(self.seen)
        self.seen = len(self.pgt.ops.events)
        out = []
        for ev in events:
            out += self._event(ev, scan)
        out += check_mappings(self.pgt, scan, self.expected_pa)
        if self.check_refcount():
            out += check_refcounts(self.pgt, scan)
        return [Violation(v.rule, v.detail, step) for v in out]

    def _event(self, ev: Event, scan: TreeScan) -> list[Violation]:
        if isinstance(ev, PteWrite):
            return self._pte_write(ev, scan)
        if isinstance(ev, (TlbiVmid, TlbiVmidIpa, TlbiVmidRange)):
            for table in (self.pending_breaks, self.awaiting_tlbi):
                for key, (ipa, size, level) in list(table.items()):
                    if _covers(ev, self.vmid, ipa, size, level):
                        del table[key]
            return []
        if isinstance(ev, PageAlloc) and ev.pa in self.awaiting_tlbi:
            ipa, size, _ = self.awaiting_tlbi.pop(ev.pa)
            detail = f"page {ev.pa:#x} (translated IPA {ipa:#x}+{size:#x}) reused before a TLBI"
            return [Violation("reuse-before-tlbi", detail)]
        if isinstance(ev, UseAfterFree):
            return [Violation("freed-table", f"{ev.access} of freed page at {ev.pa:#x}")]
        if isinstance(ev, Warn):
            return [Violation("warn", f"WARN_ON in {ev.function}: {ev.condition}")]
        return []

    def _pte_write(self, ev: PteWrite, scan: TreeScan) -> list[Violation]:
        g = self.pgt.ops.g
        where = scan.locate(ev.pa)
        if where is None:
            return []
        ipa, level, size = where
        old_live, new_live = kvm_pte_valid(ev.old), kvm_pte_valid(ev.new)
        out = []
        if old_live and kvm_pte_table(ev.old, level) and ev.new != ev.old:
            self.awaiting_tlbi[kvm_pte_to_phys(ev.old, g)] = (ipa, size, level)
        if old_live and new_live and not leaf_change_allowed(ev.old, ev.new, level):
            detail = f"entry for IPA {ipa:#x} went {ev.old:#x} -> {ev.new:#x} without a break"
            out.append(Violation("valid-to-valid", detail))
        elif old_live and not new_live:
            self.pending_breaks[ev.pa] = (ipa, size, level)
        elif new_live and ev.pa in self.pending_breaks:
            del self.pending_breaks[ev.pa]
            detail = f"entry for IPA {ipa:#x} made live again before the break's TLBI"
            out.append(Violation("break-without-tlbi", detail))
        return out


def linear_expectation(ipa_base: int, pa_base: int, size: int) -> ExpectedPa:
    """Return expected_pa for one linear region: pa_base + offset inside, None outside."""
    pa_mask = mask(51, 0)

    def expected(ipa: int) -> int | None:
        if ipa_base <= ipa < ipa_base + size:
            return (pa_base + ipa - ipa_base) & pa_mask
        return None

    return expected
