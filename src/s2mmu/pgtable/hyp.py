"""Hypervisor stage-1 operations: init, map, unmap, destroy.

The hyp table is only ever updated by one walker at a time (kvm_hyp_pgd_mutex, or
pKVM's hyp lock), so entries are written with plain stores; mapping over an existing
valid entry is refused (with a WARN) unless only software bits change, and unmap stops
at a hole or at a block that goes beyond the range.

Kernel: struct hyp_map_data, kvm_clear_pte, hyp_map_walker_try_leaf, hyp_map_walker,
kvm_pgtable_hyp_map, hyp_unmap_walker, kvm_pgtable_hyp_unmap, kvm_pgtable_hyp_init,
hyp_free_walker, kvm_pgtable_hyp_destroy (arch/arm64/kvm/hyp/pgtable.c).
"""

from __future__ import annotations

from s2mmu.pgtable.errno import EINVAL, ENOMEM
from s2mmu.pgtable.events import TLBI_TTL_UNKNOWN, TlbiHyp
from s2mmu.pgtable.mm import KvmPgtableMmOps
from s2mmu.pgtable.prot import hyp_set_prot_attr
from s2mmu.pgtable.pte import (
    KVM_PGTABLE_FIRST_LEVEL,
    KVM_PGTABLE_LAST_LEVEL,
    KVM_PTE_LEAF_ATTR_HI_SW,
    kvm_granule_size,
    kvm_init_table_pte,
    kvm_init_valid_leaf_pte,
    kvm_pte_table,
    kvm_pte_to_phys,
    kvm_pte_valid,
)
from s2mmu.pgtable.stage2 import kvm_block_mapping_supported, kvm_clear_pte
from s2mmu.pgtable.steps import WRITE, Gen, Step, stepped
from s2mmu.pgtable.table import KvmPgtable
from s2mmu.pgtable.tlb import dsb, isb
from s2mmu.pgtable.vtcr import arm64_hw_pgtable_levels
from s2mmu.pgtable.walk import (
    KVM_PGTABLE_WALK_LEAF,
    KVM_PGTABLE_WALK_TABLE_POST,
    KvmPgtableVisitCtx,
    KvmPgtableWalker,
    kvm_pgtable_walk,
)


class HypMapData:
    """The output address of the walk's start and the leaf attributes."""

    __slots__ = ("phys", "attr")

    def __init__(self, phys: int, attr: int) -> None:
        self.phys = phys
        self.attr = attr


def hyp_map_walker_try_leaf(ctx: KvmPgtableVisitCtx, data: HypMapData) -> Gen[bool]:
    """Install a leaf if one fits here; refuse (WARN) to change a live mapping.

    Kernel: hyp_map_walker_try_leaf.
    """
    phys = data.phys + (ctx.addr - ctx.start)
    if not kvm_block_mapping_supported(ctx, phys):
        return False
    new = kvm_init_valid_leaf_pte(phys, data.attr, ctx.level, ctx.mm_ops.g)
    if ctx.old == new:
        return True
    if not kvm_pte_valid(ctx.old):
        ctx.mm_ops.get_page(ctx.ptep)
    elif (ctx.old ^ new) & ~KVM_PTE_LEAF_ATTR_HI_SW:
        ctx.mm_ops.warn("hyp_map_walker_try_leaf", "(ctx->old ^ new) & ~KVM_PTE_LEAF_ATTR_HI_SW")
        return False
    yield Step(WRITE, ctx.ptep)
    ctx.mm_ops.write_pte(ctx.ptep, new)
    return True


def hyp_map_walker(ctx: KvmPgtableVisitCtx, visit: int) -> Gen[int]:
    """Map a leaf, or install a new table (from the hyp page allocator) to descend into.

    Kernel: hyp_map_walker.
    """
    data: HypMapData = ctx.arg
    mm_ops = ctx.mm_ops
    if (yield from hyp_map_walker_try_leaf(ctx, data)):
        return 0
    if ctx.level == KVM_PGTABLE_LAST_LEVEL:
        mm_ops.warn("hyp_map_walker", "ctx->level == KVM_PGTABLE_LAST_LEVEL")
        return -EINVAL
    childp = mm_ops.zalloc_page(None)
    if childp is None:
        return -ENOMEM
    mm_ops.get_page(ctx.ptep)
    yield Step(WRITE, ctx.ptep)
    mm_ops.write_pte(ctx.ptep, kvm_init_table_pte(childp, mm_ops.g))
    return 0


@stepped
def kvm_pgtable_hyp_map(pgt: KvmPgtable, addr: int, size: int, phys: int, prot: int) -> Gen[int]:
    """Map [addr, addr + size) of the hypervisor's VA space to phys with prot.

    Kernel: kvm_pgtable_hyp_map.
    """
    mm_ops = pgt.ops
    ret, attr = hyp_set_prot_attr(prot, mm_ops.caps)
    if ret:
        return ret
    data = HypMapData(phys & ~(mm_ops.g.page_size - 1), attr)
    walker = KvmPgtableWalker(hyp_map_walker, data, KVM_PGTABLE_WALK_LEAF)
    ret = yield from kvm_pgtable_walk.steps(pgt, addr, size, walker)
    dsb(mm_ops, "ishst")
    isb(mm_ops)
    return ret


class HypUnmapData:
    """How many bytes the unmap removed."""

    __slots__ = ("unmapped",)

    def __init__(self) -> None:
        self.unmapped = 0


def hyp_unmap_walker(ctx: KvmPgtableVisitCtx, visit: int) -> Gen[int]:
    """Clear a leaf fully inside the range, or a table left empty, with its TLBI.

    -EINVAL at a hole or at a block reaching beyond the range (ends the unmap).

    Kernel: hyp_unmap_walker.
    """
    data: HypUnmapData = ctx.arg
    mm_ops = ctx.mm_ops
    granule = kvm_granule_size(ctx.level, mm_ops.g)
    childp = None
    if not kvm_pte_valid(ctx.old):
        return -EINVAL
    if kvm_pte_table(ctx.old, ctx.level):
        childp = kvm_pte_to_phys(ctx.old, mm_ops.g)
        if mm_ops.page_count(childp) != 1:
            return 0
        yield from kvm_clear_pte(ctx)
        dsb(mm_ops, "ishst")
        mm_ops.events.record(TlbiHyp("vae2is", ctx.addr, TLBI_TTL_UNKNOWN))
    else:
        if ctx.end - ctx.addr < granule:
            return -EINVAL
        yield from kvm_clear_pte(ctx)
        dsb(mm_ops, "ishst")
        mm_ops.events.record(TlbiHyp("vale2is", ctx.addr, ctx.level))
        data.unmapped += granule
    dsb(mm_ops, "ish")
    isb(mm_ops)
    mm_ops.put_page(ctx.ptep)
    if childp is not None:
        mm_ops.put_page(childp)
    return 0


@stepped
def kvm_pgtable_hyp_unmap(pgt: KvmPgtable, addr: int, size: int) -> Gen[int]:
    """Unmap [addr, addr + size) of the hypervisor's VA space; return the bytes unmapped.

    Kernel: kvm_pgtable_hyp_unmap.
    """
    data = HypUnmapData()
    walker = KvmPgtableWalker(
        hyp_unmap_walker, data, KVM_PGTABLE_WALK_LEAF | KVM_PGTABLE_WALK_TABLE_POST
    )
    yield from kvm_pgtable_walk.steps(pgt, addr, size, walker)
    return data.unmapped


def kvm_pgtable_hyp_init(pgt: KvmPgtable, va_bits: int, mm_ops: KvmPgtableMmOps) -> int:
    """Initialise a hypervisor stage-1 table for va_bits of VA (a single PGD page).

    Kernel: kvm_pgtable_hyp_init.
    """
    start_level = KVM_PGTABLE_LAST_LEVEL + 1 - arm64_hw_pgtable_levels(va_bits, mm_ops.g)
    if start_level < KVM_PGTABLE_FIRST_LEVEL or start_level > KVM_PGTABLE_LAST_LEVEL:
        return -EINVAL
    if start_level < 0:
        return -EINVAL  # LPA2 5-level tables are not modelled.
    pgd = mm_ops.zalloc_page(None)
    if pgd is None:
        return -ENOMEM
    pgt.pgd = pgd
    pgt.ia_bits = va_bits
    pgt.start_level = start_level
    pgt.mm_ops = mm_ops
    pgt.mmu = None
    pgt.force_pte_cb = None
    return 0


def hyp_free_walker(ctx: KvmPgtableVisitCtx, visit: int) -> Gen[int]:
    """Drop the references held by valid entries, freeing the tables.

    Kernel: hyp_free_walker.
    """
    mm_ops = ctx.mm_ops
    if not kvm_pte_valid(ctx.old):
        return 0
    mm_ops.put_page(ctx.ptep)
    if kvm_pte_table(ctx.old, ctx.level):
        mm_ops.put_page(kvm_pte_to_phys(ctx.old, mm_ops.g))
    return 0
    yield  # pragma: no cover - makes this a generator


@stepped
def kvm_pgtable_hyp_destroy(pgt: KvmPgtable) -> Gen[None]:
    """Free every page of an unused hyp table (no TLB maintenance).

    Kernel: kvm_pgtable_hyp_destroy.
    """
    mm_ops = pgt.ops
    walker = KvmPgtableWalker(
        hyp_free_walker, None, KVM_PGTABLE_WALK_LEAF | KVM_PGTABLE_WALK_TABLE_POST
    )
    if (yield from kvm_pgtable_walk.steps(pgt, 0, 1 << pgt.ia_bits, walker)):
        mm_ops.warn("kvm_pgtable_hyp_destroy", "kvm_pgtable_walk() != 0")
    if pgt.pgd is not None:
        mm_ops.put_page(pgt.pgd)
    pgt.pgd = None
