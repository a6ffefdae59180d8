"""A long fuzzing campaign: the test suite's scenario generators, N scenarios, figures printed.

Each scenario is drawn by tests/scenario/strategies.py from random.Random(seed + i) (so
scenario i is replayable alone), run as `s2mmu run FILE` twice and `run FILE --json`
in-process, and judged: ok, expected failure (it asked for one), unexpected
invariant/expectation failure, asked-for failure not reported, valid scenario refused,
traceback, nondeterminism. The first scenario of each failure class is written to --out,
named by its outcome and index. A class is "known" when every scenario that showed it
carried one tag of the failure classes the project already knows (strategies.Known).

    python bench/fuzz_campaign.py 3000 [--seed 0] [--out fuzz-repro] [--known all|none]
        [--max-events 12] [--json]
"""

from __future__ import annotations

import argparse
import random
import re
import resource
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]),
                str(Path(__file__).resolve().parents[1] / "src")]

from s2mmu.cli.output import console, print_json, progress  # noqa: E402
from tests.scenario.strategies import Known, Outcome, judge, random_scenario  # noqa: E402

SCHEMA = "s2mmu.fuzz-campaign/1"


@dataclass
class FailureClass:
    """One failure class: its outcome, key, count, the known tags common to its scenarios."""

    outcome: Outcome
    key: str
    count: int = 0
    tags: set[Known] | None = None
    first: int = -1
    detail: str = ""
    reproducer: str = ""
    seen_untagged: bool = False
    indices: list[int] = field(default_factory=list)


def campaign(n: int, seed: int, allow: frozenset[Known], max_events: int, out: Path,
             budget: float) -> tuple[int, float, float, Counter[Outcome],
                                     dict[tuple[Outcome, str], FailureClass]]:
    """Run n scenarios (fewer if budget seconds run out or ^C); return how many ran, wall and
    CPU seconds, the outcome counts and the failure classes."""
    counts: Counter[Outcome] = Counter()
    classes: dict[tuple[Outcome, str], FailureClass] = {}
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, progress("fuzzing", total=n) as bar:
        start, cpu = time.perf_counter(), time.process_time()
        done = 0
        for i in range(n):
            if time.perf_counter() - start > budget:
                break
            try:
                gen = random_scenario(random.Random(seed + i), allow, max_events)
                verdict = judge(gen, f"{tmp}/scenario.toml")
            except KeyboardInterrupt:
                break
            done += 1
            counts[verdict.outcome] += 1
            bar.advance()
            if verdict.outcome in (Outcome.OK, Outcome.EXPECTED_FAILURE):
                continue
            fc = classes.setdefault((verdict.outcome, verdict.key),
                                    FailureClass(verdict.outcome, verdict.key))
            fc.count += 1
            fc.tags = set(gen.known) if fc.tags is None else fc.tags & gen.known
            fc.seen_untagged |= not gen.known
            if fc.first < 0:
                fc.first, fc.detail = seed + i, verdict.detail
                slug = re.sub(r"[^a-z0-9]+", "-", f"{verdict.outcome.value} {verdict.key}".lower())
                path = out / f"{slug.strip('-')[:80]}-seed{seed + i}.toml"
                path.write_text(gen.text, encoding="utf-8")
                fc.reproducer = str(path)
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu
    return done, seconds, cpu_seconds, counts, classes


def main() -> None:
    """Parse the arguments, run the campaign, print its figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", type=int, help="how many scenarios")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("fuzz-repro"),
                    help="directory for the first reproducer of each failure class")
    ap.add_argument("--known", choices=["all", "none"], default="all",
                    help="generate the cases of the known failure classes too (all) or not")
    ap.add_argument("--max-events", type=int, default=12)
    ap.add_argument("--budget", type=float, default=float("inf"), metavar="SECONDS",
                    help="stop after this long (the figures cover the scenarios run)")
    ap.add_argument("--json", action="store_true", help="the figures as one JSON document")
    args = ap.parse_args()
    allow = frozenset(Known) if args.known == "all" else frozenset()
    n, seconds, cpu, counts, classes = campaign(args.n, args.seed, allow, args.max_events,
                                                args.out, args.budget)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10
    rows = [{"outcome": fc.outcome.value, "class": fc.key, "count": fc.count,
             "known": sorted(t.value for t in fc.tags or ()) if not fc.seen_untagged else [],
             "first_seed": fc.first, "detail": fc.detail, "reproducer": fc.reproducer}
            for fc in sorted(classes.values(), key=lambda c: -c.count)]
    if args.json:
        print_json({"schema": SCHEMA, "scenarios": n, "peak_rss_mib": rss, "seed": args.seed,
                    "known": args.known, "seconds": round(seconds, 2),
                    "cpu_seconds": round(cpu, 2),
                    "scenarios_per_second": round(n / seconds, 2),
                    "scenarios_per_cpu_second": round(n / cpu, 2),
                    "outcomes": {o.value: counts[o] for o in Outcome}, "classes": rows})
        return
    out = console()
    out.print(f"{n} scenarios (seed {args.seed}, known classes: {args.known}) in "
              f"{seconds:.1f} s: {n / seconds:.2f} scenarios/s ({cpu:.1f} s of CPU: "
              f"{n / cpu:.2f} scenarios per CPU second), peak RSS {rss} MiB")
    for o in Outcome:
        out.print(f"  {o.value:45} {counts[o]}")
    for row in rows:
        known = "known: " + "; ".join(row["known"]) if row["known"] else "NEW"
        out.print(f"{row['outcome']} x{row['count']} ({known}): {row['class']}\n"
                  f"    first: {row['detail'][:200]}\n    reproducer: {row['reproducer']}",
                  soft_wrap=True)


if __name__ == "__main__":
    main()
