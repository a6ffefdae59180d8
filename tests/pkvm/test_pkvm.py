"""VM creation and teardown at EL2, and the host's record of its shares."""

from __future__ import annotations

import s2mmu.pkvm.mem_protect as mp
from s2mmu.pgtable.errno import EAGAIN, EINVAL, ENOENT, EPERM
from s2mmu.pkvm.errno import EBUSY, errname
from s2mmu.pkvm.mem_protect import RAM_BASE, new_pkvm
from s2mmu.pkvm.pkvm import (
    PkvmHostVm,
    __pkvm_finalize_teardown_vm,
    __pkvm_init_vm,
    __pkvm_start_teardown_vm,
    guest_leaves,
    pkvm_pgtable_stage2_destroy,
    pkvm_pgtable_stage2_map,
    pkvm_pgtable_stage2_unmap,
)
from s2mmu.pkvm.states import PKVM_PAGE_OWNED

PAGE = 0x1000
PFN = RAM_BASE // PAGE
RWX = 7


def test_host_side_map_refuses_a_gfn_it_already_shares() -> None:
    pkvm = new_pkvm()
    __pkvm_init_vm(pkvm, 1, False)
    hvm = PkvmHostVm(1)
    assert pkvm_pgtable_stage2_map(pkvm, hvm, 0x10000, PAGE, PFN * PAGE, RWX) == 0
    assert pkvm_pgtable_stage2_map(pkvm, hvm, 0x10000, PAGE, (PFN + 1) * PAGE, RWX) == -EAGAIN
    assert pkvm_pgtable_stage2_map(pkvm, hvm, 0x11000, PAGE, PFN * PAGE, RWX) == 0
    assert hvm.mappings.as_dict() == {0x10: (PFN, 1), 0x11: (PFN, 1)}
    assert pkvm_pgtable_stage2_unmap(pkvm, hvm, 0x10000, PAGE) == 0
    assert [leaf.ipa for leaf in guest_leaves(pkvm.vms[1])] == [0x11000]


def test_destroy_unshares_everything_and_frees_the_stage2() -> None:
    pkvm = new_pkvm()
    before = pkvm.env.pool.in_use()
    __pkvm_init_vm(pkvm, 1, False)
    hvm = PkvmHostVm(1)
    for i in range(8):
        assert pkvm_pgtable_stage2_map(pkvm, hvm, (0x100 + i) * PAGE, PAGE, (PFN + i) * PAGE,
                                       RWX) == 0
    assert pkvm_pgtable_stage2_destroy(pkvm, hvm) == 0
    assert 1 not in pkvm.vms
    assert pkvm.env.pool.in_use() == before
    assert all(pkvm.vmemmap.hyp_phys_to_page(RAM_BASE + i * 0x1000).host_state
               is PKVM_PAGE_OWNED for i in range(8))  # fmt: skip


def test_teardown_is_refused_while_a_protected_guest_holds_pages() -> None:
    pkvm = new_pkvm()
    vm = __pkvm_init_vm(pkvm, 2, True)
    assert mp.__pkvm_host_donate_guest(pkvm, PFN, 0x10, vm) == 0
    assert __pkvm_finalize_teardown_vm(pkvm, 2) == -EPERM  # not dying
    assert __pkvm_start_teardown_vm(pkvm, 2) == 0
    assert __pkvm_start_teardown_vm(pkvm, 2) == -EINVAL
    assert mp.__pkvm_host_donate_guest(pkvm, PFN + 1, 0x11, vm) == -EPERM  # dying
    assert __pkvm_finalize_teardown_vm(pkvm, 2) == -EBUSY
    assert errname(-EBUSY) == "-EBUSY"
    assert mp.__pkvm_host_reclaim_page(pkvm, vm, 0x10) == 0
    assert __pkvm_finalize_teardown_vm(pkvm, 2) == 0
    assert __pkvm_finalize_teardown_vm(pkvm, 2) == -ENOENT
    assert __pkvm_start_teardown_vm(pkvm, 2) == -ENOENT
