"""Guests at EL2 and on the host: VM creation and teardown, the host's share tracking.

At EL2 a VM is created with its stage 2, torn down in two steps: start (the VM is
dying: no more donations; the host may reclaim its pages one by one) and finalize
(refused with -EBUSY while the guest still maps a page, so no page is ever lost; then
the stage 2 is destroyed and its table pages go back to the hyp pool).

On the host, a non-protected guest's stage 2 is a record of what the host asked EL2 to
share: pkvm_pgtable_stage2_map refuses with -EAGAIN a gfn it already shares (seed 000:
"the 'mappings' tree will return -EAGAIN if it finds a pre-existing entry"), unmap and
destroy unshare through the hypercall.

Kernel: __pkvm_init_vm, __pkvm_teardown_vm, reclaim_pgtable_pages (nvhe/pkvm.c,
nvhe/mem_protect.c; the two-step teardown is the model's shape of it);
pkvm_pgtable_stage2_map, pkvm_pgtable_stage2_unmap, pkvm_pgtable_stage2_destroy
(arch/arm64/kvm/pkvm.c, by name and by the seed's description).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from s2mmu.pgtable.errno import EAGAIN, EINVAL, ENOENT, EPERM
from s2mmu.pgtable.invariants import scan_tree
from s2mmu.pgtable.mm import kvm_mmu_free_memory_cache
from s2mmu.pgtable.pte import kvm_pte_table, kvm_pte_to_phys, kvm_pte_valid
from s2mmu.pgtable.stage2 import kvm_pgtable_stage2_destroy
from s2mmu.pkvm.errno import EBUSY
from s2mmu.pkvm.mem_protect import (
    Pkvm,
    PkvmHypVm,
    __pkvm_host_share_guest,
    __pkvm_host_unshare_guest,
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


def __pkvm_init_vm(pkvm: Pkvm, handle: int, protected: bool) -> PkvmHypVm:
    """Create the EL2 state of a guest. Kernel: __pkvm_init_vm (its effect)."""
    return new_hyp_vm(pkvm, handle, protected)


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


@dataclass
class PkvmHostVm:
    """The host's record of what it shares with a non-protected guest (gfn -> pfn).

    Kernel: the host's pkvm_mappings tree (arch/arm64/kvm/pkvm.c).
    """

    handle: int
    mappings: dict[int, int] = field(default_factory=dict)


def pkvm_pgtable_stage2_map(
    pkvm: Pkvm, hvm: PkvmHostVm, gfn: int, pfn: int, prot: int
) -> int:
    """Share pfn with the guest at gfn; -EAGAIN if the host already shares that gfn."""
    if gfn in hvm.mappings:
        return -EAGAIN
    ret = __pkvm_host_share_guest(pkvm, pfn, gfn, 1, pkvm.vms[hvm.handle], prot)
    if not ret:
        hvm.mappings[gfn] = pfn
    return ret


def pkvm_pgtable_stage2_unmap(pkvm: Pkvm, hvm: PkvmHostVm, gfn: int, nr_pages: int) -> int:
    """Unshare every gfn of [gfn, gfn + nr_pages) the host shares; stop at an error."""
    for g in sorted(k for k in hvm.mappings if gfn <= k < gfn + nr_pages):
        ret = __pkvm_host_unshare_guest(pkvm, g, 1, pkvm.vms[hvm.handle])
        if ret:
            return ret
        del hvm.mappings[g]
    return 0


def pkvm_pgtable_stage2_destroy(pkvm: Pkvm, hvm: PkvmHostVm) -> int:
    """Unshare everything, then tear the VM down at EL2."""
    ret = pkvm_pgtable_stage2_unmap(pkvm, hvm, 0, 1 << 52)
    if ret:
        return ret
    ret = __pkvm_start_teardown_vm(pkvm, hvm.handle)
    if ret:
        return ret
    return __pkvm_finalize_teardown_vm(pkvm, hvm.handle)
