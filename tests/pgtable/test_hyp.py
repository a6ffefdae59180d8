"""Hypervisor stage-1 operations.

Kernel: kvm_pgtable_hyp_init, kvm_pgtable_hyp_map, hyp_map_walker_try_leaf,
kvm_pgtable_hyp_unmap, hyp_unmap_walker, kvm_pgtable_hyp_destroy.
"""

import pytest

from s2mmu.pgtable.env import PgtableEnv, kvm_hyp_mm_ops, new_hyp
from s2mmu.pgtable.errno import EINVAL
from s2mmu.pgtable.events import Dsb, Isb, TlbiHyp, Warn
from s2mmu.pgtable.hyp import (
    kvm_pgtable_hyp_destroy,
    kvm_pgtable_hyp_init,
    kvm_pgtable_hyp_map,
    kvm_pgtable_hyp_unmap,
)
from s2mmu.pgtable.prot import (
    PAGE_HYP,
    PAGE_HYP_EXEC,
    PAGE_HYP_RO,
    KvmPgtableProt,
    kvm_pgtable_hyp_pte_prot,
)
from s2mmu.pgtable.pte import kvm_pte_to_phys
from s2mmu.pgtable.table import KvmPgtable
from s2mmu.pgtable.walk import kvm_pgtable_get_leaf

from .conftest import SZ_2M, SZ_4K

VA = 0xFFFF_8000_0000_0000 & ((1 << 48) - 1)
PA = 0x8_4000_0000


@pytest.fixture
def hyp(env: PgtableEnv) -> KvmPgtable:
    return new_hyp(env, 48)


def test_hyp_init_starts_at_level_0_for_48_bits_and_uses_one_page(env: PgtableEnv) -> None:
    pgt = new_hyp(env, 48)
    assert (pgt.start_level, env.pool.in_use()) == (0, 1)


def test_hyp_init_rejects_va_sizes_needing_five_levels(env: PgtableEnv) -> None:
    assert kvm_pgtable_hyp_init(KvmPgtable(), 56, kvm_hyp_mm_ops(env)) == -EINVAL


def test_hyp_map_installs_blocks_and_pages_with_the_output_offset(hyp: KvmPgtable) -> None:
    assert kvm_pgtable_hyp_map(hyp, VA, SZ_2M + SZ_4K, PA, PAGE_HYP) == 0
    block, page = kvm_pgtable_get_leaf(hyp, VA + 5 * SZ_4K), kvm_pgtable_get_leaf(hyp, VA + SZ_2M)
    assert (block.level, kvm_pte_to_phys(block.pte, hyp.ops.g)) == (2, PA)
    assert (page.level, kvm_pte_to_phys(page.pte, hyp.ops.g)) == (3, PA + SZ_2M)
    assert kvm_pgtable_hyp_pte_prot(page.pte, hyp.ops.caps) == PAGE_HYP


def test_hyp_map_ends_with_dsb_ishst_and_isb(env: PgtableEnv, hyp: KvmPgtable) -> None:
    kvm_pgtable_hyp_map(hyp, VA, SZ_4K, PA, PAGE_HYP_RO)
    assert env.events.items[-2:] == [Dsb("ishst"), Isb()]


def test_hyp_map_refuses_to_change_a_live_page_and_warns(env: PgtableEnv, hyp: KvmPgtable) -> None:
    assert kvm_pgtable_hyp_map(hyp, VA, SZ_4K, PA, PAGE_HYP) == 0
    assert kvm_pgtable_hyp_map(hyp, VA, SZ_4K, PA + SZ_4K, PAGE_HYP) == -EINVAL
    assert [w.function for w in env.events.of_type(Warn)] == [
        "hyp_map_walker_try_leaf",
        "hyp_map_walker",
    ]
    assert kvm_pgtable_hyp_map(hyp, VA, SZ_4K, PA, PAGE_HYP) == 0  # the same mapping is fine


def test_hyp_map_may_change_software_bits_in_place(hyp: KvmPgtable) -> None:
    kvm_pgtable_hyp_map(hyp, VA, SZ_4K, PA, PAGE_HYP_EXEC)
    assert kvm_pgtable_hyp_map(hyp, VA, SZ_4K, PA, PAGE_HYP_EXEC | KvmPgtableProt.SW1) == 0


def test_hyp_map_with_an_invalid_prot_is_einval(hyp: KvmPgtable) -> None:
    assert (
        kvm_pgtable_hyp_map(
            hyp, VA, SZ_4K, PA, KvmPgtableProt.R | KvmPgtableProt.W | KvmPgtableProt.X
        )
        == -EINVAL
    )


def test_hyp_unmap_returns_the_bytes_unmapped_with_leaf_tlbis(
    env: PgtableEnv, hyp: KvmPgtable
) -> None:
    kvm_pgtable_hyp_map(hyp, VA, 3 * SZ_4K, PA, PAGE_HYP)
    assert kvm_pgtable_hyp_unmap(hyp, VA, 3 * SZ_4K) == 3 * SZ_4K
    assert TlbiHyp("vale2is", VA + 2 * SZ_4K, 3) in env.events
    assert env.pool.in_use() == 1  # the tables went with their last entry


def test_hyp_unmap_stops_at_a_hole(hyp: KvmPgtable) -> None:
    kvm_pgtable_hyp_map(hyp, VA, SZ_4K, PA, PAGE_HYP)
    kvm_pgtable_hyp_map(hyp, VA + 2 * SZ_4K, SZ_4K, PA, PAGE_HYP)
    assert kvm_pgtable_hyp_unmap(hyp, VA, 3 * SZ_4K) == SZ_4K
    assert kvm_pgtable_get_leaf(hyp, VA + 2 * SZ_4K).pte & 1


def test_hyp_unmap_leaves_a_block_reaching_beyond_the_range(hyp: KvmPgtable) -> None:
    kvm_pgtable_hyp_map(hyp, VA, SZ_2M, PA, PAGE_HYP)
    assert kvm_pgtable_hyp_unmap(hyp, VA, SZ_4K) == 0
    assert kvm_pgtable_get_leaf(hyp, VA).level == 2


def test_hyp_destroy_frees_every_page(env: PgtableEnv, hyp: KvmPgtable) -> None:
    kvm_pgtable_hyp_map(hyp, VA, SZ_2M + SZ_4K, PA, PAGE_HYP)
    kvm_pgtable_hyp_destroy(hyp)
    assert env.pool.in_use() == 0 and hyp.pgd is None
