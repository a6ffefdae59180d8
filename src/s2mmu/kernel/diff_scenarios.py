"""Named, hand-written operation sequences for `s2mmu kernel diff --scenario NAME`.

Each scenario replays a story KVM's callers tell pgtable.c (arch/arm64/kvm/mmu.c), on
both sides, compared after every operation exactly as the random sequences are
(:func:`s2mmu.kernel.diff.run_diff` with the scenario as its one sequence). They are
written in the replay syntax of :func:`s2mmu.kernel.diff.parse_ops`, so a scenario's
text is what a difference would print.

- dirty-logging: 2M blocks mapped by faults; enabling dirty logging write-protects the
  memslot (kvm_mmu_wp_memory_region -> kvm_pgtable_stage2_wrprotect), eager splitting
  breaks the blocks (kvm_mmu_split_huge_pages -> kvm_pgtable_stage2_split), write faults
  relax each page back to RW (user_mem_abort -> kvm_pgtable_stage2_relax_perms), one
  block left unsplit takes a page-sized fault map over it (force_pte), accesses mark
  pages young (handle_access_fault -> kvm_pgtable_stage2_mkyoung), the MMU notifier ages
  them (kvm_age_gfn / kvm_test_age_gfn -> kvm_pgtable_stage2_test_clear_young), and a
  second log pass write-protects again; then the tables eager splitting builds outside
  the tree (kvm_pgtable_stage2_create_unlinked) for a 2M and a 1G block, and one for a
  misaligned block address, which it refuses with -EINVAL.
- owner-annotations: pKVM-style ownership annotations (invalid PTEs carrying an owner
  id, kvm_pgtable_stage2_set_owner) over a range, mappings placed around and over them,
  unmaps, annotations over live mappings and back to owner 0, and an owner id above
  KVM_MAX_OWNER_ID, which set_owner refuses with -EINVAL.
- block-over-table: pages mapped into a 2M range (a last-level table), a 2M block mapped
  over that table (non-fault and fault walks), then unmaps of pages inside the block and
  of the whole range.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from s2mmu.arch.errors import InputError
from s2mmu.kernel.diff import SERIES_6_1, SZ_4K, Op, parse_ops

SZ_2M = 1 << 21
PA = 0x1_4000_0000


def _pages(op: str, base: int, count: int, tail: str = "") -> list[str]:
    return [f"{op} {base + i * SZ_4K:#x}{tail}" for i in range(count)]


def _dirty_logging() -> list[str]:
    blocks = [f"map {i * SZ_2M:#x} {SZ_2M:#x} {PA + i * SZ_2M:#x} RW fault" for i in range(4)]
    return [
        *blocks,
        "mkyoung 0x0",
        "test_clear_young 0x0 0x800000 0",
        f"wrprotect 0x0 {4 * SZ_2M:#x}",
        f"split 0x0 {3 * SZ_2M:#x} 4",
        *_pages("relax_perms", 0x0, 6, " RW"),
        *_pages("relax_perms", SZ_2M + 0x10000, 4, " RW"),
        f"map {3 * SZ_2M + 0x5000:#x} 0x1000 {PA + 3 * SZ_2M + 0x5000:#x} RW fault",
        *_pages("mkyoung", 0x0, 4),
        "test_clear_young 0x0 0x200000 1",
        "test_clear_young 0x0 0x200000 1",
        "test_clear_young 0x200000 0x400000 1",
        f"mkyoung {SZ_2M + 0x10000:#x}",
        "test_clear_young 0x200000 0x200000 0",
        "wrprotect 0x0 0x8000",
        "relax_perms 0x1000 RW",
        "relax_perms 0x1000 RW",
        "relax_perms 0x2000 R",
        f"wrprotect 0x0 {4 * SZ_2M:#x}",
        "relax_perms 0x3000 RW",
        "flush 0x0 0x400000",
        f"create_unlinked {PA + 4 * SZ_2M:#x} 2 RW",
        f"create_unlinked {PA + 3 * SZ_2M:#x} 2 RWX force",
        f"create_unlinked {PA:#x} 1 R",
        f"create_unlinked {PA + 0x1000:#x} 2 RW",
    ]


def _owner_annotations() -> list[str]:
    return [
        "set_owner 0x0 0x10000 1",
        "map 0x10000 0x1000 0x140010000 RW",
        "map 0xf000 0x2000 0x14000f000 RW",
        "set_owner 0x20000 0x4000 1",
        "map 0x8000 0x1000 0x140008000 R fault",
        "unmap 0x8000 0x1000",
        "set_owner 0x8000 0x1000 1",
        "map 0x24000 0x4000 0x140024000 RWX",
        "unmap 0x1c000 0x10000",
        "set_owner 0x0 0x4000 0",
        "map 0x0 0x4000 0x140000000 RW",
        "set_owner 0x2000 0x1000 1",
        "test_clear_young 0x2000 0x1000 1",
        "wrprotect 0x0 0x20000",
        "relax_perms 0x3000 RW",
        "relax_perms 0x2000 RW",
        "mkyoung 0x2000",
        "set_owner 0x200000 0x200000 1",
        "map 0x200000 0x200000 0x140200000 RW",
        "set_owner 0x400000 0x1000 1",
        "map 0x400000 0x200000 0x140400000 RW fault",
        "unmap 0x400000 0x200000",
        "set_owner 0x0 0x30000 0",
        "unmap 0x0 0x600000",
        "set_owner 0x0 0x4000 1",
        "set_owner 0x4000 0x1000 2",
    ]


def _block_over_table() -> list[str]:
    return [
        *[f"map {SZ_2M + i * 0x3000:#x} 0x1000 {PA + SZ_2M + i * 0x3000:#x} RW" for i in range(8)],
        "map 0x220000 0x10000 0x140220000 R fault",
        "test_clear_young 0x203000 0x1000 1",
        "map 0x200000 0x200000 0x140200000 RW",
        "mkyoung 0x203000",
        "unmap 0x204000 0x1000",
        *[f"map {2 * SZ_2M + i * 0x1000:#x} 0x1000 {PA + 2 * SZ_2M + i * 0x1000:#x} RWX fault"
          for i in range(6)],
        "map 0x400000 0x200000 0x140400000 RWX fault",
        "relax_perms 0x401000 RW",
        "map 0x600000 0x1000 0x140600000 RW",
        "map 0x600000 0x200000 0x140600000 RW fault",
        "unmap 0x200000 0x600000",
        "map 0x200000 0x1000 0x140200000 RW",
        "map 0x200000 0x200000 0x140200000 R",
        "unmap 0x0 0x800000",
    ]


@dataclass(frozen=True)
class DiffScenario:
    """A named story of operations and what it shows."""

    name: str
    summary: str
    text: tuple[str, ...]

    def ops(self, series: int = 612) -> list[Op]:
        """Return the operations, or raise InputError if the kernel series lacks one."""
        ops = parse_ops("\n".join(self.text))
        if series <= SERIES_6_1:
            for op in ops:
                if op.name in ("split", "create_unlinked") or (
                        op.name == "test_clear_young" and op.size != SZ_4K):
                    raise InputError(f"kernel diff: scenario {self.name!r} uses {op}, which "
                                     "Linux 6.1's pgtable.c lacks (no split or create_unlinked, "
                                     "test_clear_young of one page); use linux-source-6.12")
            ops = [replace(op, fault=False) for op in ops]
        return ops


SCENARIOS: dict[str, DiffScenario] = {s.name: s for s in (
    DiffScenario("dirty-logging", "2M blocks write-protected, split, relaxed page by page, "
                 "aged", tuple(_dirty_logging())),
    DiffScenario("owner-annotations", "set_owner over ranges, maps and unmaps around and "
                 "over them", tuple(_owner_annotations())),
    DiffScenario("block-over-table", "pages mapped, a 2M block over their table, unmapped",
                 tuple(_block_over_table())),
)}


def scenario(name: str) -> DiffScenario:
    """Return the scenario called name, or raise InputError naming the known ones."""
    if name not in SCENARIOS:
        raise InputError(f"kernel diff: unknown scenario {name!r}; one of "
                         f"{', '.join(SCENARIOS)} (or list)")
    return SCENARIOS[name]
