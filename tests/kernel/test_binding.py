"""The ctypes binding: the kernel's own kvm_get_vtcr and stage-2 init, as the model's."""

from __future__ import annotations

from s2mmu.kernel.binding import KernelPgtable
from s2mmu.kernel.diff import POOL_BASE, POOL_PAGES
from s2mmu.pgtable.events import Dsb, PageAlloc


def test_kvm_get_vtcr_of_the_kernel_is_the_models(kernel: KernelPgtable) -> None:
    assert kernel.get_vtcr(5, 0b0010 << 4, 40) == 0x802D3558


def test_stage2_init_takes_two_concatenated_pgd_pages_at_level_1(kernel: KernelPgtable) -> None:
    assert kernel.init(pool_base=POOL_BASE, pool_pages=POOL_PAGES, mmfr0=5, mmfr1=0x20,
                       ipa_bits=40, vmid=1, pgd_pa=POOL_BASE, fwb=False, tlb_range=False,
                       dic=False, hw_afdbm=True) == 0
    assert kernel.start_level() == 1
    assert kernel.pgd() == POOL_BASE
    assert kernel.take_events() == [PageAlloc(POOL_BASE), PageAlloc(POOL_BASE + 0x1000),
                                    Dsb("ishst")]
    assert sorted(kernel.live_pages()) == [POOL_BASE, POOL_BASE + 0x1000]


def test_a_map_writes_the_kernels_descriptor_where_the_model_would(
        kernel: KernelPgtable) -> None:
    kernel.init(pool_base=POOL_BASE, pool_pages=POOL_PAGES, mmfr0=5, mmfr1=0x20, ipa_bits=40,
                vmid=1, pgd_pa=POOL_BASE, fwb=False, tlb_range=False, dic=False,
                hw_afdbm=True)
    kernel.set_memcache(0, [POOL_BASE + 0x3000, POOL_BASE + 0x2000])
    # A 2M block at IPA 0 -> PA 0x4000_0000, R|W: one level-2 table from the memcache.
    assert kernel.map(0, 1 << 21, 0x4000_0000, 0b110, 0) == 0
    pages = kernel.live_pages()
    assert kernel.memcache(0) == [POOL_BASE + 0x3000]
    _, pgd = pages[POOL_BASE]
    assert int.from_bytes(pgd[:8], "little") == POOL_BASE + 0x2000 | 0b11
    count, table = pages[POOL_BASE + 0x2000]
    assert count == 2
    assert int.from_bytes(table[:8], "little") == 0x4000_0000 | 0x40000000000000 | 0x7FD
