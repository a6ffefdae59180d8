"""The TLB and walk-cache model: what each TLBI operation must invalidate, and fills."""

from __future__ import annotations

from dataclasses import replace

import pytest

from s2mmu.arch.access import acc_gpr
from s2mmu.arch.builder import BumpAllocator, TableBuilder, s1_attrs, s2_attrs
from s2mmu.arch.features import qemu_7_2_max
from s2mmu.arch.memory import PhysMem
from s2mmu.arch.params import Granule
from s2mmu.arch.perms import S2Perms
from s2mmu.arch.registers import TCR_EL1, VTCR_EL2
from s2mmu.arch.state import Regime, SysRegs
from s2mmu.arch.tlb import (
    Cached,
    Tlb,
    TlbEntry,
    Tlbi,
    TlbiOp,
    TlbStage,
    WalkCacheEntry,
    cached_by,
    level_shift,
    tlbi_invalidates,
)
from s2mmu.arch.translate import AddressDescriptor, Env, full_translate

RW = S2Perms(True, True, False, False)
VMID, OTHER = 1, 2


def combined(vmid: int = VMID, asid: int | None = 5, va: int = 0x20_0000) -> TlbEntry:
    return TlbEntry(TlbStage.COMBINED, vmid, asid, va, 0x1000, 0x8000_0000, 0x4000_0000, 3, 3,
                    0x4FF, RW)


def s2_only(ipa: int = 0x4000_0000, level: int = 3, size: int = 0x1000) -> TlbEntry:
    return TlbEntry(TlbStage.STAGE2, VMID, None, ipa, size, 0x8000_0000, ipa, None, level,
                    0x4FF, RW)


def s2_table(ipa: int = 0x4000_0000, level: int = 2) -> WalkCacheEntry:
    size = 1 << level_shift(12, level)
    return WalkCacheEntry(2, VMID, None, ipa & ~(size - 1), size, level, 0x9000_0000)


def s1_table() -> WalkCacheEntry:
    return WalkCacheEntry(1, VMID, 5, 0, 1 << 30, 1, 0x4000_1000)


ALL: list[Cached] = [combined(), s2_only(), s2_table(), s1_table()]


def survivors(t: Tlbi, entries: list[Cached]) -> list[Cached]:
    tlb = Tlb()
    tlb.fill(entries)
    tlb.invalidate(t)
    return list(tlb.entries)


def test_vmalls12e1_invalidates_every_entry_of_its_vmid_only() -> None:
    other = combined(vmid=OTHER)
    assert survivors(Tlbi(TlbiOp.VMALLS12E1, VMID), [*ALL, other]) == [other]


def test_vmalle1_invalidates_stage_1_information_and_keeps_stage_2_only_entries() -> None:
    assert survivors(Tlbi(TlbiOp.VMALLE1, VMID), ALL) == [s2_only(), s2_table()]


def test_ipas2e1_without_a_hint_invalidates_stage_2_entries_of_the_ipa_at_any_level() -> None:
    t = Tlbi(TlbiOp.IPAS2E1, VMID, 0x4000_0000)
    assert survivors(t, ALL) == [combined(), s1_table()]


def test_ipas2e1_never_reaches_a_combined_entry() -> None:
    assert not tlbi_invalidates(Tlbi(TlbiOp.IPAS2E1, VMID, 0x4000_0000), combined())


@pytest.mark.parametrize(("ttl", "gone"), [(3, "leaf"), (2, "table"), (1, "none")])
def test_a_level_hint_only_guarantees_entries_of_that_level(ttl: int, gone: str) -> None:
    t = Tlbi(TlbiOp.IPAS2E1, VMID, 0x4000_0000, ttl=ttl)
    left = survivors(t, [s2_only(), s2_table()])
    want = {"leaf": [s2_table()], "table": [s2_only()], "none": [s2_only(), s2_table()]}
    assert left == want[gone]


def test_ipas2e1_misses_another_ipa() -> None:
    assert survivors(Tlbi(TlbiOp.IPAS2E1, VMID, 0x4000_1000), [s2_only()]) == [s2_only()]


def test_ripas2e1_invalidates_every_stage_2_entry_the_range_overlaps() -> None:
    inside, outside = s2_only(0x4000_3000), s2_only(0x4001_0000)
    t = Tlbi(TlbiOp.RIPAS2E1, VMID, 0x4000_2000, 0x2000)
    assert survivors(t, [inside, outside, combined()]) == [outside, combined()]


def test_a_global_entry_matches_every_asid_and_a_tagged_one_only_its_own() -> None:
    tlb = Tlb()
    tlb.fill([combined(asid=None, va=0), combined(asid=5, va=0x20_0000)])
    assert tlb.lookup(VMID, 9, 0x10) is not None
    assert tlb.lookup(VMID, 9, 0x20_0010) is None
    assert tlb.lookup(VMID, 5, 0x20_0010) is not None
    assert tlb.lookup(OTHER, 5, 0x20_0010) is None


def test_a_full_tlb_evicts_its_oldest_fill() -> None:
    tlb = Tlb(capacity=2)
    tlb.fill([s2_only(0x1000), s2_only(0x2000), s2_only(0x3000)])
    assert [e.ia for e in tlb.entries] == [0x2000, 0x3000]
    assert tlb.lookup_ipa(VMID, 0x1000) is None and tlb.lookup_ipa(VMID, 0x3fff) is not None


@pytest.mark.parametrize(("level", "shift"), [(0, 39), (1, 30), (2, 21), (3, 12)])
def test_level_sizes_of_the_4k_granule(level: int, shift: int) -> None:
    assert level_shift(12, level) == shift


def s1_only() -> TlbEntry:
    return TlbEntry(TlbStage.STAGE1, VMID, 5, 0x20_0000, 0x1000, 0x9000_0000, 0x9000_0000, 3,
                    None, None, None)


def test_a_stage_1_only_entry_goes_with_vmalle1_and_not_with_ipas2e1() -> None:
    assert tlbi_invalidates(Tlbi(TlbiOp.VMALLE1, VMID), s1_only())
    assert tlbi_invalidates(Tlbi(TlbiOp.VMALLS12E1, VMID), s1_only())
    assert not tlbi_invalidates(Tlbi(TlbiOp.IPAS2E1, VMID, 0x9000_0000), s1_only())


def _translation(two_stage: bool, ng: bool = False) -> AddressDescriptor:
    mem = PhysMem()
    s1 = TableBuilder(mem, BumpAllocator(0x4000_0000, 0x4100_0000), Granule.G4K, 48, 0)
    s1.map(0x8000_0000, 0x9000_0000, 0x1000, s1_attrs(ng=ng) if ng else s1_attrs())
    regs = SysRegs(SCTLR_EL1=0x30D00801, MAIR_EL1=0xFF, TTBR0_EL1=s1.root,
                   TCR_EL1=TCR_EL1.encode(T0SZ=16, TG0=0, IPS=5, SH0=3, IRGN0=1, ORGN0=1))
    if two_stage:
        s2 = TableBuilder(mem, BumpAllocator(0x5000_0000, 0x5100_0000), Granule.G4K, 48, 0)
        s2.map(0x4000_0000, 0x4000_0000, 4 << 20, s2_attrs())  # the stage-1 tables
        s2.map(0x9000_0000, 0x1_9000_0000, 4 << 20, s2_attrs())
        vtcr = VTCR_EL2.encode(T0SZ=16, SL0=2, TG0=0, PS=5, SH0=3, IRGN0=1, ORGN0=1)
        regs = replace(regs, HCR_EL2=0x80000001, VTCR_EL2=vtcr, VTTBR_EL2=s2.root)
    out = full_translate(regs, Regime.EL10, 0x8000_0010, acc_gpr(1, False),
                         Env(mem, qemu_7_2_max()))
    assert isinstance(out, AddressDescriptor), out
    return out


def test_a_two_stage_translation_fills_a_combined_entry_and_both_walk_caches() -> None:
    out = _translation(two_stage=True)
    assert out.s2 is not None
    perms = S2Perms(True, True, True, True)
    leaf, *walks = cached_by(out, 0x8000_0010, VMID, 7, perms)
    assert isinstance(leaf, TlbEntry) and leaf.stage is TlbStage.COMBINED
    assert (leaf.ia, leaf.size, leaf.oa, leaf.ipa) == (0x8000_0000, 0x1000, 0x1_9000_0000,
                                                       0x9000_0000)
    assert (leaf.s1_level, leaf.s2_level, leaf.asid) == (3, 3, None)  # nG = 0: global
    stages = [(w.stage, w.level) for w in walks if isinstance(w, WalkCacheEntry)]
    assert stages == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]


def test_a_stage_1_only_translation_fills_a_stage_1_entry() -> None:
    out = _translation(two_stage=False)
    leaf = cached_by(out, 0x8000_0010, VMID, 7, None)[0]
    assert isinstance(leaf, TlbEntry) and leaf.stage is TlbStage.STAGE1
    assert (leaf.oa, leaf.s2_level, leaf.s2_perms) == (0x9000_0000, None, None)
