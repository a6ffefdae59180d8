"""The memblock list and the vmemmap."""

from __future__ import annotations

import pytest

from s2mmu.pgtable.errno import EINVAL, EPERM
from s2mmu.pkvm.memory import (
    HypMemory,
    KvmMemRange,
    MemblockRegion,
    Vmemmap,
    addr_is_memory,
    check_range_allowed_memory,
    find_mem_range,
    range_included,
    range_is_memory,
)
from s2mmu.pkvm.states import PKVM_NOPAGE

MEM = HypMemory(
    (
        MemblockRegion(0x4000_0000, 0x10_0000),
        MemblockRegion(0x4010_0000, 0x1000, nomap=True),
        MemblockRegion(0x8000_0000, 0x2000),
    )
)


def test_find_mem_range_returns_the_region_or_the_gap_around_an_mmio_address() -> None:
    reg, r = find_mem_range(MEM, 0x4000_1234)
    assert reg == MEM.regions[0] and r == KvmMemRange(0x4000_0000, 0x4010_0000)
    reg, r = find_mem_range(MEM, 0x5000_0000)
    assert reg is None and r == KvmMemRange(0x4010_1000, 0x8000_0000)
    reg, r = find_mem_range(MEM, 0x1000)
    assert reg is None and r == KvmMemRange(0, 0x4000_0000)
    reg, r = find_mem_range(MEM, 0x9000_0000)
    assert reg is None and r.start == 0x8000_2000 and r.end == (1 << 64) - 1


def test_only_host_memory_with_a_map_is_transitionable() -> None:
    assert check_range_allowed_memory(MEM, 0x4000_0000, 0x4000_2000) == 0
    assert check_range_allowed_memory(MEM, 0x4010_0000, 0x4010_1000) == -EPERM  # no-map
    assert check_range_allowed_memory(MEM, 0x5000_0000, 0x5000_1000) == -EPERM  # MMIO
    assert check_range_allowed_memory(MEM, 0x400F_F000, 0x4010_1000) == -EINVAL  # straddles
    assert check_range_allowed_memory(MEM, 0x8000_1000, 0x8000_3000) == -EINVAL


def test_memory_predicates() -> None:
    assert addr_is_memory(MEM, 0x4010_0000) and not addr_is_memory(MEM, 0x4010_1000)
    assert range_is_memory(MEM, 0x4000_0000, 0x4010_0000)
    assert not range_is_memory(MEM, 0x4000_0000, 0x4010_1000)
    assert range_included(KvmMemRange(1, 2), KvmMemRange(0, 2))
    assert not range_included(KvmMemRange(1, 3), KvmMemRange(0, 2))


def test_regions_must_be_sorted_and_disjoint() -> None:
    with pytest.raises(ValueError, match="sorted and disjoint"):
        HypMemory((MemblockRegion(0x2000, 0x1000), MemblockRegion(0x1000, 0x2000)))


def test_vmemmap_has_a_page_per_memory_page_and_none_for_mmio() -> None:
    vm = Vmemmap(MEM, 0x1000)
    assert len(vm.pages) == 256 + 1 + 2
    assert vm.hyp_phys_to_page(0x4000_0fff).host_state is PKVM_NOPAGE
    assert len(vm.for_each_hyp_page(0x4000_0000, 0x3000)) == 3
    with pytest.raises(ValueError, match="no hyp_page for 0x50000000: not memory"):
        vm.hyp_phys_to_page(0x5000_0000)
