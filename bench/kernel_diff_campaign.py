"""Agreement of the model with the kernel's own pgtable.c over thousands of operations, printed.

Builds the kernel library (cached; from Debian's linux-source-6.12 unless SOURCE or
$S2MMU_KERNEL_SOURCE says otherwise: /usr/src/linux-source-6.1.tar.xz for 6.1, which
the v6.1 profile stands for), then runs `s2mmu kernel diff`'s comparison over
several seeds and host-capability sets (plain, FEAT_S2FWB + FEAT_TLBIRANGE, DIC) and
prints, per run and in total, the operations compared, the agreement and the time, and
any difference with its minimal replay. GRANULE (4k, 16k or 64k) picks the library
variant built with that PAGE_SHIFT; SOURCE "-" keeps the default. The exit status is 0
only at full agreement.

    python3 bench/kernel_diff_campaign.py [OPS_PER_RUN] [SEEDS] [SOURCE] [GRANULE]
"""

from __future__ import annotations

import sys
import time

from s2mmu.kernel.binding import KernelPgtable
from s2mmu.kernel.build import GRANULES, build
from s2mmu.kernel.diff import run_diff
from s2mmu.pgtable.caps import KvmCaps

CAPS = {
    "plain": KvmCaps(),
    "fwb+tlbirange": KvmCaps(stage2_fwb=True, tlb_range=True),
    "dic": KvmCaps(dic=True),
}


def main() -> None:
    """Run the campaign and print its figures."""
    ops = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    seeds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    t0 = time.perf_counter()
    source = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] != "-" else None
    granule = sys.argv[4] if len(sys.argv) > 4 else "4k"
    b = build(source, None, GRANULES[granule])
    how = "cached" if b.cached else (f"extract {b.extract_seconds:.1f} s, "
                                     f"compile {b.compile_seconds:.1f} s")
    print(f"kernel: Linux {b.version} ({b.source}); granule {granule}; model profile "
          f"{b.profile.name}; build {how} ({time.perf_counter() - t0:.1f} s)")
    k = KernelPgtable(b.library)
    total = agreed = 0
    for name, caps in CAPS.items():
        for seed in range(seeds):
            t = time.perf_counter()
            r = run_diff(k, b.profile, ops=ops, seed=seed, caps=caps)
            dt = time.perf_counter() - t
            total += r.compared
            agreed += r.agreed
            print(f"{name:14} seed {seed}: agreement {r.agreement:.2f}% "
                  f"({r.agreed}/{r.compared}) in {dt:.1f} s ({r.compared / dt:.0f} ops/s)")
            for res, seq in r.differences:
                print(f"  difference: {res.difference}")
                print(f"  replay: {'; '.join(map(str, seq))}")
    pct = 100.0 * agreed / total if total else 100.0
    print(f"agreement {pct:.2f}% ({agreed}/{total} operations)")
    sys.exit(0 if agreed == total else 1)


if __name__ == "__main__":
    main()
