"""pKVM's host stage 2: the one real 6.1 showed, against the model's for the same story."""

from __future__ import annotations

import json
from pathlib import Path

from s2mmu.arch.dump import DumpRegion, DumpUnused, TableDump
from s2mmu.arch.params import Granule
from s2mmu.pgtable.profile import PROFILES
from s2mmu.real.diff import Aspect, host_differences_of
from s2mmu.real.host_s2 import (
    HostAnnotation,
    HostComparison,
    HostLeaf,
    HostStage2View,
    host_view,
    model_host_stage2,
)

DOC = json.loads((Path(__file__).parent / "data" / "host-s2-6.1-protected.json").read_text())
REAL = HostStage2View(
    tuple(HostLeaf(int(a, 16), int(b, 16), lvl, perms, memattr, sw, ident)
          for a, b, lvl, perms, memattr, sw, ident in DOC["leaves"]),
    tuple(HostAnnotation(int(a, 16), int(b, 16), int(raw, 16)) for a, b, raw in DOC["annotations"]))


def test_the_recorded_6_1_host_stage_2_is_what_pkvm_6_1_builds() -> None:
    """Linux 6.1 in protected mode: identity blocks (1G MMIO, 2M RAM) and pages next to
    the hypervisor's annotations (raw 0x4: owner PKVM_ID_HYP) and next to the pages whose
    state the PTE's software bits hold (SHARED_BORROWED for the kernel's rodata and bss
    EL2 shares with the host, SHARED_OWNED for what the host shares with EL2). The model,
    under v6.1's rules, builds the same table range by range."""
    assert REAL.summary() == ("leaves 2 x 1G, 87 x 2M, 3639 x 4K; annotated 2584 pages; "
                              "SHARED_OWNED 5 pages, SHARED_BORROWED 2536 pages")
    assert {a.owner() for a in REAL.annotations} == {"PKVM_ID_HYP"}
    assert all(v.identity and v.memattr == 0xF for v in REAL.leaves)
    for release in ("v6.1", "v6.2", "v6.12"):
        assert model_host_stage2(REAL, PROFILES[release]) == REAL, release


def test_after_the_state_moved_to_the_vmemmap_shares_leave_blocks_whole() -> None:
    """From v6.14 (the v6.18 profile) a share only updates the vmemmap: no software bits
    in the host's PTEs, and no page-granular mappings forced around shared pages, so the
    same story builds a different table; the real 6.1 one is explained by the
    host_state_in_pte knob."""
    model = model_host_stage2(REAL, PROFILES["v6.18"])
    assert model.pages(1) == 0 and model.pages(2) == 0
    assert model != REAL
    only_real = set(REAL.leaves) - set(model.leaves)
    assert any(v.sw == 1 for v in only_real) and any(v.sw == 2 for v in only_real)


def test_a_difference_names_both_sides() -> None:
    leaf = REAL.leaves[0]
    hc = HostComparison(REAL, REAL, (leaf,), ())
    (d,) = host_differences_of(7, hc)
    assert (d.step, d.aspect, d.model, d.real) == (7, Aspect.HOST_STAGE2, "nothing else",
                                                   str(leaf))
    assert host_differences_of(7, HostComparison(REAL, REAL, (), ())) == []


def test_annotations_of_two_levels_merge_into_one_range() -> None:
    region = DumpRegion("VTTBR_EL2", 2, 0, 1 << 40, Granule.G4K, 1, 0, "", (), (), (
        DumpUnused(0x40000000, 0x40200000, 2, 0x4, 1),
        DumpUnused(0x40200000, 0x40201000, 3, 0x4, 1),
        DumpUnused(0x40300000, 0x40301000, 3, 0x8, 1)))
    view = host_view(TableDump(2, None, (region,)))
    assert [str(a) for a in view.annotations] == [
        "0x40000000-0x40201000 0x4 (PKVM_ID_HYP)", "0x40300000-0x40301000 0x8 (PKVM_ID_FFA)"]
