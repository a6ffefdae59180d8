"""pKVM's host stage 2 (VMID 0) on real KVM against the model's, for the same story.

Under protected mode the host runs under its own stage 2, an identity map pKVM builds on
the host's faults (host_stage2_idmap: the largest block that fits the memory or MMIO range
and holds no entry), with the pages the hypervisor owns annotated (invalid entries naming
owner PKVM_ID_HYP) and the pages shared across EL2 carrying their page state in software
bits (host SHARED_OWNED for a page the host shares with EL2, SHARED_BORROWED for one EL2
shares with the host).

Where pKVM put its own memory is the kernel's allocator's choice, not the model's: the
story the model replays is read from the real table. A model hypervisor (new_pkvm, under
the booted release's profile) over the machine's RAM is set up as the kernel's
finalize_host_mappings does (an owner annotation per hypervisor-owned page, the
SHARED_BORROWED state per page EL2 shares with the host, through
__host_set_page_state_range, which before v6.14 writes it into the PTE), the host shares the pages
the real host shares (__pkvm_host_share_hyp), and the host touches the first address of
every leaf the real table holds (host_stage2_idmap). The two tables are then compared
range by range: IPA range, level, permissions, MemAttr, software bits, identity, and the
annotations' raw encoding. What is compared is thus the block-size policy next to
annotations and range ends, the attribute and annotation encodings, and the page states.

Kernel: arch/arm64/kvm/hyp/nvhe/setup.c finalize_host_mappings_walker (6.1),
mem_protect.c host_stage2_idmap, host_stage2_adjust_range, __pkvm_host_share_hyp.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from s2mmu.arch.dump import S2LeafAttrs, TableDump, dump_s2
from s2mmu.arch.translate import Env
from s2mmu.pgtable.dump import host_features, kvm_pgtable_stage2_params
from s2mmu.pgtable.page_state import (
    PKVM_PAGE_SHARED_BORROWED,
    PKVM_PAGE_SHARED_OWNED,
    pkvm_sw_state,
)
from s2mmu.pgtable.profile import BehaviourProfile
from s2mmu.pgtable.pte import kvm_invalid_pte_owner
from s2mmu.pkvm.mem_protect import (
    HOST_S2_POOL_BASE,
    HYP_POOL_BASE,
    Pkvm,
    __host_set_page_state_range,
    __pkvm_host_share_hyp,
    host_stage2_idmap,
    host_stage2_set_owner_locked,
    new_pkvm,
)
from s2mmu.pkvm.states import PKVM_ID_HYP

PAGE = 1 << 12
RAM_SIZE = 1 << 30
"""The booted machine's RAM: QEMU -m 1G at the virt machine's 0x40000000, which is the
model hypervisor's RAM_BASE too."""
HYP_POOL_PAGES = 64
HOST_S2_POOL_PAGES = 1024


@dataclass(frozen=True)
class HostLeaf:
    """A range of host stage-2 leaves: IPA range, level, permissions, MemAttr, SW bits,
    and whether each maps its own address (identity)."""

    start: int
    end: int
    level: int
    perms: str
    memattr: int
    sw: int
    identity: bool

    def __str__(self) -> str:
        state = pkvm_sw_state(self.sw).name.removeprefix("PKVM_PAGE_") if self.sw else ""
        return (f"{self.start:#x}-{self.end:#x} L{self.level} {self.perms} "
                f"MemAttr={self.memattr:#x}" + (f" {state}" if state else "")
                + ("" if self.identity else " NOT IDENTITY"))


@dataclass(frozen=True)
class HostAnnotation:
    """A range of invalid entries holding the same annotation (raw), and its owner."""

    start: int
    end: int
    raw: int

    def owner(self) -> str:
        """Return the owner the annotation names (the kernel's pkvm_component_id)."""
        found = kvm_invalid_pte_owner(self.raw)
        return found.name if found is not None else "?"

    def __str__(self) -> str:
        return f"{self.start:#x}-{self.end:#x} {self.raw:#x} ({self.owner()})"


@dataclass(frozen=True)
class HostStage2View:
    """A host stage 2 in the compared terms."""

    leaves: tuple[HostLeaf, ...]
    annotations: tuple[HostAnnotation, ...]

    def pages(self, sw: int) -> int:
        """Return how many pages the leaves with these software bits cover."""
        return sum((v.end - v.start) // PAGE for v in self.leaves if v.sw == sw)

    def summary(self) -> str:
        """Return the counts a reader checks first (leaf sizes, annotated pages, states)."""
        sizes: dict[int, int] = {}
        for v in self.leaves:
            size = 1 << (12 + 9 * (3 - v.level))
            sizes[size] = sizes.get(size, 0) + (v.end - v.start) // size
        shown = ", ".join(f"{n} x {size >> 20 or size >> 10}{'M' if size >> 20 else 'K'}"
                          if size < 1 << 30 else f"{n} x {size >> 30}G"
                          for size, n in sorted(sizes.items(), reverse=True))
        owned = sum((a.end - a.start) // PAGE for a in self.annotations)
        return (f"leaves {shown or 'none'}; annotated {owned} pages; "
                f"SHARED_OWNED {self.pages(1)} pages, SHARED_BORROWED {self.pages(2)} pages")


def _perms(a: S2LeafAttrs) -> str:
    p = a.perms
    return "".join(c if on else "-" for c, on in (("R", p.r), ("W", p.w), ("X", p.px)))


def host_view(dump: TableDump, skip: Iterable[tuple[int, int]] = ()) -> HostStage2View:
    """Return a host stage-2 dump (taken with its unused entries) in the compared terms,
    leaving out the IPA ranges in skip."""
    skipped = list(skip)

    def kept(start: int) -> bool:
        return not any(lo <= start < hi for lo, hi in skipped)

    leaves = []
    for r in dump.ranges():
        if isinstance(r.attrs, S2LeafAttrs) and kept(r.start):
            a = r.attrs
            leaves.append(HostLeaf(r.start, r.end, a.level, _perms(a), a.memattr, a.sw,
                                   r.oa == r.start))
    notes = [HostAnnotation(u.start, u.end, u.raw) for reg in dump.regions for u in reg.unused
             if kept(u.start)]
    return HostStage2View(tuple(leaves), tuple(_merge(notes)))


def _merge(notes: list[HostAnnotation]) -> list[HostAnnotation]:
    """Merge annotation ranges that continue each other with the same raw value (a level-2
    and a level-3 run of the same owner are one range)."""
    out: list[HostAnnotation] = []
    for n in sorted(notes, key=lambda a: a.start):
        if out and out[-1].end == n.start and out[-1].raw == n.raw:
            out[-1] = HostAnnotation(out[-1].start, n.end, n.raw)
        else:
            out.append(n)
    return out


def model_carve_outs() -> tuple[tuple[int, int], ...]:
    """Return the model hypervisor's own pools (hyp pool, host stage-2 pool): its
    bookkeeping, placed above the machine's RAM, not part of the compared story."""
    return ((HYP_POOL_BASE, HOST_S2_POOL_BASE + HOST_S2_POOL_PAGES * PAGE),)


def replay(real: HostStage2View, profile: BehaviourProfile) -> Pkvm:
    """Return the model hypervisor after the story the real host stage 2 tells."""
    pkvm = new_pkvm(RAM_SIZE // PAGE, nomap_pages=0, profile=profile,
                    hyp_pool_pages=HYP_POOL_PAGES, host_s2_pool_pages=HOST_S2_POOL_PAGES)
    for a in real.annotations:
        if kvm_invalid_pte_owner(a.raw) == PKVM_ID_HYP:
            host_stage2_set_owner_locked(pkvm, a.start, a.end - a.start, PKVM_ID_HYP)
    for v in real.leaves:
        if v.sw == PKVM_PAGE_SHARED_BORROWED.value:
            for page in range(v.start, v.end, PAGE):
                __host_set_page_state_range(pkvm, page, PAGE, PKVM_PAGE_SHARED_BORROWED)
    for v in real.leaves:
        if v.sw == PKVM_PAGE_SHARED_OWNED.value:
            for page in range(v.start, v.end, PAGE):
                __pkvm_host_share_hyp(pkvm, page // PAGE)
    for v in real.leaves:
        if not v.sw:
            step = 1 << (12 + 9 * (3 - v.level))
            for addr in range(v.start, v.end, step):
                host_stage2_idmap(pkvm, addr)
    return pkvm


def model_host_stage2(real: HostStage2View, profile: BehaviourProfile) -> HostStage2View:
    """Return the model's host stage 2 for the story the real one tells."""
    pkvm = replay(real, profile)
    pgt = pkvm.host_pgt
    fs = host_features(pgt)
    env = Env(pgt.ops.mem, fs)
    dump = dump_s2(kvm_pgtable_stage2_params(pgt, fs), env, unused=True)
    return host_view(dump, model_carve_outs())


def guest_memory(view: HostStage2View, pas: Iterable[int]) -> tuple[tuple[str, int], ...]:
    """Return how the host stage 2 holds the pages at pas (the VMM's memory, its guest's
    RAM): counts of host-owned pages mapped, not yet mapped, with a page state in the PTE
    (shared), and annotated (owned by another component: donated)."""
    counts = {"mapped": 0, "not mapped": 0, "shared": 0, "annotated": 0}
    for pa in pas:
        leaf = next((v for v in view.leaves if v.start <= pa < v.end), None)
        if leaf is not None:
            counts["shared" if leaf.sw else "mapped"] += 1
        elif any(a.start <= pa < a.end for a in view.annotations):
            counts["annotated"] += 1
        else:
            counts["not mapped"] += 1
    return tuple(counts.items())


@dataclass(frozen=True)
class HostComparison:
    """The real host stage 2 against the model's: both views, what differs, and how each
    holds the VMM's memory (its guest's RAM)."""

    real: HostStage2View
    model: HostStage2View
    only_real: tuple[HostLeaf | HostAnnotation, ...]
    only_model: tuple[HostLeaf | HostAnnotation, ...]
    guest_real: tuple[tuple[str, int], ...] = ()
    guest_model: tuple[tuple[str, int], ...] = ()


def compare_host(real_dump: TableDump, profile: BehaviourProfile,
                 guest_pas: Iterable[int] = ()) -> HostComparison:
    """Compare a real host stage 2 with the model's for the same story (and how both
    hold the pages at guest_pas)."""
    real = host_view(real_dump)
    model = model_host_stage2(real, profile)
    r: set[HostLeaf | HostAnnotation] = {*real.leaves, *real.annotations}
    m: set[HostLeaf | HostAnnotation] = {*model.leaves, *model.annotations}
    pas = sorted(set(guest_pas))
    return HostComparison(real, model, tuple(sorted(r - m, key=lambda e: e.start)),
                          tuple(sorted(m - r, key=lambda e: e.start)),
                          guest_memory(real, pas), guest_memory(model, pas))
