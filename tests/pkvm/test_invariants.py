"""The ownership invariants: each one caught when broken, and kept by random hypercalls."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import s2mmu.pkvm.mem_protect as mp
from s2mmu.pgtable.errno import E2BIG, EAGAIN, EINVAL, ENOENT, EPERM
from s2mmu.pgtable.events import Warn
from s2mmu.pgtable.prot import KVM_PGTABLE_PROT_R, KVM_PGTABLE_PROT_RW, KVM_PGTABLE_PROT_RWX
from s2mmu.pkvm.errno import EBUSY
from s2mmu.pkvm.host_fault import (
    PAGE_OFFSET,
    DirectMap,
    Fixup,
    HostAccess,
    HostFaultPolicy,
    HostOops,
    host_access,
)
from s2mmu.pkvm.invariants import check_pkvm
from s2mmu.pkvm.mem_protect import RAM_BASE, new_hyp_vm, new_pkvm
from s2mmu.pkvm.pkvm import __pkvm_finalize_teardown_vm, __pkvm_start_teardown_vm, guest_leaves
from s2mmu.pkvm.states import PKVM_NOPAGE, PKVM_PAGE_OWNED

SZ_4K = 0x1000
PFN = RAM_BASE // SZ_4K


def rules(pkvm: mp.Pkvm) -> set[str]:
    return {v.rule for v in check_pkvm(pkvm)}


def test_a_booted_pkvm_keeps_every_invariant() -> None:
    assert check_pkvm(new_pkvm()) == []


def test_a_page_with_two_owners_is_caught() -> None:
    pkvm = new_pkvm()
    assert mp.__pkvm_host_donate_hyp(pkvm, PFN, 1) == 0
    pkvm.vmemmap.hyp_phys_to_page(RAM_BASE).host_state = PKVM_PAGE_OWNED
    assert rules(pkvm) == {"owner", "host-map"}


def test_a_lost_page_is_caught() -> None:
    pkvm = new_pkvm()
    pkvm.vmemmap.hyp_phys_to_page(RAM_BASE).host_state = PKVM_NOPAGE
    assert rules(pkvm) == {"owner"}


def test_a_host_mapping_of_a_page_it_gave_away_is_caught() -> None:
    pkvm = new_pkvm()
    assert mp.__pkvm_host_donate_hyp(pkvm, PFN, 1) == 0
    assert mp.__host_stage2_idmap(pkvm, RAM_BASE, RAM_BASE + SZ_4K, KVM_PGTABLE_PROT_RWX) == 0
    assert rules(pkvm) == {"host-map"}


def test_share_count_and_pin_mismatches_are_caught() -> None:
    pkvm = new_pkvm()
    vm = new_hyp_vm(pkvm, 1, False)
    assert mp.__pkvm_host_share_guest(pkvm, PFN, 0x10, 1, vm, KVM_PGTABLE_PROT_RWX) == 0
    assert check_pkvm(pkvm) == []
    pkvm.vmemmap.hyp_phys_to_page(RAM_BASE).host_share_guest_count = 2
    pkvm.vmemmap.hyp_phys_to_page(RAM_BASE + SZ_4K).refcount = 1
    assert rules(pkvm) == {"counts"}


def test_a_borrow_of_a_host_owned_page_is_caught() -> None:
    pkvm = new_pkvm()
    assert mp.__pkvm_host_share_hyp(pkvm, PFN) == 0
    pkvm.vmemmap.hyp_phys_to_page(RAM_BASE).host_state = PKVM_PAGE_OWNED
    assert rules(pkvm) == {"borrow"}


def test_unshare_ffa_cannot_tell_an_ffa_share_from_a_hyp_share() -> None:
    # The hypercall checks only the host's SHARED_OWNED state, which a share with the
    # hypervisor also gives: called on such a page it hands the page back to the host
    # while EL2 still borrows it. The FF-A proxy's own record of what it shared is what
    # keeps this from happening (the random tests respect it).
    pkvm = new_pkvm()
    assert mp.__pkvm_host_share_hyp(pkvm, PFN) == 0
    assert mp.__pkvm_host_unshare_ffa(pkvm, PFN, 1) == 0
    assert rules(pkvm) == {"borrow"}


RAM_PAGES = 32
NOMAP_PAGES = 2
pfns = st.one_of(
    st.integers(PFN, PFN + RAM_PAGES + NOMAP_PAGES - 1),  # RAM and the no-map region
    st.just(0x1000_0000 // SZ_4K),  # MMIO
)
gfns = st.integers(0x10, 0x1F)
prots = st.sampled_from([KVM_PGTABLE_PROT_R, KVM_PGTABLE_PROT_RW, KVM_PGTABLE_PROT_RWX])
CHECK = {0, -EPERM, -EINVAL, -EBUSY, -ENOENT, -E2BIG}


# Aliases: names starting with two underscores are mangled inside a class body.
hyp_va = mp.__hyp_va
pkvm_finalize_teardown_vm = __pkvm_finalize_teardown_vm
pkvm_host_donate_guest = mp.__pkvm_host_donate_guest
pkvm_host_donate_hyp = mp.__pkvm_host_donate_hyp
pkvm_host_mkyoung_guest = mp.__pkvm_host_mkyoung_guest
pkvm_host_reclaim_page = mp.__pkvm_host_reclaim_page
pkvm_host_relax_perms_guest = mp.__pkvm_host_relax_perms_guest
pkvm_host_share_ffa = mp.__pkvm_host_share_ffa
pkvm_host_share_guest = mp.__pkvm_host_share_guest
pkvm_host_share_hyp = mp.__pkvm_host_share_hyp
pkvm_host_test_clear_young_guest = mp.__pkvm_host_test_clear_young_guest
pkvm_host_unshare_ffa = mp.__pkvm_host_unshare_ffa
pkvm_host_unshare_guest = mp.__pkvm_host_unshare_guest
pkvm_host_unshare_hyp = mp.__pkvm_host_unshare_hyp
pkvm_host_wrprotect_guest = mp.__pkvm_host_wrprotect_guest
pkvm_hyp_donate_host = mp.__pkvm_hyp_donate_host
pkvm_start_teardown_vm = __pkvm_start_teardown_vm


class PkvmHypercalls(RuleBasedStateMachine):
    """Random hypercalls from the host for itself, the hypervisor, FF-A and two guests."""

    @initialize()
    def boot(self) -> None:
        self.pkvm = new_pkvm(RAM_PAGES, nomap_pages=NOMAP_PAGES)
        self.np = new_hyp_vm(self.pkvm, 1, protected=False)
        self.pvm = new_hyp_vm(self.pkvm, 2, protected=True)
        self.pins: list[int] = []
        self.ffa: list[int] = []
        self.dm = DirectMap()

    def ok(self, ret: int, allowed: set[int] = CHECK) -> None:
        assert ret in allowed, ret

    @rule(pfn=pfns)
    def share_hyp(self, pfn: int) -> None:
        self.ok(pkvm_host_share_hyp(self.pkvm, pfn))

    @rule(pfn=pfns)
    def unshare_hyp(self, pfn: int) -> None:
        ret = pkvm_host_unshare_hyp(self.pkvm, pfn)
        self.ok(ret)
        if ret == -EBUSY:
            assert pfn in self.pins
        if ret == 0:
            assert pfn not in self.pins

    @rule(pfn=pfns, nr=st.integers(1, 3))
    def donate_hyp(self, pfn: int, nr: int) -> None:
        self.ok(pkvm_host_donate_hyp(self.pkvm, pfn, nr))

    @rule(pfn=pfns, nr=st.integers(1, 3))
    def hyp_donate_host(self, pfn: int, nr: int) -> None:
        self.ok(pkvm_hyp_donate_host(self.pkvm, pfn, nr))

    @rule(pfn=pfns)
    def pin(self, pfn: int) -> None:
        va = hyp_va(pfn * SZ_4K)
        ret = mp.hyp_pin_shared_mem(self.pkvm, va, va + 16)
        self.ok(ret)
        if ret == 0:
            self.pins.append(pfn)

    @precondition(lambda self: self.pins)
    @rule(data=st.data())
    def unpin(self, data: st.DataObject) -> None:
        pfn = self.pins.pop(data.draw(st.integers(0, len(self.pins) - 1)))
        va = hyp_va(pfn * SZ_4K)
        mp.hyp_unpin_shared_mem(self.pkvm, va, va + 16)

    @rule(pfn=pfns)
    def share_ffa(self, pfn: int) -> None:
        ret = pkvm_host_share_ffa(self.pkvm, pfn, 1)
        self.ok(ret)
        if ret == 0:
            self.ffa.append(pfn)

    @precondition(lambda self: self.ffa)
    @rule(data=st.data())
    def unshare_ffa(self, data: st.DataObject) -> None:
        # The FF-A proxy unshares only what it shared (see the test below).
        pfn = self.ffa.pop(data.draw(st.integers(0, len(self.ffa) - 1)))
        assert pkvm_host_unshare_ffa(self.pkvm, pfn, 1) == 0

    @rule(pfn=pfns, gfn=gfns, prot=prots)
    def share_guest(self, pfn: int, gfn: int, prot: int) -> None:
        self.ok(pkvm_host_share_guest(self.pkvm, pfn, gfn, 1, self.np, prot))

    @rule(gfn=gfns)
    def unshare_guest(self, gfn: int) -> None:
        self.ok(pkvm_host_unshare_guest(self.pkvm, gfn, 1, self.np))

    @rule(pfn=pfns, gfn=gfns)
    def donate_guest(self, pfn: int, gfn: int) -> None:
        self.ok(pkvm_host_donate_guest(self.pkvm, pfn, gfn, self.pvm))

    @rule(gfn=gfns, prot=prots, protected=st.booleans())
    def attributes(self, gfn: int, prot: int, protected: bool) -> None:
        vm = self.pvm if protected else self.np
        results = [
            pkvm_host_relax_perms_guest(self.pkvm, gfn, vm, prot),
            pkvm_host_wrprotect_guest(self.pkvm, gfn, 1, vm),
            pkvm_host_test_clear_young_guest(self.pkvm, gfn, 1, True, vm),
            pkvm_host_mkyoung_guest(self.pkvm, gfn, vm),
        ]
        if protected:
            assert results == [-EPERM] * 4
        else:
            assert all(r in {0, 1, -EAGAIN} for r in results)

    @rule(pfn=pfns, off=st.integers(0, SZ_4K - 1), zeropad=st.booleans())
    def host_touch(self, pfn: int, off: int, zeropad: bool) -> None:
        pa = pfn * SZ_4K + off
        fixup = Fixup.ZEROPAD if zeropad else Fixup.NONE
        access = HostAccess(PAGE_OFFSET + pa, 8, fixup=fixup)
        got = host_access(self.pkvm, self.dm, access, HostFaultPolicy.INJECT_DATA_ABORT)
        owned = self.pkvm.vmemmap.pages.get(pfn)
        if owned is not None and owned.host_state == PKVM_NOPAGE:
            assert isinstance(got, HostOops)

    @rule()
    def recycle_protected_guest(self) -> None:
        assert pkvm_start_teardown_vm(self.pkvm, 2) == 0
        leaves = guest_leaves(self.pvm)
        assert pkvm_finalize_teardown_vm(self.pkvm, 2) == (-EBUSY if leaves else 0)
        if leaves:
            for leaf in leaves:
                assert pkvm_host_reclaim_page(self.pkvm, self.pvm, leaf.ipa // SZ_4K) == 0
            assert pkvm_finalize_teardown_vm(self.pkvm, 2) == 0
        self.pvm = new_hyp_vm(self.pkvm, 2, protected=True)

    @invariant()
    def ownership_holds(self) -> None:
        if not hasattr(self, "pkvm"):
            return
        assert check_pkvm(self.pkvm) == []
        assert self.pkvm.env.events.of_type(Warn) == []


PkvmHypercalls.TestCase.settings = settings(
    max_examples=25, stateful_step_count=25, deadline=None
)
test_random_hypercalls_keep_ownership = PkvmHypercalls.TestCase
