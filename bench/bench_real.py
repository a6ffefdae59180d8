"""Real KVM boots and scenarios per second, and the model's agreement per kernel mode.

Each mode boots Debian's arm64 kernel once under QEMU TCG with every shipped real
scenario (src/s2mmu/real/data) in the one boot, and diffs them with the model.

    python3 bench/bench_real.py [--modes vhe,nvhe,protected] [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from s2mmu.real.boot import Mode, build_vmm, cache_dir, resolve_kernel
from s2mmu.real.runner import RealRequest, diff_real, load

DATA = Path(__file__).resolve().parents[1] / "src" / "s2mmu" / "real" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default="vhe,nvhe,protected")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    cache = cache_dir()
    t0 = time.monotonic()
    kernel = resolve_kernel(None, cache)
    build_vmm(cache)
    print(f"kernel {kernel.source} resolved and VMM built in {time.monotonic() - t0:.1f} s "
          f"(cached after the first run); load average {os.getloadavg()[0]:.1f}")
    scenarios = load(sorted(DATA.glob("*.toml")))
    for name in args.modes.split(","):
        boots, total, steps, agreed = 0, 0.0, 0, 0
        for _ in range(args.repeat):
            reports, result = diff_real(scenarios, RealRequest(str(kernel.image), Mode(name)))
            boots += 1
            total += result.boot.seconds
            steps += sum(len(r.steps) for r in reports)
            agreed += sum(r.agreed for r in reports)
            said = result.console.kvm_mode
        print(f"{name:9} (KVM: {said}): {boots} boots, {total / boots:.2f} s per boot with "
              f"{len(scenarios)} scenarios: {boots / total:.3f} boots/s, "
              f"{boots * len(scenarios) / total:.2f} scenarios/s; steps agreeing "
              f"{agreed}/{steps} ({100 * agreed / steps:.1f}%)")


if __name__ == "__main__":
    main()
