"""16K and 64K stage 2s: pgtable.c built with PAGE_SHIFT 14 and 16 against the model.

The kernel's stage-2 granule is the host's PAGE_SIZE, so each granule is a library of its
own (CONFIG_ARM64_16K_PAGES, CONFIG_ARM64_64K_PAGES); the random operations use that
granule's pages and level-2 blocks (32M, 512M; no level-1 blocks without LPA2).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from s2mmu.arch.errors import InputError
from s2mmu.kernel.binding import KernelPgtable
from s2mmu.kernel.build import GRANULES, KernelBuild, build
from s2mmu.kernel.diff import Geometry, new_sides, parse_ops, run_diff
from s2mmu.pgtable.caps import KvmCaps
from s2mmu.pgtable.profile import V6_1
from s2mmu.pgtable.pte import granule
from s2mmu.pgtable.vtcr import kvm_get_vtcr
from s2mmu.pgtable.walk import kvm_pgd_pages

# (start level, PGD pages) kvm_get_vtcr gives a 40-bit IPA: 16K 2 levels from level 2
# with 16 concatenated pages; 64K 2 levels from level 2 in one page.
SHAPE_40_BITS = {"16k": (2, 16), "64k": (2, 1)}


def test_each_granule_is_its_own_cached_library(kernel_granule_build: KernelBuild,
                                                kernel_cache: Path, granule_name: str) -> None:
    assert kernel_granule_build.library.name == f"libkpgtable-{granule_name}.so"
    again = build(None, str(kernel_cache), GRANULES[granule_name])
    assert again.cached and again.library == kernel_granule_build.library
    assert KernelPgtable(again.library).page_shift == GRANULES[granule_name]


def test_a_page_shift_other_than_12_14_16_is_refused(kernel_cache: Path) -> None:
    with pytest.raises(InputError, match="PAGE_SHIFT 13 is not 12, 14 or 16"):
        build(None, str(kernel_cache), 13)


@pytest.mark.parametrize("ipa_bits", [32, 40, 48])
def test_the_vtcr_is_the_models_for_the_granule(kernel_granule: KernelPgtable,
                                                ipa_bits: int) -> None:
    g = granule(kernel_granule.page_shift)
    assert kernel_granule.get_vtcr(5, 0x20, ipa_bits) == kvm_get_vtcr(5, 0x20, ipa_bits, g,
                                                                      KvmCaps())


def test_start_level_and_pgd_follow_the_granule(kernel_granule: KernelPgtable,
                                                kernel_granule_build: KernelBuild,
                                                granule_name: str) -> None:
    s = new_sides(kernel_granule, kernel_granule_build.profile, KvmCaps(), 40)
    assert kernel_granule.start_level() == s.pgt.start_level
    assert (s.pgt.start_level, kvm_pgd_pages(40, s.pgt.start_level, s.env.g)) == \
        SHAPE_40_BITS[granule_name]


def test_a_level_2_block_maps_and_splits_alike(kernel_granule: KernelPgtable,
                                               kernel_granule_build: KernelBuild) -> None:
    geo = Geometry(kernel_granule.page_shift)
    text = (f"map {geo.block:#x} {geo.block:#x} 0x100000000 RW fault; "
            f"get_leaf {geo.block + 5 * geo.page:#x}; split {geo.block:#x} {geo.block:#x} 1; "
            f"get_leaf {geo.block + 5 * geo.page:#x}; "
            f"walk {geo.block:#x} {4 * geo.page:#x} LEAF|TABLE_POST")
    report = run_diff(kernel_granule, kernel_granule_build.profile, ops=0, seed=0,
                      replay=parse_ops(text))
    assert [(r.difference, ops) for r, ops in report.differences] == []
    assert report.agreed == 5


def test_the_model_agrees_with_6_12_at_each_granule(kernel_granule: KernelPgtable,
                                                    kernel_granule_build: KernelBuild) -> None:
    report = run_diff(kernel_granule, kernel_granule_build.profile, ops=160, seed=5)
    assert [(r.difference, ops) for r, ops in report.differences] == []
    assert report.compared == report.agreed == 160
    assert set(report.by_op) >= {"map", "unmap", "split", "walk", "relax_perms"}


def test_agreement_at_each_granule_holds_with_fwb_and_range_tlbis(
        kernel_granule: KernelPgtable, kernel_granule_build: KernelBuild) -> None:
    report = run_diff(kernel_granule, kernel_granule_build.profile, ops=80, seed=6,
                      caps=KvmCaps(stage2_fwb=True, tlb_range=True))
    assert [(r.difference, ops) for r, ops in report.differences] == []


def test_the_model_agrees_with_6_1_at_each_granule(kernel_6_1_granule: KernelPgtable) -> None:
    report = run_diff(kernel_6_1_granule, V6_1, ops=160, seed=5)
    assert [(r.difference, ops) for r, ops in report.differences] == []
    assert report.compared == report.agreed == 160


@pytest.mark.parametrize("ipa_bits", [32, 48])
def test_agreement_at_each_granule_holds_for_other_ipa_sizes(
        kernel_granule: KernelPgtable, kernel_granule_build: KernelBuild, ipa_bits: int) -> None:
    report = run_diff(kernel_granule, kernel_granule_build.profile, ops=60, seed=8,
                      ipa_bits=ipa_bits)
    assert [(r.difference, ops) for r, ops in report.differences] == []
