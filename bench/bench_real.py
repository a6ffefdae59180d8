"""Real KVM boots and scenarios per second, and the model's agreement per kernel mode.

For each mode: the shipped real scenarios (src/s2mmu/real/data) in one boot, diffed with
the model; then, with --campaign N, N generated scenarios (s2mmu.real.campaign, --per-boot
of them in each boot) and their agreement.

    python3 bench/bench_real.py [--modes vhe,nvhe,protected] [--repeat N]
        [--campaign N] [--per-boot K] [--seed S]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from s2mmu.real.boot import Mode, build_vmm, cache_dir, resolve_kernel
from s2mmu.real.campaign import CampaignRequest, campaign
from s2mmu.real.runner import RealRequest, diff_real, load

DATA = Path(__file__).resolve().parents[1] / "src" / "s2mmu" / "real" / "data"


def shipped(kernel: str, mode: Mode, repeat: int) -> None:
    """Boot the shipped scenarios repeat times; print the figures."""
    scenarios = load(sorted(DATA.glob("*.toml")))
    boots, total, steps, agreed, said = 0, 0.0, 0, 0, None
    for _ in range(repeat):
        reports, result = diff_real(scenarios, RealRequest(kernel, mode))
        boots += 1
        total += result.boot.seconds
        steps += sum(len(r.steps) for r in reports)
        agreed += sum(r.agreed for r in reports)
        said = result.console.kvm_mode
    print(f"{mode.value:9} (KVM: {said}): shipped: {boots} boots, {total / boots:.2f} s per boot "
          f"with {len(scenarios)} scenarios: {boots / total:.3f} boots/s, "
          f"{boots * len(scenarios) / total:.2f} scenarios/s; steps agreeing "
          f"{agreed}/{steps} ({100 * agreed / steps:.1f}%)")


def generated(kernel: str, mode: Mode, count: int, per_boot: int, seed: int) -> None:
    """Run the campaign; print boots/s and scenarios/s (QEMU time and wall time)."""
    r = campaign(CampaignRequest(count, seed, mode, per_boot, kernel))
    n, boots = len(r.verdicts), len(r.boots)
    in_qemu = sum(b.seconds for b in r.boots)
    print(f"{mode.value:9} campaign: {n} scenarios (seeds {seed}..{seed + n - 1}), {boots} boots: "
          f"{boots / r.seconds:.3f} boots/s, {n / r.seconds:.2f} scenarios/s wall "
          f"({n / in_qemu:.2f} scenarios/s inside QEMU, {in_qemu / boots:.1f} s per boot); "
          f"scenarios agreeing {r.agreeing}/{n} ({100 * r.agreeing / n:.1f}%), steps "
          f"{r.agreed_steps}/{r.steps} ({100 * r.agreed_steps / r.steps:.2f}%)")
    for c in r.classes:
        print(f"    x{c.count} first seed {c.first_seed} step {c.example.step} "
              f"{c.aspect.value}: model {c.example.model}; real {c.example.real}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default="vhe,nvhe,protected")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--campaign", type=int, default=0, metavar="N")
    ap.add_argument("--per-boot", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cache = cache_dir()
    t0 = time.monotonic()
    kernel = resolve_kernel(None, cache)
    build_vmm(cache)
    print(f"kernel {kernel.source} resolved and VMM built in {time.monotonic() - t0:.1f} s "
          f"(cached after the first run); load average {os.getloadavg()[0]:.1f}")
    for name in args.modes.split(","):
        mode = Mode(name)
        if args.repeat:
            shipped(str(kernel.image), mode, args.repeat)
        if args.campaign:
            generated(str(kernel.image), mode, args.campaign, args.per_boot, args.seed)


if __name__ == "__main__":
    main()
