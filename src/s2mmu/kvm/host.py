"""The host KVM runs on: CPU capabilities, host pages with reference counts, and VMAs.

The host is the world user_mem_abort() consults: the VMA behind an HVA (its kind, page
size, memory type, flags), the page that get_user_pages() pins, and the MMU notifier that
munmap, madvise(MADV_DONTNEED), migration and memory failure raise. Host pages live in
the same PhysMem as the stage-2 tables, so an architectural stage-2 walk reads the
guest's data.

The host page tables are kept as the mm keeps them, one entry per mapping, not per 4K
page: a 1G hugetlb folio is one PUD entry, a 2M hugetlb folio or PMD-mapped THP one PMD
entry, and 4K mappings live in PTE tables of 512 PFNs (4 bytes each) per 2M of address
space. Operations walk the entries that exist, so their cost follows what is mapped, not
the length asked for. Small (4K) folios have no object of their own unless pinned.

Kernel: get_vma_page_shift, kvm_vma_is_cacheable, kvm_vma_mte_allowed,
kvm_is_transparent_hugepage / get_user_mapping_size (arch/arm64/kvm/mmu.c);
kvm_arch_supports_cacheable_pfnmap (asm/kvm_host.h); __kvm_faultin_pfn, hva_to_pfn
(virt/kvm/kvm_main.c), as summarised here: the mm itself is a model, not mm/ code.
Its behaviour follows what was read of mm/: do_vmi_munmap and __split_vma with
vm_ops->may_split (mm/mmap.c, mm/vma.c), hugetlb_vm_op_split (mm/hugetlb.c),
madvise_walk_vmas and madvise_dontneed_free_valid_vma (mm/madvise.c), zap_pmd_range
(mm/memory.c), __split_huge_pmd and split_huge_pmd_if_needed (mm/huge_memory.c).
"""

from __future__ import annotations

import enum
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from s2mmu.arch.errors import InputError
from s2mmu.arch.features import ID_FEATURES, FeatureSet, IdRegs, id_regs_of
from s2mmu.arch.memory import PhysMem
from s2mmu.kvm.errno import EBUSY, EFAULT
from s2mmu.pgtable.caps import KvmCaps
from s2mmu.pgtable.errno import EINVAL, ENOMEM

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PMD_SHIFT = 21
PMD_SIZE = 1 << PMD_SHIFT
PUD_SHIFT = 30
PUD_SIZE = 1 << PUD_SHIFT
PTRS_PER_PTE = PMD_SIZE >> PAGE_SHIFT
ADDRESS_LIMIT = 1 << 64

HOST_RAM_BASE = 0x10_0000_0000
"""Where host RAM folios are allocated (64 GiB), below the page-table pool at 512 GiB."""


@dataclass(frozen=True)
class HostFeatures:
    """The host CPU capabilities KVM's fault path reads (cpus_have_final_cap and friends).

    fwb: ARM64_HAS_STAGE2_FWB (FEAT_S2FWB). dic / idc: ARM64_HAS_CACHE_DIC / _IDC
    (CTR_EL0.DIC / IDC). tlb_range: FEAT_TLBIRANGE. mte: system_supports_mte().
    pa_bits: the sanitised ID_AA64MMFR0_EL1.PARange in bits. ras_claims_sea: the host's
    firmware-first RAS (APEI, apei_claim_sea) handles a guest's synchronous external
    abort. cpu: the further FEAT_* the host CPU's ID registers report beyond the ones
    every modelled host has (HOST_MMFR_FEATURES), from s2mmu.arch.features.ID_FEATURES:
    FEAT_PAN3, FEAT_XNX, FEAT_ATS1A, FEAT_NV, FEAT_E0PD ... (a VM's, and through
    limit_nv_id_regs a guest hypervisor's, ID registers start from these).
    """

    fwb: bool = False
    dic: bool = False
    idc: bool = False
    tlb_range: bool = False
    mte: bool = False
    pa_bits: int = 48
    ras_claims_sea: bool = False
    cpu: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        unknown = self.cpu - (ID_FEATURES - HOST_FLAG_FEATURES)
        if unknown:
            raise InputError(f"host CPU feature(s) {', '.join(sorted(unknown))}: not an ID "
                             f"register feature the model decodes, or one a host flag "
                             f"sets (fwb, tlb_range)")

    def kvm_caps(self) -> KvmCaps:
        """Return the capability record the page-table library takes."""
        return KvmCaps(stage2_fwb=self.fwb, tlb_range=self.tlb_range, dic=self.dic)


PARANGE_OF_BITS = {32: 0, 36: 1, 40: 2, 42: 3, 44: 4, 48: 5, 52: 6}


HOST_MMFR_FEATURES = frozenset({"FEAT_HAFDBS", "FEAT_PAN", "FEAT_PAN2", "FEAT_VMID16"})
"""The ID_AA64MMFR* features every modelled host has (besides FEAT_S2FWB and PARange)."""

HOST_FLAG_FEATURES = frozenset({"FEAT_S2FWB", "FEAT_TLBIRANGE"})
"""The ID register features HostFeatures' flags set (fwb, tlb_range)."""


def host_id_regs(features: HostFeatures) -> IdRegs:
    """Return the host's sanitised ID registers (the system-wide values).

    The model's host: 4K/16K/64K granules, hardware access-flag update, PAN and PAN2
    (ID_AA64MMFR1_EL1.PAN = 2), 16-bit VMIDs, FEAT_S2FWB as fwb says, FEAT_TLBIRANGE
    (ID_AA64ISAR0_EL1.TLB = 0b0010) as tlb_range says, the features cpu adds, PARange
    from pa_bits. Kernel: read_sanitised_ftr_reg (arch/arm64/kernel/cpufeature.c), as
    summarised here.
    """
    names = (HOST_MMFR_FEATURES | features.cpu | ({"FEAT_S2FWB"} if features.fwb else set())
             | ({"FEAT_TLBIRANGE"} if features.tlb_range else set()))
    return id_regs_of(FeatureSet(frozenset(names), pa_bits=features.pa_bits))


def id_aa64mmfr0_parange(features: HostFeatures) -> int:
    """Return ID_AA64MMFR0_EL1.PARange for the host's PA size."""
    return PARANGE_OF_BITS[features.pa_bits]


def get_kvm_ipa_limit(features: HostFeatures) -> int:
    """Return the largest guest IPA size KVM supports on this host, in bits.

    With 4K pages and no LPA2 the stage-2 walk stops at 48 bits.

    Kernel: kvm_ipa_limit, set by kvm_set_ipa_limit (arch/arm64/kvm/reset.c).
    """
    return host_usable_pa_bits(features.pa_bits)


PA_BITS_4K_WITHOUT_LPA2 = 48
"""The widest OA a 4K-granule descriptor holds without FEAT_LPA2 (OA[47:12])."""


def host_usable_pa_bits(pa_bits: int) -> int:
    """Return the PA size the host kernel and KVM's stage 2 can use, in bits.

    The model's host has 4K pages and no FEAT_LPA2: a 52-bit PARange is clamped to 48
    bits, as the stage-2 descriptors cannot hold OA[51:48].

    Kernel: kvm_set_ipa_limit (arch/arm64/kvm/reset.c: PARANGE_52 becomes PARANGE_48
    unless kvm_lpa2_is_enabled()).
    """
    return min(pa_bits, PA_BITS_4K_WITHOUT_LPA2)


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


@dataclass(eq=False)
class Folio:
    """A host page or compound page: where it is, how big, who holds it.

    refcount is 1 for the host mapping (however many of its pages are mapped) plus one
    per get_user_pages() pin. mapped counts the 4K pages of the folio still mapped (a
    THP partly unmapped after split_huge_pmd; 0 once a pinned page is unmapped). hva is
    where the folio's first page sits in the address space (folios never move in it:
    there is no mremap).
    """

    pa: int
    size: int
    refcount: int = 1
    hwpoison: bool = False
    transparent: bool = False
    hva: int = 0
    mapped: int = 0


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


def _bases(table: dict[int, object], start: int, end: int, step: int) -> list[int]:
    """Return the keys of table (step-aligned bases) whose [base, base+step) meets [start, end).

    Walks the aligned bases of the range or the table's keys, whichever is fewer, so the
    cost follows what exists, not the length of the range.
    """
    lo = start & ~(step - 1)
    if (end - lo) // step <= len(table):
        return [b for b in range(lo, end, step) if b in table]
    return sorted(b for b in table if lo <= b < end)


def _page_align(length: int) -> int:
    return (length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


ZERO_PAGE = bytes(PAGE_SIZE)


@dataclass
class HostMm:
    """The host process's address space: VMAs, the pages behind them, and notifiers.

    vmas: sorted by start, never overlapping. pud / pmd: huge mappings keyed by their
    aligned HVA (1G hugetlb; 2M hugetlb or PMD-mapped THP). ptes: PTE tables keyed by
    their 2M-aligned HVA, 512 PFNs each (0 = none). large: live large folios by PA.
    pinned: small folios with a get_user_pages() pin, by PA. poisoned: PAs of small
    pages memory_failure() poisoned. freed_bytes counts what went back to the allocator.
    zero: the shared zero page, allocated at the first read fault that maps it; every
    PTE a read fault of untouched anonymous memory filled points at it, read-only.
    use_huge_zero_page: a read fault of an untouched PMD range of a THP VMA maps the huge
    zero page (Linux's transparent_hugepage_use_zero_page(), sysfs use_zero_page, on by
    default there; off here unless a scenario says [host] thp_zero_page = true).
    huge_zero: the huge zero page, mapped read-only by a PMD entry in pmd for each such
    range.
    huge_ro: the bases of the hugetlb entries a read fault mapped read-only (a private
    mapping's page is made writable by the first write to it).
    """

    mem: PhysMem
    features: HostFeatures
    use_huge_zero_page: bool = False
    change_pte: list[Callable[[int, int], None]] = field(default_factory=list)
    """Called with (HVA, new PA) where the host sets a PTE with set_pte_at_notify."""
    vmas: list[Vma] = field(default_factory=list)
    pud: dict[int, Folio] = field(default_factory=dict)
    pmd: dict[int, Folio] = field(default_factory=dict)
    ptes: dict[int, array[int]] = field(default_factory=dict)
    large: dict[int, Folio] = field(default_factory=dict)
    pinned: dict[int, Folio] = field(default_factory=dict)
    poisoned: set[int] = field(default_factory=set)
    notifiers: list[tuple[Invalidate, Invalidate]] = field(default_factory=list)
    next_pa: int = HOST_RAM_BASE
    freed_bytes: int = 0
    zero: Folio | None = None
    huge_zero: Folio | None = None
    huge_ro: set[int] = field(default_factory=set)
    pmd_tables: set[int] = field(default_factory=set)
    """The 1G-aligned HVAs under which a PMD table was allocated (a page or a 2M entry
    faulted in): mm_find_pmd finds a PMD there."""

    @property
    def folios(self) -> dict[int, Folio]:
        """Return the folios that have an object: every large one and pinned small ones."""
        return {**self.large, **self.pinned}

    def vma_lookup(self, hva: int) -> Vma | None:
        """Return the VMA containing hva. Kernel: vma_lookup."""
        i = bisect_right(self.vmas, hva, key=lambda v: v.start)
        if i and self.vmas[i - 1].contains(hva):
            return self.vmas[i - 1]
        return None

    def vmas_intersecting(self, start: int, end: int) -> list[Vma]:
        """Return the VMAs overlapping [start, end), in address order."""
        i = bisect_right(self.vmas, start, key=lambda v: v.start)
        if i and self.vmas[i - 1].end > start:
            i -= 1
        out = []
        while i < len(self.vmas) and self.vmas[i].start < end:
            out.append(self.vmas[i])
            i += 1
        return out

    def mmap(self, vma: Vma) -> None:
        """Add a VMA; it must not overlap another, and a PFNMAP must fit the host's PA size.

        A VM_PFNMAP VMA whose PAs reach beyond the usable PA size is API misuse
        (ValueError): no device memory lies beyond the CPU's physical address size
        (ID_AA64MMFR0_EL1.PARange), and with 4K pages without FEAT_LPA2 none beyond 48
        bits is usable (host_usable_pa_bits).
        """
        if self.vmas_intersecting(vma.start, vma.end):
            raise ValueError(f"VMA {vma.start:#x}-{vma.end:#x} overlaps an existing VMA")
        if vma.start % PAGE_SIZE or vma.end % PAGE_SIZE or vma.end <= vma.start:
            raise ValueError(f"VMA {vma.start:#x}-{vma.end:#x} is not page aligned")
        bits = host_usable_pa_bits(self.features.pa_bits)
        limit = 1 << bits
        if vma_is_pfnmap(vma) and vma.pfn_base + (vma.end - vma.start) > limit:
            raise ValueError(f"VM_PFNMAP VMA {vma.start:#x}-{vma.end:#x} maps PA "
                             f"{vma.pfn_base:#x}-{vma.pfn_base + (vma.end - vma.start):#x}, "
                             f"beyond the host's usable {bits}-bit PA size ({limit:#x})")
        i = bisect_right(self.vmas, vma.start, key=lambda v: v.start)
        self.vmas.insert(i, vma)

    # -- pages ------------------------------------------------------------------------

    def _alloc(self, size: int) -> int:
        pa = (self.next_pa + size - 1) & ~(size - 1)
        self.next_pa = pa + size
        return pa

    def _new_large(self, size: int, base: int, transparent: bool) -> Folio:
        folio = Folio(self._alloc(size), size, transparent=transparent, hva=base,
                      mapped=size >> PAGE_SHIFT)
        self.large[folio.pa] = folio
        return folio

    def _large_of(self, pa: int) -> Folio | None:
        """Return the PTE-mapped THP holding pa (THPs are 2M-aligned in PA), if any."""
        return self.large.get(pa & ~(PMD_SIZE - 1))

    def zero_page(self) -> Folio:
        """Return the shared zero page, allocating it on first use. Kernel: ZERO_PAGE(0)."""
        if self.zero is None:
            self.zero = Folio(self._alloc(PAGE_SIZE), PAGE_SIZE, hva=0, mapped=1)
        return self.zero

    def is_zero_pfn(self, pa: int) -> bool:
        """Return whether pa lies in the shared zero page. Kernel: is_zero_pfn."""
        return self.zero is not None and pa & ~(PAGE_SIZE - 1) == self.zero.pa

    def huge_zero_page(self) -> Folio:
        """Return the huge zero page, allocating it on first use.

        Kernel: mm_get_huge_zero_page (get_huge_zero_page: a zeroed compound page of
        HPAGE_PMD_ORDER, kept while any mm uses it; kept for good here).
        """
        if self.huge_zero is None:
            self.huge_zero = Folio(self._alloc(PMD_SIZE), PMD_SIZE, transparent=True,
                                   mapped=PTRS_PER_PTE)
        return self.huge_zero

    def is_huge_zero_pfn(self, pa: int) -> bool:
        """Return whether pa lies in the huge zero page. Kernel: is_huge_zero_page."""
        return self.huge_zero is not None and pa & ~(PMD_SIZE - 1) == self.huge_zero.pa

    def _wp_page_copy(self, ptab: array[int], base: int, idx: int) -> int:
        """Break a PTE's zero-page mapping for a write: a new zeroed page, mapped writable.

        Kernel: do_wp_page -> wp_page_copy (is_zero_pfn: alloc_zeroed_user_highpage_movable;
        MMU_NOTIFY_CLEAR around the PTE update for the page's range; the new PTE set with
        set_pte_at_notify, which calls the change_pte listeners, before v6.10).
        """
        page = base + (idx << PAGE_SHIFT)
        pa = self._alloc(PAGE_SIZE)
        self._invalidate(page, page + PAGE_SIZE, "wp_page_copy")
        ptab[idx] = pa >> PAGE_SHIFT
        for notify in self.change_pte:
            notify(page, pa)
        self._invalidate_end(page, page + PAGE_SIZE, "wp_page_copy")
        return pa

    def _touch(self, vma: Vma, hva: int, write: bool = True) -> tuple[int, Folio | None]:
        """Fault hva in on the host; return its PA and its large folio (None for 4K).

        A read (not write) fault of an untouched page of a private anonymous VMA that no
        THP covers maps the shared zero page; a write to a PTE mapping it copies it. A
        THP-enabled VMA gets a THP for a write, and for a read the huge zero page (when the
        host uses it) or a THP; a write
        to the huge zero page splits its PMD into PTEs of the zero page and copies the one
        written. A read of an untouched hugetlb page maps a new huge page read-only (the
        VMA is private); a write makes it writable in place (_hugetlb_fault).

        Kernel: handle_mm_fault -> do_anonymous_page (!FAULT_FLAG_WRITE: my_zero_pfn,
        pte_mkspecial, not writable), do_wp_page; do_huge_pmd_anonymous_page
        (!FAULT_FLAG_WRITE and transparent_hugepage_use_zero_page: set_huge_zero_page),
        do_huge_pmd_wp_page (is_huge_zero_pmd: fallback, __split_huge_pmd ->
        __split_huge_zero_page_pmd), then do_wp_page on the PTE.
        """
        if is_vm_hugetlb_page(vma):
            return self._hugetlb_fault(vma, hva, write)
        self.pmd_tables.add(hva & ~(PUD_SIZE - 1))
        base = hva & ~(PMD_SIZE - 1)
        folio = self.pmd.get(base)
        if folio is not None and folio is self.huge_zero and write:
            self.split_huge_pmd(base)
        elif folio is not None:
            return folio.pa + (hva - base), folio
        ptab = self.ptes.get(base)
        idx = (hva - base) >> PAGE_SHIFT
        if ptab is not None and ptab[idx]:
            pa = ptab[idx] << PAGE_SHIFT
            if self.is_zero_pfn(pa):
                return (self._wp_page_copy(ptab, base, idx) if write else pa), None
            return pa, self._large_of(pa)
        if ptab is None and vma.kind is VmaKind.ANON and vma.thp and \
                base >= vma.start and base + PMD_SIZE <= vma.end:
            zero = self.use_huge_zero_page and not write
            folio = self.pmd[base] = self.huge_zero_page() if zero else \
                self._new_large(PMD_SIZE, base, transparent=True)
            return folio.pa + (hva - base), folio
        if ptab is None:
            ptab = self.ptes[base] = array("I", bytes(4 * PTRS_PER_PTE))
        pa = self.zero_page().pa if vma.kind is VmaKind.ANON and not write \
            else self._alloc(PAGE_SIZE)
        ptab[idx] = pa >> PAGE_SHIFT
        return pa, None

    def _hugetlb_fault(self, vma: Vma, hva: int, write: bool) -> tuple[int, Folio]:
        """Fault a hugetlb page in; return hva's PA and the huge folio.

        A new page is mapped writable only for a write: hugetlb_no_page makes the entry
        writable for VM_SHARED only, and a private mapping's write fault goes on to
        hugetlb_wp, which (the page anonymous and mapped once) makes the entry writable
        in place, with no MMU-notifier call.

        Kernel: hugetlb_fault -> hugetlb_no_page (make_huge_pte(..., VM_WRITE &&
        VM_SHARED)), hugetlb_wp (page_mapcount == 1 && PageAnon: set_huge_ptep_writable).
        """
        size = 1 << vma.hugetlb_shift
        table = self.pud if size == PUD_SIZE else self.pmd
        base = hva & ~(size - 1)
        folio = table.get(base)
        if folio is None:
            folio = table[base] = self._new_large(size, base, transparent=False)
            if size == PMD_SIZE:
                self.pmd_tables.add(hva & ~(PUD_SIZE - 1))
            if not write:
                self.huge_ro.add(base)
        elif write:
            self.huge_ro.discard(base)
        return folio.pa + (hva - base), folio

    def _lookup(self, hva: int) -> tuple[int, Folio | None] | None:
        """Return (PA, large folio or None) of a populated hva, without faulting it in."""
        base = hva & ~(PUD_SIZE - 1)
        folio = self.pud.get(base)
        if folio is not None:
            return folio.pa + (hva - base), folio
        base = hva & ~(PMD_SIZE - 1)
        folio = self.pmd.get(base)
        if folio is not None:
            return folio.pa + (hva - base), folio
        table = self.ptes.get(base)
        if table is None or not table[(hva - base) >> PAGE_SHIFT]:
            return None
        pa = table[(hva - base) >> PAGE_SHIFT] << PAGE_SHIFT
        return pa, self._large_of(pa)

    def hva_to_pa(self, hva: int) -> int | None:
        """Return the PA the host maps hva to now (None if not populated)."""
        vma = self.vma_lookup(hva)
        if vma is not None and vma_is_pfnmap(vma):
            return vma.pfn_base + (hva - vma.start)
        found = self._lookup(hva & ~(PAGE_SIZE - 1))
        return None if found is None else found[0] + (hva & (PAGE_SIZE - 1))

    def first_mismatch(self, hva: int, size: int, pa: int) -> int | None:
        """Return the first offset in [0, size) where hva + off does not map pa + off.

        The walk goes 2M by 2M over the entries that exist (a huge entry compares at
        once, a PTE table as one slice), so a 1G stage-2 block costs at most 512 steps.
        """
        off = 0
        while off < size:
            h, step = hva + off, min(PMD_SIZE - ((hva + off) & (PMD_SIZE - 1)), size - off)
            vma = self.vma_lookup(h)
            if vma is not None and vma_is_pfnmap(vma):
                n = min(step, vma.end - h)
                if vma.pfn_base + (h - vma.start) != pa + off:
                    return off
                off += n
                continue
            big = self.pud.get(h & ~(PUD_SIZE - 1)) or self.pmd.get(h & ~(PMD_SIZE - 1))
            if big is not None:
                if big.pa + (h & (big.size - 1)) != pa + off:
                    return off
                off += step
                continue
            ptab = self.ptes.get(h & ~(PMD_SIZE - 1))
            lo = (h & (PMD_SIZE - 1)) >> PAGE_SHIFT
            n = step >> PAGE_SHIFT
            want = array("I", range((pa + off) >> PAGE_SHIFT, ((pa + off) >> PAGE_SHIFT) + n))
            if ptab is None or ptab[lo:lo + n] != want:
                got = ptab[lo:lo + n] if ptab is not None else array("I", bytes(4 * n))
                return off + PAGE_SIZE * next(i for i in range(n) if got[i] != want[i])
            off += step
        return None

    def populate(self, hva: int) -> int:
        """Touch hva as the VMM would (no pin); return its PA."""
        vma = self._vma_or_raise(hva)
        if vma_is_pfnmap(vma):
            return vma.pfn_base + (hva - vma.start)
        pa, _ = self._touch(vma, hva & ~(PAGE_SIZE - 1))
        return pa + (hva & (PAGE_SIZE - 1))

    def get_user_page(self, hva: int, write: bool) -> Pfn | FaultinError:
        """Fault in and pin the page behind hva, or say why not.

        A write to a read-only VMA fails; a read of one gives a read-only PFN. A read of
        untouched anonymous memory gets the shared zero page, read-only: the slow path
        faults it in without FOLL_WRITE, and the FOLL_WRITE fast-GUP retry that would make
        a read writable fails on its read-only PTE. A write to it copies it first.

        Kernel: __kvm_faultin_pfn -> hva_to_pfn (hva_to_pfn_fast: FOLL_WRITE only;
        hva_to_pfn_slow: *writable = write_fault, then get_user_page_fast_only(FOLL_WRITE);
        hva_to_pfn_remapped for VM_PFNMAP).
        """
        vma = self.vma_lookup(hva)
        if vma is None or (write and not vma.writable):
            return FaultinError.KVM_PFN_ERR_FAULT
        if vma_is_pfnmap(vma):
            return Pfn(vma.pfn_base + (hva - vma.start), vma.writable, None)
        page = hva & ~(PAGE_SIZE - 1)
        pa, folio = self._touch(vma, page, write)
        if (folio.hwpoison if folio is not None else pa in self.poisoned):
            return FaultinError.KVM_PFN_ERR_HWPOISON
        if self.is_zero_pfn(pa):
            zero = self.zero_page()
            zero.refcount += 1
            return Pfn(pa + (hva - page), False, zero)
        if folio is None:
            folio = self.pinned.get(pa) or Folio(pa, PAGE_SIZE, hva=page, mapped=1)
            self.pinned[pa] = folio
            folio.refcount += 1
            return Pfn(pa + (hva - page), vma.writable, folio)
        folio.refcount += 1
        read_only = folio is self.huge_zero or (is_vm_hugetlb_page(vma)
                                                 and hva & ~(folio.size - 1) in self.huge_ro)
        return Pfn(pa + (hva - page), vma.writable and not read_only, folio)

    def put_page(self, pfn: Pfn) -> None:
        """Drop the pin get_user_page() took. Kernel: kvm_release_faultin_page."""
        if pfn.folio is not None:
            self._put(pfn.folio)

    def _put(self, folio: Folio) -> None:
        folio.refcount -= 1
        if folio is self.zero or folio is self.huge_zero:
            return  # never freed
        if folio.size == PAGE_SIZE and folio.mapped and folio.refcount == 1:
            del self.pinned[folio.pa]  # back to a plain mapped page
        if folio.refcount == 0:
            self._free(folio.pa, folio.size)

    def _free(self, pa: int, size: int) -> None:
        """Give a folio back: forget its object, poison mark and data."""
        self.large.pop(pa, None)
        self.pinned.pop(pa, None)
        if size == PAGE_SIZE:
            self.poisoned.discard(pa)
        for page in range(pa, pa + size, PAGE_SIZE):
            self.mem.free_page(page)
        self.freed_bytes += size

    def _unmap_small(self, pa: int) -> None:
        """Drop the mapping reference of one mapped 4K page (a small folio or part of a THP)."""
        if self.is_zero_pfn(pa):
            return
        folio = self._large_of(pa) or self.pinned.get(pa)
        if folio is None:
            self._free(pa, PAGE_SIZE)
        elif folio.size == PAGE_SIZE:
            folio.mapped = 0
            folio.refcount -= 1
            if folio.refcount == 0:
                self._free(pa, PAGE_SIZE)
        else:
            folio.mapped -= 1
            if folio.mapped == 0:
                self._put(folio)

    def user_mapping_size(self, hva: int) -> int:
        """Return the size of the host leaf mapping hva (a PMD-mapped THP maps at PMD_SIZE).

        Kernel: get_user_mapping_size (a walk of the host's page table).
        """
        if (hva & ~(PUD_SIZE - 1)) in self.pud:
            return PUD_SIZE
        if (hva & ~(PMD_SIZE - 1)) in self.pmd:
            return PMD_SIZE
        return PAGE_SIZE

    # -- MMU-notifier events ------------------------------------------------------------

    def _invalidate(self, start: int, end: int, reason: str) -> None:
        for begin, _ in self.notifiers:
            begin(start, end, reason)

    def _invalidate_end(self, start: int, end: int, reason: str) -> None:
        for _, finish in self.notifiers:
            finish(start, end, reason)

    def _notify(self, start: int, end: int, reason: str) -> None:
        self._invalidate(start, end, reason)
        self._invalidate_end(start, end, reason)

    def split_huge_pmd(self, base: int) -> None:
        """Remap a PMD-mapped THP with 512 PTEs at the same PAs (no-op if none is there);
        the huge zero page becomes 512 PTEs of the zero page.

        Kernel: __split_huge_pmd: invalidates the whole PMD range (MMU_NOTIFY_CLEAR) around
        __split_huge_pmd_locked; the folio stays, now PTE-mapped (is_huge_zero_pmd:
        __split_huge_zero_page_pmd, my_zero_pfn PTEs).
        """
        folio = self.pmd.get(base)
        if folio is None or not folio.transparent:
            return
        self._invalidate(base, base + PMD_SIZE, "split_huge_pmd")
        del self.pmd[base]
        if folio is self.huge_zero:  # __split_huge_zero_page_pmd: PTEs of the zero page
            self.ptes[base] = array("I", [self.zero_page().pa >> PAGE_SHIFT] * PTRS_PER_PTE)
        else:
            pfn = folio.pa >> PAGE_SHIFT
            self.ptes[base] = array("I", range(pfn, pfn + PTRS_PER_PTE))
        self._invalidate_end(base, base + PMD_SIZE, "split_huge_pmd")

    def _zap(self, start: int, end: int) -> None:
        """Unmap what is mapped in [start, end) (inside one VMA; hugetlb: aligned).

        A THP PMD the range covers only partly is split first, as zap_pmd_range does.

        Kernel: unmap_page_range -> zap_pud_range / zap_pmd_range / zap_pte_range,
        __unmap_hugepage_range.
        """
        for table, size in ((self.pud, PUD_SIZE), (self.pmd, PMD_SIZE)):
            for base in _bases(table, start, end, size):  # type: ignore[arg-type]
                if base < start or base + size > end:
                    self.split_huge_pmd(base)
                    continue
                self.huge_ro.discard(base)
                self._put(table.pop(base))
        for base in _bases(self.ptes, start, end, PMD_SIZE):  # type: ignore[arg-type]
            ptab = self.ptes[base]
            lo = max(start - base, 0) >> PAGE_SHIFT
            hi = min(end - base, PMD_SIZE) >> PAGE_SHIFT
            for pfn in ptab[lo:hi]:
                if pfn:
                    self._unmap_small(pfn << PAGE_SHIFT)
            ptab[lo:hi] = array("I", bytes(4 * (hi - lo)))
            if not any(ptab):
                del self.ptes[base]

    def _split_vma(self, vma: Vma, addr: int) -> int:
        """Check a VMA may be split at addr and split the PMD straddling it.

        Kernel: __split_vma: vm_ops->may_split (hugetlb_vm_op_split: -EINVAL unless addr
        is aligned to the huge page size), then vma_adjust_trans_huge ->
        split_huge_pmd_if_needed.
        """
        if is_vm_hugetlb_page(vma) and addr & ((1 << vma.hugetlb_shift) - 1):
            return -EINVAL
        base = addr & ~(PMD_SIZE - 1)
        if addr != base and vma.start <= base and base + PMD_SIZE <= vma.end:
            self._split_huge_pmd_address(base)
        return 0

    def _split_huge_pmd_address(self, base: int) -> None:
        """Split the PMD at base if it maps a THP; the whole PMD range is invalidated as
        long as a PMD table covers it, whatever the PMD holds (a PTE table, nothing), so
        KVM unmaps the stage 2 of those 2M even when no huge page was there (real 6.1:
        a munmap of one page of a 2M-covering anonymous VMA unmaps its neighbours).

        Kernel: split_huge_pmd_address (mm_find_pmd: NULL only without a present PUD),
        __split_huge_pmd (mmu_notifier_invalidate_range_start before the pmd_trans_huge
        check). The host's PMD tables are taken as never freed (free_pgtables is not
        modelled): one exists once anything below its 1G was faulted in.
        """
        folio = self.pmd.get(base)
        if folio is not None and folio.transparent:
            self.split_huge_pmd(base)
        elif (base & ~(PUD_SIZE - 1)) in self.pmd_tables:
            self._notify(base, base + PMD_SIZE, "split_huge_pmd")

    def munmap(self, start: int, length: int) -> int:
        """Remove [start, start + length) from the address space; return 0 or -errno.

        -EINVAL for an unaligned start, a zero length, a range past the address space,
        or a split of a hugetlb VMA off its huge page size; 0 with nothing done when no
        VMA meets the range. Otherwise the VMAs at either end are split (a THP PMD across
        a split point is split, with its own notification), then the whole range is
        invalidated once around the unmap.

        Kernel: do_vmi_munmap, do_vmi_align_munmap / vms_gather_munmap_vmas (__split_vma),
        unmap_region -> unmap_vmas (MMU_NOTIFY_UNMAP over [start, end)).
        """
        end = start + _page_align(length)
        if start & (PAGE_SIZE - 1) or length <= 0 or end > ADDRESS_LIMIT:
            return -EINVAL
        vmas = self.vmas_intersecting(start, end)
        if not vmas:
            return 0
        if vmas[0].start < start and (err := self._split_vma(vmas[0], start)):
            return err
        last = _clip(vmas[-1], max(vmas[-1].start, start), vmas[-1].end)  # after the 1st split
        if vmas[-1].end > end and (err := self._split_vma(last, end)):
            return err
        self._invalidate(start, end, "munmap")
        for v in vmas:
            if not vma_is_pfnmap(v):
                self._zap(max(start, v.start), min(end, v.end))
        kept = [v for v in self.vmas if v.end <= start or v.start >= end]
        pieces = [_clip(vmas[0], vmas[0].start, start)] if vmas[0].start < start else []
        pieces += [_clip(vmas[-1], end, vmas[-1].end)] if vmas[-1].end > end else []
        self.vmas = sorted(kept + pieces, key=lambda v: v.start)
        self._invalidate_end(start, end, "munmap")
        return 0

    def madvise_dontneed(self, start: int, length: int) -> int:
        """Drop the pages of [start, start + length) but keep the VMAs; return 0 or -errno.

        VMA by VMA: a VM_PFNMAP VMA is -EINVAL (the walk stops there); a hugetlb VMA needs
        a start aligned to its huge page size (-EINVAL) and its end is rounded DOWN to it
        (nothing if that leaves nothing); each range is invalidated around its zap. A hole
        in the range is -ENOMEM, reported after the VMAs are done.

        Kernel: madvise_walk_vmas (unmapped_error), madvise_dontneed_free with
        madvise_dontneed_free_valid_vma (VM_PFNMAP forbidden; hugetlb: start aligned,
        ALIGN_DOWN of the end), madvise_dontneed_single_vma -> zap_page_range_single.
        """
        end = start + _page_align(length)
        if start & (PAGE_SIZE - 1) or length < 0 or end > ADDRESS_LIMIT:
            return -EINVAL
        if end == start:
            return 0
        unmapped, cursor = 0, start
        for v in self.vmas_intersecting(start, end):
            if cursor < v.start:
                unmapped = -ENOMEM
            lo, hi = max(cursor, v.start), min(end, v.end)
            if vma_is_pfnmap(v):
                return -EINVAL
            if is_vm_hugetlb_page(v):
                hsize = 1 << v.hugetlb_shift
                if lo & (hsize - 1):
                    return -EINVAL
                hi &= ~(hsize - 1)
            if lo < hi:
                self._invalidate(lo, hi, "madvise")
                self._zap(lo, hi)
                self._invalidate_end(lo, hi, "madvise")
            cursor = v.end
        return -ENOMEM if cursor < end else unmapped

    def _mappers(self, folio: Folio) -> list[tuple[int, int]]:
        """Return, per VMA the folio's HVA range meets, the part of that range it covers."""
        lo, hi = folio.hva, folio.hva + folio.size
        return [(max(lo, v.start), min(hi, v.end)) for v in self.vmas_intersecting(lo, hi)]

    def _folio_at(self, hva: int) -> Folio | None:
        """Return the folio mapped at hva (a transient object for an unpinned 4K page)."""
        found = self._lookup(hva & ~(PAGE_SIZE - 1))
        if found is None:
            return None
        pa, folio = found
        if self.is_zero_pfn(pa) or self.is_huge_zero_pfn(pa):
            return None  # vm_normal_page: the zero pages are no folios to move or poison
        if folio is None:
            folio = self.pinned.get(pa) or Folio(pa, PAGE_SIZE, hva=hva & ~(PAGE_SIZE - 1),
                                                 hwpoison=pa in self.poisoned, mapped=1)
        return folio

    def migrate(self, hva: int) -> bool:
        """Move the folio behind hva to a new PA, copying it; False if pinned or absent.

        Migration needs the folio's only reference to be the mapping's; a poisoned page
        does not move. Each VMA mapping part of the folio is invalidated over the folio's
        extent in it, then every page that mapped the old folio maps the new one.

        Kernel: migrate_folio_unmap -> try_to_migrate -> try_to_migrate_one (range
        [vma_address, vma_address_end)), remove_migration_ptes.
        """
        vma = self.vma_lookup(hva)
        folio = None if vma is None or vma_is_pfnmap(vma) else self._folio_at(hva)
        if folio is None or folio.refcount != 1 or folio.hwpoison:
            return False
        for lo, hi in self._mappers(folio):
            self._notify(lo, hi, "migration")
        new_pa = self._alloc(folio.size)
        for off in range(0, folio.size, PAGE_SIZE):
            data = self.mem.read_bytes(folio.pa + off, PAGE_SIZE)
            if data != ZERO_PAGE:
                self.mem.write_bytes(new_pa + off, data)
        self._remap(folio, new_pa)
        return True

    def _remap(self, folio: Folio, new_pa: int) -> None:
        """Point every mapping of folio at new_pa and retire the old PAs."""
        for table in (self.pud, self.pmd):
            if table.get(folio.hva) is folio:
                table[folio.hva] = new = Folio(new_pa, folio.size, transparent=folio.transparent,
                                               hva=folio.hva, mapped=folio.mapped)
                self.large.pop(folio.pa)
                self.large[new_pa] = new
                self._free(folio.pa, folio.size)
                return
        base = folio.hva & ~(PMD_SIZE - 1)
        ptes = self.ptes[base]
        old_pfn, new_pfn = folio.pa >> PAGE_SHIFT, new_pa >> PAGE_SHIFT
        for i in range(PTRS_PER_PTE) if folio.size == PMD_SIZE else \
                [(folio.hva - base) >> PAGE_SHIFT]:
            if ptes[i] and 0 <= ptes[i] - old_pfn < folio.size >> PAGE_SHIFT:
                ptes[i] = new_pfn + ptes[i] - old_pfn
        if folio.size == PMD_SIZE:
            self.large.pop(folio.pa)
            self.large[new_pa] = Folio(new_pa, folio.size, transparent=True, hva=folio.hva,
                                       mapped=folio.mapped)
        self._free(folio.pa, folio.size)

    def hwpoison(self, hva: int) -> int:
        """Poison the page behind hva as MADV_HWPOISON does; return 0 or -errno.

        The page is faulted in first (get_user_pages; -EFAULT for VM_PFNMAP). A hugetlb
        folio is poisoned whole; a THP is split into 4K folios first (-EBUSY, nothing
        done, if it is pinned), then only the page is poisoned. Each unmapping is
        invalidated: the THP's extent for the split, the poisoned folio's extent after.

        Kernel: madvise_inject_error -> memory_failure (try_to_split_thp_page,
        hwpoison_user_mappings -> try_to_unmap).
        """
        vma = self._vma_or_raise(hva)
        if vma_is_pfnmap(vma):
            return -EFAULT
        page = hva & ~(PAGE_SIZE - 1)
        pa, folio = self._touch(vma, page)
        if folio is not None and folio.transparent:
            if folio.refcount != 1:
                return -EBUSY
            self.split_huge_page(folio)
            folio = None
        if folio is None:
            self._notify(page, page + PAGE_SIZE, "hwpoison")
            self.poisoned.add(pa)
            return 0
        for lo, hi in self._mappers(folio):
            self._notify(lo, hi, "hwpoison")
        folio.hwpoison = True
        return 0

    def split_huge_page(self, folio: Folio) -> None:
        """Split a THP into 4K folios at the same PAs, invalidating its extent first.

        Kernel: split_huge_page -> unmap_folio (TTU_SPLIT_HUGE_PMD), remap_page.
        """
        for lo, hi in self._mappers(folio):
            self._notify(lo, hi, "split_huge_page")
        base = folio.hva
        if self.pmd.get(base) is folio:
            del self.pmd[base]
            pfn = folio.pa >> PAGE_SHIFT
            self.ptes[base] = array("I", range(pfn, pfn + PTRS_PER_PTE))
        else:
            ptes = self.ptes[base]
            mapped = {p << PAGE_SHIFT for p in ptes if p}
            for pa in range(folio.pa, folio.pa + folio.size, PAGE_SIZE):
                if pa not in mapped:
                    self._free(pa, PAGE_SIZE)
        del self.large[folio.pa]

    def _vma_or_raise(self, hva: int) -> Vma:
        vma = self.vma_lookup(hva)
        if vma is None:
            raise ValueError(f"no VMA at HVA {hva:#x}")
        return vma

    def mapped_pages(self) -> Iterator[tuple[int, int]]:
        """Yield (HVA, PA) for every populated 4K page (VM_PFNMAP excluded), in HVA order."""
        entries: list[tuple[int, int, int]] = []
        for table in (self.pud, self.pmd):
            entries += [(b, f.pa, f.size) for b, f in table.items()]
        for base in sorted(self.ptes):
            entries += [(base + (i << PAGE_SHIFT), pfn << PAGE_SHIFT, PAGE_SIZE)
                        for i, pfn in enumerate(self.ptes[base]) if pfn]
        for hva, pa, size in sorted(entries):
            for off in range(0, size, PAGE_SIZE):
                yield hva + off, pa + off


def _clip(v: Vma, start: int, end: int) -> Vma:
    return replace(v, start=start, end=end, pfn_base=v.pfn_base + (start - v.start)
                   if v.kind is VmaKind.PFNMAP else v.pfn_base)
