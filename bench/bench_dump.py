"""Benchmark whole-table dumps (s2mmu.pgtable.dump.kvm_pgtable_stage2_dump): time and lines.

Workloads, built with the page-table library:
- 64 GiB of 2M blocks (32,768 block entries), all RW: they merge into few lines;
- 1 GiB of 4K pages (262,144 PTEs, forced to pages), all RW: every PTE is read, few lines;
- the same 1 GiB with every other page read-only: nothing merges, one line per page.

Printed per workload: leaf entries, dump seconds, leaves per second, ranges, text lines
(render_text) and the time to render them.

Usage: python bench/bench_dump.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time

from s2mmu.cli.dump_cmd import render_text
from s2mmu.pgtable.dump import kvm_pgtable_stage2_dump
from s2mmu.pgtable.env import new_env, new_stage2
from s2mmu.pgtable.events import EventLog
from s2mmu.pgtable.mm import KvmMmuMemoryCache, __kvm_mmu_topup_memory_cache
from s2mmu.pgtable.prot import KVM_PGTABLE_PROT_RW
from s2mmu.pgtable.stage2 import kvm_pgtable_stage2_map, kvm_pgtable_stage2_wrprotect
from s2mmu.pgtable.table import KvmPgtable

SZ_4K = 1 << 12
SZ_2M = 1 << 21
SZ_1G = 1 << 30
IPA = 1 << 32
PA = 1 << 36


def build(size: int, phys: int, force_pte: bool, alternate: bool) -> KvmPgtable:
    """Return a 40-bit stage 2 with [IPA, IPA + size) mapped RW (every other page RO)."""
    env = new_env(events=EventLog(keep=False))
    pgt = new_stage2(env, 40, force_pte_cb=(lambda a, e, p: True) if force_pte else None)
    mc = KvmMmuMemoryCache()
    pages = size // SZ_2M + 8
    __kvm_mmu_topup_memory_cache(mc, env.pool, pages, pages)
    if kvm_pgtable_stage2_map(pgt, IPA, size, phys, KVM_PGTABLE_PROT_RW, mc):
        sys.exit("map failed")
    if alternate:
        for off in range(0, size, 2 * SZ_4K):
            kvm_pgtable_stage2_wrprotect(pgt, IPA + off, SZ_4K)
    return pgt


def workload(name: str, size: int, phys: int, force_pte: bool, alternate: bool,
             entries: int) -> None:
    """Build, dump and render one stage 2; print the figures."""
    pgt = build(size, phys, force_pte, alternate)
    t = time.perf_counter()
    dump = kvm_pgtable_stage2_dump(pgt)
    secs = time.perf_counter() - t
    t = time.perf_counter()
    lines = render_text(dump)
    render = time.perf_counter() - t
    ranges = sum(1 for _ in dump.ranges())
    print(f"{name:<34} {entries:>8} leaves {secs:7.2f} s {entries / secs:>10,.0f} leaves/s "
          f"{ranges:>7} ranges {len(lines):>7} lines (render {render:.2f} s)")


def main() -> None:
    """Run the workloads (--quick: an eighth of each)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    q = 8 if ap.parse_args().quick else 1
    workload("64 GiB of 2M blocks, RW", 64 * SZ_1G // q, PA + SZ_2M, False, False,
             32768 // q)
    workload("1 GiB of 4K pages, RW", SZ_1G // q, PA, True, False, 262144 // q)
    workload("1 GiB of 4K pages, alternating RO", SZ_1G // q, PA, True, True, 262144 // q)


if __name__ == "__main__":
    main()
