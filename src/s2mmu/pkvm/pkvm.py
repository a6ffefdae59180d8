"""Guests at EL2 and on the host: VM creation and teardown, the host's share tracking.

At EL2 a VM is created with its stage 2, torn down in two steps: start (the VM is
dying: no more donations; the host may reclaim its pages one by one) and finalize
(refused with -EBUSY while the guest still maps a page, so no page is ever lost; then
the stage 2 is destroyed and its table pages go back to the hyp pool).

On the host, a guest's stage 2 is a record of what the host asked EL2 to map
(pkvm_mappings: gfn, pfn and page count per mapping, kept as an interval tree keyed by
gfn), and each operation is a hypercall per recorded mapping, with pKVM's own rules:

- a non-protected guest is shared page- or PMD-sized (anything else: WARN, -EINVAL); a
  mapping already recorded over the range returns -EAGAIN when it has the same size
  (a racing vCPU: seed 000's "the 'mappings' tree will return -EAGAIN if it finds a
  pre-existing entry"), and is unshared first when the size changes;
- a protected guest is given pages by donation, RWX and page-sized only (WARN,
  -EINVAL otherwise), -EAGAIN over an existing mapping (the kernel first asks EL2
  whether the vCPU is in a poison fault, -EFAULT then: not modelled, no page is
  poisoned here); unmap, wrprotect, relax_perms,
  mkyoung and test_clear_young WARN and refuse for it (-EPERM, or nothing);
- split is not supported (WARN_ON_ONCE, -EINVAL);
- relax_perms and mkyoung drop the walker flags the caller passes: EL2 walks with its
  own (0), so what -EAGAIN does there is the profile's rule (seed 000).

Kernel: __pkvm_init_vm, __pkvm_teardown_vm, reclaim_pgtable_pages (nvhe/pkvm.c,
nvhe/mem_protect.c; the two-step teardown is the model's shape of it);
__pkvm_mapping_start, __pkvm_mapping_end, for_each_mapping_in_range_safe,
__pkvm_pgtable_stage2_unshare, pkvm_pgtable_stage2_map, pkvm_pgtable_stage2_unmap,
pkvm_pgtable_stage2_wrprotect, pkvm_pgtable_stage2_flush,
pkvm_pgtable_stage2_test_clear_young, pkvm_pgtable_stage2_relax_perms,
pkvm_pgtable_stage2_mkyoung, pkvm_pgtable_stage2_split (arch/arm64/kvm/pkvm.c, the
interval-tree version with nr_pages).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field

from s2mmu.pgtable.errno import EAGAIN, EINVAL, ENOENT, EPERM
from s2mmu.pgtable.events import Warn
from s2mmu.pgtable.invariants import scan_tree
from s2mmu.pgtable.mm import kvm_mmu_free_memory_cache
from s2mmu.pgtable.prot import KVM_PGTABLE_PROT_RWX
from s2mmu.pgtable.pte import kvm_pte_table, kvm_pte_to_phys, kvm_pte_valid
from s2mmu.pgtable.stage2 import kvm_pgtable_stage2_destroy
from s2mmu.pkvm.errno import EBUSY
from s2mmu.pkvm.mem_protect import (
    Pkvm,
    PkvmHypVm,
    __pkvm_host_donate_guest,
    __pkvm_host_mkyoung_guest,
    __pkvm_host_relax_perms_guest,
    __pkvm_host_share_guest,
    __pkvm_host_test_clear_young_guest,
    __pkvm_host_unshare_guest,
    __pkvm_host_wrprotect_guest,
    new_hyp_vm,
)


@dataclass(frozen=True)
class GuestLeaf:
    """A valid leaf of a guest stage 2: IPA, output address, size and the entry."""

    ipa: int
    phys: int
    size: int
    pte: int


def guest_leaves(vm: PkvmHypVm) -> list[GuestLeaf]:
    """Return every valid leaf of the guest's stage 2, in IPA order."""
    g = vm.pgt.ops.g
    out = [
        GuestLeaf(e.ipa, kvm_pte_to_phys(e.pte, g), e.size, e.pte)
        for e in scan_tree(vm.pgt).entries()
        if kvm_pte_valid(e.pte) and not kvm_pte_table(e.pte, e.level)
    ]
    return sorted(out, key=lambda leaf: leaf.ipa)


def __pkvm_init_vm(pkvm: Pkvm, handle: int, protected: bool, ipa_bits: int = 40,
                   mmfr0: int | None = None) -> PkvmHypVm:
    """Create the EL2 state of a guest. Kernel: __pkvm_init_vm (its effect)."""
    return new_hyp_vm(pkvm, handle, protected, ipa_bits=ipa_bits, mmfr0=mmfr0)


def __pkvm_start_teardown_vm(pkvm: Pkvm, handle: int) -> int:
    """Mark a VM dying so that its pages can be reclaimed; -ENOENT, -EINVAL if dying."""
    vm = pkvm.vms.get(handle)
    if vm is None:
        return -ENOENT
    if vm.dying:
        return -EINVAL
    vm.dying = True
    return 0


def __pkvm_finalize_teardown_vm(pkvm: Pkvm, handle: int) -> int:
    """Destroy a dying VM's stage 2; -EBUSY while it still maps a page.

    Kernel: __pkvm_teardown_vm, reclaim_pgtable_pages (kvm_pgtable_stage2_destroy, the
    pool drained back).
    """
    vm = pkvm.vms.get(handle)
    if vm is None:
        return -ENOENT
    if not vm.dying:
        return -EPERM
    if guest_leaves(vm):
        return -EBUSY
    kvm_pgtable_stage2_destroy(vm.pgt)
    kvm_mmu_free_memory_cache(vm.memcache, pkvm.env.pool)
    del pkvm.vms[handle]
    return 0


@dataclass(frozen=True)
class PkvmMapping:
    """One mapping the host asked EL2 for: nr_pages from gfn to pfn.

    Kernel: struct pkvm_mapping (gfn, pfn, nr_pages).
    """

    gfn: int
    pfn: int
    nr_pages: int

    @property
    def end_gfn(self) -> int:
        """Return the first gfn after the mapping."""
        return self.gfn + self.nr_pages


class PkvmMappings:
    """The host's mappings of one guest, disjoint and ordered by gfn.

    Kernel: pgt->pkvm_mappings, an interval tree over [gfn, gfn + nr_pages) in bytes
    (INTERVAL_TREE_DEFINE with __pkvm_mapping_start / __pkvm_mapping_end); the model
    keeps the same intervals in a sorted list.
    """

    def __init__(self) -> None:
        self._gfns: list[int] = []
        self._maps: list[PkvmMapping] = []

    def __len__(self) -> int:
        return len(self._maps)

    def __iter__(self) -> Iterator[PkvmMapping]:
        return iter(list(self._maps))

    def in_range(self, start_gfn: int, end_gfn: int) -> list[PkvmMapping]:
        """Return the mappings meeting [start_gfn, end_gfn), in gfn order.

        Kernel: for_each_mapping_in_range_safe (pkvm_mapping_iter_first/next).
        """
        i = max(bisect_right(self._gfns, start_gfn) - 1, 0)
        out = []
        for m in self._maps[i:]:
            if m.gfn >= end_gfn:
                break
            if m.end_gfn > start_gfn:
                out.append(m)
        return out

    def insert(self, m: PkvmMapping) -> None:
        """Record m (it must not overlap a recorded one). Kernel: pkvm_mapping_insert."""
        if self.in_range(m.gfn, m.end_gfn):
            raise ValueError(f"pkvm_mapping at gfn {m.gfn:#x} overlaps a recorded one")
        i = bisect_right(self._gfns, m.gfn)
        self._gfns.insert(i, m.gfn)
        self._maps.insert(i, m)

    def remove(self, m: PkvmMapping) -> None:
        """Forget m. Kernel: pkvm_mapping_remove."""
        i = self._maps.index(m)
        del self._gfns[i]
        del self._maps[i]

    def as_dict(self) -> dict[int, tuple[int, int]]:
        """Return {gfn: (pfn, nr_pages)}, for tests and renderers."""
        return {m.gfn: (m.pfn, m.nr_pages) for m in self._maps}


@dataclass
class PkvmHostVm:
    """The host's side of one guest under pKVM: its handle, protection and mappings.

    Kernel: kvm->arch.pkvm (handle, is_protected) and the stage 2's pkvm_mappings.
    """

    handle: int
    protected: bool = False
    mappings: PkvmMappings = field(default_factory=PkvmMappings)


def _page(pkvm: Pkvm) -> int:
    return pkvm.page_size


def _warn(pkvm: Pkvm, function: str, cond: str) -> None:
    """Record a host kernel WARN_ON that fired."""
    pkvm.env.events.record(Warn(function, cond))


def __pkvm_pgtable_stage2_unshare(pkvm: Pkvm, hvm: PkvmHostVm, start: int, end: int) -> int:
    """Unshare every recorded mapping meeting [start, end); stop at a failure (WARN).

    Kernel: __pkvm_pgtable_stage2_unshare.
    """
    page = _page(pkvm)
    for m in hvm.mappings.in_range(start // page, -(-end // page)):
        ret = __pkvm_host_unshare_guest(pkvm, m.gfn, m.nr_pages, pkvm.vms[hvm.handle])
        if ret:
            _warn(pkvm, "__pkvm_pgtable_stage2_unshare", f"WARN_ON({ret})")
            return ret
        hvm.mappings.remove(m)
    return 0


def pkvm_pgtable_stage2_map(pkvm: Pkvm, hvm: PkvmHostVm, addr: int, size: int, phys: int,
                            prot: int) -> int:
    """Ask EL2 to map [addr, addr + size) to phys and record it (see module docstring).

    Kernel: pkvm_pgtable_stage2_map.
    """
    page = _page(pkvm)
    gfn, pfn, end = addr // page, phys // page, addr + size
    existing = hvm.mappings.in_range(gfn, -(-end // page))
    vm = pkvm.vms[hvm.handle]
    if hvm.protected:
        if size != page:
            _warn(pkvm, "pkvm_pgtable_stage2_map", "WARN_ON_ONCE(size != PAGE_SIZE)")
            return -EINVAL
        if prot != KVM_PGTABLE_PROT_RWX:
            _warn(pkvm, "pkvm_pgtable_stage2_map", "WARN_ON_ONCE(prot != KVM_PGTABLE_PROT_RWX)")
            return -EINVAL
        if existing:
            return -EAGAIN
        ret = __pkvm_host_donate_guest(pkvm, pfn, gfn, vm)
    else:
        if size not in (page, pkvm_pmd_size(pkvm)):
            _warn(pkvm, "pkvm_pgtable_stage2_map",
                  "WARN_ON_ONCE(size != PAGE_SIZE && size != PMD_SIZE)")
            return -EINVAL
        if existing:
            if any(m.nr_pages * page == size for m in existing):
                return -EAGAIN
            ret = __pkvm_pgtable_stage2_unshare(pkvm, hvm, addr, end)
            if ret:
                return ret
        ret = __pkvm_host_share_guest(pkvm, pfn, gfn, size // page, vm, prot)
    if ret:
        _warn(pkvm, "pkvm_pgtable_stage2_map", f"WARN_ON({ret})")
        return ret
    hvm.mappings.insert(PkvmMapping(gfn, pfn, size // page))
    return 0


def pkvm_pmd_size(pkvm: Pkvm) -> int:
    """Return PMD_SIZE for the hypervisor's granule (2M with 4K pages)."""
    page = _page(pkvm)
    return page * (page // 8)


def pkvm_pgtable_stage2_unmap(pkvm: Pkvm, hvm: PkvmHostVm, addr: int, size: int) -> int:
    """Unshare the recorded mappings of the range; -EPERM (WARN) for a protected guest.

    Kernel: pkvm_pgtable_stage2_unmap.
    """
    if hvm.protected:
        _warn(pkvm, "pkvm_pgtable_stage2_unmap", "WARN_ON(kvm_vm_is_protected(kvm))")
        return -EPERM
    return __pkvm_pgtable_stage2_unshare(pkvm, hvm, addr, addr + size)


def pkvm_pgtable_stage2_wrprotect(pkvm: Pkvm, hvm: PkvmHostVm, addr: int, size: int) -> int:
    """Write-protect each recorded mapping of the range at EL2; stop at a failure (WARN).

    Kernel: pkvm_pgtable_stage2_wrprotect.
    """
    if hvm.protected:
        _warn(pkvm, "pkvm_pgtable_stage2_wrprotect", "WARN_ON(kvm_vm_is_protected(kvm))")
        return -EPERM
    page = _page(pkvm)
    for m in hvm.mappings.in_range(addr // page, -(-(addr + size) // page)):
        ret = __pkvm_host_wrprotect_guest(pkvm, m.gfn, m.nr_pages, pkvm.vms[hvm.handle])
        if ret:
            _warn(pkvm, "pkvm_pgtable_stage2_wrprotect", f"WARN_ON({ret})")
            return ret
    return 0


def pkvm_pgtable_stage2_flush(pkvm: Pkvm, hvm: PkvmHostVm, addr: int, size: int) -> int:
    """Clean each recorded mapping of the range to the PoC (nothing with FWB).

    Kernel: pkvm_pgtable_stage2_flush, __clean_dcache_guest_page.
    """
    page = _page(pkvm)
    ops = pkvm.vms[hvm.handle].pgt.ops
    if ops.caps.stage2_fwb or ops.dcache_clean_inval_poc is None:
        return 0
    for m in hvm.mappings.in_range(addr // page, -(-(addr + size) // page)):
        ops.dcache_clean_inval_poc(m.pfn * page, m.nr_pages * page)
    return 0


def pkvm_pgtable_stage2_test_clear_young(pkvm: Pkvm, hvm: PkvmHostVm, addr: int, size: int,
                                         mkold: bool) -> bool:
    """Return whether a recorded mapping of the range is young (clearing AF if mkold).

    Kernel: pkvm_pgtable_stage2_test_clear_young.
    """
    if hvm.protected:
        _warn(pkvm, "pkvm_pgtable_stage2_test_clear_young", "WARN_ON(kvm_vm_is_protected(kvm))")
        return False
    page, young = _page(pkvm), False
    for m in hvm.mappings.in_range(addr // page, -(-(addr + size) // page)):
        young |= __pkvm_host_test_clear_young_guest(pkvm, m.gfn, m.nr_pages, mkold,
                                                    pkvm.vms[hvm.handle]) == 1
    return young


def pkvm_pgtable_stage2_relax_perms(pkvm: Pkvm, hvm: PkvmHostVm, addr: int, prot: int,
                                    flags: int) -> int:
    """Relax the guest's permissions at addr through EL2; flags are not passed on.

    Kernel: pkvm_pgtable_stage2_relax_perms (flags unused; EL2's
    __pkvm_host_relax_perms_guest walks with flags 0).
    """
    if hvm.protected:
        _warn(pkvm, "pkvm_pgtable_stage2_relax_perms", "WARN_ON(kvm_vm_is_protected(kvm))")
        return -EPERM
    return __pkvm_host_relax_perms_guest(pkvm, addr // _page(pkvm), pkvm.vms[hvm.handle], prot)


def pkvm_pgtable_stage2_mkyoung(pkvm: Pkvm, hvm: PkvmHostVm, addr: int, flags: int) -> None:
    """Set the access flag at addr through EL2; flags are not passed on.

    Kernel: pkvm_pgtable_stage2_mkyoung (flags unused; EL2's __pkvm_host_mkyoung_guest
    walks with flags 0).
    """
    if hvm.protected:
        _warn(pkvm, "pkvm_pgtable_stage2_mkyoung", "WARN_ON(kvm_vm_is_protected(kvm))")
        return
    ret = __pkvm_host_mkyoung_guest(pkvm, addr // _page(pkvm), pkvm.vms[hvm.handle])
    if ret:
        _warn(pkvm, "pkvm_pgtable_stage2_mkyoung", f"WARN_ON({ret})")


def pkvm_pgtable_stage2_split(pkvm: Pkvm) -> int:
    """Refuse: EL2 does not split a guest's blocks. Kernel: pkvm_pgtable_stage2_split."""
    _warn(pkvm, "pkvm_pgtable_stage2_split", "WARN_ON_ONCE(1)")
    return -EINVAL


def pkvm_pgtable_stage2_destroy(pkvm: Pkvm, hvm: PkvmHostVm) -> int:
    """Unshare everything, then tear the VM down at EL2."""
    ret = __pkvm_pgtable_stage2_unshare(pkvm, hvm, 0, 1 << 52)
    if ret:
        return ret
    ret = __pkvm_start_teardown_vm(pkvm, hvm.handle)
    if ret:
        return ret
    return __pkvm_finalize_teardown_vm(pkvm, hvm.handle)
