"""The host KVM runs on: CPU capabilities, host pages with reference counts, and VMAs.

The host is the world user_mem_abort() consults: the VMA behind an HVA (its kind, page
size, memory type, flags), the page that get_user_pages() pins, and the MMU notifier that
munmap, madvise(MADV_DONTNEED) and migration raise. Host pages live in the same PhysMem
as the stage-2 tables, so an architectural stage-2 walk reads the guest's data.

Kernel: get_vma_page_shift, kvm_vma_is_cacheable, kvm_vma_mte_allowed,
kvm_is_transparent_hugepage / get_user_mapping_size (arch/arm64/kvm/mmu.c);
kvm_arch_supports_cacheable_pfnmap (asm/kvm_host.h); __kvm_faultin_pfn, hva_to_pfn
(virt/kvm/kvm_main.c), as summarised here: the mm itself is a model, not mm/ code.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from s2mmu.arch.memory import PhysMem
from s2mmu.pgtable.caps import KvmCaps

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PMD_SHIFT = 21
PMD_SIZE = 1 << PMD_SHIFT
PUD_SHIFT = 30
PUD_SIZE = 1 << PUD_SHIFT

HOST_RAM_BASE = 0x10_0000_0000
"""Where host RAM folios are allocated (64 GiB), below the page-table pool at 512 GiB."""


@dataclass(frozen=True)
class HostFeatures:
    """The host CPU capabilities KVM's fault path reads (cpus_have_final_cap and friends).

    fwb: ARM64_HAS_STAGE2_FWB (FEAT_S2FWB). dic / idc: ARM64_HAS_CACHE_DIC / _IDC
    (CTR_EL0.DIC / IDC). tlb_range: FEAT_TLBIRANGE. mte: system_supports_mte().
    pa_bits: the sanitised ID_AA64MMFR0_EL1.PARange in bits. ras_claims_sea: the host's
    firmware-first RAS (APEI, apei_claim_sea) handles a guest's synchronous external
    abort.
    """

    fwb: bool = False
    dic: bool = False
    idc: bool = False
    tlb_range: bool = False
    mte: bool = False
    pa_bits: int = 48
    ras_claims_sea: bool = False

    def kvm_caps(self) -> KvmCaps:
        """Return the capability record the page-table library takes."""
        return KvmCaps(stage2_fwb=self.fwb, tlb_range=self.tlb_range, dic=self.dic)


PARANGE_OF_BITS = {32: 0, 36: 1, 40: 2, 42: 3, 44: 4, 48: 5, 52: 6}


def id_aa64mmfr0_parange(features: HostFeatures) -> int:
    """Return ID_AA64MMFR0_EL1.PARange for the host's PA size."""
    return PARANGE_OF_BITS[features.pa_bits]


def get_kvm_ipa_limit(features: HostFeatures) -> int:
    """Return the largest guest IPA size KVM supports on this host, in bits.

    With 4K pages and no LPA2 the stage-2 walk stops at 48 bits.

    Kernel: kvm_ipa_limit, set by kvm_set_ipa_limit (arch/arm64/kvm/reset.c).
    """
    return min(features.pa_bits, 48)


def kvm_supports_cacheable_pfnmap(features: HostFeatures) -> bool:
    """Return whether a cacheable VM_PFNMAP may be mapped cacheable at stage 2.

    Without FWB KVM would need a kernel VA to do cache maintenance, which a PFNMAP
    need not have; without DIC it would need one for I-cache maintenance.

    Kernel: kvm_arch_supports_cacheable_pfnmap (FWB && CACHE_DIC).
    """
    return features.fwb and features.dic


class VmaKind(enum.Enum):
    """What backs a VMA."""

    ANON = "anon"
    HUGETLB = "hugetlb"
    FILE = "file"
    PFNMAP = "pfnmap"


class MemType(enum.Enum):
    """The memory type of a VMA's vm_page_prot (its MAIR index on the host)."""

    NORMAL = "normal"
    NORMAL_NC = "normal-nc"
    DEVICE = "device"


@dataclass(frozen=True)
class Vma:
    """A host virtual memory area. Kernel: struct vm_area_struct (the fields KVM reads).

    hugetlb_shift: the hstate's page shift for a hugetlb VMA (21 or 30).
    thp: transparent huge pages allowed (anonymous only).
    pfn_base: for VM_PFNMAP, the physical address mapped at start (a VFIO BAR).
    allow_any_uncached: VM_ALLOW_ANY_UNCACHED (set by vfio-pci for BARs).
    """

    start: int
    end: int
    kind: VmaKind
    writable: bool = True
    thp: bool = False
    hugetlb_shift: int = 0
    mem_type: MemType = MemType.NORMAL
    allow_any_uncached: bool = False
    mte_allowed: bool = False
    pfn_base: int = 0
    name: str = ""

    def contains(self, hva: int) -> bool:
        """Return whether hva lies in the VMA."""
        return self.start <= hva < self.end


def is_vm_hugetlb_page(vma: Vma) -> bool:
    """Return whether vma is a hugetlbfs mapping. Kernel: is_vm_hugetlb_page."""
    return vma.kind is VmaKind.HUGETLB


def vma_is_pfnmap(vma: Vma) -> bool:
    """Return whether vma has VM_PFNMAP (memory without struct pages)."""
    return vma.kind is VmaKind.PFNMAP


def get_vma_page_shift(vma: Vma, hva: int) -> int:
    """Return the page shift the VMA maps hva with (hugetlb: its hstate; else PAGE_SHIFT).

    Kernel: get_vma_page_shift.
    """
    if is_vm_hugetlb_page(vma):
        return vma.hugetlb_shift
    return PAGE_SHIFT


def kvm_vma_is_cacheable(vma: Vma) -> bool:
    """Return whether the VMA's memory type is cacheable (not Normal-NC, not Device).

    Kernel: kvm_vma_is_cacheable.
    """
    return vma.mem_type is MemType.NORMAL


def kvm_vma_mte_allowed(vma: Vma) -> bool:
    """Return whether the VMA has VM_MTE_ALLOWED. Kernel: kvm_vma_mte_allowed."""
    return vma.mte_allowed


@dataclass
class Folio:
    """A host page or compound page: where it is, how big, who holds it.

    refcount is 1 for the host mapping plus one per get_user_pages() pin.
    """

    pa: int
    size: int
    refcount: int = 1
    hwpoison: bool = False
    transparent: bool = False
    hva: int = 0

    def pages(self) -> range:
        """Return the host page numbers (HVA >> PAGE_SHIFT) this folio backs."""
        return range(self.hva >> PAGE_SHIFT, (self.hva + self.size) >> PAGE_SHIFT)


@dataclass(frozen=True)
class Pfn:
    """What __kvm_faultin_pfn() returns: a PA, whether it may be written, and its page.

    folio is None for memory without struct pages (VM_PFNMAP); such a PFN is not pinned.
    """

    pa: int
    writable: bool
    folio: Folio | None


class FaultinError(enum.Enum):
    """The error PFNs of hva_to_pfn. Kernel: KVM_PFN_ERR_FAULT, KVM_PFN_ERR_HWPOISON."""

    KVM_PFN_ERR_FAULT = "KVM_PFN_ERR_FAULT"
    KVM_PFN_ERR_HWPOISON = "KVM_PFN_ERR_HWPOISON"


Invalidate = Callable[[int, int, str], None]
"""An MMU-notifier subscriber: (start, end, reason)."""


@dataclass
class HostMm:
    """The host process's address space: VMAs, the pages behind them, and notifiers.

    ptes maps a host page (HVA >> PAGE_SHIFT) to the folio backing it.
    """

    mem: PhysMem
    features: HostFeatures
    vmas: list[Vma] = field(default_factory=list)
    ptes: dict[int, Folio] = field(default_factory=dict)
    folios: dict[int, Folio] = field(default_factory=dict)
    notifiers: list[tuple[Invalidate, Invalidate]] = field(default_factory=list)
    next_pa: int = HOST_RAM_BASE
    freed: list[Folio] = field(default_factory=list)

    def vma_lookup(self, hva: int) -> Vma | None:
        """Return the VMA containing hva. Kernel: vma_lookup."""
        for vma in self.vmas:
            if vma.contains(hva):
                return vma
        return None

    def vmas_intersecting(self, start: int, end: int) -> list[Vma]:
        """Return the VMAs overlapping [start, end), in address order."""
        return sorted((v for v in self.vmas if v.start < end and start < v.end),
                      key=lambda v: v.start)

    def mmap(self, vma: Vma) -> None:
        """Add a VMA; it must not overlap another."""
        if self.vmas_intersecting(vma.start, vma.end):
            raise ValueError(f"VMA {vma.start:#x}-{vma.end:#x} overlaps an existing VMA")
        if vma.start % PAGE_SIZE or vma.end % PAGE_SIZE or vma.end <= vma.start:
            raise ValueError(f"VMA {vma.start:#x}-{vma.end:#x} is not page aligned")
        self.vmas.append(vma)

    # -- pages ------------------------------------------------------------------------

    def _alloc(self, size: int) -> int:
        pa = (self.next_pa + size - 1) & ~(size - 1)
        self.next_pa = pa + size
        return pa

    def _touch(self, vma: Vma, hva: int) -> Folio:
        """Fault hva in on the host: allocate and map the folio that backs it."""
        page = hva >> PAGE_SHIFT
        if page in self.ptes:
            return self.ptes[page]
        size = PAGE_SIZE
        transparent = False
        if vma.kind is VmaKind.HUGETLB:
            size = 1 << vma.hugetlb_shift
        elif vma.kind is VmaKind.ANON and vma.thp:
            base = hva & ~(PMD_SIZE - 1)
            if base >= vma.start and base + PMD_SIZE <= vma.end:
                size, transparent = PMD_SIZE, True
        base = hva & ~(size - 1)
        folio = Folio(self._alloc(size), size, transparent=transparent, hva=base)
        self.folios[folio.pa] = folio
        for off in range(0, size, PAGE_SIZE):
            self.ptes[(base + off) >> PAGE_SHIFT] = folio
        return folio

    def hva_to_pa(self, hva: int) -> int | None:
        """Return the PA the host maps hva to now (None if not populated)."""
        vma = self.vma_lookup(hva)
        if vma is not None and vma_is_pfnmap(vma):
            return vma.pfn_base + (hva - vma.start)
        folio = self.ptes.get(hva >> PAGE_SHIFT)
        if folio is None:
            return None
        return folio.pa + (hva & (folio.size - 1))

    def populate(self, hva: int) -> int:
        """Touch hva as the VMM would (no pin); return its PA."""
        vma = self.vma_lookup(hva)
        if vma is None:
            raise ValueError(f"no VMA at HVA {hva:#x}")
        if vma_is_pfnmap(vma):
            return vma.pfn_base + (hva - vma.start)
        folio = self._touch(vma, hva)
        return folio.pa + (hva & (folio.size - 1))

    def get_user_page(self, hva: int, write: bool) -> Pfn | FaultinError:
        """Fault in and pin the page behind hva, or say why not.

        A write to a read-only VMA fails; a read of one gives a read-only PFN.

        Kernel: __kvm_faultin_pfn -> hva_to_pfn (get_user_page_fast_only, hva_to_pfn_slow,
        hva_to_pfn_remapped for VM_PFNMAP).
        """
        vma = self.vma_lookup(hva)
        if vma is None or (write and not vma.writable):
            return FaultinError.KVM_PFN_ERR_FAULT
        if vma_is_pfnmap(vma):
            return Pfn(vma.pfn_base + (hva - vma.start), vma.writable, None)
        folio = self._touch(vma, hva)
        if folio.hwpoison:
            return FaultinError.KVM_PFN_ERR_HWPOISON
        folio.refcount += 1
        return Pfn(folio.pa + (hva & (folio.size - 1)), vma.writable, folio)

    def put_page(self, pfn: Pfn) -> None:
        """Drop the pin get_user_page() took. Kernel: kvm_release_faultin_page."""
        if pfn.folio is not None:
            self._put(pfn.folio)

    def _put(self, folio: Folio) -> None:
        folio.refcount -= 1
        if folio.refcount == 0:
            self.folios.pop(folio.pa, None)
            self.freed.append(folio)

    def user_mapping_size(self, hva: int) -> int:
        """Return the size of the host leaf mapping hva (a THP maps at PMD_SIZE).

        Kernel: get_user_mapping_size.
        """
        folio = self.ptes.get(hva >> PAGE_SHIFT)
        return folio.size if folio is not None else PAGE_SIZE

    # -- MMU-notifier events ------------------------------------------------------------

    def _invalidate(self, start: int, end: int, reason: str) -> None:
        for begin, _ in self.notifiers:
            begin(start, end, reason)

    def _invalidate_end(self, start: int, end: int, reason: str) -> None:
        for _, finish in self.notifiers:
            finish(start, end, reason)

    def _zap(self, start: int, end: int) -> None:
        """Unmap the host pages of [start, end) (whole folios), dropping the mapping ref."""
        dropped: dict[int, Folio] = {}
        for page in range(start >> PAGE_SHIFT, end >> PAGE_SHIFT):
            folio = self.ptes.pop(page, None)
            if folio is not None:
                dropped[folio.pa] = folio
        for folio in dropped.values():
            for page in folio.pages():
                self.ptes.pop(page, None)
            self._put(folio)

    def munmap(self, start: int, length: int) -> None:
        """Remove [start, start + length) from the address space, with MMU notification.

        Kernel: the MMU-notifier invalidate_range_start/end pair around the unmap.
        """
        end = start + length
        self._invalidate(start, end, "munmap")
        self._zap(start, end)
        kept: list[Vma] = []
        for v in self.vmas:
            if v.end <= start or v.start >= end:
                kept.append(v)
                continue
            if v.start < start:
                kept.append(_clip(v, v.start, start))
            if v.end > end:
                kept.append(_clip(v, end, v.end))
        self.vmas = kept
        self._invalidate_end(start, end, "munmap")

    def madvise_dontneed(self, start: int, length: int) -> None:
        """Drop the pages of [start, start + length) but keep the VMA (MADV_DONTNEED)."""
        end = start + length
        self._invalidate(start, end, "madvise")
        self._zap(start, end)
        self._invalidate_end(start, end, "madvise")

    def migrate(self, hva: int) -> bool:
        """Move the folio behind hva to a new PA, copying it; False if it is pinned.

        Migration needs the folio's only reference to be the mapping's.
        """
        folio = self.ptes.get(hva >> PAGE_SHIFT)
        if folio is None or folio.refcount != 1:
            return False
        base = hva & ~(folio.size - 1)
        self._invalidate(base, base + folio.size, "migration")
        new = Folio(self._alloc(folio.size), folio.size, transparent=folio.transparent,
                    hva=folio.hva)
        self.mem.write_bytes(new.pa, self.mem.read_bytes(folio.pa, folio.size))
        for page in folio.pages():
            self.ptes[page] = new
        self.folios[new.pa] = new
        self._put(folio)
        self._invalidate_end(base, base + folio.size, "migration")
        return True

    def hwpoison(self, hva: int) -> None:
        """Mark the folio behind hva as poisoned (memory_failure()), unmapping it from KVM."""
        folio = self._touch(self._vma_or_raise(hva), hva)
        base = hva & ~(folio.size - 1)
        self._invalidate(base, base + folio.size, "hwpoison")
        folio.hwpoison = True
        self._invalidate_end(base, base + folio.size, "hwpoison")

    def _vma_or_raise(self, hva: int) -> Vma:
        vma = self.vma_lookup(hva)
        if vma is None:
            raise ValueError(f"no VMA at HVA {hva:#x}")
        return vma


def _clip(v: Vma, start: int, end: int) -> Vma:
    from dataclasses import replace

    return replace(v, start=start, end=end, pfn_base=v.pfn_base + (start - v.start)
                   if v.kind is VmaKind.PFNMAP else v.pfn_base)
