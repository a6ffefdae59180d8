"""What a stage-2 leaf's output address is to the VMM: the page behind the memslot's HVA,
the shared zero page, another page; and where in its folio it sits.

Host PAs differ between the model and the real machine, so a leaf's PA is compared by its
relation to the VMM's memory: real KVM's from the VMM's /proc/self/pagemap (PFN per HVA)
and /proc/kpageflags (KPF_ZERO_PAGE, KPF_THP, KPF_HUGE), read while the stage 2 is read;
the model's from its host address space (HostMm.mapped_pages, its large folios and zero
page) at the same step. Both sides give a :class:`HostPage` per populated HVA page, and
:func:`relation` turns a leaf into the same :class:`PaRelation` from either.

Kernel: fs/proc/task_mmu.c pagemap_read (PM_PRESENT, PFN bits 0-54), fs/proc/page.c
stable_page_flags (KPF_THP for every page of a transparent huge folio, KPF_HUGE for a
hugetlb folio, KPF_ZERO_PAGE).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from s2mmu.kvm.host import HostMm
from s2mmu.real.log import KPF_HUGE, KPF_THP, KPF_ZERO_PAGE, PagemapRun

PAGE = 1 << 12
PMD = 1 << 21
PUD = 1 << 30


@dataclass(frozen=True)
class HostPage:
    """A populated page of the VMM's memory: its PA, the size of its folio, zero page?"""

    pa: int
    folio: int
    zero: bool


class Backing(enum.Enum):
    """What a leaf's first page maps, seen from the memslot's HVA for its IPA."""

    HVA = "hva"
    """The page the host maps at that HVA."""
    ZERO = "zero"
    """The shared zero page, which the host maps at that HVA read-only."""
    OTHER = "other"
    """Not the page behind that HVA (a stale or foreign page)."""
    ABSENT = "absent"
    """The host maps nothing at that HVA."""


@dataclass(frozen=True)
class PaRelation:
    """A leaf's output address relative to the VMM's memory.

    folio: the size of the folio holding the leaf's first page (0 when not the HVA's);
    offset: the leaf's output address within that folio; contiguous: every page of the
    leaf maps the page behind the HVA of its own IPA (a block over one folio).
    """

    backing: Backing
    folio: int
    offset: int
    contiguous: bool

    def __str__(self) -> str:
        if self.backing in (Backing.OTHER, Backing.ABSENT):
            return str(self.backing.value)
        where = f"{self.backing.value} +{self.offset:#x} in a {self.folio >> 10}K folio"
        return where + ("" if self.contiguous else ", not contiguous")


def relation(ipa: int, size: int, oa: int, hva_of: Callable[[int], int | None],
             pages: Mapping[int, HostPage]) -> PaRelation:
    """Return a leaf's relation to the VMM's memory (its IPA -> memslot -> HVA -> page)."""
    hva = hva_of(ipa)
    page = pages.get(hva) if hva is not None else None
    if page is None:
        return PaRelation(Backing.ABSENT, 0, 0, False)
    if page.pa != oa:
        return PaRelation(Backing.OTHER, 0, 0, False)
    contiguous = True
    for off in range(PAGE, size, PAGE):
        h = hva_of(ipa + off)
        p = pages.get(h) if h is not None else None
        if p is None or p.pa != oa + off:
            contiguous = False
            break
    return PaRelation(Backing.ZERO if page.zero else Backing.HVA, page.folio,
                      oa % page.folio, contiguous)


def real_pages(runs: Iterable[PagemapRun]) -> dict[int, HostPage]:
    """Return the VMM's populated pages by HVA from its pagemap records (a THP or hugetlb
    page is taken as a 2M folio: the VMM maps hugetlb with MAP_HUGE_2MB, and a THP is
    PMD-sized)."""
    out = {}
    for r in runs:
        folio = PMD if r.flags >> KPF_THP & 1 or r.flags >> KPF_HUGE & 1 else PAGE
        zero = bool(r.flags >> KPF_ZERO_PAGE & 1)
        for i in range(r.pages):
            out[r.hva + i * PAGE] = HostPage((r.pfn + i) * PAGE, folio, zero)
    return out


def model_pages(host: HostMm) -> dict[int, HostPage]:
    """Return the model host's populated pages by HVA (its pagemap)."""
    large = host.folios
    out = {}
    for hva, pa in host.mapped_pages():
        folio = PAGE
        for size in (PMD, PUD):
            f = large.get(pa & ~(size - 1))
            if f is not None and f.size == size:
                folio = size
        out[hva] = HostPage(pa, folio, host.is_zero_pfn(pa))
    return out
