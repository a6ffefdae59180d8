"""A page_fault_test-style matrix: access x stage-1 tables (S1PTW) x target memslot kind
x logging x syndrome, each case on a fresh VM, driven by real two-stage translations.

The expected outcome comes from an oracle written from the kernel's rules
(kvm_handle_guest_abort, kvm_is_write_fault, user_mem_abort), in the spirit of
tools/testing/selftests/kvm/arm64/page_fault_test.c, not from the model:

- the guest's stage-1 tables in a hole: the S1PTW abort is re-injected (dabt, or pabt
  for a fetch, since an instruction abort with S1PTW is still an IABT);
- tables in a read-only slot work: an S1PTW translation fault is not a write;
- target in a hole: a fetch gets a pabt; a load/store is MMIO with a valid syndrome,
  -ENOSYS without one;
- a write to a read-only slot is MMIO likewise; a read or fetch completes;
- RAM completes; with logging, only a write dirties the target page, and the table
  pages are never dirtied (their walk faults are not writes).
"""

from __future__ import annotations

import itertools

import pytest

from s2mmu.kvm.cpu import S1Map, build_guest_stage1
from s2mmu.kvm.dirty import dirty_gfns
from s2mmu.kvm.host import Vma, VmaKind
from s2mmu.kvm.invariants import check_invariants
from s2mmu.kvm.memslot import KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY
from s2mmu.kvm.vm import kvm_set_memory_region
from s2mmu.scenario.kvm_events import AccessKind, GuestAccess, KvmWorld, run_access
from s2mmu.scenario.records import StepDraft, World
from s2mmu.scenario.schema import Scenario, Where
from tests.kvm.helpers import new_vm

TABLES = {"ram": 0x4000_0000, "readonly": 0x8000_0000, "hole": 0xC000_0000}
TARGET = {"ram": 0x4100_0000, "readonly": 0x8100_0000, "hole": 0xC100_0000}
VA = 0x20_0000


def oracle(access: str, tables: str, target: str, syndrome: bool) -> str:
    """Return the final outcome the kernel's rules give."""
    if tables == "hole":
        return "sea-pabt" if access == "exec" else "sea-dabt"
    if target == "hole":
        if access == "exec":
            return "sea-pabt"
        return "mmio" if syndrome else "error"
    if target == "readonly" and access == "write":
        return "mmio" if syndrome else "error"
    return "completed"


def build(tables: str, logging: bool):  # type: ignore[no-untyped-def]
    kvm, vcpu = new_vm()
    flags = KVM_MEM_LOG_DIRTY_PAGES if logging else 0
    for i, (ipa, f) in enumerate(((0x4000_0000, flags), (0x8000_0000, KVM_MEM_READONLY))):
        hva = 0x7F00_0000_0000 + i * (1 << 32)
        kvm.host.mmap(Vma(hva, hva + (32 << 20), VmaKind.ANON, thp=True))
        kvm_set_memory_region(kvm, i, f, ipa, 32 << 20, hva)
    # The VMM writes the stage-1 tables; a "hole" table base is written through a
    # temporary slot that is then deleted.
    if tables == "hole":
        hva = 0x7F10_0000_0000
        kvm.host.mmap(Vma(hva, hva + (2 << 20), VmaKind.ANON))
        kvm_set_memory_region(kvm, 9, 0, TABLES["hole"], 2 << 20, hva)
    return kvm, vcpu


CASES = list(itertools.product(("read", "write", "exec"), TABLES, TARGET, (False, True),
                               (False, True)))


@pytest.mark.parametrize("access, tables, target, logging, syndrome", CASES)
def test_fault_matrix(access: str, tables: str, target: str, logging: bool,
                      syndrome: bool) -> None:
    kvm, vcpu = build(tables, logging)
    maps = [S1Map(VA, TARGET[target], 0x1000)]
    regs = build_guest_stage1(kvm, TABLES[tables], maps)
    if tables == "hole":
        kvm_set_memory_region(kvm, 9, 0, 0, 0, 0)
    world = World(Scenario("matrix", "matrix", "", {}))
    world.add(KvmWorld(kvm.host, kvm, [vcpu], [regs]))
    event = GuestAccess(do=access, table="event", index=0, where=Where("matrix", 1),
                        access=AccessKind(access), va=VA + 0x10,
                        syndrome=(4, 2) if syndrome else None)
    draft = StepDraft(1, event)
    outcome = run_access(world, event, draft)
    assert outcome.value == oracle(access, tables, target, syndrome), draft.faults
    want_dirty = [(TARGET["ram"] - 0x4000_0000) >> 12] if (
        logging and target == "ram" and access == "write" and tables != "hole") else []
    if logging:
        assert dirty_gfns(kvm, 0) == want_dirty
    assert check_invariants(kvm) == []
