"""The component locks pKVM's transitions take at EL2, and their order.

Each component whose page table a transition reads or changes is locked first: the
host (host_mmu.lock, the host stage 2 and the vmemmap host state), the hypervisor
(pkvm_pgd_lock, its stage 1) and a guest (the VM's lock, its stage 2). The kernel's
enum pkvm_component_id "corresponds to page-table locking order": host, then hyp, then
guest, released in reverse. Every acquire and release is a ComponentLock event in the
pKVM event log; taking a lock while holding one of the same or a later rank records a
WARN (the kernel would risk an ABBA deadlock; no lockdep at EL2).

KERNEL_LOCKS is the table the model follows, per function, as read in
linux-source-6.12 arch/arm64/kvm/hyp/nvhe/mem_protect.c (host and hyp transitions,
host_stage2_idmap, FF-A) and in the later mem_protect.c with the guest share hypercalls
(__pkvm_host_share_guest, __pkvm_host_unshare_guest: host then guest;
__pkvm_host_relax_perms_guest, __pkvm_host_wrprotect_guest,
__pkvm_host_test_clear_young_guest, __pkvm_host_mkyoung_guest: guest only).
__pkvm_host_donate_guest and __pkvm_host_reclaim_page are the model's own shapes
(mem_protect.py says so); they lock like __pkvm_host_share_guest.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from s2mmu.pgtable.events import ComponentLock, EventLog, Warn
from s2mmu.pgtable.pte import PkvmComponentId

HOST = PkvmComponentId.PKVM_ID_HOST
HYP = PkvmComponentId.PKVM_ID_HYP
GUEST = PkvmComponentId.PKVM_ID_GUEST

LOCK_NAMES = {HOST: "host_mmu.lock", HYP: "pkvm_pgd_lock", GUEST: "vm->lock"}

KERNEL_LOCKS: dict[str, tuple[PkvmComponentId, ...]] = {
    "host_stage2_idmap": (HOST,),
    "__pkvm_host_share_hyp": (HOST, HYP),
    "__pkvm_host_unshare_hyp": (HOST, HYP),
    "__pkvm_host_donate_hyp": (HOST, HYP),
    "__pkvm_hyp_donate_host": (HOST, HYP),
    "hyp_pin_shared_mem": (HOST, HYP),
    "hyp_unpin_shared_mem": (HOST, HYP),
    "__pkvm_host_share_ffa": (HOST,),
    "__pkvm_host_unshare_ffa": (HOST,),
    "__pkvm_host_share_guest": (HOST, GUEST),
    "__pkvm_host_unshare_guest": (HOST, GUEST),
    "__pkvm_host_relax_perms_guest": (GUEST,),
    "__pkvm_host_wrprotect_guest": (GUEST,),
    "__pkvm_host_test_clear_young_guest": (GUEST,),
    "__pkvm_host_mkyoung_guest": (GUEST,),
    "__pkvm_host_donate_guest": (HOST, GUEST),
    "__pkvm_host_reclaim_page": (HOST, GUEST),
}
"""Which component locks each transition takes, in acquisition order."""


class HasLocks(Protocol):
    """What the lock helpers need of the hypervisor state."""

    @property
    def events(self) -> EventLog: ...

    locks_held: list[tuple[PkvmComponentId, int]]


def lock_component(
    pkvm: HasLocks, function: str, component: PkvmComponentId, handle: int = 0
) -> None:
    """Take one component lock; WARN if a lock of the same or a later rank is held.

    Kernel: host_lock_component, hyp_lock_component, guest_lock_component.
    """
    for held, held_handle in pkvm.locks_held:
        if held >= component:
            pkvm.events.record(Warn(
                function,
                f"lock order: {LOCK_NAMES[component]} taken while holding "
                f"{LOCK_NAMES[held]}" + (f" (vm {held_handle})" if held == GUEST else ""),
            ))
    pkvm.locks_held.append((component, handle))
    pkvm.events.record(ComponentLock(component, True, handle))


def unlock_component(
    pkvm: HasLocks, function: str, component: PkvmComponentId, handle: int = 0
) -> None:
    """Release a held component lock; WARN if it is not held.

    Kernel: host_unlock_component, hyp_unlock_component, guest_unlock_component.
    """
    if (component, handle) not in pkvm.locks_held:
        pkvm.events.record(Warn(function, f"{LOCK_NAMES[component]} released, not held"))
    else:
        pkvm.locks_held.remove((component, handle))
    pkvm.events.record(ComponentLock(component, False, handle))


@contextmanager
def component_locks(pkvm: HasLocks, function: str, handle: int = 0) -> Iterator[None]:
    """Hold the locks KERNEL_LOCKS gives function for the body; release in reverse."""
    components = KERNEL_LOCKS[function]
    for c in components:
        lock_component(pkvm, function, c, handle if c == GUEST else 0)
    try:
        yield
    finally:
        for c in reversed(components):
            unlock_component(pkvm, function, c, handle if c == GUEST else 0)


def recorded_order(events: list[object]) -> list[tuple[PkvmComponentId, bool]]:
    """Return the (component, acquire) pairs of the ComponentLock events, in order."""
    return [(e.component, e.acquire) for e in events if isinstance(e, ComponentLock)]
