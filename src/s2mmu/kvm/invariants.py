"""Invariants that hold after every step of a VM's life, checked from the outside.

Each check reads the stage-2 tables (through the page-table library's walker), the
memslots, the host and the dirty bitmaps, and returns the broken rules as typed values
(one frozen dataclass per rule, with what was seen; worded by s2mmu.scenario.render_text).

- page references balanced: after a fault, every host page holds only its mapping's
  reference (get_user_pages pins are always released, errors included);
- nothing mapped at stage 2 outside a memslot;
- no writable block in a logging slot (a block would hide writes from the log; with
  KVM_DIRTY_LOG_INITIALLY_SET, blocks stay until CLEAR_DIRTY_LOG, but are then already
  dirty in the bitmap), and a writable page of a logging slot is marked dirty;
- dirty bits only for handled writes: a set bit is a page a write fault marked since the
  bitmap was allocated (or the bitmap started all-set); the history is the caller's;
- no cacheable mapping of VM_PFNMAP memory without FWB and DIC;
- the stage-2 output equals the memslot's HVA -> host page mapping;
- no WARN fired (the kernel would have printed it) unless the step expected it;
- a page a fault marked dirty is mapped writable when the fault returns;
- the page-table library's own rules, followed through the VM's event log by
  :class:`StepChecker` (break-before-make and its TLBI, no level hint on a table
  entry's TLBI, no table page reused before its TLBI, the walker's return contract,
  table refcounts; s2mmu.pgtable.invariants).

Kernel: the guarantees of user_mem_abort, kvm_release_faultin_page, kvm_unmap_gfn_range,
kvm_arch_commit_memory_region and kvm_arch_prepare_memory_region (arch/arm64/kvm/mmu.c).
"""

from __future__ import annotations

from dataclasses import dataclass

from s2mmu.kvm.dirty import SlotPage, dirty_gfns
from s2mmu.kvm.host import PAGE_SHIFT, PAGE_SIZE, kvm_supports_cacheable_pfnmap, vma_is_pfnmap
from s2mmu.kvm.memslot import Memslot, gfn_to_hva_memslot, gfn_to_memslot, memslot_is_logging
from s2mmu.kvm.vm import Kvm, kvm_vm_is_protected
from s2mmu.pgtable.events import Warn
from s2mmu.pgtable.invariants import Checker
from s2mmu.pgtable.prot import KVM_PGTABLE_PROT_W, kvm_pgtable_stage2_pte_prot, stage2_pte_cacheable
from s2mmu.pgtable.pte import kvm_granule_size, kvm_pte_to_phys, kvm_pte_valid
from s2mmu.pgtable.steps import Gen
from s2mmu.pgtable.table import KvmPgtable
from s2mmu.pgtable.walk import (
    KVM_PGTABLE_WALK_LEAF,
    KvmPgtableVisitCtx,
    KvmPgtableWalker,
    kvm_pgtable_get_leaf,
    kvm_pgtable_walk,
)


@dataclass(frozen=True)
class S2Leaf:
    """A valid stage-2 leaf: IPA, size, output PA, descriptor."""

    ipa: int
    size: int
    pa: int
    pte: int


@dataclass(frozen=True)
class PinLeaked:
    """A host page holds a reference beyond its mapping's: a pin was not released."""

    pa: int
    refcount: int


@dataclass(frozen=True)
class MappedOutsideMemslot:
    """A stage-2 leaf maps IPAs outside a memslot (or across two)."""

    ipa: int
    size: int


@dataclass(frozen=True)
class WritableBlockWhileLogging:
    """A writable block in a logging slot whose pages are not all dirty."""

    ipa: int
    size: int
    slot: int


@dataclass(frozen=True)
class CleanWritablePage:
    """A writable page in a logging slot whose dirty bit is clear."""

    ipa: int
    size: int
    slot: int


@dataclass(frozen=True)
class CacheablePfnmap:
    """A cacheable stage-2 mapping of VM_PFNMAP memory without FWB and DIC."""

    ipa: int
    size: int


@dataclass(frozen=True)
class Stage2Mismatch:
    """Stage 2 gives pa at offset of the leaf; the host maps host_pa (None: nothing)."""

    ipa: int
    size: int
    offset: int
    pa: int
    host_pa: int | None


@dataclass(frozen=True)
class UnexplainedDirtyBit:
    """A dirty bit no handled write explains: the slot, its page, the page's IPA."""

    slot: int
    page: int
    ipa: int


@dataclass(frozen=True)
class WarnFired:
    """A WARN_ON the kernel would have printed: its function and condition."""

    function: str
    condition: str


@dataclass(frozen=True)
class DirtyNotWritable:
    """A fault marked a page dirty but returned with the page not mapped writable (Will
    Deacon's "mark the page dirty twice" concern in seed 000: a relax_perms that reports
    success on an entry a racing unmap cleared). leaf: the descriptor found (0: none)."""

    ipa: int
    slot: int
    page: int
    leaf: int


@dataclass(frozen=True)
class PgtableRuleBroken:
    """A rule of the page-table library's checker (s2mmu.pgtable.invariants) broke:
    its rule name and what was seen."""

    rule: str
    detail: str


KvmViolation = (PinLeaked | MappedOutsideMemslot | WritableBlockWhileLogging
                | CleanWritablePage | CacheablePfnmap | Stage2Mismatch | UnexplainedDirtyBit
                | WarnFired | DirtyNotWritable | PgtableRuleBroken)
"""A broken kvm invariant: a closed union."""


def _collect(ctx: KvmPgtableVisitCtx, visit: int) -> Gen[int]:
    if kvm_pte_valid(ctx.old):
        g = ctx.mm_ops.g
        size = kvm_granule_size(ctx.level, g)
        ctx.arg.append(S2Leaf(ctx.addr, size, kvm_pte_to_phys(ctx.old, g), ctx.old))
    return 0
    yield  # pragma: no cover


def pgtable_leaves(pgt: KvmPgtable) -> list[S2Leaf]:
    """Return every valid leaf of a stage-2 table (KVM's or a shadow), in IPA order."""
    out: list[S2Leaf] = []
    walker = KvmPgtableWalker(_collect, out, KVM_PGTABLE_WALK_LEAF)
    events = pgt.ops.events
    traced, events.trace_walks = events.trace_walks, False  # the checker's own walk
    try:
        kvm_pgtable_walk(pgt, 0, 1 << pgt.ia_bits, walker)
    finally:
        events.trace_walks = traced
    return out


def stage2_leaves(kvm: Kvm) -> list[S2Leaf]:
    """Return every valid leaf of the VM's stage 2, in IPA order."""
    return pgtable_leaves(kvm.pgt)


def leaf_writable(leaf: S2Leaf) -> bool:
    """Return whether stage 2 lets the guest write through the leaf."""
    return bool(kvm_pgtable_stage2_pte_prot(leaf.pte) & KVM_PGTABLE_PROT_W)


def _dirty(kvm: Kvm, slot: Memslot, gfn: int) -> bool:
    bitmap = kvm.dirty_bitmap.get(slot.id)
    rel = gfn - slot.base_gfn
    return bitmap is not None and bool(bitmap[rel >> 3] >> (rel & 7) & 1)


def _all_dirty(kvm: Kvm, slot: Memslot, gfn: int, npages: int) -> bool:
    """Return whether every page of [gfn, gfn + npages) is dirty in the slot's bitmap."""
    bitmap = kvm.dirty_bitmap.get(slot.id)
    if bitmap is None:
        return False
    rel = gfn - slot.base_gfn
    lo, hi = rel >> 3, (rel + npages + 7) >> 3
    bits = int.from_bytes(bitmap[lo:hi], "little") >> (rel & 7)
    return bits & ((1 << npages) - 1) == (1 << npages) - 1


def check_refcounts(kvm: Kvm) -> list[KvmViolation]:
    """Return pages holding a reference beyond their host mapping's (none once unmapped)."""
    return [PinLeaked(f.pa, f.refcount) for f in kvm.host.folios.values()
            if f.refcount != (1 if f.mapped else 0)]


def check_leaf(kvm: Kvm, leaf: S2Leaf) -> list[KvmViolation]:
    """Return the rules one stage-2 leaf breaks."""
    gfn = leaf.ipa >> PAGE_SHIFT
    slots = kvm.slots()
    first = gfn_to_memslot(slots, gfn)
    last = gfn_to_memslot(slots, gfn + (leaf.size >> PAGE_SHIFT) - 1)
    if first is None or last is None or first.id != last.id:
        return [MappedOutsideMemslot(leaf.ipa, leaf.size)]
    bad: list[KvmViolation] = []
    hva = gfn_to_hva_memslot(first, gfn)
    vma = kvm.host.vma_lookup(hva)
    if memslot_is_logging(first) and leaf_writable(leaf):
        npages = leaf.size >> PAGE_SHIFT
        if leaf.size > PAGE_SIZE and not _all_dirty(kvm, first, gfn, npages):
            bad.append(WritableBlockWhileLogging(leaf.ipa, leaf.size, first.id))
        elif leaf.size == PAGE_SIZE and not _dirty(kvm, first, gfn):
            bad.append(CleanWritablePage(leaf.ipa, leaf.size, first.id))
    if vma is not None and vma_is_pfnmap(vma) and stage2_pte_cacheable(kvm.pgt, leaf.pte) \
            and not kvm_supports_cacheable_pfnmap(kvm.host.features):
        bad.append(CacheablePfnmap(leaf.ipa, leaf.size))
    # A protected guest's pages stay pinned and mapped until teardown, whatever the host
    # does to its VMAs (Kernel: __pkvm_pgtable_stage2_reclaim unpins them).
    off = None if kvm_vm_is_protected(kvm) else kvm.host.first_mismatch(hva, leaf.size, leaf.pa)
    if off is not None:
        want = kvm.host.hva_to_pa(hva + off)
        bad.append(Stage2Mismatch(leaf.ipa, leaf.size, off, leaf.pa + off, want))
    return bad


def check_dirty_bits(kvm: Kvm, written: dict[int, set[int]]) -> list[KvmViolation]:
    """Return the dirty bits no handled write explains.

    written: per slot id, the slot-relative pages a handled write fault dirtied since the
    slot's bitmap was allocated (every page, if it was allocated all-set).
    """
    bad: list[KvmViolation] = []
    for sid in sorted(kvm.dirty_bitmap):
        allowed = written.get(sid, set())
        base = kvm.memslots[sid].base_gfn
        bad += [UnexplainedDirtyBit(sid, rel, (base + rel) << PAGE_SHIFT)
                for rel in dirty_gfns(kvm, sid) if rel not in allowed]
    return bad


def check_invariants(kvm: Kvm) -> list[KvmViolation]:
    """Return every broken invariant (empty when all hold)."""
    bad = check_refcounts(kvm)
    for leaf in stage2_leaves(kvm):
        bad += check_leaf(kvm, leaf)
    return bad


def check_dirty_writable(kvm: Kvm, pgt: KvmPgtable,
                         dirtied: tuple[SlotPage, ...]) -> list[KvmViolation]:
    """Return the pages a fault marked dirty that pgt does not map writable now.

    Kernel: user_mem_abort marks the page dirty only when the fault was handled ("if
    (writable && !ret) mark_page_dirty_in_slot"), i.e. when the mapping it made or relaxed
    is in place.
    """
    bad: list[KvmViolation] = []
    for p in dirtied:
        slot = kvm.memslots.get(p.slot)
        if slot is None:
            continue
        ipa = (slot.base_gfn + p.page) << PAGE_SHIFT
        leaf = kvm_pgtable_get_leaf(pgt, ipa)
        ok = leaf.ret == 0 and kvm_pte_valid(leaf.pte) and bool(
            kvm_pgtable_stage2_pte_prot(leaf.pte) & KVM_PGTABLE_PROT_W)
        if not ok:
            bad.append(DirtyNotWritable(ipa, p.slot, p.page, leaf.pte))
    return bad


class StepChecker:
    """Follows the VM's event log step by step: the WARNs that fired, and the page-table
    library's rules over the VM's own stage 2 (descriptor writes, TLBIs, page reuse, walk
    returns), as the concurrency explorer checks them.

    Turning it on makes the event log record descriptor writes and walk returns.
    """

    def __init__(self, kvm: Kvm) -> None:
        self.events = kvm.env.events
        self.pgtable = Checker(kvm.pgt, lambda ipa: None)
        self.seen = len(self.events)

    def after_step(self, step: int) -> tuple[list[WarnFired], list[KvmViolation]]:
        """Return the WARNs since the last call and the library rules broken."""
        warns = [WarnFired(e.function, e.condition) for e in self.events.since(self.seen)
                 if isinstance(e, Warn)]
        self.seen = len(self.events)
        rules: list[KvmViolation] = [PgtableRuleBroken(v.rule, v.detail)
                                     for v in self.pgtable.after_step(step) if v.rule != "warn"]
        return warns, rules
