"""A PE's TLB and walk cache for the EL1&0 regime, and what each TLB maintenance
operation must invalidate.

A TLB entry caches a translation the PE used, tagged as the architecture tags it: the
VMID, the ASID (or none for a global stage-1 leaf, nG = 0, and for stage-2-only entries),
and which stages made it: stage 1 only (VA -> PA with stage 2 off), stage 1 and stage 2
combined (VA -> PA), or stage 2 only (IPA -> PA: an access with stage 1 off). It covers
the smaller of the two leaves' blocks and remembers the level of each leaf (the level a
TLBI's TTL hint names). A walk-cache entry caches a table descriptor (stage 1 or stage 2)
by the input range it covers and its level.

Invalidation, by operation (the EL2 TLBI instructions a hypervisor issues for its guests):

- ``VMALLS12E1``: every entry of the VMID, both stages, walk caches included;
- ``VMALLE1``: the VMID's stage-1 information: stage-1-only and combined entries and
  stage-1 walk-cache entries, whatever the ASID; not stage-2-only entries;
- ``IPAS2E1``: the VMID's stage-2-only entries and stage-2 walk-cache entries covering
  the IPA; combined entries need not be invalidated (so a hypervisor follows it with
  VMALLE1). With
  a TTL hint, only entries from that level are guaranteed to go; the model takes the
  strict reading (entries of other levels stay), which is what makes a wrong hint
  observable;
- ``RIPAS2E1``: the same over an IPA range, any level.

An operation is broadcast to the Inner Shareable domain (the IS forms) or local to the
PE that executes it. Entries may be evicted at any time; the model keeps the last
``capacity`` fills.

Only successful translations are cached: a fault is never held in a TLB.

ASL: AArch64.FullTranslate's TLB lookups are IMPLEMENTATION DEFINED; the operations
follow the TLBI VMALLS12E1(IS), VMALLE1(IS), IPAS2E1(IS) and RIPAS2E1(IS) descriptions of
the Arm ARM (system instructions, TLB maintenance).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from s2mmu.arch.descriptors import Table, ng
from s2mmu.arch.perms import S2Perms
from s2mmu.arch.translate import AddressDescriptor
from s2mmu.arch.walk import TTWState


class TlbStage(enum.Enum):
    """Which translation stages made a TLB entry."""

    STAGE1 = "stage 1 only"
    COMBINED = "stage 1+2"
    STAGE2 = "stage 2 only"


@dataclass(frozen=True)
class TlbEntry:
    """A cached translation: input [ia, ia + size) -> output oa, through IPA ipa.

    asid None: a global stage-1 leaf, or a stage-2-only entry. s1_level is None for a
    stage-2-only entry. s2_level, s2_leaf and s2_perms: the stage-2 leaf's level, the
    descriptor as it was read and the permissions it gave (None for a stage-1-only entry,
    whose ipa is its output).
    """

    stage: TlbStage
    vmid: int
    asid: int | None
    ia: int
    size: int
    oa: int
    ipa: int
    s1_level: int | None
    s2_level: int | None
    s2_leaf: int | None
    s2_perms: S2Perms | None


@dataclass(frozen=True)
class WalkCacheEntry:
    """A cached table descriptor of stage 1 or 2: [ia, ia + size) -> next_table, at level."""

    stage: int
    vmid: int
    asid: int | None
    ia: int
    size: int
    level: int
    next_table: int


Cached = TlbEntry | WalkCacheEntry


class TlbiOp(enum.Enum):
    """The TLB maintenance operations, by instruction name."""

    VMALLS12E1 = "VMALLS12E1"
    VMALLE1 = "VMALLE1"
    IPAS2E1 = "IPAS2E1"
    RIPAS2E1 = "RIPAS2E1"


@dataclass(frozen=True)
class Tlbi:
    """One TLB maintenance operation: its VMID, IPA range (IPAS2E1: one address, size 0),
    level hint (None: any level), and whether it is broadcast (the IS form)."""

    op: TlbiOp
    vmid: int
    ipa: int = 0
    size: int = 0
    ttl: int | None = None
    broadcast: bool = True


def _overlaps(e: Cached, start: int, size: int) -> bool:
    if size == 0:
        return e.ia <= start < e.ia + e.size
    return e.ia < start + size and start < e.ia + e.size


def _level(e: Cached) -> int | None:
    return e.s2_level if isinstance(e, TlbEntry) else e.level


def is_stage2(e: Cached) -> bool:
    """Return whether an entry holds only stage-2 information (IPA -> PA or an IPA table)."""
    return e.stage is TlbStage.STAGE2 if isinstance(e, TlbEntry) else e.stage == 2


def tlbi_invalidates(t: Tlbi, e: Cached) -> bool:
    """Return whether operation t must invalidate entry e (see the module docstring)."""
    if e.vmid != t.vmid:
        return False
    match t.op:
        case TlbiOp.VMALLS12E1:
            return True
        case TlbiOp.VMALLE1:
            return not is_stage2(e)
        case TlbiOp.IPAS2E1 | TlbiOp.RIPAS2E1:
            if not is_stage2(e) or not _overlaps(e, t.ipa, t.size):
                return False
            return t.ttl is None or _level(e) == t.ttl
    raise AssertionError(t.op)


class Tlb:
    """One PE's TLB and walk cache: filled by its translations, emptied by TLBIs."""

    def __init__(self, capacity: int = 256) -> None:
        self.entries: deque[Cached] = deque(maxlen=capacity)

    def fill(self, cached: list[Cached]) -> None:
        """Cache the entries a translation used (an entry already held is refreshed)."""
        for c in cached:
            if c in self.entries:
                self.entries.remove(c)
            self.entries.append(c)

    def invalidate(self, t: Tlbi) -> int:
        """Apply a TLBI; return how many entries it removed."""
        keep = [e for e in self.entries if not tlbi_invalidates(t, e)]
        gone = len(self.entries) - len(keep)
        self.entries = deque(keep, maxlen=self.entries.maxlen)
        return gone

    def lookup(self, vmid: int, asid: int | None, va: int) -> TlbEntry | None:
        """Return the combined entry for va (a global one matches any ASID), if held."""
        for e in reversed(self.entries):
            if isinstance(e, TlbEntry) and e.stage is TlbStage.COMBINED and e.vmid == vmid \
                    and e.asid in (None, asid) and e.ia <= va < e.ia + e.size:
                return e
        return None

    def lookup_ipa(self, vmid: int, ipa: int) -> TlbEntry | None:
        """Return the stage-2-only entry for ipa, if held."""
        for e in reversed(self.entries):
            if isinstance(e, TlbEntry) and e.stage is TlbStage.STAGE2 and e.vmid == vmid \
                    and e.ia <= ipa < e.ia + e.size:
                return e
        return None


def level_shift(granule_shift: int, level: int) -> int:
    """Return log2 of the bytes a descriptor at level covers (4K: 39, 30, 21, 12)."""
    return granule_shift + (granule_shift - 3) * (3 - level)


def walk_cache_entries(state: TTWState, ia: int, vmid: int, asid: int | None,
                       granule_shift: int) -> list[WalkCacheEntry]:
    """Return the walk-cache entries a walk's table descriptors give."""
    out = []
    for step in state.steps:
        if isinstance(step.decoded, Table):
            size = 1 << level_shift(granule_shift, step.level)
            out.append(WalkCacheEntry(state.stage, vmid, asid if state.stage == 1 else None,
                                      ia & ~(size - 1), size, step.level,
                                      step.decoded.next_base))
    return out


def cached_by(out: AddressDescriptor, ia: int, vmid: int, asid: int,
              s2_perms: S2Perms | None, s1_granule_shift: int = 12,
              s2_granule_shift: int = 12) -> list[Cached]:
    """Return what a successful translation of ia may leave in the TLB: the leaf entry
    (combined; stage-2 only when stage 1 was off; stage-1 only when stage 2 was) and the
    walk-cache entries of the stages' table descriptors (stage 1's tagged with the ASID).

    The entry covers the smaller of the two leaves' blocks (the contiguous hint is not
    used: an implementation need not). A stage-1 leaf with nG = 0 gives a global entry.
    s2_perms: what the stage-2 leaf grants (None when stage 2 was off).
    """
    s2 = out.s2
    if s2 is None:
        s1 = out.s1
        assert s1 is not None, "a translation with a stage on"
        size = 1 << level_shift(s1_granule_shift, s1.level)
        tag = asid if ng(s1.leaf.raw) else None
        leaf = TlbEntry(TlbStage.STAGE1, vmid, tag, ia & ~(size - 1), size,
                        out.paddress & ~(size - 1), out.paddress & ~(size - 1), s1.level,
                        None, None, None)
        return [leaf, *walk_cache_entries(s1, ia, vmid, asid, s1_granule_shift)]
    assert s2_perms is not None, "the stage-2 leaf's permissions"
    s2_size = 1 << level_shift(s2_granule_shift, s2.level)
    if out.s1 is None:
        base = ia & ~(s2_size - 1)
        leaf = TlbEntry(TlbStage.STAGE2, vmid, None, base, s2_size,
                        out.paddress & ~(s2_size - 1), base, None, s2.level, s2.leaf.raw,
                        s2_perms)
        return [leaf, *walk_cache_entries(s2, ia, vmid, None, s2_granule_shift)]
    s1 = out.s1
    size = min(1 << level_shift(s1_granule_shift, s1.level), s2_size)
    ipa = s1_output(out, ia, s1_granule_shift)
    tag = asid if ng(s1.leaf.raw) else None
    leaf = TlbEntry(TlbStage.COMBINED, vmid, tag, ia & ~(size - 1), size,
                    out.paddress & ~(size - 1), ipa & ~(size - 1), s1.level, s2.level,
                    s2.leaf.raw, s2_perms)
    return [leaf, *walk_cache_entries(s1, ia, vmid, asid, s1_granule_shift),
            *walk_cache_entries(s2, ipa, vmid, None, s2_granule_shift)]


def s1_output(out: AddressDescriptor, va: int, granule_shift: int = 12) -> int:
    """Return the IPA stage 1 gave va (the stage-1 leaf's output plus the offset)."""
    s1 = out.s1
    assert s1 is not None
    span = 1 << level_shift(granule_shift, s1.level)
    return (s1.leaf.oa & ~(span - 1)) | (va & (span - 1))
