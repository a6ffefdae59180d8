"""kvm_pgtable_stage2_dump lists exactly what the library mapped, as get_leaf sees it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s2mmu.arch.attrs import MemType
from s2mmu.arch.dump import AddrRange, PermFilter, S2LeafAttrs, TableDump
from s2mmu.pgtable.caps import KvmCaps
from s2mmu.pgtable.dump import (
    kvm_pgtable_stage2_dump,
    kvm_pte_sw_annotation,
)
from s2mmu.pgtable.env import new_env, new_stage2
from s2mmu.pgtable.mm import KvmMmuMemoryCache, __kvm_mmu_topup_memory_cache
from s2mmu.pgtable.prot import KvmPgtableProt, kvm_pgtable_stage2_pte_prot
from s2mmu.pgtable.pte import kvm_granule_size, kvm_pte_to_phys, kvm_pte_valid
from s2mmu.pgtable.stage2 import kvm_pgtable_stage2_map, kvm_pgtable_stage2_unmap
from s2mmu.pgtable.walk import kvm_pgtable_get_leaf

P = KvmPgtableProt
PROTS = [P.R, P.R | P.W, P.R | P.X, P.R | P.W | P.X, P.R | P.W | P.DEVICE,
         P.R | P.W | P.SW0, P.R | P.SW1 | P.SW0]
RWX = P.R | P.W | P.X
IPA_BITS = {12: 40, 14: 42, 16: 42}
BLOCK_PAGES = {12: 512, 14: 2048, 16: 8192}
WINDOW_BLOCKS = 4

# (op, first unit, units, unit is a block, PA delta in units, prot)
OPS = st.lists(st.tuples(st.sampled_from(["map", "map", "map", "unmap"]),
                         st.integers(0, 4 * WINDOW_BLOCKS - 1), st.integers(1, 6), st.booleans(),
                         st.integers(0, 3), st.sampled_from(PROTS)),
               min_size=1, max_size=8)


def prot_of(a: S2LeafAttrs) -> KvmPgtableProt:
    """Return the KVM prot (R, W, X, SW bits) a dumped leaf shows."""
    prot = KvmPgtableProt(a.sw << 55)
    if a.perms.r:
        prot |= P.R
    if a.perms.w:
        prot |= P.W
    if a.perms.px and a.perms.ux:
        prot |= P.X
    return prot


def pages_of(dump: TableDump, base: int, page: int) -> dict[int, tuple[int, int, bool]]:
    """Return page index -> (PA, prot, device) for every page the dump lists."""
    out = {}
    for r in dump.ranges():
        a = r.attrs
        assert isinstance(a, S2LeafAttrs)
        device = a.attrs is not None and a.attrs.memtype is MemType.DEVICE
        for k in range(r.size() // page):
            out[(r.start - base) // page + k] = (r.oa + k * page, int(prot_of(a)), device)
    return out


def build(page_shift: int, ops: list, fwb: bool = False):  # type: ignore[no-untyped-def, type-arg]
    """Map non-overlapping ranges (a map over a live one is skipped) and unmap whole ones.

    Partial unmaps and remaps are left out on purpose: KVM unmaps a whole block when part
    of it is asked for, and an identical remap is -EAGAIN; the model here is the simple
    one, "what was mapped and not unmapped".
    """
    env = new_env(page_shift=page_shift, caps=KvmCaps(stage2_fwb=fwb))
    pgt = new_stage2(env, IPA_BITS[page_shift])
    g = env.g
    block = BLOCK_PAGES[page_shift] * g.page_size
    base = 1 << (IPA_BITS[page_shift] - 2)
    window = WINDOW_BLOCKS * block
    mc = KvmMmuMemoryCache()
    model: dict[int, tuple[int, int, bool]] = {}
    live: list[tuple[int, int]] = []
    for op, first, n, in_blocks, delta, prot in ops:
        assert __kvm_mmu_topup_memory_cache(mc, env.pool, 40, 40) == 0
        if op == "unmap":
            if live:
                addr, size = live.pop(first % len(live))
                assert kvm_pgtable_stage2_unmap(pgt, addr, size) == 0
                for k in range(size // g.page_size):
                    del model[(addr - base) // g.page_size + k]
            continue
        unit = block if in_blocks else g.page_size
        addr = base + (first * block // 4 if in_blocks else first * 37 * g.page_size)
        addr -= addr % unit
        size = min(n * unit, base + window - addr)
        if any(a < addr + size and addr < a + sz for a, sz in live):
            continue
        phys = (1 << 36) + (addr - base) + delta * unit
        assert kvm_pgtable_stage2_map(pgt, addr, size, phys, prot, mc) == 0
        live.append((addr, size))
        keep = int(prot) & (int(RWX) | int(P.SW0 | P.SW1 | P.SW2 | P.SW3))
        for k in range(size // g.page_size):
            model[(addr - base) // g.page_size + k] = (
                phys + k * g.page_size, keep, bool(prot & P.DEVICE))
    return env, pgt, base, window, model


@pytest.mark.parametrize("page_shift", [12, 14, 16])
@settings(max_examples=12, deadline=None)
@given(ops=OPS, fwb=st.booleans(), probes=st.lists(st.integers(0, 1 << 40), min_size=16,
                                                   max_size=16))
def test_dump_lists_exactly_the_mapped_ranges_and_agrees_with_get_leaf(
        page_shift: int, ops: list, fwb: bool, probes: list[int]) -> None:  # type: ignore[type-arg]
    env, pgt, base, window, model = build(page_shift, ops, fwb)
    g = env.g
    dump = kvm_pgtable_stage2_dump(pgt)
    assert dump.regions[0].faults == ()
    assert pages_of(dump, base, g.page_size) == model
    for p in probes:
        ipa = base - g.page_size + p % (window + 2 * g.page_size)
        leaf = kvm_pgtable_get_leaf(pgt, ipa)
        found = [r for r in dump.ranges() if r.start <= ipa < r.end]
        if not kvm_pte_valid(leaf.pte):
            assert found == []
            continue
        (r,) = found
        size = kvm_granule_size(leaf.level, g)
        assert r.attrs.level == leaf.level
        assert r.oa + (ipa - r.start) == kvm_pte_to_phys(leaf.pte, g) + ipa % size
        assert isinstance(r.attrs, S2LeafAttrs)
        assert prot_of(r.attrs) == kvm_pgtable_stage2_pte_prot(leaf.pte)


def test_a_2m_block_region_merges_into_one_line_per_prot() -> None:
    ops = [("map", 0, 2, True, 0, P.R | P.W), ("map", 8, 1, True, 0, P.R)]
    env, pgt, base, _, _ = build(12, ops)
    got = [(r.start - base, r.size(), r.entries, r.attrs.level)
           for r in kvm_pgtable_stage2_dump(pgt).ranges()]
    assert got == [(0, 4 << 20, 2, 2), (4 << 20, 2 << 20, 1, 2)]


def test_dump_filters_by_range_and_permission() -> None:
    ops = [("map", 0, 1, True, 0, P.R | P.W), ("map", 4, 1, True, 0, P.R | P.X)]
    env, pgt, base, _, _ = build(12, ops)
    (w,) = kvm_pgtable_stage2_dump(pgt, keep=PermFilter(w=True)).ranges()
    assert (w.start, w.attrs.perms.w) == (base, True)
    clipped = kvm_pgtable_stage2_dump(pgt, AddrRange(base + (1 << 20), base + (3 << 20)))
    assert [(r.start - base, r.end - base, r.oa - (1 << 36)) for r in clipped.ranges()] == [
        (1 << 20, 2 << 20, 1 << 20), (2 << 20, 3 << 20, 2 << 20)]


def test_fwb_stage2_normal_memory_is_forced_write_back() -> None:
    env, pgt, _, _, _ = build(12, [("map", 0, 1, False, 0, P.R | P.W)], fwb=True)
    (r,) = kvm_pgtable_stage2_dump(pgt).ranges()
    assert isinstance(r.attrs, S2LeafAttrs)
    assert (r.attrs.fwb, r.attrs.memattr) == (True, 0b0110)
    assert r.attrs.attrs is not None and r.attrs.attrs.inner.attrs.name == "WB"


def test_software_bits_carry_kvm_and_pkvm_names() -> None:
    assert kvm_pte_sw_annotation(0b0000) == ""
    assert kvm_pte_sw_annotation(0b1001) == "SW0 SW3"
    assert kvm_pte_sw_annotation(0b0001, pkvm=True) == "PKVM_PAGE_SHARED_OWNED"
    assert kvm_pte_sw_annotation(0b0110, pkvm=True) == "PKVM_PAGE_SHARED_BORROWED SW2"
    assert kvm_pte_sw_annotation(0b0011, pkvm=True) == "RESERVED(PKVM_NOPAGE)"


def test_uninitialised_table_is_api_misuse() -> None:
    env = new_env()
    pgt = new_stage2(env, 40)
    pgt.pgd = None
    with pytest.raises(ValueError, match="not initialised"):
        kvm_pgtable_stage2_dump(pgt)
