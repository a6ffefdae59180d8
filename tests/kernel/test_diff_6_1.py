"""Linux 6.1's pgtable.c against the model's pre-v6.3 profile ("v6.2").

6.1 is the last release before the parallel-fault rework of v6.2, and the model's "v6.2"
profile stands for 6.2: operations outside the rework's changes agree word for word;
four classes of difference remain, each checked here on its minimal replay (the README
and the campaign name them).
"""

from __future__ import annotations

from s2mmu.kernel.binding import KernelPgtable
from s2mmu.kernel.build import KernelBuild
from s2mmu.kernel.diff import SERIES_6_1, parse_ops, run_diff
from s2mmu.pgtable.events import Dsb, IcacheInvalPou, TlbiVmidIpa
from s2mmu.pgtable.profile import PRE_V6_3

AGREEING = ("map 0x1000 0x1000 0x100000000 RW; map 0x200000 0x200000 0x140000000 RWX; "
            "wrprotect 0x0 0x400000; mkyoung 0x1000; test_clear_young 0x1000 0x1000 1; "
            "test_clear_young 0x201000 0x1000 0; flush 0x0 0x400000; "
            "map 0x400000 0x4000 0x100400000 R; unmap 0x401000 0x1000")


def test_6_1_is_detected_and_picks_the_pre_v6_3_profile(kernel_6_1_build: KernelBuild,
                                                        kernel_6_1: KernelPgtable) -> None:
    assert (kernel_6_1_build.version.version, kernel_6_1_build.version.patchlevel) == (6, 1)
    assert kernel_6_1_build.profile is PRE_V6_3
    assert kernel_6_1_build.at_library is None
    assert kernel_6_1.series == SERIES_6_1


def test_6_1_agrees_outside_the_v6_2_rework(kernel_6_1: KernelPgtable) -> None:
    report = run_diff(kernel_6_1, PRE_V6_3, ops=0, seed=0, replay=parse_ops(AGREEING))
    assert report.differences == ()
    assert report.agreed == report.compared == 9


def first_difference(kernel: KernelPgtable, text: str) -> tuple[str, str, str]:
    report = run_diff(kernel, PRE_V6_3, ops=0, seed=0, replay=parse_ops(text))
    (result, _), = report.differences
    assert result.difference is not None
    return result.difference.what, result.difference.kernel, result.difference.model


def test_6_1_relax_perms_invalidates_inner_shareable(kernel_6_1: KernelPgtable) -> None:
    _, k, m = first_difference(kernel_6_1, "map 0x1000 0x1000 0x100000000 R; "
                                           "relax_perms 0x1000 RW")
    assert k.startswith(repr(TlbiVmidIpa(1, 0x1000, 3, False)))
    assert m.startswith(repr(TlbiVmidIpa(1, 0x1000, 3, True)))


def test_6_1_owner_annotation_invalidates_the_icache(kernel_6_1: KernelPgtable) -> None:
    _, k, m = first_difference(kernel_6_1, "set_owner 0x559000 0x1000 1")
    assert k.startswith(repr(IcacheInvalPou(0, 0x1000)))
    assert "IcacheInvalPou" not in m


def test_6_1_table_teardown_tlbi_level(kernel_6_1: KernelPgtable) -> None:
    _, k, m = first_difference(kernel_6_1, "map 0x1000 0x1000 0x100000000 RW; "
                                           "unmap 0x1000 0x1000")
    assert "level=0" in k and "level=2147483647" in m


def test_6_1_block_over_table_uses_the_anchor(kernel_6_1: KernelPgtable) -> None:
    _, k, m = first_difference(kernel_6_1, "map 0x1a000 0x1000 0x1fcff0000 R; "
                                           "map 0x0 0x200000 0x12aa00000 RW")
    assert k.startswith(repr(Dsb("ishst")))
    assert m.startswith("DcacheCleanInvalPoc")


def test_a_small_random_run_against_6_1_compares_operations(kernel_6_1: KernelPgtable) -> None:
    report = run_diff(kernel_6_1, PRE_V6_3, ops=200, seed=0)
    assert report.compared > 0 and report.agreed > 0
    assert "split" not in report.by_op
