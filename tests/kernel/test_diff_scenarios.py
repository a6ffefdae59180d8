"""`kernel diff --scenario`: named stories replayed on the kernel's pgtable.c and the model."""

from __future__ import annotations

import pytest

from s2mmu.arch.errors import InputError
from s2mmu.kernel.binding import KernelPgtable
from s2mmu.kernel.build import KernelBuild
from s2mmu.kernel.diff import (
    POOL_BASE,
    Op,
    _prepare,
    new_sides,
    parse_ops,
    run_diff,
    run_kernel,
    run_model,
)
from s2mmu.kernel.diff_scenarios import SCENARIOS, scenario
from s2mmu.pgtable.caps import KvmCaps
from s2mmu.pgtable.profile import V6_19

EAGAIN, EINVAL = -11, -22


def returns(kernel: KernelPgtable, build: KernelBuild, name: str) -> list[tuple[str, int | None]]:
    """Return each operation of a scenario with the kernel's return value (model's equal)."""
    s = new_sides(kernel, build.profile, KvmCaps())
    out = []
    for op in SCENARIOS[name].ops(kernel.series):
        _prepare(s, op)
        k_ret, m_ret = run_kernel(kernel, op), run_model(s, op)
        kernel.take_events()
        assert k_ret == m_ret, str(op)
        out.append((str(op), k_ret))
    return out


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_scenario_agrees_with_6_12_operation_by_operation(
        kernel: KernelPgtable, kernel_build: KernelBuild, name: str) -> None:
    ops = scenario(name).ops(kernel.series)
    assert 20 <= len(ops) <= 60
    report = run_diff(kernel, kernel_build.profile, ops=0, seed=0, replay=ops)
    assert [(r.difference, o) for r, o in report.differences] == []
    assert report.compared == report.agreed == len(ops)


def test_dirty_logging_splits_relaxes_and_ages_what_it_says(
        kernel: KernelPgtable, kernel_build: KernelBuild) -> None:
    rets = dict(returns(kernel, kernel_build, "dirty-logging"))
    assert rets["split 0x0 0x600000 4"] == 0
    assert rets["wrprotect 0x0 0x800000"] == 0
    assert all(r == 0 for op, r in rets.items() if op.startswith("relax_perms"))
    seq = returns(kernel, kernel_build, "dirty-logging")
    young = [r for op, r in seq if op.startswith("test_clear_young 0x0 0x200000 1")]
    assert young == [1, 0]  # the first pass clears the access flags the second finds clear
    unlinked = [r for op, r in seq if op.startswith("create_unlinked")]
    assert unlinked[-1] == EINVAL  # a block address not aligned to its level
    assert all(r is not None and r >= POOL_BASE for r in unlinked[:-1])  # table pages


def test_owner_annotations_refuse_what_the_kernel_refuses(
        kernel: KernelPgtable, kernel_build: KernelBuild) -> None:
    seq = returns(kernel, kernel_build, "owner-annotations")
    assert seq[-1] == ("set_owner 0x4000 0x1000 2", EINVAL)  # above KVM_MAX_OWNER_ID
    assert ("relax_perms 0x2000 RW", EAGAIN) in seq  # an annotation is not a mapping
    assert sum(1 for op, r in seq if op.startswith("set_owner") and r == 0) == 9


def test_a_scenario_shows_a_profile_difference_at_its_operation(kernel: KernelPgtable) -> None:
    report = run_diff(kernel, V6_19, ops=0, seed=0,
                      replay=scenario("block-over-table").ops(kernel.series))
    (result, ops), = report.differences
    assert result.at is not None and report.agreed == result.at
    assert [str(op) for op in ops] == ["map 0x400000 0x200000 0x140400000 RWX fault",
                                       "relax_perms 0x401000 RW"]


def test_scenarios_print_as_replayable_text() -> None:
    for sc in SCENARIOS.values():
        ops = sc.ops()
        assert parse_ops("; ".join(map(str, ops))) == ops
        assert [str(op) for op in ops] == list(sc.text)


def test_create_unlinked_prints_and_reads_back() -> None:
    op = Op("create_unlinked", 0, phys=0x1_4000_0000, level=2, prot=0b111, force_pte=True)
    assert str(op) == "create_unlinked 0x140000000 2 RWX force"
    assert parse_ops(str(op)) == [op]


def test_an_unknown_scenario_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(InputError, match=r"^kernel diff: unknown scenario 'nope'; one of "
                       r"dirty-logging, owner-annotations, block-over-table \(or list\)$"):
        scenario("nope")


def test_a_scenario_using_split_is_refused_for_6_1() -> None:
    with pytest.raises(InputError, match=r"^kernel diff: scenario 'dirty-logging' uses "
                       r"test_clear_young 0x0 0x800000 0, which Linux 6\.1"):
        scenario("dirty-logging").ops(601)
    assert not any(op.fault for op in scenario("block-over-table").ops(601))


@pytest.mark.parametrize("name", ["owner-annotations", "block-over-table"])
def test_the_scenarios_6_1_has_agree_with_6_1(kernel_6_1: KernelPgtable,
                                             kernel_6_1_build: KernelBuild, name: str) -> None:
    ops = scenario(name).ops(kernel_6_1.series)
    report = run_diff(kernel_6_1, kernel_6_1_build.profile, ops=0, seed=0, replay=ops)
    assert report.compared == report.agreed == len(ops)
