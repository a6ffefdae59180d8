"""What the hypervisor knows of physical memory: the memblock list and the vmemmap.

hyp_memory is the host's memblock list as handed to EL2, sorted; an address outside
every region is MMIO, and a region flagged MEMBLOCK_NOMAP is memory the host may not
transition. The vmemmap holds one hyp_page per page of memory: its refcount (the pin
count of a page shared with the hypervisor), the host's page state and how many guests
the host shares the page with.

Kernel: struct kvm_mem_range, find_mem_range, addr_is_memory, is_in_mem_range,
check_range_allowed_memory, range_is_memory, range_included (nvhe/mem_protect.c);
struct hyp_page, get_host_state/set_host_state, host_share_guest_count, hyp_page_count
(as mem_protect.c uses them).
"""

from __future__ import annotations

from dataclasses import dataclass

from s2mmu.pgtable.errno import EINVAL, EPERM
from s2mmu.pkvm.states import PKVM_NOPAGE, PkvmPageState

U64_MAX = (1 << 64) - 1
U32_MAX = (1 << 32) - 1


@dataclass(frozen=True)
class MemblockRegion:
    """One region of the host's memory map. Kernel: struct memblock_region."""

    base: int
    size: int
    nomap: bool = False

    @property
    def end(self) -> int:
        """Return the first address after the region."""
        return self.base + self.size


@dataclass(frozen=True)
class KvmMemRange:
    """A half-open range [start, end). Kernel: struct kvm_mem_range."""

    start: int
    end: int


@dataclass(frozen=True)
class HypMemory:
    """The sorted memblock list the hypervisor holds. Kernel: hyp_memory, hyp_memblock_nr."""

    regions: tuple[MemblockRegion, ...]

    def __post_init__(self) -> None:
        ends = [0]
        for r in self.regions:
            if r.size <= 0 or r.base < ends[-1]:
                raise ValueError(f"memblock regions must be sorted and disjoint: {r}")
            ends.append(r.end)


def find_mem_range(mem: HypMemory, addr: int) -> tuple[MemblockRegion | None, KvmMemRange]:
    """Return the region holding addr (None for MMIO) and the range around addr.

    The range is the region, or the gap between regions that holds addr.

    Kernel: find_mem_range (a binary search of hyp_memory).
    """
    start, end = 0, U64_MAX
    left, right = 0, len(mem.regions)
    while left < right:
        cur = (left + right) >> 1
        reg = mem.regions[cur]
        if addr < reg.base:
            right, end = cur, reg.base
        elif addr >= reg.end:
            left, start = cur + 1, reg.end
        else:
            return reg, KvmMemRange(reg.base, reg.end)
    return None, KvmMemRange(start, end)


def addr_is_memory(mem: HypMemory, phys: int) -> bool:
    """Return whether phys is in a memblock region. Kernel: addr_is_memory."""
    return find_mem_range(mem, phys)[0] is not None


def is_in_mem_range(addr: int, r: KvmMemRange) -> bool:
    """Return whether addr is in r. Kernel: is_in_mem_range."""
    return r.start <= addr < r.end


def check_range_allowed_memory(mem: HypMemory, start: int, end: int) -> int:
    """Return 0 if [start, end) is memory the host may transition.

    -EINVAL if the range straddles memory and MMIO (or two regions); -EPERM for MMIO
    and for MEMBLOCK_NOMAP memory, whatever the host stage 2 says of it.

    Kernel: check_range_allowed_memory.
    """
    reg, r = find_mem_range(mem, start)
    if not is_in_mem_range(end - 1, r):
        return -EINVAL
    if reg is None or reg.nomap:
        return -EPERM
    return 0


def range_is_memory(mem: HypMemory, start: int, end: int) -> bool:
    """Return whether [start, end) lies in one memblock region. Kernel: range_is_memory."""
    reg, r = find_mem_range(mem, start)
    return reg is not None and is_in_mem_range(end - 1, r)


def range_included(child: KvmMemRange, parent: KvmMemRange) -> bool:
    """Return whether child lies within parent. Kernel: range_included."""
    return parent.start <= child.start and child.end <= parent.end


class HypPage:
    """The hypervisor's metadata for one page of memory. Kernel: struct hyp_page.

    refcount counts pins (hyp_pin_shared_mem) of a page shared with the hypervisor.
    host_state is the host's view of the page; host_share_guest_count how many guest
    mappings the host shares it through.
    """

    __slots__ = ("refcount", "host_state", "host_share_guest_count")

    def __init__(self, host_state: PkvmPageState = PKVM_NOPAGE) -> None:
        self.refcount = 0
        self.host_state = host_state
        self.host_share_guest_count = 0


class Vmemmap:
    """One HypPage per page of every memblock region (MMIO has none).

    Kernel: hyp_vmemmap, hyp_phys_to_page, for_each_hyp_page.
    """

    def __init__(self, mem: HypMemory, page_size: int) -> None:
        self.page_size = page_size
        self.pages: dict[int, HypPage] = {}
        for reg in mem.regions:
            for pa in range(reg.base, reg.end, page_size):
                self.pages[pa // page_size] = HypPage()

    def hyp_phys_to_page(self, phys: int) -> HypPage:
        """Return the HypPage of the page holding phys. Kernel: hyp_phys_to_page."""
        page = self.pages.get(phys // self.page_size)
        if page is None:
            raise ValueError(f"no hyp_page for {phys:#x}: not memory")
        return page

    def for_each_hyp_page(self, phys: int, size: int) -> list[HypPage]:
        """Return the HypPages of [phys, phys + size). Kernel: for_each_hyp_page."""
        return [self.hyp_phys_to_page(pa) for pa in range(phys, phys + size, self.page_size)]
