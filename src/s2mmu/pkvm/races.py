"""Ready-made pKVM races for the concurrency explorer: host stage-2 faults on two CPUs.

The host's stage 2 is filled lazily: each host CPU that touches an unmapped address
traps to EL2, whose handle_host_mem_abort takes host_mmu.lock and maps the largest empty
block around the address (host_stage2_idmap). Two CPUs faulting inside the same block
serialize on the lock; the second finds the block mapped and returns -EAGAIN, and the
host retries its access. The explorer checks, after every descriptor access, that the
host stage 2 is an identity map, and at the end that both addresses are mapped, that
one fault mapped the block and the other returned 0 or -EAGAIN, and that pKVM's
ownership invariants hold.

The operation is host_stage2_idmap in the library's stepped form: the same lookup
(find_mem_range, host_stage2_adjust_range) and the same kvm_pgtable_stage2_map call,
without host_stage2_try's -ENOMEM recycling of device mappings (the host stage-2 pool
does not run out here).

Kernel: handle_host_mem_abort, host_stage2_idmap, host_stage2_adjust_range,
__host_stage2_idmap (nvhe/mem_protect.c), host_mmu.lock held across them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from s2mmu.pgtable.concurrency import WRITE_LOCK, Op, Scenario, World
from s2mmu.pgtable.errno import EAGAIN
from s2mmu.pgtable.invariants import Violation, linear_expectation
from s2mmu.pgtable.mm import KvmMmuMemoryCache
from s2mmu.pgtable.profile import CURRENT, BehaviourProfile
from s2mmu.pgtable.pte import kvm_pte_valid
from s2mmu.pgtable.stage2 import kvm_pgtable_stage2_map
from s2mmu.pgtable.steps import Gen
from s2mmu.pgtable.walk import kvm_pgtable_get_leaf
from s2mmu.pkvm.invariants import check_pkvm
from s2mmu.pkvm.mem_protect import RAM_BASE, Pkvm, host_stage2_adjust_range, new_pkvm
from s2mmu.pkvm.memory import find_mem_range
from s2mmu.pkvm.states import PKVM_HOST_MEM_PROT, PKVM_HOST_MMIO_PROT

HOST_IPA_SPACE = 1 << 40


def host_stage2_idmap_steps(pkvm: Pkvm, addr: int) -> Gen[int]:
    """Run host_stage2_idmap one descriptor access at a time (see the module docstring)."""
    reg, rng = find_mem_range(pkvm.hyp_memory, addr)
    prot = PKVM_HOST_MEM_PROT if reg is not None else PKVM_HOST_MMIO_PROT
    ret, rng = host_stage2_adjust_range(pkvm, addr, rng)
    if ret:
        return ret
    size = rng.end - rng.start
    return (yield from kvm_pgtable_stage2_map.steps(pkvm.host_pgt, rng.start, size, rng.start,
                                                    prot, KvmMmuMemoryCache(), 0))


def _fault(pkvm: Pkvm, addr: int, name: str) -> Op:
    return Op(name, lambda: host_stage2_idmap_steps(pkvm, addr), WRITE_LOCK)


def _final(pkvm: Pkvm, addrs: tuple[int, ...]) -> Callable[[World, list[Any]], list[Violation]]:
    def check(world: World, results: list[Any]) -> list[Violation]:
        out = [Violation("lost-mapping", f"PA {a:#x} is not mapped in the host stage 2")
               for a in addrs if not kvm_pte_valid(kvm_pgtable_get_leaf(pkvm.host_pgt, a).pte)]
        if sorted(results) != [-EAGAIN, 0]:
            out.append(Violation("result", f"the faults returned {results}: one maps the "
                                           "block, the other finds it mapped (-EAGAIN)"))
        out += [Violation(f"pkvm-{v.rule}", str(v)) for v in check_pkvm(pkvm)]
        return out

    return check


def host_idmap_faults(profile: BehaviourProfile = CURRENT) -> Scenario:
    """Two host CPUs take host stage-2 faults in the same block (pKVM's lazy idmap)."""

    def build() -> World:
        pkvm = new_pkvm(1024, profile=profile)  # 4M of RAM: a 2M block fits
        pkvm.env.events.trace_ptes = True  # the explorer's checker follows descriptor writes
        addrs = (RAM_BASE + 0x1000, RAM_BASE + 0x3000)
        ops = [_fault(pkvm, addrs[0], "cpu0-host-fault"), _fault(pkvm, addrs[1],
                                                                 "cpu1-host-fault")]
        return World(pkvm.host_pgt, ops, linear_expectation(0, 0, HOST_IPA_SPACE),
                     [_final(pkvm, addrs)])

    return build


PKVM_RACES = {"pkvm-host-idmap-faults": host_idmap_faults}
"""The pKVM races, by the name `s2mmu race` takes."""
