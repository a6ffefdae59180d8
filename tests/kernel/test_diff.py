"""The differential run: the model agrees with the kernel's pgtable.c operation by operation."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from s2mmu.arch.errors import InputError
from s2mmu.kernel.binding import KernelPgtable
from s2mmu.kernel.build import KernelBuild
from s2mmu.kernel.diff import Op, new_sides, parse_ops, random_op, run_diff
from s2mmu.pgtable.caps import KvmCaps
from s2mmu.pgtable.profile import V6_12, V6_19
from s2mmu.pgtable.walk import kvm_pgd_pages

RELAX_RW_ON_EXEC = "map 0xa00000 0x200000 0x11f400000 X; relax_perms 0xa6a000 R"


def test_the_model_agrees_with_the_kernel_on_random_operations(
        kernel: KernelPgtable, kernel_build: KernelBuild) -> None:
    report = run_diff(kernel, kernel_build.profile, ops=240, seed=0, length=40)
    assert [(r.difference, ops) for r, ops in report.differences] == []
    assert report.compared == report.agreed == 240
    assert set(report.by_op) >= {"map", "unmap", "wrprotect", "relax_perms", "split"}


def test_agreement_holds_with_fwb_and_range_tlbis(kernel: KernelPgtable,
                                                   kernel_build: KernelBuild) -> None:
    report = run_diff(kernel, kernel_build.profile, ops=120, seed=7,
                      caps=KvmCaps(stage2_fwb=True, tlb_range=True))
    assert report.agreed == report.compared == 120


def test_the_v6_19_xn_rule_differs_from_6_12_on_relax_perms(kernel: KernelPgtable) -> None:
    report = run_diff(kernel, V6_19, ops=0, seed=0, replay=parse_ops(RELAX_RW_ON_EXEC))
    assert report.compared == 2 and report.agreed == 1
    (result, ops), = report.differences
    assert result.difference is not None
    assert result.difference.what.startswith("descriptor at ")
    # The kernel leaves the page executable; the v6.19 rule sets XN (bit 54).
    assert int(result.difference.model, 16) ^ int(result.difference.kernel, 16) == 1 << 54
    assert [str(op) for op in ops] == RELAX_RW_ON_EXEC.split("; ")


def test_a_difference_is_shrunk_to_the_operations_that_show_it(kernel: KernelPgtable) -> None:
    noise = "mkyoung 0x1000; unmap 0x400000 0x1000; "
    report = run_diff(kernel, V6_19, ops=0, seed=0, replay=parse_ops(noise + RELAX_RW_ON_EXEC))
    (_, ops), = report.differences
    assert "; ".join(map(str, ops)) == RELAX_RW_ON_EXEC


def test_every_random_operation_prints_as_replayable_text() -> None:
    rng = random.Random(1)
    ops = [random_op(rng) for _ in range(500)]
    assert parse_ops("; ".join(map(str, ops))) == ops


@pytest.mark.parametrize(("text", "message"), [
    ("frob 0x1000", r"^replay: unknown operation 'frob'; one of map, set_owner"),
    ("map 0x1000", r"^replay: cannot read operation 'map 0x1000'$"),
    ("relax_perms 0x1000 RQ", r"^replay: prot 'RQ' is not PERMS\[\+DEVICE\|\+NC\]"),
])
def test_a_bad_replay_is_refused_by_name(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_ops(text)


def test_an_op_prints_its_arguments() -> None:
    assert str(Op("map", 0x1000, 0x2000, 0x4000_0000, 0b111, fault=True)) == \
        "map 0x1000 0x2000 0x40000000 RWX fault"
    assert str(Op("relax_perms", 0x1000, prot=0b110 | 8)) == "relax_perms 0x1000 RW+DEVICE"


@pytest.mark.parametrize(("ipa_bits", "start_level", "pgd_pages"),
                         [(32, 2, 4), (36, 1, 1), (40, 1, 2), (44, 0, 1), (48, 0, 1)])
def test_agreement_holds_for_every_ipa_size_and_its_start_level(
        kernel: KernelPgtable, kernel_build: KernelBuild, ipa_bits: int, start_level: int,
        pgd_pages: int) -> None:
    sides = new_sides(kernel, kernel_build.profile, KvmCaps(), ipa_bits)
    pgt = sides.pgt
    assert (pgt.start_level, kvm_pgd_pages(pgt.ia_bits, pgt.start_level, sides.env.g)) == (
        start_level, pgd_pages)
    report = run_diff(kernel, kernel_build.profile, ops=80, seed=3, ipa_bits=ipa_bits)
    assert [(r.difference, ops) for r, ops in report.differences] == []
    assert report.agreed == report.compared == 80


@pytest.mark.parametrize("ipa_bits", [31, 49])
def test_an_ipa_size_outside_32_to_48_bits_is_refused(kernel: KernelPgtable,
                                                      kernel_build: KernelBuild,
                                                      ipa_bits: int) -> None:
    with pytest.raises(InputError, match=f"IPA size {ipa_bits} bits is outside 32..48"):
        run_diff(kernel, kernel_build.profile, ops=1, seed=0, ipa_bits=ipa_bits)


def test_6_12_has_the_6_10_icache_rule_for_owner_annotations(kernel: KernelPgtable) -> None:
    # 96171cfa55d0 (v6.10): without it the model invalidates the I-cache for an owner
    # annotation, which 6.12.118 does not. (7cc1d214a6cd's software-bits shortcut has no
    # effect the operations can show once invalid entries get no CMOs.)
    ops = parse_ops("set_owner 0x559000 0x1000 1")
    assert run_diff(kernel, V6_12, ops=0, seed=0, replay=ops).differences == ()
    report = run_diff(kernel, replace(V6_12, cmo_valid_leaf_only=False), ops=0, seed=0,
                      replay=ops)
    (result, _), = report.differences
    assert result.difference is not None
    assert "IcacheInvalPou" in result.difference.model
