"""Agreement of the nested AT emulation with the kernel's own at.c (6.12), printed.

Builds the kernel libraries (cached; Debian's linux-source-6.12 unless SOURCE says
otherwise), then runs `s2mmu kernel diff --at`'s comparison over several seeds under the
v6.12 AT profile and prints, per seed and in total, the cases compared, the agreement,
the time and any difference; then the same cases under the current AT profile, whose
differences are the four 6.12 knobs of s2mmu.nested.at.AtProfile.

    python3 bench/kernel_at_campaign.py [CASES_PER_SEED] [SEEDS] [SOURCE]
"""

from __future__ import annotations

import sys
import time

from s2mmu.kernel.at_binding import KernelAt
from s2mmu.kernel.at_diff import run_at_diff
from s2mmu.kernel.build import build
from s2mmu.nested.at import CURRENT, V6_12


def main() -> None:
    """Run the campaign and print its figures."""
    cases = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    seeds = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    b = build(sys.argv[3] if len(sys.argv) > 3 else None)
    if b.at_library is None:
        sys.exit(f"Linux {b.version}: no at.c library (at.c is built from 6.12 on)")
    print(f"kernel: Linux {b.version} ({b.source}) at.c")
    k = KernelAt(b.at_library)
    for profile in (V6_12, CURRENT):
        total = agreed = 0
        for seed in range(seeds):
            t = time.perf_counter()
            r = run_at_diff(k, cases=cases, seed=seed, profile=profile)
            dt = time.perf_counter() - t
            total += r.compared
            agreed += r.agreed
            print(f"AT profile {profile.name:8} seed {seed}: agreement {r.agreement:.2f}% "
                  f"({r.agreed}/{r.compared}) in {dt:.1f} s ({r.compared / dt:.0f} cases/s)")
            if profile is V6_12:
                for d in r.differences:
                    print(f"  difference, case {d.index}: {d.what}: kernel {d.kernel}, "
                          f"model {d.model}")
        pct = 100.0 * agreed / total if total else 100.0
        print(f"AT profile {profile.name}: agreement {pct:.2f}% ({agreed}/{total} cases)")


if __name__ == "__main__":
    main()
