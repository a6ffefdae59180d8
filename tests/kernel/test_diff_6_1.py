"""Linux 6.1's pgtable.c against the model's v6.1 profile.

6.1 predates the v6.2 parallel-fault rework that the "v6.2" profile stands for; five
knobs make the model 6.1 (BehaviourProfile.map_anchor, relax_perms_local_tlbi,
cmo_valid_leaf_only, map_sw_bits_shortcut, unmap_range_tlbi). Each is shown here to be
needed: with it turned back to today's rule, its minimal replay differs from 6.1's own
code.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from s2mmu.kernel.binding import KernelPgtable
from s2mmu.kernel.build import KernelBuild
from s2mmu.kernel.diff import SERIES_6_1, parse_ops, run_diff
from s2mmu.pgtable.caps import KvmCaps
from s2mmu.pgtable.profile import CURRENT, V6_1


def test_6_1_is_detected_and_picks_the_v6_1_profile(kernel_6_1_build: KernelBuild,
                                                    kernel_6_1: KernelPgtable) -> None:
    assert (kernel_6_1_build.version.version, kernel_6_1_build.version.patchlevel) == (6, 1)
    assert kernel_6_1_build.profile is V6_1
    assert kernel_6_1_build.at_library is None
    assert kernel_6_1.series == SERIES_6_1


def test_the_model_agrees_with_6_1_on_random_operations(kernel_6_1: KernelPgtable) -> None:
    report = run_diff(kernel_6_1, V6_1, ops=240, seed=0)
    assert [(r.difference, ops) for r, ops in report.differences] == []
    assert report.compared == report.agreed == 240
    assert "split" not in report.by_op
    assert set(report.by_op) >= {"map", "unmap", "wrprotect", "relax_perms", "set_owner"}


def test_agreement_with_6_1_holds_with_fwb_and_range_tlbis(kernel_6_1: KernelPgtable) -> None:
    report = run_diff(kernel_6_1, V6_1, ops=120, seed=9,
                      caps=KvmCaps(stage2_fwb=True, tlb_range=True))
    assert report.agreed == report.compared == 120


@pytest.mark.parametrize("ipa_bits", [32, 44, 48])
def test_agreement_with_6_1_holds_for_other_ipa_sizes(kernel_6_1: KernelPgtable,
                                                     ipa_bits: int) -> None:
    report = run_diff(kernel_6_1, V6_1, ops=80, seed=5, ipa_bits=ipa_bits)
    assert [(r.difference, ops) for r, ops in report.differences] == []
    assert report.agreed == report.compared == 80


# (knob, a minimal replay that needs it, the kernel's first event there)
KNOBS = [
    ("map_anchor", "map 0x1a000 0x1000 0x1fcff0000 R; map 0x0 0x200000 0x12aa00000 RW",
     "Dsb(domain='ishst')"),   # 6.1 frees the detached table before the block's CMOs
    ("relax_perms_local_tlbi", "map 0x1000 0x1000 0x100000000 R; relax_perms 0x1000 RW",
     "TlbiVmidIpa(vmid=1, ipa=0x1000, level=3, nsh=False)"),
    ("cmo_valid_leaf_only", "set_owner 0x559000 0x1000 1",
     "IcacheInvalPou(pa=0x0, size=0x1000)"),
    ("map_sw_bits_shortcut", "set_owner 0xb56000 0x4000 0",
     "IcacheInvalPou(pa=0x0, size=0x1000)"),
]


@pytest.mark.parametrize(("knob", "replay", "kernel_event", "caps"), [
    *((k, r, e, KvmCaps()) for k, r, e in KNOBS),
    ("unmap_range_tlbi", "map 0x1000 0x1000 0x100000000 R; unmap 0x1000 0x1000",
     "TlbiVmidIpa(vmid=1, ipa=0x1000, level=3, nsh=False)",
     KvmCaps(stage2_fwb=True, tlb_range=True)),
])
def test_each_6_1_knob_is_what_makes_the_model_agree(kernel_6_1: KernelPgtable, knob: str,
                                                    replay: str, kernel_event: str,
                                                    caps: KvmCaps) -> None:
    ops = parse_ops(replay)
    agree = run_diff(kernel_6_1, V6_1, ops=0, seed=0, replay=ops, caps=caps)
    assert agree.differences == () and agree.agreed == len(ops)
    today = getattr(CURRENT, knob)
    assert getattr(V6_1, knob) is not today
    report = run_diff(kernel_6_1, replace(V6_1, **{knob: today}), ops=0, seed=0, replay=ops,
                      caps=caps)
    (result, _), = report.differences
    assert result.difference is not None and kernel_event in result.difference.kernel
