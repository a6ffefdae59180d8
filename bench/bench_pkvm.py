"""Random pKVM hypercalls per second, and what checking the ownership invariants costs.

100,000 hypercalls drawn at random (seeded) from the host's share/unshare/donate with the
hypervisor, pins, FF-A shares, shares with a non-protected guest, donations to a
protected guest, guest attribute hypercalls, host stage-2 faults and reclaim of a dying
guest, over 256 pages of RAM. The invariants (s2mmu.pkvm.invariants.check_pkvm) are
checked every CHECK_EVERY calls and at the end; their cost is printed per check.
Usage: python3 bench/bench_pkvm.py [calls]
"""

from __future__ import annotations

import random
import sys
import time
from collections import Counter
from collections.abc import Callable

import s2mmu.pkvm.mem_protect as mp
from s2mmu.pgtable.events import Warn
from s2mmu.pkvm.errno import errname
from s2mmu.pkvm.invariants import check_pkvm
from s2mmu.pkvm.mem_protect import RAM_BASE, Pkvm, new_hyp_vm, new_pkvm
from s2mmu.pkvm.pkvm import __pkvm_finalize_teardown_vm, __pkvm_start_teardown_vm, guest_leaves

RAM_PAGES = 256
CHECK_EVERY = 1000
PFN = RAM_BASE // 0x1000


# Aliases: names starting with two underscores are mangled inside a class body.
hyp_va = mp.__hyp_va
pkvm_finalize_teardown_vm = __pkvm_finalize_teardown_vm
pkvm_host_donate_guest = mp.__pkvm_host_donate_guest
pkvm_host_donate_hyp = mp.__pkvm_host_donate_hyp
pkvm_host_reclaim_page = mp.__pkvm_host_reclaim_page
pkvm_host_relax_perms_guest = mp.__pkvm_host_relax_perms_guest
pkvm_host_share_ffa = mp.__pkvm_host_share_ffa
pkvm_host_share_guest = mp.__pkvm_host_share_guest
pkvm_host_share_hyp = mp.__pkvm_host_share_hyp
pkvm_host_unshare_ffa = mp.__pkvm_host_unshare_ffa
pkvm_host_unshare_guest = mp.__pkvm_host_unshare_guest
pkvm_host_unshare_hyp = mp.__pkvm_host_unshare_hyp
pkvm_host_wrprotect_guest = mp.__pkvm_host_wrprotect_guest
pkvm_hyp_donate_host = mp.__pkvm_hyp_donate_host
pkvm_start_teardown_vm = __pkvm_start_teardown_vm


class Bench:
    """The hypervisor, its two guests and the pins the host's driver holds."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.pkvm: Pkvm = new_pkvm(RAM_PAGES, nomap_pages=4)
        self.np = new_hyp_vm(self.pkvm, 1, protected=False)
        self.pvm = new_hyp_vm(self.pkvm, 2, protected=True)
        self.pins: list[int] = []
        self.ffa: list[int] = []

    def pfn(self) -> int:
        return PFN + self.rng.randrange(RAM_PAGES + 4)

    def gfn(self) -> int:
        return 0x100 + self.rng.randrange(64)

    def calls(self) -> list[tuple[str, Callable[[], int | None]]]:
        p, r, np = self.pkvm, self.rng, self.np
        return [
            ("share_hyp", lambda: pkvm_host_share_hyp(p, self.pfn())),
            ("unshare_hyp", lambda: pkvm_host_unshare_hyp(p, self.pfn())),
            ("donate_hyp", lambda: pkvm_host_donate_hyp(p, self.pfn(), r.randint(1, 4))),
            ("hyp_donate_host", lambda: pkvm_hyp_donate_host(p, self.pfn(), r.randint(1, 4))),
            ("pin", self.pin),
            ("unpin", self.unpin),
            ("share_ffa", self.share_ffa),
            ("unshare_ffa", self.unshare_ffa),
            ("share_guest", lambda: pkvm_host_share_guest(p, self.pfn(), self.gfn(), 1, np, 7)),
            ("unshare_guest", lambda: pkvm_host_unshare_guest(p, self.gfn(), 1, self.np)),
            ("donate_guest", lambda: pkvm_host_donate_guest(p, self.pfn(), self.gfn(), self.pvm)),
            ("relax_perms", lambda: pkvm_host_relax_perms_guest(p, self.gfn(), self.np, 7)),
            ("wrprotect", lambda: pkvm_host_wrprotect_guest(p, self.gfn(), 1, self.np)),
            ("host_fault", lambda: mp.host_stage2_idmap(p, self.pfn() * 0x1000)),
            ("reclaim", self.reclaim),
        ]  # fmt: skip

    def share_ffa(self) -> int:
        """Share through the FF-A proxy, which records what the secure world holds."""
        pfn = self.pfn()
        ret = pkvm_host_share_ffa(self.pkvm, pfn, 1)
        if not ret:
            self.ffa.append(pfn)
        return ret

    def unshare_ffa(self) -> int | None:
        """Unshare what the proxy recorded (the hypercall alone cannot tell FF-A shares)."""
        if not self.ffa:
            return None
        pfn = self.ffa.pop(self.rng.randrange(len(self.ffa)))
        return pkvm_host_unshare_ffa(self.pkvm, pfn, 1)

    def pin(self) -> int:
        pfn = self.pfn()
        va = hyp_va(pfn * 0x1000)
        ret = mp.hyp_pin_shared_mem(self.pkvm, va, va + 8)
        if not ret:
            self.pins.append(pfn)
        return ret

    def unpin(self) -> int | None:
        if not self.pins:
            return None
        pfn = self.pins.pop(self.rng.randrange(len(self.pins)))
        va = hyp_va(pfn * 0x1000)
        mp.hyp_unpin_shared_mem(self.pkvm, va, va + 8)
        return 0

    def reclaim(self) -> int | None:
        """Tear the protected guest down, reclaiming its pages, and start a new one."""
        if self.rng.randrange(20):
            return None
        pkvm_start_teardown_vm(self.pkvm, 2)
        for leaf in guest_leaves(self.pvm):
            pkvm_host_reclaim_page(self.pkvm, self.pvm, leaf.ipa // 0x1000)
        ret = pkvm_finalize_teardown_vm(self.pkvm, 2)
        self.pvm = new_hyp_vm(self.pkvm, 2, protected=True)
        return ret


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    b = Bench(seed=1)
    calls = b.calls()
    results: Counter[tuple[str, str]] = Counter()
    check_time, checks = 0.0, 0
    t0 = time.perf_counter()
    for i in range(1, n + 1):
        name, fn = calls[b.rng.randrange(len(calls))]
        ret = fn()
        results[name, "skipped" if ret is None else errname(ret)] += 1
        if i % CHECK_EVERY == 0 or i == n:
            c0 = time.perf_counter()
            bad = check_pkvm(b.pkvm)
            check_time += time.perf_counter() - c0
            checks += 1
            if bad or b.pkvm.env.events.of_type(Warn):
                sys.exit(f"invariant broken after {i} calls: {bad[:3]}")
    total = time.perf_counter() - t0
    calls_time = total - check_time
    print(f"{n} hypercalls over {RAM_PAGES} pages: {n / calls_time:,.0f} calls/s "
          f"({calls_time:.1f} s without checks)")
    per_check = check_time / checks
    print(f"{checks} invariant checks (every {CHECK_EVERY} calls): {1000 * per_check:.1f} ms"
          f" each, {1e6 * calls_time / n:.0f} us per call: checking after every call would"
          f" make the run {1 + per_check * n / calls_time:,.0f}x slower")
    ok = sum(v for (_, r), v in results.items() if r == "0")
    print(f"succeeded: {ok} ({100 * ok / n:.0f}%); by result:")
    for name, _ in calls:
        line = ", ".join(f"{r} {v}" for (nm, r), v in sorted(results.items()) if nm == name)
        print(f"  {name:16} {line}")


if __name__ == "__main__":
    main()
