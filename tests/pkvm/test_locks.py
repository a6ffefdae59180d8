"""Component locks: every transition takes the kernel's locks, host -> hyp -> guest."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import s2mmu.pkvm.mem_protect as mp
from s2mmu.pgtable.errno import EPERM
from s2mmu.pgtable.events import ComponentLock, Warn
from s2mmu.pgtable.prot import KVM_PGTABLE_PROT_RWX
from s2mmu.pkvm.locks import (
    GUEST,
    HOST,
    HYP,
    KERNEL_LOCKS,
    component_locks,
    lock_component,
    recorded_order,
    unlock_component,
)
from s2mmu.pkvm.mem_protect import HYP_VA_OFFSET, RAM_BASE, Pkvm, new_hyp_vm, new_pkvm

SZ_4K = 0x1000
PFN = RAM_BASE // SZ_4K
RWX = int(KVM_PGTABLE_PROT_RWX)
HVA = HYP_VA_OFFSET + RAM_BASE


# As read: linux-source-6.12 nvhe/mem_protect.c for the host, hyp and FF-A transitions
# and host_stage2_idmap; the later mem_protect.c for the guest share hypercalls; donate
# and reclaim to a guest are the model's own (locked like the share).
KERNEL_TABLE = {
    "host_stage2_idmap": "host",
    "__pkvm_host_share_hyp": "host hyp",
    "__pkvm_host_unshare_hyp": "host hyp",
    "__pkvm_host_donate_hyp": "host hyp",
    "__pkvm_hyp_donate_host": "host hyp",
    "hyp_pin_shared_mem": "host hyp",
    "hyp_unpin_shared_mem": "host hyp",
    "__pkvm_host_share_ffa": "host",
    "__pkvm_host_unshare_ffa": "host",
    "__pkvm_host_share_guest": "host guest",
    "__pkvm_host_unshare_guest": "host guest",
    "__pkvm_host_relax_perms_guest": "guest",
    "__pkvm_host_wrprotect_guest": "guest",
    "__pkvm_host_test_clear_young_guest": "guest",
    "__pkvm_host_mkyoung_guest": "guest",
    "__pkvm_host_donate_guest": "host guest",
    "__pkvm_host_reclaim_page": "host guest",
}
NAMES = {"host": HOST, "hyp": HYP, "guest": GUEST}


def _sequence(pkvm: Pkvm) -> list[tuple[str, int, Callable[[], int]]]:
    """Each transition once, in an order where every call succeeds: (name, vm handle, call)."""
    vm = new_hyp_vm(pkvm, 1, protected=False)
    pvm = new_hyp_vm(pkvm, 2, protected=True)

    def unpin() -> int:
        mp.hyp_unpin_shared_mem(pkvm, HVA, HVA + SZ_4K)
        return 0

    def reclaim() -> int:
        pvm.dying = True
        return mp.__pkvm_host_reclaim_page(pkvm, pvm, 0x20)

    return [
        ("host_stage2_idmap", 0, lambda: mp.host_stage2_idmap(pkvm, RAM_BASE + 0x10_0000)),
        ("__pkvm_host_share_hyp", 0, lambda: mp.__pkvm_host_share_hyp(pkvm, PFN)),
        ("hyp_pin_shared_mem", 0, lambda: mp.hyp_pin_shared_mem(pkvm, HVA, HVA + SZ_4K)),
        ("hyp_unpin_shared_mem", 0, unpin),
        ("__pkvm_host_unshare_hyp", 0, lambda: mp.__pkvm_host_unshare_hyp(pkvm, PFN)),
        ("__pkvm_host_donate_hyp", 0, lambda: mp.__pkvm_host_donate_hyp(pkvm, PFN + 1, 1)),
        ("__pkvm_hyp_donate_host", 0, lambda: mp.__pkvm_hyp_donate_host(pkvm, PFN + 1, 1)),
        ("__pkvm_host_share_ffa", 0, lambda: mp.__pkvm_host_share_ffa(pkvm, PFN + 2, 1)),
        ("__pkvm_host_unshare_ffa", 0, lambda: mp.__pkvm_host_unshare_ffa(pkvm, PFN + 2, 1)),
        ("__pkvm_host_share_guest", 1,
         lambda: mp.__pkvm_host_share_guest(pkvm, PFN + 3, 0x10, 1, vm, RWX)),
        ("__pkvm_host_relax_perms_guest", 1,
         lambda: mp.__pkvm_host_relax_perms_guest(pkvm, 0x10, vm, RWX)),
        ("__pkvm_host_wrprotect_guest", 1,
         lambda: mp.__pkvm_host_wrprotect_guest(pkvm, 0x10, 1, vm)),
        ("__pkvm_host_test_clear_young_guest", 1,
         lambda: mp.__pkvm_host_test_clear_young_guest(pkvm, 0x10, 1, True, vm)),
        ("__pkvm_host_mkyoung_guest", 1, lambda: mp.__pkvm_host_mkyoung_guest(pkvm, 0x10, vm)),
        ("__pkvm_host_unshare_guest", 1,
         lambda: mp.__pkvm_host_unshare_guest(pkvm, 0x10, 1, vm)),
        ("__pkvm_host_donate_guest", 2,
         lambda: mp.__pkvm_host_donate_guest(pkvm, PFN + 4, 0x20, pvm)),
        ("__pkvm_host_reclaim_page", 2, reclaim),
    ]


def test_the_kernel_table_is_in_component_order() -> None:
    for function, locks in KERNEL_LOCKS.items():
        assert list(locks) == sorted(set(locks)), function
    assert HOST < HYP < GUEST


def test_every_transition_records_the_kernel_lock_order() -> None:
    pkvm = new_pkvm()
    seen = []
    for name, handle, call in _sequence(pkvm):
        mark = len(pkvm.events)
        ret = call()
        assert ret >= 0, (name, ret)
        since = pkvm.events.since(mark)
        want = [NAMES[w] for w in KERNEL_TABLE[name].split()]
        acquires = [(c, True) for c in want]
        releases = [(c, False) for c in reversed(want)]
        assert recorded_order(list(since)) == acquires + releases, name
        for e in since:
            if isinstance(e, ComponentLock):
                assert e.handle == (handle if e.component == GUEST else 0), name
        assert not [e for e in since if isinstance(e, Warn)], name
        assert pkvm.locks_held == [], name
        seen.append(name)
    assert sorted(seen) == sorted(KERNEL_LOCKS) == sorted(KERNEL_TABLE)


def test_a_failing_transition_releases_its_locks() -> None:
    pkvm = new_pkvm()
    assert mp.__pkvm_host_share_hyp(pkvm, PFN) == 0
    mark = len(pkvm.events)
    assert mp.__pkvm_host_share_hyp(pkvm, PFN) == -EPERM
    assert recorded_order(list(pkvm.events.since(mark))) == [
        (HOST, True), (HYP, True), (HYP, False), (HOST, False)]
    assert pkvm.locks_held == []


def test_checks_before_the_lock_take_no_lock() -> None:
    pkvm = new_pkvm()
    pvm = new_hyp_vm(pkvm, 2, protected=True)
    mark = len(pkvm.events)
    assert mp.__pkvm_host_relax_perms_guest(pkvm, 0x10, pvm, RWX) == -EPERM
    assert mp.__pkvm_host_share_guest(pkvm, PFN, 0x10, 3, pvm, RWX) < 0  # size check
    assert recorded_order(list(pkvm.events.since(mark))) == []


def test_out_of_order_acquisition_warns() -> None:
    pkvm = new_pkvm()
    lock_component(pkvm, "test", HYP)
    lock_component(pkvm, "test", HOST)
    warns = pkvm.events.of_type(Warn)
    assert warns == [Warn("test", "lock order: host_mmu.lock taken while holding pkvm_pgd_lock")]
    unlock_component(pkvm, "test", HOST)
    unlock_component(pkvm, "test", HYP)
    assert pkvm.locks_held == []


def test_a_transition_called_under_a_guest_lock_warns() -> None:
    pkvm = new_pkvm()
    vm = new_hyp_vm(pkvm, 1, protected=False)
    with component_locks(pkvm, "__pkvm_host_mkyoung_guest", vm.handle):
        assert mp.__pkvm_host_share_guest(pkvm, PFN, 0x10, 1, vm, RWX) == 0
    warns = pkvm.events.of_type(Warn)
    assert Warn("__pkvm_host_share_guest",
                "lock order: host_mmu.lock taken while holding vm->lock (vm 1)") in warns
    assert Warn("__pkvm_host_share_guest",
                "lock order: vm->lock taken while holding vm->lock (vm 1)") in warns


@pytest.mark.parametrize("component", [HOST, HYP, GUEST])
def test_releasing_a_lock_not_held_warns(component: mp.PkvmComponentId) -> None:
    pkvm = new_pkvm()
    unlock_component(pkvm, "test", component)
    assert len(pkvm.events.of_type(Warn)) == 1
