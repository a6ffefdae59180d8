"""The architecture's stage-2 walk agrees with kvm_pgtable_get_leaf on every table the
page-table library builds.

Random sequences of map, unmap, wrprotect, relax_perms and split build the tables;
then, for sampled IPAs, ``s2mmu.arch.translate.stage2_lookup`` (the ASL-derived walker,
given the VTCR_EL2/VTTBR_EL2 KVM would program) must agree with the library's view:
a valid leaf translates to its output address plus the offset in the block, at the
same level, and a write faults with a level-N Permission fault exactly when the leaf
lacks write permission; an invalid entry is a Translation fault at its level.

The 4K runs use a window of two 2M blocks; the 16K and 64K runs use a window of two
level-2 blocks (32M, 512M) with ranges drawn in block units, so their block leaves are
checked too (a 1G block at 4K would need a 262,144-page window and is left out).

Intended divergences: none. The access flag is never cleared here, because with
VTCR_EL2.HA the hardware may set it and the two views would legitimately differ.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s2mmu.arch import translate
from s2mmu.arch.faults import Fault, FaultRecord
from s2mmu.pgtable.env import new_env, new_stage2
from s2mmu.pgtable.mm import KvmMmuMemoryCache, __kvm_mmu_topup_memory_cache
from s2mmu.pgtable.prot import KvmPgtableProt, kvm_pgtable_stage2_pte_prot
from s2mmu.pgtable.pte import kvm_granule_size, kvm_pte_to_phys, kvm_pte_valid
from s2mmu.pgtable.stage2 import (
    kvm_pgtable_stage2_map,
    kvm_pgtable_stage2_relax_perms,
    kvm_pgtable_stage2_split,
    kvm_pgtable_stage2_unmap,
    kvm_pgtable_stage2_wrprotect,
)
from s2mmu.pgtable.vtcr import kvm_get_vttbr
from s2mmu.pgtable.walk import kvm_pgtable_get_leaf

P = KvmPgtableProt
PROTS = [P.R, P.R | P.W, P.R | P.X, P.R | P.W | P.X]

OPS = st.lists(
    st.tuples(
        st.sampled_from(["map", "map", "map", "unmap", "wrprotect", "relax", "split"]),
        st.one_of(st.sampled_from([0, 512]), st.integers(0, 1023)),  # first page
        st.sampled_from([1, 2, 5, 512, 600, 1024]),  # pages
        st.sampled_from([0, 1, 512]),  # PA offset from the IPA, in pages
        st.sampled_from(PROTS),
    ),
    max_size=10,
)


def block_ops(block_pages: int) -> st.SearchStrategy[list]:  # type: ignore[type-arg]
    """Return operation lists over a window of two level-2 blocks, in block units.

    Ranges start on, just before or anywhere around a block boundary and cover a page,
    a few pages, a block, a block and a bit, or the whole window; the output address is
    block-aligned, page-misaligned or one block further.
    """
    b = block_pages
    return st.lists(
        st.tuples(
            st.sampled_from(["map", "map", "map", "unmap", "wrprotect", "relax", "split"]),
            st.one_of(st.sampled_from([0, b, b - 1, 2 * b - 3]), st.integers(0, 2 * b - 1)),
            st.sampled_from([1, 2, 5, b, b + 2, 2 * b]),
            st.sampled_from([0, 0, 1, b]),
            st.sampled_from(PROTS),
        ),
        max_size=6,
    )


def check_agreement(
    page_shift: int, ipa_bits: int, ops: list, samples: list[int], window_pages: int = 1024  # type: ignore[type-arg]
) -> set[int]:
    """Build tables with ops, then compare both views at sampled IPAs; return leaf levels."""
    env = new_env(page_shift=page_shift)
    g = env.g
    pgt = new_stage2(env, ipa_bits, vmid=9)
    mc = KvmMmuMemoryCache()
    base = 1 << (ipa_bits - 2)
    window = window_pages * g.page_size
    pa_base = 1 << 40
    probes = []
    for i, (op, first, n, delta, prot) in enumerate(ops):
        __kvm_mmu_topup_memory_cache(mc, env.pool, 40, 40)
        addr = base + first * g.page_size
        size = min(n * g.page_size, base + window - addr)
        probes += [addr + samples[(i + k) % len(samples)] % size for k in range(3)]
        if op == "map":
            phys = pa_base + (addr - base) + delta * g.page_size
            kvm_pgtable_stage2_map(pgt, addr, size, phys, prot, mc)
        elif op == "unmap":
            kvm_pgtable_stage2_unmap(pgt, addr, size)
        elif op == "wrprotect":
            kvm_pgtable_stage2_wrprotect(pgt, addr, size)
        elif op == "relax":
            kvm_pgtable_stage2_relax_perms(pgt, addr, prot)
        else:
            kvm_pgtable_stage2_split(pgt, addr, size, mc)
    assert pgt.pgd is not None and pgt.mmu is not None
    vtcr, vttbr = pgt.mmu.vtcr, kvm_get_vttbr(pgt.pgd, 9, g)
    probes += [base - g.page_size + s % (window + 2 * g.page_size) for s in samples]
    levels = set()
    for ipa in probes:
        ipa = (ipa + 8 * (ipa % 97)) & ((1 << ipa_bits) - 1)
        leaf = kvm_pgtable_get_leaf(pgt, ipa)
        assert leaf.ret == 0
        read = translate.stage2_lookup(env.mem, vtcr, vttbr, ipa)
        write = translate.stage2_lookup(env.mem, vtcr, vttbr, ipa, write=True)
        where = f"IPA {ipa:#x}, leaf {leaf.pte:#x} at level {leaf.level}"
        if not kvm_pte_valid(leaf.pte):
            for res in (read, write):
                assert isinstance(res, FaultRecord), where
                assert (res.statuscode, res.level) == (Fault.TRANSLATION, leaf.level), where
            continue
        levels.add(leaf.level)
        size = kvm_granule_size(leaf.level, g)
        expected = kvm_pte_to_phys(leaf.pte, g) + (ipa & (size - 1))
        assert not isinstance(read, FaultRecord), f"{where}: {read}"
        assert read.paddress == expected, where
        assert read.s2 is not None and read.s2.leaf.level == leaf.level, where
        if kvm_pgtable_stage2_pte_prot(leaf.pte) & P.W:
            assert not isinstance(write, FaultRecord), f"{where}: {write}"
        else:
            assert isinstance(write, FaultRecord), where
            assert (write.statuscode, write.level) == (Fault.PERMISSION, leaf.level), where
    return levels


SAMPLES = st.lists(st.integers(0, 1 << 30), min_size=24, max_size=24)


@settings(max_examples=40, deadline=None)
@given(OPS, SAMPLES)
def test_arch_walker_agrees_with_get_leaf_4k_40bit(ops: list, samples: list[int]) -> None:  # type: ignore[type-arg]
    check_agreement(12, 40, ops, samples)


@settings(max_examples=15, deadline=None)
@given(OPS, SAMPLES)
def test_arch_walker_agrees_with_get_leaf_4k_48bit_level0_start(
    ops: list, samples: list[int]
) -> None:  # type: ignore[type-arg]
    check_agreement(12, 48, ops, samples)


# 16K (32M blocks, 2048 pages each) and 64K (512M blocks, 8192 pages each) on a 42-bit
# IPA space: the window holds two level-2 blocks.
BLOCK_PAGES = {14: 2048, 16: 8192}


@pytest.mark.parametrize("page_shift", [14, 16])
@settings(max_examples=8, deadline=None)
@given(data=st.data(), samples=SAMPLES)
def test_arch_walker_agrees_with_get_leaf_16k_and_64k(
    page_shift: int, data: st.DataObject, samples: list[int]
) -> None:
    b = BLOCK_PAGES[page_shift]
    first = ("map", 0, 2 * b, data.draw(st.sampled_from([0, b])), data.draw(st.sampled_from(PROTS)))
    check_agreement(page_shift, 42, [first, *data.draw(block_ops(b))], samples, 2 * b)


@pytest.mark.parametrize("page_shift", [14, 16])
def test_arch_walker_agrees_on_16k_and_64k_block_leaves(page_shift: int) -> None:
    b = BLOCK_PAGES[page_shift]
    ops = [
        ("map", 0, 2 * b, 0, P.R | P.W),  # two level-2 blocks
        ("wrprotect", b, b, 0, P.R),  # the second one read-only
        ("map", b + 3, 1, 0, P.R | P.W | P.X),  # a page inside it: block -> empty table
        ("split", 0, b, 0, P.R),  # the first one split to pages
        ("map", 0, b, 0, P.R),  # then collapsed back into a read-only block
    ]
    samples = [k * (b // 7 + 1) * (1 << page_shift) + 0x1230 for k in range(24)]
    levels = check_agreement(page_shift, 42, ops, samples, window_pages=2 * b)
    assert 2 in levels and 3 in levels
