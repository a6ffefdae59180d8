"""Stage-2 operations: map, unmap, attribute updates, split, init and destroy.

Every operation is a walk with its own visitor, as in the kernel. Visitors change an
entry only through stage2_try_set_pte (a plain store, or a compare-and-swap in shared
walks), stage2_try_break_pte (replace a live entry by the locked invalid entry, then
invalidate the TLB and drop its reference) and stage2_make_pte (install the new entry
over the locked one). Operations return 0 or a negative errno.

Kernel: arch/arm64/kvm/hyp/pgtable.c (linux-next, v6.18 era): kvm_clear_pte,
kvm_block_mapping_supported,
stage2_map_data, stage2_pte_needs_update, stage2_try_set_pte, stage2_try_break_pte,
stage2_make_pte, stage2_unmap_defer_tlb_flush, stage2_unmap_put_pte,
stage2_map_walker_phys_addr, stage2_leaf_mapping_allowed, stage2_map_walker_try_leaf,
stage2_map_walk_table_pre, stage2_map_walk_leaf, stage2_map_walker,
kvm_pgtable_stage2_map, kvm_pgtable_stage2_set_owner, stage2_unmap_walker,
kvm_pgtable_stage2_unmap, stage2_attr_walker, stage2_update_leaf_attrs,
kvm_pgtable_stage2_wrprotect, kvm_pgtable_stage2_mkyoung, stage2_age_walker,
kvm_pgtable_stage2_test_clear_young, kvm_pgtable_stage2_relax_perms, stage2_flush_walker,
kvm_pgtable_stage2_flush, kvm_pgtable_stage2_create_unlinked,
stage2_block_get_nr_page_tables, stage2_split_walker, kvm_pgtable_stage2_split,
__kvm_pgtable_stage2_init, kvm_pgtable_stage2_pgd_size, stage2_free_leaf,
stage2_free_table_post, stage2_free_walker, kvm_pgtable_stage2_destroy_range,
kvm_pgtable_stage2_destroy_pgd, kvm_pgtable_stage2_destroy,
kvm_pgtable_stage2_free_unlinked. The v6.19 flag inversion (seed 000) and the older
rules selected by the behaviour profile are described in s2mmu.pgtable.profile.
"""

from __future__ import annotations

from s2mmu.pgtable.errno import E2BIG, EAGAIN, EINVAL, ENOMEM
from s2mmu.pgtable.events import TLBI_TTL_UNKNOWN
from s2mmu.pgtable.inject import InjectedBug
from s2mmu.pgtable.mm import KvmMmuMemoryCache, KvmPgtableMmOps
from s2mmu.pgtable.profile import EagainRule
from s2mmu.pgtable.prot import (
    KVM_PGTABLE_PROT_R,
    KVM_PGTABLE_PROT_W,
    KVM_PGTABLE_PROT_X,
    kvm_pgtable_stage2_pte_prot,
    stage2_has_fwb,
    stage2_pte_cacheable,
    stage2_pte_executable,
    stage2_set_prot_attr,
    stage2_set_xn_attr,
)
from s2mmu.pgtable.pte import (
    KVM_INVALID_PTE_LOCKED,
    KVM_MAX_OWNER_ID,
    KVM_PGTABLE_LAST_LEVEL,
    KVM_PTE_LEAF_ATTR_HI,
    KVM_PTE_LEAF_ATTR_HI_S2_XN,
    KVM_PTE_LEAF_ATTR_HI_SW,
    KVM_PTE_LEAF_ATTR_LO,
    KVM_PTE_LEAF_ATTR_LO_S2_AF,
    KVM_PTE_LEAF_ATTR_LO_S2_S2AP_R,
    KVM_PTE_LEAF_ATTR_LO_S2_S2AP_W,
    KVM_PTE_LEAF_ATTR_S2_PERMS,
    Granule,
    kvm_granule_size,
    kvm_init_invalid_leaf_owner,
    kvm_init_table_pte,
    kvm_init_valid_leaf_pte,
    kvm_level_supports_block_mapping,
    kvm_pte_table,
    kvm_pte_to_phys,
    kvm_pte_valid,
    stage2_pte_is_locked,
)
from s2mmu.pgtable.steps import CAS, READ, WRITE, Gen, Step, stepped
from s2mmu.pgtable.table import (
    KVM_PGTABLE_S2_IDMAP,
    ForcePteCb,
    KvmPgtable,
    KvmS2Mmu,
    PteIsCountedCb,
    kvm_pgtable_pte_is_counted,
)
from s2mmu.pgtable.tlb import (
    __kvm_tlb_flush_vmid,
    __kvm_tlb_flush_vmid_ipa,
    __kvm_tlb_flush_vmid_ipa_nsh,
    dsb,
    kvm_tlb_flush_vmid_range,
)
from s2mmu.pgtable.vtcr import vtcr_el2_ipa, vtcr_el2_start_level
from s2mmu.pgtable.walk import (
    KVM_PGTABLE_WALK_IGNORE_EAGAIN,
    KVM_PGTABLE_WALK_LEAF,
    KVM_PGTABLE_WALK_SKIP_BBM_TLBI,
    KVM_PGTABLE_WALK_SKIP_CMO,
    KVM_PGTABLE_WALK_TABLE_POST,
    KVM_PGTABLE_WALK_TABLE_PRE,
    KvmPgtableVisitCtx,
    KvmPgtableWalkData,
    KvmPgtableWalker,
    __kvm_pgtable_walk,
    kvm_pgd_pages,
    kvm_pgtable_walk,
    kvm_pgtable_walk_shared,
    kvm_pgtable_walk_skip_bbm_tlbi,
    kvm_pgtable_walk_skip_cmo,
)

# Plain ints for the hot path (IntFlag arithmetic is slow).
_S2_IDMAP = int(KVM_PGTABLE_S2_IDMAP)
_PROT_R, _PROT_W = int(KVM_PGTABLE_PROT_R), int(KVM_PGTABLE_PROT_W)
_PROT_X = int(KVM_PGTABLE_PROT_X)

# ---------------------------------------------------------------------------------------
# Entry updates: the only ways a visitor changes a stage-2 entry.


def stage2_ctx_pte_is_counted(ctx: KvmPgtableVisitCtx, pte: int) -> bool:
    """Return whether pte, stored at ctx's entry, holds a reference on its table page.

    The walked table's pte_is_counted_cb decides (pKVM's host stage 2 leaves its default
    identity entries uncounted); without one, any non-zero entry counts.

    Kernel: stage2_pte_is_counted (one fixed rule there; the callback is the model's).
    """
    return kvm_pgtable_pte_is_counted(ctx.pgt, pte, ctx.level)


def kvm_clear_pte(ctx: KvmPgtableVisitCtx) -> Gen[None]:
    """Store 0 (invalid, not counted) in the entry, with no break-before-make.

    Kernel: kvm_clear_pte.
    """
    yield Step(WRITE, ctx.ptep)
    ctx.mm_ops.write_pte(ctx.ptep, 0)


def stage2_try_set_pte(ctx: KvmPgtableVisitCtx, new: int) -> Gen[bool]:
    """Store new; in a shared walk only if the entry still holds ctx.old (CAS).

    Kernel: stage2_try_set_pte.
    """
    if not kvm_pgtable_walk_shared(ctx):
        yield Step(WRITE, ctx.ptep)
        ctx.mm_ops.write_pte(ctx.ptep, new)
        return True
    yield Step(CAS, ctx.ptep)
    return ctx.mm_ops.cas_pte(ctx.ptep, ctx.old, new)


def stage2_try_break_pte(ctx: KvmPgtableVisitCtx, mmu: KvmS2Mmu) -> Gen[bool]:
    """Replace the entry by the locked invalid entry, invalidate the TLB, drop its ref.

    Returns False if another walker holds the entry locked or changed it first.

    Kernel: stage2_try_break_pte.
    """
    mm_ops = ctx.mm_ops
    if stage2_pte_is_locked(ctx.old):
        if not kvm_pgtable_walk_shared(ctx):
            mm_ops.warn("stage2_try_break_pte", "locked pte in an exclusive walk")
        return False
    if not (yield from stage2_try_set_pte(ctx, KVM_INVALID_PTE_LOCKED)):
        return False
    if not kvm_pgtable_walk_skip_bbm_tlbi(ctx):
        if kvm_pte_table(ctx.old, ctx.level):
            size = kvm_granule_size(ctx.level, mm_ops.g)
            kvm_tlb_flush_vmid_range(mmu, ctx.addr & ~(size - 1), size)
        elif kvm_pte_valid(ctx.old):
            __kvm_tlb_flush_vmid_ipa(mmu, ctx.addr, ctx.level)
    if stage2_ctx_pte_is_counted(ctx, ctx.old):
        mm_ops.put_page(ctx.ptep)
    return True


def stage2_make_pte(ctx: KvmPgtableVisitCtx, new: int) -> Gen[None]:
    """Install new over the locked entry, taking a reference if it is counted.

    Kernel: stage2_make_pte.
    """
    mm_ops = ctx.mm_ops
    yield Step(READ, ctx.ptep)
    if not stage2_pte_is_locked(mm_ops.read_pte(ctx.ptep)):
        mm_ops.warn("stage2_make_pte", "!stage2_pte_is_locked(*ctx->ptep)")
    if stage2_ctx_pte_is_counted(ctx, new):
        mm_ops.get_page(ctx.ptep)
    yield Step(WRITE, ctx.ptep)
    mm_ops.write_pte(ctx.ptep, new)


def stage2_pte_needs_update(old: int, new: int) -> bool:
    """Return whether a map must touch the entry (not for a permissions-only change).

    Kernel: stage2_pte_needs_update.
    """
    if not kvm_pte_valid(old) or not kvm_pte_valid(new):
        return True
    return bool((old ^ new) & ~KVM_PTE_LEAF_ATTR_S2_PERMS)


# ---------------------------------------------------------------------------------------
# Map.


class Stage2MapData:
    """What the map walker carries: the output address, attributes, and the memcache.

    Kernel: struct stage2_map_data.
    """

    __slots__ = ("phys", "attr", "owner_id", "annotation", "mmu", "memcache", "force_pte",
                 "anchor", "childp")

    def __init__(
        self,
        phys: int,
        attr: int,
        mmu: KvmS2Mmu,
        memcache: KvmMmuMemoryCache | None,
        force_pte: bool,
        owner_id: int = 0,
        annotation: bool = False,
    ) -> None:
        self.phys = phys
        self.attr = attr
        self.owner_id = owner_id
        self.annotation = annotation
        self.mmu = mmu
        self.memcache = memcache
        self.force_pte = force_pte
        self.anchor: int | None = None  # the profile's map_anchor (6.1): the cleared entry
        self.childp = 0


def kvm_block_mapping_supported(ctx: KvmPgtableVisitCtx, phys: int) -> bool:
    """Return whether ctx's entry can map [ctx.addr, ...) to phys as one leaf.

    Kernel: kvm_block_mapping_supported.
    """
    g = ctx.mm_ops.g
    granule = kvm_granule_size(ctx.level, g)
    if not kvm_level_supports_block_mapping(ctx.level, g):
        return False
    if granule > ctx.end - ctx.addr:
        return False
    if phys & (granule - 1):
        return False
    return not ctx.addr & (granule - 1)


def stage2_map_walker_phys_addr(ctx: KvmPgtableVisitCtx, data: Stage2MapData) -> int:
    """Return the output address for ctx.addr: phys plus how far the walk has got.

    Under a profile without pa_from_ipa, data.phys is a counter bumped per installed
    leaf instead (the behaviour before commit 1f0f4a2ef7a5).

    Kernel: stage2_map_walker_phys_addr.
    """
    if not ctx.mm_ops.profile.pa_from_ipa:
        return data.phys
    return data.phys + (ctx.addr - ctx.start)


def stage2_leaf_mapping_allowed(ctx: KvmPgtableVisitCtx, data: Stage2MapData) -> bool:
    """Return whether the map may install a leaf at ctx's level.

    Kernel: stage2_leaf_mapping_allowed.
    """
    phys = stage2_map_walker_phys_addr(ctx, data)
    if data.force_pte and ctx.level < KVM_PGTABLE_LAST_LEVEL:
        return False
    if data.annotation:
        return True
    return kvm_block_mapping_supported(ctx, phys)


def stage2_map_walker_try_leaf(ctx: KvmPgtableVisitCtx, data: Stage2MapData) -> Gen[int]:
    """Install the leaf for ctx.addr, with break-before-make and cache maintenance.

    -E2BIG: a leaf is not allowed here (the caller descends); -EAGAIN: nothing to do
    but a permission change, or another walker got there first.

    Kernel: stage2_map_walker_try_leaf.
    """
    mm_ops = ctx.mm_ops
    g = mm_ops.g
    phys = stage2_map_walker_phys_addr(ctx, data)
    granule = kvm_granule_size(ctx.level, g)
    if not stage2_leaf_mapping_allowed(ctx, data):
        return -E2BIG
    if data.annotation:
        new = kvm_init_invalid_leaf_owner(data.owner_id)
    else:
        new = kvm_init_valid_leaf_pte(phys, data.attr, ctx.level, g)
    if mm_ops.profile.perm_only_filter:
        if not stage2_pte_needs_update(ctx.old, new):
            return -EAGAIN
    elif ctx.old == new:
        _advance_phys_counter(ctx, data, granule)
        return 0
    if (mm_ops.profile.map_sw_bits_shortcut and not kvm_pgtable_walk_shared(ctx)
            and not (ctx.old ^ new) & ~KVM_PTE_LEAF_ATTR_HI_SW):
        yield from _stage2_set_sw_bits(ctx, new)
        _advance_phys_counter(ctx, data, granule)
        return 0
    if not (yield from stage2_try_break_pte(ctx, data.mmu)):
        return -EAGAIN
    _stage2_map_cmo(ctx, data, new, granule)
    yield from stage2_make_pte(ctx, new)
    _advance_phys_counter(ctx, data, granule)
    return 0


def _stage2_set_sw_bits(ctx: KvmPgtableVisitCtx, new: int) -> Gen[None]:
    """Store a change of software bits only, without break-before-make (exclusive walks).

    Kernel: stage2_map_walker_try_leaf ("If we're only changing software bits").
    """
    mm_ops = ctx.mm_ops
    old_is_counted = stage2_ctx_pte_is_counted(ctx, ctx.old)
    if old_is_counted != stage2_ctx_pte_is_counted(ctx, new):
        if old_is_counted:
            mm_ops.put_page(ctx.ptep)
        else:
            mm_ops.get_page(ctx.ptep)
    if not (yield from stage2_try_set_pte(ctx, new)):
        mm_ops.warn("stage2_map_walker_try_leaf", "!stage2_try_set_pte(ctx, new)")


def _stage2_map_cmo(ctx: KvmPgtableVisitCtx, data: Stage2MapData, new: int, granule: int) -> None:
    """Clean the data cache and invalidate the I-cache before a new leaf goes live.

    Kernel: stage2_map_walker_try_leaf ("Perform CMOs before installation").
    """
    mm_ops = ctx.mm_ops
    if kvm_pgtable_walk_skip_cmo(ctx):
        return
    pgt = data.mmu.pgt
    pa = kvm_pte_to_phys(new, mm_ops.g)
    if mm_ops.dcache_clean_inval_poc is not None and pgt and stage2_pte_cacheable(pgt, new):
        mm_ops.dcache_clean_inval_poc(pa, granule)
    executable = (stage2_pte_executable(new) if mm_ops.profile.cmo_valid_leaf_only
                  else not new & KVM_PTE_LEAF_ATTR_HI_S2_XN)
    if mm_ops.icache_inval_pou is not None and executable:
        mm_ops.icache_inval_pou(pa, granule)


def _advance_phys_counter(ctx: KvmPgtableVisitCtx, data: Stage2MapData, granule: int) -> None:
    """Bump the output-address counter (only under a profile without pa_from_ipa).

    Kernel: stage2_map_walker_try_leaf before 1f0f4a2ef7a5 ("data->phys += granule").
    """
    if not ctx.mm_ops.profile.pa_from_ipa and not data.annotation:
        data.phys += granule


def stage2_map_walk_table_pre(ctx: KvmPgtableVisitCtx, data: Stage2MapData) -> Gen[int]:
    """Replace a table by a block when the block fits, then free the detached table.

    Kernel: stage2_map_walk_table_pre.
    """
    mm_ops = ctx.mm_ops
    childp = kvm_pte_to_phys(ctx.old, mm_ops.g)
    if not stage2_leaf_mapping_allowed(ctx, data):
        return 0
    ret = yield from stage2_map_walker_try_leaf(ctx, data)
    if ret:
        return ret
    yield from mm_ops.free_unlinked_table(childp, ctx.level, ctx.pgt)
    return 0


def stage2_map_walk_leaf(ctx: KvmPgtableVisitCtx, data: Stage2MapData) -> Gen[int]:
    """Install a leaf, or a new table (from the memcache) to descend into.

    A block in the way is replaced by an empty table: the rest of the old block is then
    unmapped and faulted back lazily.

    Kernel: stage2_map_walk_leaf.
    """
    mm_ops = ctx.mm_ops
    ret = yield from stage2_map_walker_try_leaf(ctx, data)
    if ret != -E2BIG:
        return ret
    if ctx.level == KVM_PGTABLE_LAST_LEVEL:
        mm_ops.warn("stage2_map_walk_leaf", "ctx->level == KVM_PGTABLE_LAST_LEVEL")
        return -EINVAL
    if data.memcache is None:
        return -ENOMEM
    childp = mm_ops.zalloc_page(data.memcache)
    if childp is None:
        return -ENOMEM
    if not (yield from stage2_try_break_pte(ctx, data.mmu)):
        mm_ops.put_page(childp)
        return -EAGAIN
    yield from stage2_make_pte(ctx, kvm_init_table_pte(childp, mm_ops.g))
    return 0


def stage2_map_walk_table_pre_anchor(ctx: KvmPgtableVisitCtx, data: Stage2MapData) -> Gen[int]:
    """Clear a table entry a block can replace, invalidate the VMID, anchor there (6.1).

    Kernel: stage2_map_walk_table_pre (6.1).
    """
    if data.anchor is not None or not stage2_leaf_mapping_allowed(ctx, data):
        return 0
    data.childp = kvm_pte_to_phys(ctx.old, ctx.mm_ops.g)
    yield Step(WRITE, ctx.ptep)
    ctx.mm_ops.write_pte(ctx.ptep, 0)
    __kvm_tlb_flush_vmid(data.mmu)
    data.anchor = ctx.ptep
    return 0


def stage2_map_walk_table_post_anchor(ctx: KvmPgtableVisitCtx, data: Stage2MapData
                                      ) -> Gen[int]:
    """Free a detached table on the way up; at the anchor, install the block (6.1).

    Kernel: stage2_map_walk_table_post (6.1).
    """
    mm_ops = ctx.mm_ops
    if data.anchor is None:
        return 0
    ret = 0
    if data.anchor == ctx.ptep:
        childp = data.childp
        data.anchor, data.childp = None, 0
        yield Step(READ, ctx.ptep)
        ret = yield from stage2_map_walk_leaf(ctx._replace(old=mm_ops.read_pte(ctx.ptep)), data)
    else:
        childp = kvm_pte_to_phys(ctx.old, mm_ops.g)
    mm_ops.put_page(childp)
    mm_ops.put_page(ctx.ptep)
    return ret


def stage2_map_walker(ctx: KvmPgtableVisitCtx, visit: int) -> Gen[int]:
    """Dispatch the map visitor: TABLE_PRE may install a block, LEAF maps or descends.

    Under the profile's map_anchor (6.1) TABLE_PRE anchors, a LEAF below the anchor only
    drops its reference and TABLE_POST frees tables and installs the block.

    Kernel: stage2_map_walker.
    """
    data: Stage2MapData = ctx.arg
    if ctx.mm_ops.profile.map_anchor:
        if visit == KVM_PGTABLE_WALK_TABLE_PRE:
            return (yield from stage2_map_walk_table_pre_anchor(ctx, data))
        if visit == KVM_PGTABLE_WALK_TABLE_POST:
            return (yield from stage2_map_walk_table_post_anchor(ctx, data))
        if data.anchor is not None:
            if stage2_ctx_pte_is_counted(ctx, ctx.old):
                ctx.mm_ops.put_page(ctx.ptep)
            return 0
    if visit == KVM_PGTABLE_WALK_TABLE_PRE:
        return (yield from stage2_map_walk_table_pre(ctx, data))
    if visit == KVM_PGTABLE_WALK_LEAF:
        return (yield from stage2_map_walk_leaf(ctx, data))
    return -EINVAL


def stage2_map_walk_flags(mm_ops: KvmPgtableMmOps) -> int:
    """Return the map walker's own flags: TABLE_POST too under map_anchor (6.1)."""
    flags = KVM_PGTABLE_WALK_TABLE_PRE | KVM_PGTABLE_WALK_LEAF
    return flags | KVM_PGTABLE_WALK_TABLE_POST if mm_ops.profile.map_anchor else flags


@stepped
def kvm_pgtable_stage2_map(
    pgt: KvmPgtable,
    addr: int,
    size: int,
    phys: int,
    prot: int,
    mc: KvmMmuMemoryCache | None,
    flags: int = 0,
) -> Gen[int]:
    """Map [addr, addr + size) to phys with prot, using the largest blocks that fit.

    flags are walk flags from the caller (SHARED for a fault under the read lock).

    Kernel: kvm_pgtable_stage2_map.
    """
    mm_ops = pgt.ops
    mmu = pgt.s2_mmu
    page_mask = mm_ops.g.page_size - 1
    force_pte = pgt.force_pte_cb is not None and pgt.force_pte_cb(addr, addr + size, prot)
    if pgt.flags & _S2_IDMAP and addr != phys:
        mm_ops.warn("kvm_pgtable_stage2_map", "IDMAP && addr != phys")
        return -EINVAL
    ret, attr = stage2_set_prot_attr(pgt, prot)
    if ret:
        return ret
    data = Stage2MapData(phys & ~page_mask, attr, mmu, mc, force_pte)
    walker = KvmPgtableWalker(stage2_map_walker, data, flags | stage2_map_walk_flags(mm_ops))
    ret = yield from kvm_pgtable_walk.steps(pgt, addr, size, walker)
    dsb(mm_ops, "ishst")
    return ret


@stepped
def kvm_pgtable_stage2_set_owner(
    pgt: KvmPgtable, addr: int, size: int, mc: KvmMmuMemoryCache | None, owner_id: int
) -> Gen[int]:
    """Annotate [addr, addr + size) as owned by owner_id with invalid, counted entries.

    owner_id is a PkvmComponentId (a plain int is accepted); ids above KVM_MAX_OWNER_ID
    (the profile's max_owner_id: 1 before v6.19, 255 after) are refused with -EINVAL.

    Kernel: kvm_pgtable_stage2_set_owner.
    """
    if owner_id < 0 or owner_id > min(KVM_MAX_OWNER_ID, pgt.ops.profile.max_owner_id):
        return -EINVAL
    data = Stage2MapData(0, 0, pgt.s2_mmu, mc, True, owner_id=owner_id, annotation=True)
    walker = KvmPgtableWalker(stage2_map_walker, data, stage2_map_walk_flags(pgt.ops))
    return (yield from kvm_pgtable_walk.steps(pgt, addr, size, walker))


# ---------------------------------------------------------------------------------------
# Unmap.


def stage2_unmap_defer_tlb_flush(pgt: KvmPgtable) -> bool:
    """Return whether unmap batches its TLBIs into one range TLBI at the end.

    Kernel: stage2_unmap_defer_tlb_flush.
    """
    return pgt.ops.profile.unmap_range_tlbi and pgt.ops.caps.tlb_range and stage2_has_fwb(pgt)


def stage2_unmap_put_pte(
    ctx: KvmPgtableVisitCtx, mmu: KvmS2Mmu, mm_ops: KvmPgtableMmOps
) -> Gen[None]:
    """Clear a live entry (break without make), invalidate unless deferred, drop the ref.

    Kernel: stage2_unmap_put_pte.
    """
    pgt: KvmPgtable = ctx.arg
    if kvm_pte_valid(ctx.old):
        yield from kvm_clear_pte(ctx)
        if kvm_pte_table(ctx.old, ctx.level):
            wrong = InjectedBug.TABLE_TLBI_LEVEL_HINT in mm_ops.bugs
            __kvm_tlb_flush_vmid_ipa(mmu, ctx.addr, ctx.level if wrong else TLBI_TTL_UNKNOWN)
        elif not stage2_unmap_defer_tlb_flush(pgt):
            __kvm_tlb_flush_vmid_ipa(mmu, ctx.addr, ctx.level)
    if stage2_ctx_pte_is_counted(ctx, ctx.old):
        mm_ops.put_page(ctx.ptep)


def stage2_unmap_walker(ctx: KvmPgtableVisitCtx, visit: int) -> Gen[int]:
    """Remove leaves (whole blocks, even if partly in range) and tables left empty.

    Kernel: stage2_unmap_walker.
    """
    pgt: KvmPgtable = ctx.arg
    mmu = pgt.s2_mmu
    mm_ops = ctx.mm_ops
    childp = None
    need_flush = False
    if not kvm_pte_valid(ctx.old):
        if stage2_ctx_pte_is_counted(ctx, ctx.old):
            yield from kvm_clear_pte(ctx)
            mm_ops.put_page(ctx.ptep)
        return 0
    if kvm_pte_table(ctx.old, ctx.level):
        childp = kvm_pte_to_phys(ctx.old, mm_ops.g)
        if mm_ops.page_count(childp) != 1:
            return 0
    elif stage2_pte_cacheable(pgt, ctx.old):
        need_flush = not stage2_has_fwb(pgt)
    yield from stage2_unmap_put_pte(ctx, mmu, mm_ops)
    if need_flush and mm_ops.dcache_clean_inval_poc is not None:
        pa = kvm_pte_to_phys(ctx.old, mm_ops.g)
        mm_ops.dcache_clean_inval_poc(pa, kvm_granule_size(ctx.level, mm_ops.g))
    if childp is not None:
        mm_ops.put_page(childp)
    return 0


@stepped
def kvm_pgtable_stage2_unmap(pgt: KvmPgtable, addr: int, size: int) -> Gen[int]:
    """Unmap [addr, addr + size), freeing tables that become empty.

    Kernel: kvm_pgtable_stage2_unmap.
    """
    walker = KvmPgtableWalker(
        stage2_unmap_walker, pgt, KVM_PGTABLE_WALK_LEAF | KVM_PGTABLE_WALK_TABLE_POST
    )
    ret = yield from kvm_pgtable_walk.steps(pgt, addr, size, walker)
    if stage2_unmap_defer_tlb_flush(pgt):
        kvm_tlb_flush_vmid_range(pgt.s2_mmu, addr, size)
    return ret


# ---------------------------------------------------------------------------------------
# Attribute updates: wrprotect, mkyoung, relax_perms, test_clear_young, flush.


class Stage2AttrData:
    """Bits to set and clear, and the last leaf seen. Kernel: struct stage2_attr_data."""

    __slots__ = ("attr_set", "attr_clr", "pte", "level")

    def __init__(self, attr_set: int, attr_clr: int) -> None:
        self.attr_set = attr_set
        self.attr_clr = attr_clr
        self.pte = 0
        self.level = 0


def stage2_attr_walker(ctx: KvmPgtableVisitCtx, visit: int) -> Gen[int]:
    """Set and clear attribute bits of a valid leaf in place (no break-before-make).

    -EAGAIN for an invalid entry (from v6.3; before, it was skipped), or when a racing
    walker changed the entry first.

    Kernel: stage2_attr_walker.
    """
    data: Stage2AttrData = ctx.arg
    mm_ops = ctx.mm_ops
    if not kvm_pte_valid(ctx.old):
        return -EAGAIN if mm_ops.profile.attr_eagain_on_invalid else 0
    data.level = ctx.level
    data.pte = ctx.old
    pte = (ctx.old & ~data.attr_clr) | data.attr_set
    if data.pte != pte:
        if (
            mm_ops.icache_inval_pou is not None
            and stage2_pte_executable(pte)
            and not stage2_pte_executable(ctx.old)
        ):
            pa = kvm_pte_to_phys(pte, mm_ops.g)
            mm_ops.icache_inval_pou(pa, kvm_granule_size(ctx.level, mm_ops.g))
        if not (yield from stage2_try_set_pte(ctx, pte)):
            return -EAGAIN
    return 0


def stage2_update_leaf_attrs(
    pgt: KvmPgtable, addr: int, size: int, attr_set: int, attr_clr: int, flags: int
) -> Gen[tuple[int, int, int]]:
    """Walk the leaves of the range updating attributes; return (ret, last pte, level).

    Kernel: stage2_update_leaf_attrs.
    """
    attr_mask = KVM_PTE_LEAF_ATTR_LO | KVM_PTE_LEAF_ATTR_HI
    data = Stage2AttrData(attr_set & attr_mask, attr_clr & attr_mask)
    walker = KvmPgtableWalker(stage2_attr_walker, data, flags | KVM_PGTABLE_WALK_LEAF)
    ret = yield from kvm_pgtable_walk.steps(pgt, addr, size, walker)
    return ret, data.pte, data.level


@stepped
def kvm_pgtable_stage2_wrprotect(pgt: KvmPgtable, addr: int, size: int) -> Gen[int]:
    """Remove write permission from every leaf of the range.

    From v6.19 it passes KVM_PGTABLE_WALK_IGNORE_EAGAIN (the only caller that does), so a
    hole in the range does not end the walk.

    Kernel: kvm_pgtable_stage2_wrprotect.
    """
    flags = 0
    if pgt.ops.profile.eagain_rule is EagainRule.IGNORE_EAGAIN:
        flags = KVM_PGTABLE_WALK_IGNORE_EAGAIN
    ret, _, _ = yield from stage2_update_leaf_attrs(
        pgt, addr, size, 0, KVM_PTE_LEAF_ATTR_LO_S2_S2AP_W, flags
    )
    return ret


@stepped
def kvm_pgtable_stage2_mkyoung(pgt: KvmPgtable, addr: int, flags: int = 0) -> Gen[None]:
    """Set the access flag of the leaf mapping addr.

    Kernel: kvm_pgtable_stage2_mkyoung.
    """
    ret, _, _ = yield from stage2_update_leaf_attrs(
        pgt, addr, 1, KVM_PTE_LEAF_ATTR_LO_S2_AF, 0, flags
    )
    if not ret:
        dsb(pgt.ops, "ishst")


class Stage2AgeData:
    """Whether to clear AF, and whether any leaf was young. Kernel: stage2_age_data."""

    __slots__ = ("mkold", "young")

    def __init__(self, mkold: bool) -> None:
        self.mkold = mkold
        self.young = False


def stage2_age_walker(ctx: KvmPgtableVisitCtx, visit: int) -> Gen[int]:
    """Note a young leaf and, for mkold, clear its access flag (the TLBI is the caller's).

    Kernel: stage2_age_walker.
    """
    data: Stage2AgeData = ctx.arg
    new = ctx.old & ~KVM_PTE_LEAF_ATTR_LO_S2_AF
    if not kvm_pte_valid(ctx.old) or new == ctx.old:
        return 0
    data.young = True
    if data.mkold and not (yield from stage2_try_set_pte(ctx, new)):
        return -EAGAIN
    return 0


@stepped
def kvm_pgtable_stage2_test_clear_young(
    pgt: KvmPgtable, addr: int, size: int, mkold: bool
) -> Gen[bool]:
    """Return whether any leaf of the range has its access flag set; clear it if mkold.

    Kernel: kvm_pgtable_stage2_test_clear_young.
    """
    data = Stage2AgeData(mkold)
    walker = KvmPgtableWalker(stage2_age_walker, data, KVM_PGTABLE_WALK_LEAF)
    if (yield from kvm_pgtable_walk.steps(pgt, addr, size, walker)):
        pgt.ops.warn("kvm_pgtable_stage2_test_clear_young", "kvm_pgtable_walk() != 0")
    return data.young


@stepped
def kvm_pgtable_stage2_relax_perms(
    pgt: KvmPgtable, addr: int, prot: int, flags: int = 0
) -> Gen[int]:
    """Add R/W to the leaf mapping addr and set its execute permission to prot's.

    From v6.19 the XN field is written from prot (a prot without X makes the leaf
    non-executable); before it (profile knob relax_perms_xn_from_prot off), XN is only
    cleared when prot has X and never set. The local TLB is invalidated on success and
    on -EAGAIN; before v6.6 (knobs relax_perms_local_tlbi, relax_perms_tlbi_on_eagain
    off) the inner-shareable one, on success only.

    Kernel: kvm_pgtable_stage2_relax_perms.
    """
    if prot & KVM_PTE_LEAF_ATTR_HI_SW:
        return -EINVAL
    attr_set = 0
    if prot & _PROT_R:
        attr_set |= KVM_PTE_LEAF_ATTR_LO_S2_S2AP_R
    if prot & _PROT_W:
        attr_set |= KVM_PTE_LEAF_ATTR_LO_S2_S2AP_W
    if pgt.ops.profile.relax_perms_xn_from_prot:
        r, xn = stage2_set_xn_attr(prot, pgt.ops.caps)
        if r:
            return r
        attr_set |= xn & KVM_PTE_LEAF_ATTR_HI_S2_XN
        attr_clr = ~xn & KVM_PTE_LEAF_ATTR_HI_S2_XN
    else:
        attr_clr = KVM_PTE_LEAF_ATTR_HI_S2_XN if prot & _PROT_X else 0
    ret, _, level = yield from stage2_update_leaf_attrs(pgt, addr, 1, attr_set, attr_clr, flags)
    profile = pgt.ops.profile
    if ret == 0 or (ret == -EAGAIN and profile.relax_perms_tlbi_on_eagain):
        # On -EAGAIN the kernel passes an uninitialised level; the model says "unknown".
        hint = level if ret == 0 else TLBI_TTL_UNKNOWN
        if profile.relax_perms_local_tlbi:
            __kvm_tlb_flush_vmid_ipa_nsh(pgt.s2_mmu, addr, hint)
        else:
            __kvm_tlb_flush_vmid_ipa(pgt.s2_mmu, addr, hint)
    return ret


def stage2_flush_walker(ctx: KvmPgtableVisitCtx, visit: int) -> Gen[int]:
    """Clean and invalidate to the PoC the memory behind a cacheable leaf.

    Kernel: stage2_flush_walker.
    """
    pgt: KvmPgtable = ctx.arg
    mm_ops = pgt.ops
    if not stage2_pte_cacheable(pgt, ctx.old):
        return 0
    if mm_ops.dcache_clean_inval_poc is not None:
        pa = kvm_pte_to_phys(ctx.old, mm_ops.g)
        mm_ops.dcache_clean_inval_poc(pa, kvm_granule_size(ctx.level, mm_ops.g))
    return 0
    yield  # pragma: no cover - makes this a generator


@stepped
def kvm_pgtable_stage2_flush(pgt: KvmPgtable, addr: int, size: int) -> Gen[int]:
    """Clean the guest's cacheable memory in the range to the PoC (nothing with FWB).

    Kernel: kvm_pgtable_stage2_flush.
    """
    if stage2_has_fwb(pgt):
        return 0
    walker = KvmPgtableWalker(stage2_flush_walker, pgt, KVM_PGTABLE_WALK_LEAF)
    return (yield from kvm_pgtable_walk.steps(pgt, addr, size, walker))


# ---------------------------------------------------------------------------------------
# Unlinked tables and eager splitting.


@stepped
def kvm_pgtable_stage2_create_unlinked(
    pgt: KvmPgtable,
    phys: int,
    level: int,
    prot: int,
    mc: KvmMmuMemoryCache | None,
    force_pte: bool,
) -> Gen[int]:
    """Build, outside the tree, a table mapping the block at phys of a level-`level` entry.

    Returns the new table's physical address, or a negative errno (the kernel's ERR_PTR).
    The walk skips break-before-make TLBIs and CMOs: nothing can see the table yet.

    Kernel: kvm_pgtable_stage2_create_unlinked.
    """
    mm_ops = pgt.ops
    g = mm_ops.g
    if phys & (kvm_granule_size(level, g) - 1):
        return -EINVAL
    ret, attr = stage2_set_prot_attr(pgt, prot)
    if ret:
        return ret
    data = Stage2MapData(phys, attr, pgt.s2_mmu, mc, force_pte)
    walker = KvmPgtableWalker(
        stage2_map_walker,
        data,
        KVM_PGTABLE_WALK_LEAF | KVM_PGTABLE_WALK_SKIP_BBM_TLBI | KVM_PGTABLE_WALK_SKIP_CMO,
    )
    pgtable = mm_ops.zalloc_page(mc)
    if pgtable is None:
        return -ENOMEM
    walk = KvmPgtableWalkData(walker, 0, 0, kvm_granule_size(level, g), pgt)
    ret = yield from __kvm_pgtable_walk(walk, mm_ops, pgtable, level + 1)
    if ret:
        yield from kvm_pgtable_stage2_free_unlinked.steps(mm_ops, pgtable, level)
        return ret
    return pgtable


def stage2_block_get_nr_page_tables(level: int, g: Granule) -> int:
    """Return how many table pages replace a level-`level` block down to pages.

    Kernel: stage2_block_get_nr_page_tables.
    """
    if level == 1:
        return g.ptrs_per_pte + 1
    if level == 2:
        return 1
    if level == 3:
        return 0
    return -EINVAL


class Stage2SplitData:
    """The split cache and the MMU it belongs to (the kernel uses container_of)."""

    __slots__ = ("mc", "mmu")

    def __init__(self, mc: KvmMmuMemoryCache, mmu: KvmS2Mmu) -> None:
        self.mc = mc
        self.mmu = mmu


def stage2_split_walker(ctx: KvmPgtableVisitCtx, visit: int) -> Gen[int]:
    """Replace a valid block by an equivalent table, fully to pages if the cache allows.

    Kernel: stage2_split_walker.
    """
    split: Stage2SplitData = ctx.arg
    mm_ops = ctx.mm_ops
    mc, mmu, level = split.mc, split.mmu, ctx.level
    if level == KVM_PGTABLE_LAST_LEVEL or not kvm_pte_valid(ctx.old):
        return 0
    nr_pages = stage2_block_get_nr_page_tables(level, mm_ops.g)
    if nr_pages < 0:
        mm_ops.warn("stage2_block_get_nr_page_tables", "level not a block level")
        return nr_pages
    force_pte = mc.nobjs >= nr_pages
    if not force_pte:
        nr_pages = 1
    if mc.nobjs < nr_pages:
        return -ENOMEM
    if mmu.pgt is None:
        return -EINVAL
    phys = kvm_pte_to_phys(ctx.old, mm_ops.g)
    prot = kvm_pgtable_stage2_pte_prot(ctx.old)
    childp = yield from kvm_pgtable_stage2_create_unlinked.steps(
        mmu.pgt, phys, level, prot, mc, force_pte
    )
    if childp < 0:
        return childp
    if not (yield from stage2_try_break_pte(ctx, mmu)):
        yield from kvm_pgtable_stage2_free_unlinked.steps(mm_ops, childp, level, mmu.pgt)
        return -EAGAIN
    yield from stage2_make_pte(ctx, kvm_init_table_pte(childp, mm_ops.g))
    return 0


@stepped
def kvm_pgtable_stage2_split(
    pgt: KvmPgtable, addr: int, size: int, mc: KvmMmuMemoryCache
) -> Gen[int]:
    """Split every block mapping in the range into page mappings, using mc's pages.

    Kernel: kvm_pgtable_stage2_split.
    """
    walker = KvmPgtableWalker(
        stage2_split_walker, Stage2SplitData(mc, pgt.s2_mmu), KVM_PGTABLE_WALK_LEAF
    )
    ret = yield from kvm_pgtable_walk.steps(pgt, addr, size, walker)
    dsb(pgt.ops, "ishst")
    return ret


# ---------------------------------------------------------------------------------------
# Init and teardown.


def kvm_pgtable_stage2_init(
    pgt: KvmPgtable,
    mmu: KvmS2Mmu,
    mm_ops: KvmPgtableMmOps,
    flags: int = 0,
    force_pte_cb: ForcePteCb | None = None,
    pte_is_counted_cb: PteIsCountedCb | None = None,
) -> int:
    """Initialise a stage 2 from mmu.vtcr: IPA size, start level, concatenated PGD pages.

    The model also links mmu.pgt to pgt (the kernel's caller does it). pte_is_counted_cb
    replaces the rule "any non-zero entry is counted" for this table (pKVM's host).

    Kernel: __kvm_pgtable_stage2_init, kvm_pgtable_stage2_init.
    """
    g = mm_ops.g
    ia_bits = vtcr_el2_ipa(mmu.vtcr)
    start_level = vtcr_el2_start_level(mmu.vtcr, g)
    pgd = mm_ops.zalloc_pages_exact(kvm_pgd_pages(ia_bits, start_level, g) * g.page_size)
    if pgd is None:
        return -ENOMEM
    pgt.ia_bits = ia_bits
    pgt.start_level = start_level
    pgt.pgd = pgd
    pgt.mm_ops = mm_ops
    pgt.mmu = mmu
    pgt.flags = flags
    pgt.force_pte_cb = force_pte_cb
    pgt.pte_is_counted_cb = pte_is_counted_cb
    if mmu.pgt is None:
        mmu.pgt = pgt
    dsb(mm_ops, "ishst")
    return 0


def kvm_pgtable_stage2_pgd_size(vtcr: int, g: Granule) -> int:
    """Return the bytes of concatenated PGD pages a stage 2 with this VTCR_EL2 needs.

    Kernel: kvm_pgtable_stage2_pgd_size.
    """
    ia_bits = vtcr_el2_ipa(vtcr)
    return kvm_pgd_pages(ia_bits, vtcr_el2_start_level(vtcr, g), g) * g.page_size


def stage2_free_walker(ctx: KvmPgtableVisitCtx, visit: int) -> Gen[int]:
    """Drop the references of counted entries and free tables that become empty.

    Kernel: stage2_free_walker, stage2_free_leaf, stage2_free_table_post.
    """
    mm_ops = ctx.mm_ops
    if not stage2_ctx_pte_is_counted(ctx, ctx.old):
        return 0
    if visit == KVM_PGTABLE_WALK_LEAF:
        mm_ops.put_page(ctx.ptep)
        return 0
    if visit != KVM_PGTABLE_WALK_TABLE_POST:
        return -EINVAL
    childp = kvm_pte_to_phys(ctx.old, mm_ops.g)
    if mm_ops.page_count(childp) != 1:
        return 0
    mm_ops.put_page(ctx.ptep)
    mm_ops.put_page(childp)
    yield from kvm_clear_pte(ctx)
    return 0


@stepped
def kvm_pgtable_stage2_destroy_range(pgt: KvmPgtable, addr: int, size: int) -> Gen[None]:
    """Free the tables and references under [addr, addr + size) of an unused stage 2.

    Kernel: kvm_pgtable_stage2_destroy_range.
    """
    walker = KvmPgtableWalker(
        stage2_free_walker, None, KVM_PGTABLE_WALK_LEAF | KVM_PGTABLE_WALK_TABLE_POST
    )
    if (yield from kvm_pgtable_walk.steps(pgt, addr, size, walker)):
        pgt.ops.warn("kvm_pgtable_stage2_destroy_range", "kvm_pgtable_walk() != 0")


def kvm_pgtable_stage2_destroy_pgd(pgt: KvmPgtable) -> None:
    """Free the concatenated PGD pages.

    Kernel: kvm_pgtable_stage2_destroy_pgd.
    """
    mm_ops = pgt.ops
    if pgt.pgd is None:
        return
    size = kvm_pgd_pages(pgt.ia_bits, pgt.start_level, mm_ops.g) * mm_ops.g.page_size
    mm_ops.free_pages_exact(pgt.pgd, size)
    pgt.pgd = None


@stepped
def kvm_pgtable_stage2_destroy(pgt: KvmPgtable) -> Gen[None]:
    """Free every table page of an unused stage 2, PGD included.

    Kernel: kvm_pgtable_stage2_destroy.
    """
    yield from kvm_pgtable_stage2_destroy_range.steps(pgt, 0, 1 << pgt.ia_bits)
    kvm_pgtable_stage2_destroy_pgd(pgt)


@stepped
def kvm_pgtable_stage2_free_unlinked(
    mm_ops: KvmPgtableMmOps, pgtable: int, level: int, pgt: KvmPgtable | None = None
) -> Gen[None]:
    """Free a table detached from the tree, with everything below it.

    pgt, when given, is the table it came from: its counted-entry rule applies.

    Kernel: kvm_pgtable_stage2_free_unlinked.
    """
    walker = KvmPgtableWalker(
        stage2_free_walker, None, KVM_PGTABLE_WALK_LEAF | KVM_PGTABLE_WALK_TABLE_POST
    )
    data = KvmPgtableWalkData(walker, 0, 0, kvm_granule_size(level, mm_ops.g), pgt)
    if (yield from __kvm_pgtable_walk(data, mm_ops, pgtable, level + 1)):
        mm_ops.warn("kvm_pgtable_stage2_free_unlinked", "__kvm_pgtable_walk() != 0")
    if mm_ops.page_count(pgtable) != 1:
        mm_ops.warn("kvm_pgtable_stage2_free_unlinked", "page_count(pgtable) != 1")
    mm_ops.put_page(pgtable)
