"""What the host gets when it touches memory: mapped on demand, or the policy's outcome."""

from __future__ import annotations

import pytest

import s2mmu.pkvm.mem_protect as mp
from s2mmu.pgtable.errno import EPERM
from s2mmu.pgtable.pte import kvm_pte_valid
from s2mmu.pgtable.walk import kvm_pgtable_get_leaf
from s2mmu.pkvm.host_fault import (
    PAGE_OFFSET,
    AccessDone,
    DirectMap,
    Fixup,
    HostAccess,
    HostAccessHypPanic,
    HostFaultPolicy,
    HostMapped,
    HostOops,
    HostRetry,
    HostSeaPanic,
    HypPanic,
    InjectedDataAbort,
    InjectedSea,
    ZeropadFixedUp,
    handle_host_mem_abort,
    host_access,
)
from s2mmu.pkvm.mem_protect import RAM_BASE, Pkvm, new_pkvm

SZ_4K = 0x1000
PFN = RAM_BASE // SZ_4K
GIVEN = RAM_BASE + SZ_4K  # the page the host gives away
POLICIES = list(HostFaultPolicy)
HEAD = b"\x11\x22\x33\x44"  # the bytes before the page boundary


@pytest.fixture
def pkvm() -> Pkvm:
    p = new_pkvm()
    p.env.mem.write_bytes(RAM_BASE + SZ_4K - 4, b"\x11\x22\x33\x44\x55\x66\x77\x88")
    return p


def mapped(pkvm: Pkvm, pa: int) -> bool:
    return kvm_pte_valid(kvm_pgtable_get_leaf(pkvm.host_pgt, pa).pte)


def va(pa: int) -> int:
    return PAGE_OFFSET + pa


@pytest.mark.parametrize("policy", POLICIES)
def test_host_memory_is_mapped_on_first_touch(pkvm: Pkvm, policy: HostFaultPolicy) -> None:
    got = host_access(pkvm, DirectMap(), HostAccess(va(RAM_BASE + SZ_4K - 4), 4), policy)
    assert got == AccessDone(b"\x11\x22\x33\x44")
    assert handle_host_mem_abort(pkvm, RAM_BASE, policy) == HostRetry(RAM_BASE)


def test_handle_host_mem_abort_outcomes_by_policy(pkvm: Pkvm) -> None:
    assert mp.__pkvm_host_donate_hyp(pkvm, PFN + 1, 1) == 0
    assert handle_host_mem_abort(pkvm, RAM_BASE, HostFaultPolicy.BUG) == HostMapped(RAM_BASE)
    by_policy = {
        HostFaultPolicy.BUG: HypPanic(GIVEN, -EPERM),
        HostFaultPolicy.INJECT_DATA_ABORT: InjectedDataAbort(GIVEN),
        HostFaultPolicy.INJECT_SEA: InjectedSea(GIVEN),
    }
    for policy, outcome in by_policy.items():
        assert handle_host_mem_abort(pkvm, GIVEN, policy) == outcome
        assert not mapped(pkvm, GIVEN)
    assert str(by_policy[HostFaultPolicy.BUG]) == (
        "hyp BUG_ON: host_stage2_idmap(0x40001000) = -EPERM"
    )


@pytest.mark.parametrize(
    "policy, outcome",
    [
        (HostFaultPolicy.BUG, HostAccessHypPanic(HypPanic(GIVEN, -EPERM))),
        (HostFaultPolicy.INJECT_DATA_ABORT, HostOops(va(GIVEN), 2)),
        (HostFaultPolicy.INJECT_SEA, HostSeaPanic(va(GIVEN))),
    ],
)
def test_plain_load_from_a_given_away_page(pkvm: Pkvm, policy, outcome) -> None:  # type: ignore[no-untyped-def]
    assert mp.__pkvm_host_donate_hyp(pkvm, PFN + 1, 1) == 0
    assert host_access(pkvm, DirectMap(), HostAccess(va(GIVEN), 8), policy) == outcome
    assert not mapped(pkvm, GIVEN)


@pytest.mark.parametrize(
    "policy, outcome",
    [
        (HostFaultPolicy.BUG, HostAccessHypPanic(HypPanic(GIVEN, -EPERM))),
        (HostFaultPolicy.INJECT_DATA_ABORT, ZeropadFixedUp(HEAD + bytes(4), va(GIVEN))),
        (HostFaultPolicy.INJECT_SEA, HostSeaPanic(va(GIVEN))),
    ],
)
def test_load_unaligned_zeropad_across_into_a_given_away_page(pkvm: Pkvm, policy, outcome) -> None:  # type: ignore[no-untyped-def]
    # Seed 002: the extable fixup works when the hypervisor injects a data abort, not
    # when it injects an SEA.
    assert mp.__pkvm_host_donate_hyp(pkvm, PFN + 1, 1) == 0
    access = HostAccess(va(GIVEN - 4), 8, fixup=Fixup.ZEROPAD)
    assert host_access(pkvm, DirectMap(), access, policy) == outcome
    assert not mapped(pkvm, GIVEN)


@pytest.mark.parametrize("policy", POLICIES)
def test_unmapping_the_direct_map_keeps_the_fault_at_stage_1(pkvm: Pkvm, policy) -> None:  # type: ignore[no-untyped-def]
    assert mp.__pkvm_host_donate_hyp(pkvm, PFN + 1, 1) == 0
    dm = DirectMap()
    dm.set_direct_map_invalid_noflush(PFN + 1)
    zeropad = HostAccess(va(GIVEN - 4), 8, fixup=Fixup.ZEROPAD)
    assert host_access(pkvm, dm, zeropad, policy) == ZeropadFixedUp(
        b"\x11\x22\x33\x44" + bytes(4), va(GIVEN), stage=1
    )
    assert host_access(pkvm, dm, HostAccess(va(GIVEN), 8), policy) == HostOops(va(GIVEN), 1)
    dm.set_direct_map_default_noflush(PFN + 1)
    assert host_access(pkvm, dm, HostAccess(va(GIVEN), 8), policy) != HostOops(va(GIVEN), 1)


def test_zeropad_faulting_on_its_first_page_is_an_oops(pkvm: Pkvm) -> None:
    assert mp.__pkvm_host_donate_hyp(pkvm, PFN + 1, 1) == 0
    access = HostAccess(va(GIVEN + 8), 8, fixup=Fixup.ZEROPAD)
    policy = HostFaultPolicy.INJECT_DATA_ABORT
    assert host_access(pkvm, DirectMap(), access, policy) == HostOops(va(GIVEN + 8), 2)


def test_stores_move_their_bytes_once_every_page_translates(pkvm: Pkvm) -> None:
    policy = HostFaultPolicy.INJECT_DATA_ABORT
    store = HostAccess(va(GIVEN - 2), 4, write=True)
    assert host_access(pkvm, DirectMap(), store, policy, b"abcd") == AccessDone(b"abcd")
    assert pkvm.env.mem.read_bytes(GIVEN - 2, 4) == b"abcd"
    with pytest.raises(ValueError, match="a 4-byte store needs 4 bytes of data"):
        host_access(pkvm, DirectMap(), store, policy, b"ab")
    assert mp.__pkvm_host_donate_hyp(pkvm, PFN + 2, 1) == 0
    store = HostAccess(va(RAM_BASE + 2 * SZ_4K - 2), 4, write=True)
    assert host_access(pkvm, DirectMap(), store, policy, b"wxyz") == HostOops(
        va(RAM_BASE + 2 * SZ_4K), 2
    )
    assert pkvm.env.mem.read_bytes(RAM_BASE + 2 * SZ_4K - 2, 2) != b"wx"


def test_outcomes_read_as_one_line_with_hex_addresses() -> None:
    assert str(HostMapped(0x4000_0000)) == "mapped the block holding 0x40000000"
    assert str(HostRetry(0x4000_0000)) == "-EAGAIN: 0x40000000 already mapped, retry"
    assert str(InjectedDataAbort(0x1000)) == "data abort injected at 0x1000"
    assert str(InjectedSea(0x1000)) == "SEA injected at 0x1000"
    assert str(ZeropadFixedUp(b"\x01\x00", 0x2000)) == "fixed up at FAR 0x2000: 0100"
    assert str(HostOops(0x2000, 2)) == "Oops: kernel data abort at stage 2, FAR 0x2000"
    assert str(HostSeaPanic(0x2000)) == "panic: SEA in the kernel, FAR 0x2000"
    assert str(AccessDone(b"\xab")) == "done: ab"
    assert str(HostAccessHypPanic(HypPanic(0x3000, -EPERM))) == (
        "hyp BUG_ON: host_stage2_idmap(0x3000) = -EPERM"
    )
