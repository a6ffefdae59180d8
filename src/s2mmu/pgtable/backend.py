"""The stage-2 backend KVM calls: the page-table library itself, or pKVM's hypercalls.

KVM's MMU code never touches a guest's stage 2 directly: each operation goes through
KVM_PGT_FN(fn), which is the library's kvm_pgtable_stage2_<op> in plain KVM and the host's
pkvm_pgtable_stage2_<op> (arch/arm64/kvm/pkvm.c) under protected KVM, where the table
lives at EL2 and the host only keeps a record of what it asked EL2 to map. The two
differ in more than where the table is: pKVM takes mmu_lock for write on the fault path
(kvm_fault_lock), tops up a hypervisor memcache instead of the vCPU's page cache
(topup_hyp_memcache), and refuses what EL2 cannot do (no split, no PUD blocks, protected
guests RWX and page-sized only).

Stage2Backend is that choice as a value: a VM takes one when it is created and calls it
everywhere it would call the library. DirectBackend is the library (today's code, every
call a straight delegation). The pKVM backend is s2mmu.pkvm.backend.PkvmBackend; kvm
never imports it (the scenario layer wires it).

Kernel: KVM_PGT_FN, kvm_fault_lock, kvm_fault_unlock, user_mem_abort's memcache choice
(arch/arm64/kvm/mmu.c); the kvm_pgtable_stage2_* prototypes (asm/kvm_pgtable.h) and their
pkvm_pgtable_stage2_* twins (asm/kvm_pkvm.h, arch/arm64/kvm/pkvm.c).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from s2mmu.arch.reprs import hex_repr
from s2mmu.pgtable.env import PgtableEnv, new_stage2
from s2mmu.pgtable.mm import KvmMmuMemoryCache, PagePool, kvm_mmu_topup_memory_cache
from s2mmu.pgtable.pte import kvm_granule_size, kvm_pte_to_phys, kvm_pte_valid
from s2mmu.pgtable.stage2 import (
    kvm_pgtable_stage2_flush,
    kvm_pgtable_stage2_map,
    kvm_pgtable_stage2_mkyoung,
    kvm_pgtable_stage2_relax_perms,
    kvm_pgtable_stage2_split,
    kvm_pgtable_stage2_test_clear_young,
    kvm_pgtable_stage2_unmap,
    kvm_pgtable_stage2_wrprotect,
)
from s2mmu.pgtable.table import KvmPgtable
from s2mmu.pgtable.walk import kvm_pgtable_get_leaf


class MmuLockMode(enum.Enum):
    """How the fault path holds kvm->mmu_lock. Kernel: kvm_fault_lock."""

    READ = "read"
    """Plain KVM: faults run in parallel, the walks are SHARED (cmpxchg)."""
    WRITE = "write"
    """pKVM: one fault at a time (the host's record of mappings is not lock-free)."""


class BackendKind(enum.Enum):
    """Which set of functions KVM_PGT_FN picks."""

    DIRECT = "kvm_pgtable"
    PKVM = "pkvm_pgtable"

    def fn(self, op: str) -> str:
        """Return the kernel name of op ('stage2_map') in this backend."""
        return f"{self.value}_{op}"


@hex_repr()
@dataclass(frozen=True)
class BackendLeaf:
    """A valid mapping the backend knows of: its first IPA, size and output address."""

    ipa: int
    size: int
    phys: int


class Stage2Backend(Protocol):
    """The stage-2 operations KVM's MMU code calls (KVM_PGT_FN), with their kernel contract.

    Every operation takes the kvm_pgtable it acts on, as the kernel's do. flags are the
    walker flags the caller passes (KVM_PGTABLE_WALK_*); a backend may drop them.
    Returns are 0 or -errno (test_clear_young: whether a leaf was young).
    """

    kind: BackendKind
    fault_lock: MmuLockMode

    def init(self, env: PgtableEnv, ipa_bits: int, vmid: int, mmfr0: int) -> KvmPgtable:
        """Return the VM's initialised stage 2. Kernel: *_stage2_init (kvm_init_stage2_mmu)."""
        ...

    def map(self, pgt: KvmPgtable, addr: int, size: int, phys: int, prot: int,
            mc: KvmMmuMemoryCache | None, flags: int) -> int:
        """Map [addr, addr + size) to phys with prot. Kernel: *_stage2_map."""
        ...

    def unmap(self, pgt: KvmPgtable, addr: int, size: int) -> int:
        """Unmap [addr, addr + size). Kernel: *_stage2_unmap."""
        ...

    def wrprotect(self, pgt: KvmPgtable, addr: int, size: int) -> int:
        """Remove write permission from the range. Kernel: *_stage2_wrprotect."""
        ...

    def relax_perms(self, pgt: KvmPgtable, addr: int, prot: int, flags: int) -> int:
        """Add prot's permissions to the leaf at addr. Kernel: *_stage2_relax_perms."""
        ...

    def mkyoung(self, pgt: KvmPgtable, addr: int, flags: int) -> None:
        """Set the access flag of the leaf at addr. Kernel: *_stage2_mkyoung."""
        ...

    def test_clear_young(self, pgt: KvmPgtable, addr: int, size: int, mkold: bool) -> bool:
        """Return whether a leaf of the range is young. Kernel: *_stage2_test_clear_young."""
        ...

    def flush(self, pgt: KvmPgtable, addr: int, size: int) -> int:
        """Clean the range's memory to the PoC. Kernel: *_stage2_flush."""
        ...

    def split(self, pgt: KvmPgtable, addr: int, size: int, mc: KvmMmuMemoryCache) -> int:
        """Split the range's blocks into pages. Kernel: *_stage2_split."""
        ...

    def leaf(self, pgt: KvmPgtable, addr: int) -> BackendLeaf | None:
        """Return the valid mapping covering addr as the host knows it, or None."""
        ...

    def topup_memcache(self, mc: KvmMmuMemoryCache, pool: PagePool, min_pages: int) -> int:
        """Fill the memcache the next map draws on; 0 or -ENOMEM.

        Kernel: user_mem_abort (kvm_mmu_topup_memory_cache, or topup_hyp_memcache).
        """
        ...


class DirectBackend:
    """The page-table library itself: plain KVM's KVM_PGT_FN. Every call delegates."""

    kind = BackendKind.DIRECT
    fault_lock = MmuLockMode.READ

    def init(self, env: PgtableEnv, ipa_bits: int, vmid: int, mmfr0: int) -> KvmPgtable:
        """Kernel: kvm_pgtable_stage2_init (host KVM's stage 2, its mm_ops and VTCR)."""
        return new_stage2(env, ipa_bits, vmid=vmid, mmfr0=mmfr0)

    def map(self, pgt: KvmPgtable, addr: int, size: int, phys: int, prot: int,
            mc: KvmMmuMemoryCache | None, flags: int) -> int:
        """Kernel: kvm_pgtable_stage2_map."""
        return kvm_pgtable_stage2_map(pgt, addr, size, phys, prot, mc, flags)

    def unmap(self, pgt: KvmPgtable, addr: int, size: int) -> int:
        """Kernel: kvm_pgtable_stage2_unmap."""
        return kvm_pgtable_stage2_unmap(pgt, addr, size)

    def wrprotect(self, pgt: KvmPgtable, addr: int, size: int) -> int:
        """Kernel: kvm_pgtable_stage2_wrprotect."""
        return kvm_pgtable_stage2_wrprotect(pgt, addr, size)

    def relax_perms(self, pgt: KvmPgtable, addr: int, prot: int, flags: int) -> int:
        """Kernel: kvm_pgtable_stage2_relax_perms."""
        return kvm_pgtable_stage2_relax_perms(pgt, addr, prot, flags)

    def mkyoung(self, pgt: KvmPgtable, addr: int, flags: int) -> None:
        """Kernel: kvm_pgtable_stage2_mkyoung."""
        kvm_pgtable_stage2_mkyoung(pgt, addr, flags)

    def test_clear_young(self, pgt: KvmPgtable, addr: int, size: int, mkold: bool) -> bool:
        """Kernel: kvm_pgtable_stage2_test_clear_young."""
        return kvm_pgtable_stage2_test_clear_young(pgt, addr, size, mkold)

    def flush(self, pgt: KvmPgtable, addr: int, size: int) -> int:
        """Kernel: kvm_pgtable_stage2_flush."""
        return kvm_pgtable_stage2_flush(pgt, addr, size)

    def split(self, pgt: KvmPgtable, addr: int, size: int, mc: KvmMmuMemoryCache) -> int:
        """Kernel: kvm_pgtable_stage2_split."""
        return kvm_pgtable_stage2_split(pgt, addr, size, mc)

    def leaf(self, pgt: KvmPgtable, addr: int) -> BackendLeaf | None:
        """Return the valid leaf covering addr (kvm_pgtable_get_leaf), or None."""
        got = kvm_pgtable_get_leaf(pgt, addr)
        if got.ret or not kvm_pte_valid(got.pte):
            return None
        g = pgt.ops.g
        size = kvm_granule_size(got.level, g)
        return BackendLeaf(addr & ~(size - 1), size, kvm_pte_to_phys(got.pte, g))

    def topup_memcache(self, mc: KvmMmuMemoryCache, pool: PagePool, min_pages: int) -> int:
        """Kernel: kvm_mmu_topup_memory_cache (the vCPU's mmu_page_cache)."""
        return kvm_mmu_topup_memory_cache(mc, pool, min_pages)


DIRECT: Stage2Backend = DirectBackend()
"""The one direct backend (it holds no state); typed so that mypy checks the protocol."""
