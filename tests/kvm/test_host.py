"""The host model: VMAs, folios and the MMU notifier ranges of munmap / madvise / migrate /
hwpoison, as mm/ does them (split_huge_pmd, hugetlb's refusals, madvise's walk)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from s2mmu.arch.memory import PhysMem
from s2mmu.kvm.errno import EBUSY, EFAULT
from s2mmu.kvm.host import (
    PAGE_SIZE,
    PMD_SIZE,
    PUD_SIZE,
    HostFeatures,
    HostMm,
    Pfn,
    Vma,
    VmaKind,
)
from s2mmu.kvm.invariants import check_invariants
from s2mmu.kvm.memslot import KVM_MEM_LOG_DIRTY_PAGES
from s2mmu.kvm.vm import Kvm, KvmVcpu, kvm_set_memory_region
from s2mmu.pgtable.errno import EINVAL, ENOMEM
from tests.kvm.helpers import FWB_DIC, new_vm, touch

HVA = 0x7F00_0000_0000
BAR_PA = 0x6000_0000_0000


def host_with(*vmas: Vma, pa_bits: int = 48) -> tuple[HostMm, list[tuple[int, int, str]]]:
    """Return a host with the VMAs mapped and the list its notifier appends to."""
    host = HostMm(PhysMem(), HostFeatures(fwb=True, dic=True, pa_bits=pa_bits))
    calls: list[tuple[int, int, str]] = []
    host.notifiers.append((lambda s, e, r: calls.append((s, e, r)), lambda s, e, r: None))
    for v in vmas:
        host.mmap(v)
    return host, calls


def thp(size: int = PMD_SIZE, start: int = HVA) -> Vma:
    return Vma(start, start + size, VmaKind.ANON, thp=True)


def hugetlb(size: int, shift: int = 21, start: int = HVA) -> Vma:
    return Vma(start, start + size, VmaKind.HUGETLB, hugetlb_shift=shift)


# -- the reproducers --------------------------------------------------------------------


def test_partial_munmap_of_a_thp_splits_the_pmd_and_keeps_the_rest_at_the_same_pas() -> None:
    host, calls = host_with(thp())
    base = host.populate(HVA)
    assert host.user_mapping_size(HVA) == PMD_SIZE
    assert host.munmap(HVA + 0x1000, PAGE_SIZE) == 0
    # split_huge_pmd notifies the whole PMD, then unmap_vmas the 4K it unmaps
    assert calls == [(HVA, HVA + PMD_SIZE, "split_huge_pmd"),
                     (HVA + 0x1000, HVA + 0x2000, "munmap")]
    assert host.hva_to_pa(HVA) == base
    assert host.hva_to_pa(HVA + 0x1000) is None
    assert host.hva_to_pa(HVA + 0x2000) == base + 0x2000
    assert host.user_mapping_size(HVA) == PAGE_SIZE
    assert [(v.start, v.end) for v in host.vmas] == [(HVA, HVA + 0x1000),
                                                     (HVA + 0x2000, HVA + PMD_SIZE)]
    folio = host.large[base]
    assert folio.mapped == 511 and folio.refcount == 1


def test_first_mismatch_finds_a_hole_in_the_middle_of_a_2m_range() -> None:
    host, _ = host_with(thp(), Vma(HVA + (1 << 30), HVA + (1 << 30) + PMD_SIZE, VmaKind.PFNMAP,
                                   pfn_base=BAR_PA))
    base = host.populate(HVA)
    assert host.first_mismatch(HVA, PMD_SIZE, base) is None
    host.munmap(HVA + 0x5000, PAGE_SIZE)
    assert host.first_mismatch(HVA, PMD_SIZE, base) == 0x5000
    assert host.first_mismatch(HVA, 0x5000, base) is None
    assert host.first_mismatch(HVA + 0x6000, 0x2000, base + 0x7000) == 0
    assert host.first_mismatch(HVA + (1 << 30), PMD_SIZE, BAR_PA) is None
    assert host.first_mismatch(HVA + (1 << 30), PMD_SIZE, BAR_PA + PAGE_SIZE) == 0


def test_a_split_thp_is_freed_when_its_last_page_goes() -> None:
    host, _ = host_with(thp())
    base = host.populate(HVA)
    host.munmap(HVA + 0x1000, PAGE_SIZE)
    host.madvise_dontneed(HVA, PMD_SIZE)
    assert host.large == {} and host.ptes == {} and host.freed_bytes == PMD_SIZE
    assert host.populate(HVA) != base  # a fresh folio, never a reused PA


def test_partial_madvise_of_a_thp_splits_it_inside_the_madvise_invalidation() -> None:
    host, calls = host_with(thp())
    base = host.populate(HVA)
    assert host.madvise_dontneed(HVA + 0x3000, 0x2000) == 0
    assert calls == [(HVA + 0x3000, HVA + 0x5000, "madvise"),
                     (HVA, HVA + PMD_SIZE, "split_huge_pmd")]
    assert host.hva_to_pa(HVA + 0x3000) is None and host.hva_to_pa(HVA + 0x4000) is None
    assert host.hva_to_pa(HVA + 0x5000) == base + 0x5000
    assert host.vmas == [thp()]


def test_munmap_of_hugetlb_off_its_page_size_is_einval_and_unmaps_nothing() -> None:
    host, calls = host_with(hugetlb(4 << 20))
    base = host.populate(HVA)
    assert host.munmap(HVA + 0x1000, PAGE_SIZE) == -EINVAL
    assert host.munmap(HVA, 0x1000) == -EINVAL  # the end would split the VMA off 2M
    assert calls == [] and host.hva_to_pa(HVA + 0x1000) == base + 0x1000
    assert host.munmap(HVA, PMD_SIZE) == 0
    assert host.hva_to_pa(HVA) is None and [(v.start, v.end) for v in host.vmas] == [
        (HVA + PMD_SIZE, HVA + (4 << 20))]


def test_munmap_past_the_end_of_a_hugetlb_vma_needs_no_split() -> None:
    host, _ = host_with(hugetlb(PMD_SIZE))
    host.populate(HVA)
    assert host.munmap(HVA, PMD_SIZE + 0x1000) == 0 and host.vmas == []


def test_madvise_of_hugetlb_needs_an_aligned_start_and_rounds_the_end_down() -> None:
    host, calls = host_with(hugetlb(4 << 20))
    base = host.populate(HVA)
    host.populate(HVA + PMD_SIZE)
    assert host.madvise_dontneed(HVA + 0x1000, PAGE_SIZE) == -EINVAL
    assert host.madvise_dontneed(HVA, PMD_SIZE - PAGE_SIZE) == 0  # rounds down to nothing
    assert calls == [] and host.hva_to_pa(HVA) == base
    assert host.madvise_dontneed(HVA, PMD_SIZE + 0x1000) == 0
    assert calls == [(HVA, HVA + PMD_SIZE, "madvise")]
    assert host.hva_to_pa(HVA) is None and host.hva_to_pa(HVA + PMD_SIZE) is not None


def test_madvise_dontneed_of_pfnmap_is_einval() -> None:
    bar = Vma(HVA, HVA + PMD_SIZE, VmaKind.PFNMAP, pfn_base=BAR_PA)
    host, calls = host_with(bar)
    assert host.madvise_dontneed(HVA, PAGE_SIZE) == -EINVAL and calls == []
    assert host.hva_to_pa(HVA) == BAR_PA


def test_madvise_over_a_hole_drops_what_is_mapped_and_says_enomem() -> None:
    host, _ = host_with(Vma(HVA, HVA + 0x2000, VmaKind.ANON),
                        Vma(HVA + 0x3000, HVA + 0x4000, VmaKind.ANON))
    for hva in (HVA, HVA + 0x1000, HVA + 0x3000):
        host.populate(hva)
    assert host.madvise_dontneed(HVA, 0x4000) == -ENOMEM
    assert all(host.hva_to_pa(h) is None for h in (HVA, HVA + 0x1000, HVA + 0x3000))
    assert host.madvise_dontneed(HVA + 0x10000, PAGE_SIZE) == -ENOMEM


@pytest.mark.parametrize(("start", "length"), [(HVA + 1, PAGE_SIZE), (HVA, 0),
                                               (HVA, 1 << 64)])
def test_munmap_refuses_what_do_vmi_munmap_refuses(start: int, length: int) -> None:
    host, calls = host_with(thp())
    host.populate(HVA)
    assert host.munmap(start, length) == -EINVAL and calls == []


def test_munmap_of_nothing_is_zero_without_notification() -> None:
    host, calls = host_with(thp())
    assert host.munmap(HVA + (1 << 30), PAGE_SIZE) == 0 and calls == []


def test_munmap_of_an_exabyte_costs_what_is_mapped() -> None:
    # a per-page loop would never end: 2^60 bytes are 2^48 pages
    host, calls = host_with(Vma(HVA, HVA + (1 << 40), VmaKind.ANON, thp=True))
    for i in range(4):
        host.populate(HVA + i * (1 << 38) + 0x5000)
    assert host.munmap(HVA, 1 << 60) == 0
    assert host.vmas == [] and host.large == {} and calls == [(HVA, HVA + (1 << 60), "munmap")]


def test_pfnmap_beyond_the_host_pa_size_is_refused() -> None:
    host, _ = host_with(pa_bits=40)
    with pytest.raises(ValueError, match=r"^VM_PFNMAP VMA 0x7f0000000000-0x7f0000200000 maps PA "
                       r"0xffffe01000-0x10000001000, beyond the host's usable 40-bit PA size "
                       r"\(0x10000000000\)$"):
        host.mmap(Vma(HVA, HVA + PMD_SIZE, VmaKind.PFNMAP, pfn_base=(1 << 40) - PMD_SIZE
                      + PAGE_SIZE))
    host.mmap(Vma(HVA, HVA + PMD_SIZE, VmaKind.PFNMAP, pfn_base=(1 << 40) - PMD_SIZE))


def test_pfnmap_above_2_48_on_a_52_bit_host_is_refused_without_lpa2() -> None:
    host, _ = host_with(pa_bits=52)
    with pytest.raises(ValueError, match=r"^VM_PFNMAP VMA 0x7f0000000000-0x7f0000001000 maps PA "
                       r"0x1000000000000-0x1000000001000, beyond the host's usable 48-bit PA "
                       r"size \(0x1000000000000\)$"):
        host.mmap(Vma(HVA, HVA + PAGE_SIZE, VmaKind.PFNMAP, pfn_base=1 << 48))
    host.mmap(Vma(HVA, HVA + PAGE_SIZE, VmaKind.PFNMAP, pfn_base=(1 << 48) - PAGE_SIZE))


def test_hwpoison_of_a_thp_splits_it_and_poisons_one_page() -> None:
    host, calls = host_with(thp())
    base = host.populate(HVA)
    assert host.hwpoison(HVA + 0x3000) == 0
    assert calls == [(HVA, HVA + PMD_SIZE, "split_huge_page"),
                     (HVA + 0x3000, HVA + 0x4000, "hwpoison")]
    assert host.get_user_page(HVA + 0x3000, False).name == "KVM_PFN_ERR_HWPOISON"  # type: ignore[union-attr]
    pfn = host.get_user_page(HVA + 0x4000, False)
    assert isinstance(pfn, Pfn) and pfn.pa == base + 0x4000 and pfn.folio is not None
    assert pfn.folio.size == PAGE_SIZE and host.large == {}


def test_hwpoison_of_a_pinned_thp_is_ebusy_and_of_pfnmap_efault() -> None:
    host, calls = host_with(thp(), Vma(HVA + (1 << 30), HVA + (1 << 30) + PMD_SIZE,
                                       VmaKind.PFNMAP, pfn_base=BAR_PA))
    pin = host.get_user_page(HVA, False)
    assert host.hwpoison(HVA) == -EBUSY and calls == []
    assert host.hwpoison(HVA + (1 << 30)) == -EFAULT
    assert isinstance(pin, Pfn)
    host.put_page(pin)


def test_hwpoison_of_hugetlb_poisons_the_whole_folio() -> None:
    host, calls = host_with(hugetlb(PMD_SIZE))
    assert host.hwpoison(HVA + 0x5000) == 0
    assert calls == [(HVA, HVA + PMD_SIZE, "hwpoison")]
    assert host.get_user_page(HVA, False).name == "KVM_PFN_ERR_HWPOISON"  # type: ignore[union-attr]


def test_migrate_of_a_split_thp_moves_every_mapped_page_together() -> None:
    host, calls = host_with(thp())
    host.populate(HVA)
    host.mem.write64(host.hva_to_pa(HVA + 0x8000) or 0, 0x1234)
    host.munmap(HVA + 0x1000, PAGE_SIZE)
    calls.clear()
    assert host.migrate(HVA + 0x8000)
    new = host.hva_to_pa(HVA) or 0
    assert new % PMD_SIZE == 0 and host.hva_to_pa(HVA + 0x8000) == new + 0x8000
    assert host.hva_to_pa(HVA + 0x1000) is None
    assert host.mem.read64(new + 0x8000) == 0x1234
    assert calls == [(HVA, HVA + 0x1000, "migration"), (HVA + 0x2000, HVA + PMD_SIZE, "migration")]


def test_a_pinned_page_does_not_migrate_and_its_pin_outlives_the_unmap() -> None:
    host, _ = host_with(Vma(HVA, HVA + PMD_SIZE, VmaKind.ANON))
    pin = host.get_user_page(HVA, True)
    assert isinstance(pin, Pfn) and not host.migrate(HVA)
    host.munmap(HVA, PMD_SIZE)
    assert pin.folio is not None and pin.folio.refcount == 1 and host.folios  # still pinned
    host.put_page(pin)
    assert host.folios == {} and host.freed_bytes == PAGE_SIZE


def test_bookkeeping_stays_bounded_over_many_cycles() -> None:
    host, _ = host_with(thp(4 << 20), Vma(HVA + (1 << 30), HVA + (1 << 30) + PMD_SIZE,
                                          VmaKind.ANON))
    for _ in range(50):
        for hva in (HVA, HVA + PMD_SIZE + 0x1000, HVA + (1 << 30)):
            host.populate(hva)
        host.hwpoison(HVA + (1 << 30))
        host.madvise_dontneed(HVA, 1 << 31)
    assert (host.large, host.pinned, host.poisoned, host.ptes, host.pmd) == ({}, {}, set(), {}, {})


# -- property: the host against a per-page reference ---------------------------------------

KINDS = ("anon", "thp", "hugetlb2m", "file", "pfnmap")
REGION = 1 << 31  # each VMA in its own 2G region, so holes lie between them


@dataclass
class Ref:
    """The kernel's rules, page by page: hva page -> (pa, folio pa, folio size)."""

    vmas: list[Vma]
    pages: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    poisoned: set[int] = field(default_factory=set)  # folio PAs

    def vma(self, hva: int) -> Vma | None:
        return next((v for v in self.vmas if v.start <= hva < v.end), None)


def vma_of(kind: str, index: int, npages: int, offset: int) -> Vma:
    start = HVA + index * REGION + offset * PAGE_SIZE
    if kind == "hugetlb2m":
        start = HVA + index * REGION
        return Vma(start, start + (npages % 3 + 1) * PMD_SIZE, VmaKind.HUGETLB, hugetlb_shift=21)
    if kind == "hugetlb1g":
        start = HVA + index * REGION
        return Vma(start, start + PUD_SIZE, VmaKind.HUGETLB, hugetlb_shift=30)
    if kind == "pfnmap":
        return Vma(start, start + npages * PAGE_SIZE, VmaKind.PFNMAP,
                   pfn_base=BAR_PA + index * REGION)
    return Vma(start, start + npages * PAGE_SIZE,
               VmaKind.FILE if kind == "file" else VmaKind.ANON, thp=kind == "thp")


def ref_touch(host: HostMm, ref: Ref, hva: int) -> None:
    """Fault a page in on both sides; check the folio the host chose is the kernel's."""
    vma = ref.vma(hva)
    page = hva & ~(PAGE_SIZE - 1)
    if vma is None or vma.kind is VmaKind.PFNMAP or page in ref.pages:
        if vma is not None and vma.kind is not VmaKind.PFNMAP:
            host.populate(hva)
        return
    pa = host.populate(hva) & ~(PAGE_SIZE - 1)
    size = PAGE_SIZE
    if vma.kind is VmaKind.HUGETLB:
        size = 1 << vma.hugetlb_shift
    elif vma.thp:
        b = page & ~(PMD_SIZE - 1)
        if b >= vma.start and b + PMD_SIZE <= vma.end and not any(
                b <= p < b + PMD_SIZE for p in ref.pages):
            size = PMD_SIZE
    base, fpa = page & ~(size - 1), pa - (page & (size - 1))
    assert fpa % size == 0
    for off in range(0, size, PAGE_SIZE):
        ref.pages[base + off] = (fpa + off, fpa, size)


def ref_unmap(ref: Ref, lo: int, hi: int) -> None:
    for p in [p for p in ref.pages if lo <= p < hi]:
        del ref.pages[p]


def ref_munmap(ref: Ref, start: int, length: int) -> int:
    end = start + (length + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE
    if start % PAGE_SIZE or length <= 0 or end > 1 << 64:
        return -EINVAL
    hit = [v for v in ref.vmas if v.start < end and start < v.end]
    for v, cut in ((v, a) for v in hit for a in (start, end) if v.start < a < v.end):
        if v.kind is VmaKind.HUGETLB and cut % (1 << v.hugetlb_shift):
            return -EINVAL
    ref_unmap(ref, start, end)
    out = []
    for v in ref.vmas:
        if v.end <= start or v.start >= end:
            out.append(v)
            continue
        for a, b in ((v.start, min(v.end, start)), (max(v.start, end), v.end)):
            if a < b:
                out.append(Vma(a, b, v.kind, thp=v.thp, hugetlb_shift=v.hugetlb_shift,
                               pfn_base=v.pfn_base + (a - v.start)))
    ref.vmas = sorted(out, key=lambda v: v.start)
    return 0


def ref_madvise(ref: Ref, start: int, length: int) -> int:
    end = start + (length + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE
    if start % PAGE_SIZE or end > 1 << 64:
        return -EINVAL
    if end == start:
        return 0
    err, cursor = 0, start
    for v in sorted((v for v in ref.vmas if v.start < end and start < v.end),
                    key=lambda v: v.start):
        if cursor < v.start:
            err = -ENOMEM
        lo, hi = max(cursor, v.start), min(end, v.end)
        if v.kind is VmaKind.PFNMAP:
            return -EINVAL
        if v.kind is VmaKind.HUGETLB:
            h = 1 << v.hugetlb_shift
            if lo % h:
                return -EINVAL
            hi -= hi % h
        ref_unmap(ref, lo, hi)
        cursor = v.end
    return -ENOMEM if cursor < end else err


def ref_migrate(host: HostMm, ref: Ref, hva: int) -> None:
    page = hva & ~(PAGE_SIZE - 1)
    vma = ref.vma(hva)
    moved = host.migrate(hva)
    if vma is None or vma.kind is VmaKind.PFNMAP or page not in ref.pages:
        assert not moved
        return
    _, fpa, size = ref.pages[page]
    assert moved == (fpa not in ref.poisoned)
    if not moved:
        return
    new = (host.hva_to_pa(page) or 0) - (ref.pages[page][0] - fpa)
    assert new % size == 0 and new != fpa
    for p, (pa, f, s) in list(ref.pages.items()):
        if f == fpa:
            ref.pages[p] = (new + pa - fpa, new, s)


def ref_hwpoison(host: HostMm, ref: Ref, hva: int) -> None:
    vma = ref.vma(hva)
    if vma is None:
        return
    if vma.kind is VmaKind.PFNMAP:
        assert host.hwpoison(hva) == -EFAULT
        return
    ref_touch(host, ref, hva)
    assert host.hwpoison(hva) == 0
    pa, fpa, size = ref.pages[hva & ~(PAGE_SIZE - 1)]
    if vma.kind is VmaKind.ANON and size == PMD_SIZE:  # split_huge_page: 4K folios now
        for p, (q, f, _) in list(ref.pages.items()):
            if f == fpa:
                ref.pages[p] = (q, q, PAGE_SIZE)
        fpa = pa
    ref.poisoned.add(fpa)


def host_pages(host: HostMm) -> dict[int, int]:
    return dict(host.mapped_pages())


pages = st.integers(-3, 3).map(lambda n: n * PAGE_SIZE)
addr = st.one_of(st.integers(-16, 1600).map(lambda n: n * PAGE_SIZE),  # anywhere near the VMA
                 st.builds(lambda n, d: n * PMD_SIZE + d, st.integers(-1, 3), pages))  # 2M edges
length = st.one_of(st.integers(0, 1536).map(lambda n: n * PAGE_SIZE),
                   st.builds(lambda n, d: max(n * PMD_SIZE + d, 0), st.integers(1, 3), pages),
                   st.sampled_from([1, PAGE_SIZE + 1, 1 << 40, (1 << 63)]))
op = st.tuples(st.sampled_from(["touch", "touch", "munmap", "madvise", "migrate", "hwpoison"]),
               st.integers(0, 3), addr, length)


def run_ops(host: HostMm, calls: list[tuple[int, int, str]], ref: Ref,
            ops: list[tuple[str, int, int, int]]) -> None:
    """Play ops on host and reference; compare after each and check notifier coverage."""
    starts = [v.start for v in ref.vmas]
    for kind, index, off, size in ops:
        hva = starts[index % len(starts)] + off
        before = host_pages(host)
        calls.clear()
        if kind == "touch":
            for n in range(min(size // PAGE_SIZE, 16) + 1):
                ref_touch(host, ref, hva + n * PAGE_SIZE * 37)
        elif kind == "munmap":
            assert host.munmap(hva, size) == ref_munmap(ref, hva, size)
        elif kind == "madvise":
            assert host.madvise_dontneed(hva, size) == ref_madvise(ref, hva, size)
        elif kind == "migrate":
            ref_migrate(host, ref, hva)
        else:
            ref_hwpoison(host, ref, hva)
        after = host_pages(host)
        assert after == {p: v[0] for p, v in ref.pages.items()}
        assert [(v.start, v.end) for v in host.vmas] == [(v.start, v.end) for v in ref.vmas]
        changed = [p for p, pa in before.items() if after.get(p) != pa]
        assert all(any(s <= p < e for s, e, _ in calls) for p in changed), (kind, changed, calls)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(KINDS),
                          st.one_of(st.integers(1, 1100), st.sampled_from([512, 513, 1024, 1536])),
                          st.sampled_from([0, 0, 1, 511, 600])),
                min_size=1, max_size=4), st.lists(op, max_size=14))
def test_the_host_page_map_follows_the_kernels_rules_page_by_page(
        specs: list[tuple[str, int, int]], ops: list[tuple[str, int, int, int]]) -> None:
    vmas = [vma_of(k, i, n, o) for i, (k, n, o) in enumerate(specs)]
    host, calls = host_with(*vmas)
    run_ops(host, calls, Ref(list(vmas)), ops)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["touch", "munmap", "madvise", "migrate", "hwpoison"]),
                          st.just(0), st.sampled_from([0, PAGE_SIZE, PMD_SIZE, PUD_SIZE - PAGE_SIZE,
                                                       PUD_SIZE, -PAGE_SIZE]),
                          st.sampled_from([PAGE_SIZE, PMD_SIZE, PUD_SIZE, 2 * PUD_SIZE])),
                max_size=6))
def test_1g_hugetlb_follows_the_same_rules(ops: list[tuple[str, int, int, int]]) -> None:
    vma = vma_of("hugetlb1g", 0, 0, 0)
    host, calls = host_with(vma)
    run_ops(host, calls, Ref([vma]), ops)


# -- property: KVM on top keeps its invariants ------------------------------------------------


def guest_access(kvm: Kvm, vcpu: KvmVcpu, ipa: int, kind: str) -> None:
    """Access ipa as the guest until it completes or KVM answers with no mapping."""
    for _ in range(4):
        if touch(kvm, vcpu, ipa, kind) is None:
            return


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(specs=[("thp", 512, 0, True)],  # the reproducer: 4K munmap inside a logged THP
         ops=[("read", 0, 0, 0), ("munmap", 0, PAGE_SIZE, PAGE_SIZE)])
@given(st.lists(st.tuples(st.sampled_from(KINDS),
                          st.one_of(st.integers(1, 1100), st.sampled_from([512, 513, 1024])),
                          st.sampled_from([0, 0, 1, 511]), st.booleans()),
                min_size=1, max_size=3),
       st.lists(st.tuples(st.sampled_from(["read", "write", "read", "write", "munmap", "madvise",
                                           "migrate", "hwpoison"]),
                          st.integers(0, 2), addr, length), max_size=12))
def test_kvm_invariants_hold_after_every_host_event(
        specs: list[tuple[str, int, int, bool]], ops: list[tuple[str, int, int, int]]) -> None:
    kvm, vcpu = new_vm(FWB_DIC)
    slots = []
    for i, (k, n, o, logging) in enumerate(specs):
        vma = vma_of(k, i, n, o)
        kvm.host.mmap(vma)
        flags = KVM_MEM_LOG_DIRTY_PAGES if logging and k != "pfnmap" else 0
        ipa = (1 << 32) + i * REGION + (vma.start & (PMD_SIZE - 1))
        kvm_set_memory_region(kvm, i, flags, ipa, vma.end - vma.start, vma.start)
        slots.append((ipa, vma.start, vma.end - vma.start))
    for kind, index, off, size in ops:
        ipa, hva, slot_size = slots[index % len(slots)]
        if kind in ("read", "write"):
            guest_access(kvm, vcpu, ipa + off % slot_size, kind)
        elif kind == "munmap":
            kvm.host.munmap(hva + off, size)
        elif kind == "madvise":
            kvm.host.madvise_dontneed(hva + off, size)
        elif kind == "migrate":
            kvm.host.migrate(hva + off)
        elif kvm.host.vma_lookup(hva + off) is not None:
            kvm.host.hwpoison(hva + off)
        assert check_invariants(kvm) == [], (kind, hex(off), size)
        assert kvm.mmu_invalidate_in_progress == 0


# -- the shared zero page -----------------------------------------------------------------


def test_a_read_of_untouched_anon_memory_pins_the_zero_page_read_only() -> None:
    host, _ = host_with(Vma(HVA, HVA + PMD_SIZE, VmaKind.ANON))
    a, b = host.get_user_page(HVA, write=False), host.get_user_page(HVA + 0x5123, write=False)
    assert isinstance(a, Pfn) and isinstance(b, Pfn)
    assert not a.writable and not b.writable
    assert host.zero is not None and a.pa == host.zero.pa and b.pa == host.zero.pa + 0x123
    assert host.hva_to_pa(HVA + 0x5000) == host.zero.pa
    host.put_page(a)
    host.put_page(b)
    assert host.pinned == {} and host.freed_bytes == 0


def test_a_write_copies_the_zero_page_inside_an_invalidation_of_that_page() -> None:
    host, calls = host_with(Vma(HVA, HVA + PMD_SIZE, VmaKind.ANON))
    zero = host.get_user_page(HVA + PAGE_SIZE, write=False)
    assert isinstance(zero, Pfn)
    new = host.get_user_page(HVA + PAGE_SIZE, write=True)
    assert isinstance(new, Pfn) and new.writable and new.pa != zero.pa
    assert calls == [(HVA + PAGE_SIZE, HVA + 2 * PAGE_SIZE, "wp_page_copy")]
    assert host.hva_to_pa(HVA + PAGE_SIZE) == new.pa
    assert host.zero is not None and host.is_zero_pfn(zero.pa)


def test_the_zero_page_survives_munmap_and_does_not_migrate() -> None:
    host, _ = host_with(Vma(HVA, HVA + PMD_SIZE, VmaKind.ANON))
    host.get_user_page(HVA, write=False)
    assert not host.migrate(HVA)
    assert host.munmap(HVA, PMD_SIZE) == 0
    assert host.freed_bytes == 0 and host.zero is not None


@pytest.mark.parametrize("vma", [Vma(HVA, HVA + PMD_SIZE, VmaKind.FILE), thp()],
                         ids=["file", "thp"])
def test_only_a_small_anonymous_page_is_the_zero_page(vma: Vma) -> None:
    host, _ = host_with(vma)
    pfn = host.get_user_page(HVA, write=False)
    assert isinstance(pfn, Pfn) and pfn.writable and host.zero is None


def test_a_read_maps_a_private_hugetlb_page_read_only_and_a_write_makes_it_writable() -> None:
    """hugetlb_no_page maps a new page writable only for VM_SHARED; a private mapping's
    write goes through hugetlb_wp, which reuses the page (anonymous, mapped once): same PA,
    no MMU-notifier call. After MADV_DONTNEED the next read is read-only again (real 6.1
    maps the page read-only at stage 2 then)."""
    host, calls = host_with(hugetlb(2 * PMD_SIZE))
    ro = host.get_user_page(HVA + PAGE_SIZE, write=False)
    assert isinstance(ro, Pfn) and not ro.writable and host.zero is None
    again = host.get_user_page(HVA + 2 * PAGE_SIZE, write=False)
    assert isinstance(again, Pfn) and not again.writable
    rw = host.get_user_page(HVA, write=True)
    assert isinstance(rw, Pfn) and rw.writable and rw.pa == ro.pa - PAGE_SIZE
    assert calls == []
    later = host.get_user_page(HVA + PAGE_SIZE, write=False)
    assert isinstance(later, Pfn) and later.writable
    other = host.get_user_page(HVA + PMD_SIZE, write=True)
    assert isinstance(other, Pfn) and other.writable
    for pfn in (ro, again, rw, later, other):
        host.put_page(pfn)
    assert host.madvise_dontneed(HVA, PMD_SIZE) == 0
    back = host.get_user_page(HVA, write=False)
    assert isinstance(back, Pfn) and not back.writable


def huge_zero_host() -> tuple[HostMm, list[tuple[int, int, str]]]:
    host, calls = host_with(thp(2 * PMD_SIZE))
    host.use_huge_zero_page = True
    return host, calls


def test_a_thp_read_maps_the_huge_zero_page_read_only_at_pmd_size() -> None:
    """do_huge_pmd_anonymous_page: a read with use_zero_page maps the huge zero page; both
    PMD ranges share it, KVM sees a 2M user mapping of it and may not write it."""
    host, calls = huge_zero_host()
    a = host.get_user_page(HVA + PAGE_SIZE, write=False)
    b = host.get_user_page(HVA + PMD_SIZE, write=False)
    assert isinstance(a, Pfn) and isinstance(b, Pfn) and not a.writable and not b.writable
    assert host.is_huge_zero_pfn(a.pa) and b.pa == a.pa - PAGE_SIZE
    assert host.user_mapping_size(HVA) == PMD_SIZE and calls == []
    assert not host.migrate(HVA)
    assert host.munmap(HVA, 2 * PMD_SIZE) == 0 and host.freed_bytes == 0


def test_a_write_to_the_huge_zero_page_splits_it_into_zero_ptes_and_copies_one() -> None:
    """do_huge_pmd_wp_page falls back on a huge zero PMD: __split_huge_pmd invalidates the
    whole PMD range and leaves 512 PTEs of the zero page, then do_wp_page copies the one
    written (wp_page_copy's own invalidation)."""
    host, calls = huge_zero_host()
    zero = host.get_user_page(HVA, write=False)
    new = host.get_user_page(HVA + 3 * PAGE_SIZE, write=True)
    assert isinstance(zero, Pfn) and isinstance(new, Pfn) and new.writable
    assert calls == [(HVA, HVA + PMD_SIZE, "split_huge_pmd"),
                     (HVA + 3 * PAGE_SIZE, HVA + 4 * PAGE_SIZE, "wp_page_copy")]
    assert host.user_mapping_size(HVA) == PAGE_SIZE
    assert host.hva_to_pa(HVA + 3 * PAGE_SIZE) == new.pa
    assert host.is_zero_pfn(host.hva_to_pa(HVA) or 0)
    assert host.pmd == {} and host.huge_zero is not None


def test_without_the_huge_zero_page_a_thp_read_gets_a_thp() -> None:
    host, _ = host_with(thp())
    pfn = host.get_user_page(HVA, write=False)
    assert isinstance(pfn, Pfn) and pfn.writable and host.huge_zero is None
