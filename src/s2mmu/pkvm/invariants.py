"""pKVM's ownership invariants, checked from the three places the state lives.

For every page of transitionable memory (not the no-map regions, not the hypervisor's
carve-outs whose pages hold page tables):

- owner: exactly one component owns it: the host (vmemmap OWNED or SHARED_OWNED), the
  hypervisor (stage-1 state OWNED) or one guest (stage-2 state OWNED). No page is lost.
- host-map: the host stage 2 maps the page only if the host owns or shares it, and
  annotates it (with the right owner id) exactly when the host state is NOPAGE.
- borrow: a borrower (hypervisor or guest, state SHARED_BORROWED) only borrows a page
  the host holds as SHARED_OWNED; a host-owned page is borrowed by nobody.
- counts: host_share_guest_count equals the number of guest mappings borrowing the page;
  a pinned page is one the hypervisor borrows.
- refcount: every host stage-2 table page's refcount is 1 + its counted entries (the
  host's counted-entry rule), as the page-table library checks it.

Kernel: the states and rules of nvhe/mem_protect.c (pkvm_ownership_selftest checks the
same pairs of states after each transition).
"""

from __future__ import annotations

from dataclasses import dataclass

from s2mmu.pgtable.invariants import check_refcounts, scan_tree
from s2mmu.pgtable.pte import (
    PkvmComponentId,
    kvm_granule_size,
    kvm_invalid_pte_owner,
    kvm_pte_valid,
)
from s2mmu.pgtable.table import KvmPgtable
from s2mmu.pgtable.walk import kvm_pgtable_get_leaf
from s2mmu.pkvm.mem_protect import (
    Pkvm,
    __hyp_va,
    guest_get_page_state,
    hyp_get_page_state,
)
from s2mmu.pkvm.pkvm import guest_leaves
from s2mmu.pkvm.states import (
    PKVM_ID_GUEST,
    PKVM_ID_HYP,
    PKVM_NOPAGE,
    PKVM_PAGE_OWNED,
    PKVM_PAGE_SHARED_BORROWED,
    PKVM_PAGE_SHARED_OWNED,
    PkvmPageState,
)


@dataclass(frozen=True)
class PkvmViolation:
    """One broken invariant: its name, the page and what was found."""

    rule: str
    phys: int
    detail: str

    def __str__(self) -> str:
        return f"{self.rule}: page {self.phys:#x}: {self.detail}"


@dataclass(frozen=True)
class PageView:
    """Every component's state of one page, read from where each keeps it."""

    host: PkvmPageState
    host_annotation: PkvmComponentId | None
    host_mapped: bool
    hyp: PkvmPageState
    guests: tuple[tuple[int, PkvmPageState], ...]
    share_count: int
    pins: int


def transitionable_pages(pkvm: Pkvm) -> list[int]:
    """Return the addresses of the pages the host may transition (no no-map, no pools)."""
    page = pkvm.page_size
    out: list[int] = []
    for reg in pkvm.hyp_memory.regions:
        if reg.nomap or reg.base in (pkvm.env.pool.base, pkvm.host_s2_pool.base):
            continue
        out += range(reg.base, reg.end, page)
    return out


class LeafCache:
    """The entry covering an address, walking once per entry for ascending addresses.

    An entry at level L (a leaf, or an invalid entry: a leaf to the walker) covers the
    whole aligned kvm_granule_size(L) range, so the next addresses in it reuse it.
    """

    def __init__(self, pgt: KvmPgtable) -> None:
        self.pgt = pgt
        self.start, self.end, self.entry = 0, 0, 0

    def pte(self, addr: int) -> int:
        """Return the entry kvm_pgtable_get_leaf finds for addr."""
        if not self.start <= addr < self.end:
            leaf = kvm_pgtable_get_leaf(self.pgt, addr)
            size = kvm_granule_size(leaf.level, self.pgt.ops.g) if not leaf.ret else 1
            self.start, self.end, self.entry = addr & ~(size - 1), (addr | (size - 1)) + 1, \
                leaf.pte
        return self.entry


def page_views(pkvm: Pkvm) -> dict[int, PageView]:
    """Return each transitionable page's view from the vmemmap and the three tables."""
    borrowed: dict[int, list[tuple[int, PkvmPageState]]] = {}
    for handle, vm in pkvm.vms.items():
        for leaf in guest_leaves(vm):
            for off in range(0, leaf.size, pkvm.page_size):
                state = guest_get_page_state(leaf.pte)
                borrowed.setdefault(leaf.phys + off, []).append((handle, state))
    views = {}
    host_leaf, hyp_leaf = LeafCache(pkvm.host_pgt), LeafCache(pkvm.hyp_pgt)
    for pa in transitionable_pages(pkvm):
        hp = pkvm.vmemmap.hyp_phys_to_page(pa)
        host_pte = host_leaf.pte(pa)
        hyp_pte = hyp_leaf.pte(__hyp_va(pa))
        views[pa] = PageView(
            host=hp.host_state,
            host_annotation=kvm_invalid_pte_owner(host_pte),
            host_mapped=kvm_pte_valid(host_pte),
            hyp=hyp_get_page_state(pkvm, hyp_pte),
            guests=tuple(borrowed.get(pa, ())),
            share_count=hp.host_share_guest_count,
            pins=hp.refcount,
        )
    return views


def check_page(pa: int, v: PageView) -> list[PkvmViolation]:
    """Check one page's view against the rules of the module docstring."""
    out: list[PkvmViolation] = []
    host_owns = v.host in (PKVM_PAGE_OWNED, PKVM_PAGE_SHARED_OWNED)
    guest_owners = [h for h, s in v.guests if s == PKVM_PAGE_OWNED]
    owners = int(host_owns) + int(v.hyp == PKVM_PAGE_OWNED) + len(guest_owners)
    if owners != 1:
        out.append(PkvmViolation("owner", pa, f"{owners} owners: {v}"))
    if v.host_mapped and not host_owns:
        out.append(PkvmViolation("host-map", pa, f"host maps it in state {v.host.name}"))
    owner_id = PKVM_ID_HYP if v.hyp == PKVM_PAGE_OWNED else None
    owner_id = PKVM_ID_GUEST if guest_owners else owner_id
    if v.host == PKVM_NOPAGE and v.host_annotation != owner_id:
        detail = f"annotated {v.host_annotation!r}, owned by {owner_id!r}"
        out.append(PkvmViolation("host-map", pa, detail))
    if v.host != PKVM_NOPAGE and v.host_annotation is not None:
        detail = f"host state {v.host.name} but annotated {v.host_annotation!r}"
        out.append(PkvmViolation("host-map", pa, detail))
    guest_borrows = sum(1 for _, s in v.guests if s == PKVM_PAGE_SHARED_BORROWED)
    hyp_borrows = v.hyp == PKVM_PAGE_SHARED_BORROWED
    if (guest_borrows or hyp_borrows) and v.host != PKVM_PAGE_SHARED_OWNED:
        detail = f"borrowed while the host state is {v.host.name}"
        out.append(PkvmViolation("borrow", pa, detail))
    if v.share_count != guest_borrows:
        detail = f"share count {v.share_count}, {guest_borrows} guest mappings"
        out.append(PkvmViolation("counts", pa, detail))
    if v.pins and not hyp_borrows:
        detail = f"{v.pins} pins on a page the hypervisor does not borrow"
        out.append(PkvmViolation("counts", pa, detail))
    return out


def check_pkvm(pkvm: Pkvm) -> list[PkvmViolation]:
    """Check every invariant; return the violations (empty when all hold)."""
    out: list[PkvmViolation] = []
    for pa, v in page_views(pkvm).items():
        out += check_page(pa, v)
    for r in check_refcounts(scan_tree(pkvm.host_pgt)):
        out.append(PkvmViolation("refcount", 0, str(r)))
    return out
