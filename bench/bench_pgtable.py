"""Benchmark KVM's page-table library: map, wrprotect and unmap, entries per second.

Two workloads, as issue 4 asks:
- 1 GiB of 4K pages (262,144 PTEs), forced to page granularity by a force_pte callback;
- 64 GiB of 2M blocks (32,768 block entries), the output address offset by 2M so that
  no 1G block fits.

Each operation runs on the sequential path twice in the same run: on the plain twins
(what a kernel-named call runs) and on the stepped generators driven by
s2mmu.pgtable.steps.run (the path the concurrency explorer schedules), so both figures
print side by side. The host memory figure is what the model's Python heap grows by while
mapping (tracemalloc, measured in a separate run), per mapped 4K page. The generator
cost is also estimated from first principles: see measure_generator_cost().

Times are process time (the machine is shared); each workload runs --repeat times per
path (default 3) on fresh tables, and the median counts.

Usage: python bench/bench_pgtable.py [--quick] [--repeat N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Generator

from s2mmu.pgtable.env import PgtableEnv, new_env, new_stage2
from s2mmu.pgtable.events import EventLog
from s2mmu.pgtable.mm import KvmMmuMemoryCache, __kvm_mmu_topup_memory_cache
from s2mmu.pgtable.prot import KVM_PGTABLE_PROT_RW
from s2mmu.pgtable.stage2 import (
    kvm_pgtable_stage2_map,
    kvm_pgtable_stage2_unmap,
    kvm_pgtable_stage2_wrprotect,
)
from s2mmu.pgtable.steps import generator_path
from s2mmu.pgtable.table import KvmPgtable

SZ_4K = 1 << 12
SZ_2M = 1 << 21
SZ_1G = 1 << 30
IPA = 1 << 32
PA = 1 << 36
PATHS = (("plain", False), ("generator", True))
FIGURES: dict[str, float] = {}
QUIET = False


def say(text: str) -> None:
    """Print a line of the text report (nothing under --json)."""
    if not QUIET:
        print(text)


def setup(force_pte: bool, cache_pages: int) -> tuple[PgtableEnv, KvmPgtable, KvmMmuMemoryCache]:
    """Return a host (events counted, not kept), a 40-bit stage 2 and a full memcache."""
    env = new_env(events=EventLog(keep=False))
    pgt = new_stage2(env, 40, force_pte_cb=(lambda a, e, p: True) if force_pte else None)
    mc = KvmMmuMemoryCache()
    __kvm_mmu_topup_memory_cache(mc, env.pool, cache_pages, cache_pages)
    return env, pgt, mc


def timed(fn: Callable[[], int]) -> tuple[float, int]:
    """Return (process seconds, result) of one call."""
    t = time.process_time()
    ret = fn()
    return max(time.process_time() - t, 1e-9), ret


REPEAT = 3


def workload(key: str, name: str, size: int, phys: int, force_pte: bool, entries: int
             ) -> float:
    """Map, wrprotect and unmap one region on both paths; print entries per second.

    Each path runs REPEAT times on fresh tables, alternating paths; the median counts.
    Returns the generator path's map seconds per entry.
    """
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(REPEAT):
        for path, generators in PATHS:
            env, pgt, mc = setup(force_pte, entries // 512 + 8)
            pgd_pages = env.pool.in_use() - mc.nobjs
            for op, fn in (
                ("map", lambda t=pgt, c=mc: kvm_pgtable_stage2_map(t, IPA, size, phys,
                                                                   KVM_PGTABLE_PROT_RW, c)),
                ("wrprotect", lambda t=pgt: kvm_pgtable_stage2_wrprotect(t, IPA, size)),
                ("unmap", lambda t=pgt: kvm_pgtable_stage2_unmap(t, IPA, size)),
            ):
                with generator_path(generators):
                    secs, ret = timed(fn)
                if ret:
                    sys.exit(f"{name} {op} failed: {ret}")
                times.setdefault((op, path), []).append(secs)
            left = env.pool.in_use() - mc.nobjs
            if left != pgd_pages:
                sys.exit(f"{name}: {left} table pages left after unmap, not the PGD's "
                         f"{pgd_pages}")
    per_entry = {}
    for path, _ in PATHS:
        for op in ("map", "wrprotect", "unmap"):
            secs = statistics.median(times[op, path])
            say(f"{name:<26} {op:<10} {path:<9} {entries:>8} entries {secs:8.2f} s "
                f"{entries / secs:>10,.0f} /s (median of {REPEAT})")
            FIGURES[f"{op}_{key}_{path}_per_s"] = entries / secs
            per_entry[op, path] = secs / entries
    for op in ("map", "wrprotect", "unmap"):
        ratio = per_entry[op, "generator"] / per_entry[op, "plain"]
        say(f"{name:<26} {op:<10} plain twins {ratio:.2f}x the generator path")
    return per_entry["map", "generator"]


def memory_per_page(size: int) -> None:
    """Print the model's heap growth per mapped 4K page while mapping size bytes of 4K."""
    env, pgt, mc = setup(True, size // SZ_2M + 8)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kvm_pgtable_stage2_map(pgt, IPA, size, PA, KVM_PGTABLE_PROT_RW, mc)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    pages = size // SZ_4K
    tables = env.pool.in_use() - mc.nobjs
    FIGURES["host_bytes_per_4k_page"] = grown / pages
    say(
        f"host memory: {grown / pages:,.1f} bytes per mapped 4K page "
        f"({grown / 2**20:.2f} MiB for {pages} pages; the {tables} table pages in use"
        f" account for {tables * 4096 / pages:.1f} bytes/page)"
    )


def _nested(depth: int) -> Generator[int, None, int]:
    if depth == 0:
        yield 0
        return 0
    return (yield from _nested(depth - 1))


def _plain(depth: int) -> int:
    return 0 if depth == 0 else _plain(depth - 1)


def measure_generator_cost(steps: int = 200_000, depth: int = 7) -> float:
    """Print the cost of one yield through `depth` generator frames vs plain calls.

    depth 7 is a typical nesting at a descriptor access in the map path
    (walk, _walk, __walk, __visit, visitor, try_leaf, make_pte).
    """
    from s2mmu.pgtable.steps import run

    t = time.process_time()
    for _ in range(steps):
        run(_nested(depth))
    gen = (time.process_time() - t) / steps
    t = time.process_time()
    for _ in range(steps):
        _plain(depth)
    plain = (time.process_time() - t) / steps
    say(
        f"generator plumbing: {gen * 1e6:.2f} us per access at depth {depth} "
        f"vs {plain * 1e6:.2f} us of plain calls (+{(gen - plain) * 1e6:.2f} us)"
    )
    return gen - plain


def accesses_per_entry(pages: int = 4096) -> float:
    """Return how many descriptor accesses (yields) mapping one 4K page takes."""
    env, pgt, mc = setup(True, pages // 512 + 8)
    gen = kvm_pgtable_stage2_map.steps(pgt, IPA, pages * SZ_4K, PA, KVM_PGTABLE_PROT_RW, mc)
    return sum(1 for _ in gen) / pages


def main() -> None:
    """Run the benchmarks and print their figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1/16 of the sizes")
    parser.add_argument("--repeat", type=int, default=3, help="runs per path (median)")
    parser.add_argument("--json", action="store_true", help="print one JSON object of figures")
    args = parser.parse_args()
    global QUIET, REPEAT
    QUIET = args.json
    REPEAT = max(args.repeat, 1)
    scale = 16 if args.quick else 1
    pages = SZ_1G // scale
    blocks = 64 * SZ_1G // scale
    FIGURES["load_average_1min_before"] = os.getloadavg()[0]
    say(f"load average (1 min): {os.getloadavg()[0]:.2f}")
    map_4k = workload("4k", f"{pages >> 20} MiB of 4K pages", pages, PA, True, pages // SZ_4K)
    workload("2m", f"{blocks >> 30} GiB of 2M blocks", blocks, PA + SZ_2M, False,
             blocks // SZ_2M)
    memory_per_page(64 << 20)
    extra = measure_generator_cost()
    accesses = accesses_per_entry()
    FIGURES["accesses_per_4k_map"] = accesses
    FIGURES["generator_share_of_4k_map"] = accesses * extra / map_4k
    say(
        f"descriptor accesses per 4K page mapped: {accesses:.2f}; estimated generator share "
        f"of the 4K map time on the generator path: {accesses * extra / map_4k:.0%}"
    )
    FIGURES["load_average_1min_after"] = os.getloadavg()[0]
    say(f"load average (1 min): {os.getloadavg()[0]:.2f}")
    if args.json:
        print(json.dumps({k: round(v, 3) for k, v in sorted(FIGURES.items())}))


if __name__ == "__main__":
    main()
