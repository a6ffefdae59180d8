"""What the page-table code does besides writing descriptors: recorded events.

TLB invalidations, barriers, cache maintenance, page allocation and freeing, and any
WARN_ON the kernel would have printed are appended to an :class:`EventLog` injected
through the mm_ops, so tests and users can see them in order. Descriptor writes are
recorded too when a tracer asks for them (the concurrency checker does). Events are
immutable named tuples (cheap to create on the hot path).

Each TLBI event stands for one hypervisor TLB helper call, not its instructions: for
example ``__kvm_tlb_flush_vmid_ipa`` is DSB ISH; TLBI IPAS2E1IS (with the level hint);
DSB ISH; TLBI VMALLE1IS; DSB ISH; ISB, run in the VMID's context.

Kernel: __kvm_tlb_flush_vmid_ipa, __kvm_tlb_flush_vmid_ipa_nsh, __kvm_tlb_flush_vmid,
enter_vmid_context (arch/arm64/kvm/hyp/nvhe/tlb.c); kvm_tlb_flush_vmid_range,
hyp_unmap_walker (arch/arm64/kvm/hyp/pgtable.c).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import NamedTuple, TypeVar

from s2mmu.arch.reprs import hex_repr
from s2mmu.pgtable.pte import PkvmComponentId

# The kernel's "level unknown" TTL hint (INT_MAX).
TLBI_TTL_UNKNOWN = 0x7FFFFFFF


@hex_repr(decimal=("vmid", "level"))
class TlbiVmidIpa(NamedTuple):
    """Invalidate stage-2 entries for one IPA (with a TTL level hint) and all stage-1.

    Kernel: __kvm_tlb_flush_vmid_ipa (nsh=False), __kvm_tlb_flush_vmid_ipa_nsh (nsh=True).
    """

    vmid: int
    ipa: int
    level: int
    nsh: bool = False


@hex_repr(decimal=("vmid", "pages"))
class TlbiVmidRange(NamedTuple):
    """Invalidate stage-2 entries for pages [ipa, ipa + pages * PAGE_SIZE) of a VMID.

    Kernel: __kvm_tlb_flush_vmid_range (called by kvm_tlb_flush_vmid_range).
    """

    vmid: int
    ipa: int
    pages: int
    page_size: int


@hex_repr(decimal=("vmid",))
class TlbiVmid(NamedTuple):
    """Invalidate every entry of a VMID (TLBI VMALLS12E1IS).

    Kernel: __kvm_tlb_flush_vmid.
    """

    vmid: int


@hex_repr(decimal=("level",))
class TlbiHyp(NamedTuple):
    """Invalidate a hypervisor stage-1 VA (TLBI VAE2IS, or VALE2IS for a leaf).

    Kernel: __tlbi_level(vae2is / vale2is, ...) in hyp_unmap_walker.
    """

    op: str
    va: int
    level: int


class Dsb(NamedTuple):
    """A DSB with its domain and type: "ish", "ishst", "nsh", "nshst"."""

    domain: str


class Isb(NamedTuple):
    """An ISB."""


@hex_repr()
class DcacheCleanInvalPoc(NamedTuple):
    """Clean and invalidate the data cache to the PoC for [pa, pa + size).

    Kernel: mm_ops->dcache_clean_inval_poc (clean_dcache_guest_page).
    """

    pa: int
    size: int


@hex_repr()
class IcacheInvalPou(NamedTuple):
    """Invalidate the instruction cache to the PoU for [pa, pa + size).

    Kernel: mm_ops->icache_inval_pou (invalidate_icache_guest_page).
    """

    pa: int
    size: int


@hex_repr()
class PteWrite(NamedTuple):
    """A descriptor changed from old to new at pa (only when descriptor tracing is on)."""

    pa: int
    old: int
    new: int


@hex_repr()
class PageAlloc(NamedTuple):
    """A page-table page was handed out (from the memcache or the pool)."""

    pa: int


@hex_repr()
class PageFree(NamedTuple):
    """A page-table page's last reference was dropped and it went back to the pool."""

    pa: int


@hex_repr()
class UseAfterFree(NamedTuple):
    """Software touched a page-table page after it was freed (a model-detected bug)."""

    pa: int
    access: str


@hex_repr(decimal=("ret", "visits"))
class WalkReturn(NamedTuple):
    """A kvm_pgtable_walk() call returned (only when walk tracing is on).

    flags: the walker's flags; errors: each non-zero visitor return as (visit number,
    value), in order; visits: how many visitor calls the walk made; ret: what the walk
    returned. Enough to check the walker's contract (s2mmu.pgtable.invariants).
    """

    flags: int
    errors: tuple[tuple[int, int], ...]
    visits: int
    ret: int


class Warn(NamedTuple):
    """A WARN_ON() the kernel would have printed: the function and the condition."""

    function: str
    condition: str


@hex_repr(decimal=("handle",))
class ComponentLock(NamedTuple):
    """A pKVM component lock taken (acquire) or released at EL2.

    PKVM_ID_HOST is host_mmu.lock, PKVM_ID_HYP pkvm_pgd_lock, PKVM_ID_GUEST the lock of
    the VM with this handle (0 for the others). PKVM_ID_FFA has no lock.

    Kernel: host_lock_component, hyp_lock_component, guest_lock_component and their
    unlock twins (arch/arm64/kvm/hyp/nvhe/mem_protect.c).
    """

    component: PkvmComponentId
    acquire: bool
    handle: int = 0


Event = (
    TlbiVmidIpa
    | TlbiVmidRange
    | TlbiVmid
    | TlbiHyp
    | Dsb
    | Isb
    | DcacheCleanInvalPoc
    | IcacheInvalPou
    | PteWrite
    | PageAlloc
    | PageFree
    | UseAfterFree
    | WalkReturn
    | Warn
    | ComponentLock
)

E = TypeVar("E")


class EventLog:
    """An append-only, ordered record of events.

    With keep=False only per-type counts are kept (benchmarks use this so the log does
    not dominate host memory). trace_ptes turns on PteWrite recording, trace_walks
    WalkReturn recording (the invariant checkers turn both on).
    """

    def __init__(self, keep: bool = True, trace_ptes: bool = False,
                 trace_walks: bool = False) -> None:
        self.keep = keep
        self.trace_ptes = trace_ptes
        self.trace_walks = trace_walks
        self.items: list[Event] = []
        self.counts: Counter[str] = Counter()

    def record(self, event: Event) -> None:
        """Append one event."""
        self.counts[type(event).__name__] += 1
        if self.keep:
            self.items.append(event)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Event]:
        return iter(self.items)

    def since(self, index: int) -> list[Event]:
        """Return the events recorded after the first index ones."""
        return self.items[index:]

    def of_type(self, kind: type[E]) -> list[E]:
        """Return the recorded events of one type, in order."""
        return [e for e in self.items if isinstance(e, kind)]

    def clear(self) -> None:
        """Forget every recorded event and count."""
        self.items.clear()
        self.counts.clear()
