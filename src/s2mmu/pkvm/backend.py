"""The pKVM stage-2 backend: what KVM_PGT_FN picks for a VM under protected KVM.

A PkvmBackend belongs to one VM: at init it creates the VM at EL2 (__pkvm_init_vm) and
hands KVM the stage 2 the hypervisor builds for it, which the hardware walks (the host
never writes it); every other operation is the host's pkvm_pgtable_stage2_* of
s2mmu.pkvm.pkvm, with its record of mappings and its rules. The memcache EL2 draws
table pages from is the VM's own (the host's vcpu->arch.pkvm_memcache, donated pages):
top-up fills it from the hypervisor's pool and ignores the vCPU's page cache.

Kernel: KVM_PGT_FN and kvm_fault_lock (write lock under pKVM), user_mem_abort's
topup_hyp_memcache (arch/arm64/kvm/mmu.c); pkvm_pgtable_stage2_init and the functions
of s2mmu.pkvm.pkvm (arch/arm64/kvm/pkvm.c).
"""

from __future__ import annotations

from s2mmu.pgtable.backend import BackendKind, BackendLeaf, MmuLockMode, Stage2Backend
from s2mmu.pgtable.env import PgtableEnv
from s2mmu.pgtable.mm import KvmMmuMemoryCache, PagePool
from s2mmu.pgtable.mm import __kvm_mmu_topup_memory_cache as topup_memory_cache
from s2mmu.pgtable.table import KvmPgtable
from s2mmu.pkvm import pkvm as pk
from s2mmu.pkvm.mem_protect import Pkvm
from s2mmu.pkvm.pkvm import __pkvm_init_vm as pkvm_init_vm_hypercall

# (The aliases: a double-underscore name inside a class body would be name-mangled.)


class PkvmBackend:
    """One VM's pKVM backend: the hypervisor, the VM's handle and the host's record."""

    kind = BackendKind.PKVM
    fault_lock = MmuLockMode.WRITE

    def __init__(self, pkvm: Pkvm, handle: int, protected: bool) -> None:
        self.pkvm = pkvm
        self.hvm = pk.PkvmHostVm(handle, protected)

    def init(self, env: PgtableEnv, ipa_bits: int, vmid: int, mmfr0: int) -> KvmPgtable:
        """Create the VM at EL2; return the stage 2 EL2 keeps for it.

        env is the host KVM's: it must share the hypervisor's memory.

        Kernel: pkvm_pgtable_stage2_init, __pkvm_init_vm.
        """
        if env.mem is not self.pkvm.env.mem:
            raise ValueError("a pKVM guest's host must share the hypervisor's memory")
        vm = pkvm_init_vm_hypercall(self.pkvm, self.hvm.handle, self.hvm.protected, ipa_bits,
                                    mmfr0)
        return vm.pgt

    def map(self, pgt: KvmPgtable, addr: int, size: int, phys: int, prot: int,
            mc: KvmMmuMemoryCache | None, flags: int) -> int:
        """Kernel: pkvm_pgtable_stage2_map (mc and flags unused)."""
        return pk.pkvm_pgtable_stage2_map(self.pkvm, self.hvm, addr, size, phys, prot)

    def unmap(self, pgt: KvmPgtable, addr: int, size: int) -> int:
        """Kernel: pkvm_pgtable_stage2_unmap."""
        return pk.pkvm_pgtable_stage2_unmap(self.pkvm, self.hvm, addr, size)

    def wrprotect(self, pgt: KvmPgtable, addr: int, size: int) -> int:
        """Kernel: pkvm_pgtable_stage2_wrprotect."""
        return pk.pkvm_pgtable_stage2_wrprotect(self.pkvm, self.hvm, addr, size)

    def relax_perms(self, pgt: KvmPgtable, addr: int, prot: int, flags: int) -> int:
        """Kernel: pkvm_pgtable_stage2_relax_perms (flags dropped at the hypercall)."""
        return pk.pkvm_pgtable_stage2_relax_perms(self.pkvm, self.hvm, addr, prot, flags)

    def mkyoung(self, pgt: KvmPgtable, addr: int, flags: int) -> None:
        """Kernel: pkvm_pgtable_stage2_mkyoung (flags dropped at the hypercall)."""
        pk.pkvm_pgtable_stage2_mkyoung(self.pkvm, self.hvm, addr, flags)

    def test_clear_young(self, pgt: KvmPgtable, addr: int, size: int, mkold: bool) -> bool:
        """Kernel: pkvm_pgtable_stage2_test_clear_young."""
        return pk.pkvm_pgtable_stage2_test_clear_young(self.pkvm, self.hvm, addr, size, mkold)

    def flush(self, pgt: KvmPgtable, addr: int, size: int) -> int:
        """Kernel: pkvm_pgtable_stage2_flush."""
        return pk.pkvm_pgtable_stage2_flush(self.pkvm, self.hvm, addr, size)

    def split(self, pgt: KvmPgtable, addr: int, size: int, mc: KvmMmuMemoryCache) -> int:
        """Kernel: pkvm_pgtable_stage2_split (WARN_ON_ONCE, -EINVAL)."""
        return pk.pkvm_pgtable_stage2_split(self.pkvm)

    def leaf(self, pgt: KvmPgtable, addr: int) -> BackendLeaf | None:
        """Return the recorded mapping covering addr (the host's view), or None."""
        page = self.pkvm.page_size
        for m in self.hvm.mappings.in_range(addr // page, addr // page + 1):
            return BackendLeaf(m.gfn * page, m.nr_pages * page, m.pfn * page)
        return None

    def topup_memcache(self, mc: KvmMmuMemoryCache, pool: PagePool, min_pages: int) -> int:
        """Refill the VM's EL2 memcache when it holds fewer than min_pages.

        The vCPU's page cache is not used.

        Kernel: topup_hyp_memcache (pages the host donates; the model takes them from
        the hypervisor's pool).
        """
        vm = self.pkvm.vms[self.hvm.handle]
        capacity = max(vm.memcache.capacity, min_pages)
        return topup_memory_cache(vm.memcache, self.pkvm.env.pool, capacity, min_pages)


def pkvm_backend(pkvm: Pkvm, handle: int, protected: bool) -> Stage2Backend:
    """Return a new VM's pKVM backend (typed: mypy checks it keeps the protocol)."""
    return PkvmBackend(pkvm, handle, protected)
