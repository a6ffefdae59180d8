"""A random-scenario campaign against real KVM: N generated scenarios, several per boot.

The scenarios come from the fuzzers' generator (s2mmu.scenario.generate) narrowed to
:data:`REAL_KVM`, what the VMM expresses (s2mmu.real.plan); scenario i is drawn from
random.Random(seed + i), so any one replays alone. Each batch of ``per_boot`` scenarios
is planned, booted once, and every scenario is compared with the model under the booted
release's profile (s2mmu.real.diff). Differences are grouped into classes (the aspect
and the model's and real KVM's answers with their numbers blanked); the first scenario
of each class can be written out as a reproducer.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from s2mmu.arch.dump import TableDump
from s2mmu.real import asm
from s2mmu.real.boot import Boot, Mode, boot, build_vmm, cache_dir, resolve_kernel
from s2mmu.real.diff import (
    Aspect,
    Difference,
    DiffReport,
    compare,
    profile_for_release,
    run_model,
)
from s2mmu.real.gdb import GdbError, GdbStub, read_stage2
from s2mmu.real.log import ConsoleError, ConsoleLog, RealRun, parse_console
from s2mmu.real.plan import Plan, Unsupported, make_plan, render_plan
from s2mmu.scenario.generate import M2, Known, Reach, random_scenario
from s2mmu.scenario.runner import step_count
from s2mmu.scenario.schema import Scenario, load_scenario

REAL_KVM = Reach(
    host_features=("fwb", "idc"), pa_bits=(48,), vma_kinds=("anon", "anon", "hugetlb"),
    hugetlb_sizes=(M2,), accesses=("read", "write", "exec"),
    registers=tuple(r for r in range(31) if r not in asm.RESERVED),
    host_ops=("munmap", "madvise"), stage1=False, races=False, aborts=False,
    vm_caps=frozenset({"nisv_to_user", "manual_dirty_log_protect"}), impossible=False,
    thp_zero_page=True)
"""What the campaign draws: the host as KVM sees QEMU 7.2's -cpu max (FEAT_S2FWB, IDC, no
DIC), with the huge zero page for THP reads or without (the VMM sets use_zero_page as
the scenario says); anonymous and 2M hugetlb VMAs; reads, writes and fetches by IPA;
munmap and madvise.

Left out, each for a reason of s2mmu.real.plan.UNSUPPORTED: file and PFNMAP VMAs
("pfnmap"; the VMM maps anonymous and hugetlb memory only), 1G hugetlb (the booted machine
reserves 64 2M pages), DC accesses ("dc"), accesses by VA ("va"), races ("race"), raw
aborts ("abort"), migrate and hwpoison ("migrate", "hwpoison"), MTE ("mte"), the syndrome
registers the guest code keeps ("syndrome-register"). KVM_CAP_ARM_EAGER_SPLIT_CHUNK_SIZE
is left out too: Linux 6.1, the default kernel, does not have it (it came in 6.5).
"""

ALLOW: frozenset[Known] = frozenset()
"""No known failure class is drawn (partial folios, odd-sized clears)."""


@dataclass(frozen=True)
class CampaignRequest:
    """What to run: count scenarios from seed, per_boot of them in each boot."""

    count: int
    seed: int = 0
    mode: Mode = Mode.VHE
    per_boot: int = 20
    kernel: str | None = None
    cache: str | None = None
    max_events: int = 12
    budget: float = float("inf")
    """Seconds after which no new boot starts (the figures cover the scenarios run)."""
    dump_last: bool = False
    """Also read each scenario's real stage 2 after its last step (gdbstub; not in
    protected mode) and compare its leaves and shared frames."""


@dataclass(frozen=True)
class ScenarioVerdict:
    """One generated scenario compared: its seed, text, and the comparison."""

    seed: int
    text: str
    report: DiffReport

    @property
    def agrees(self) -> bool:
        """Return whether every step agrees."""
        return not self.report.differences


@dataclass(frozen=True)
class DifferenceClass:
    """Differences of one kind: the aspect and both answers with numbers blanked."""

    aspect: Aspect
    key: str
    count: int
    first_seed: int
    example: Difference


@dataclass(frozen=True)
class BootFigures:
    """One boot of the campaign: how many scenarios it ran and how long it took."""

    scenarios: int
    seconds: float
    kvm_mode: str | None


@dataclass(frozen=True)
class CampaignReport:
    """The campaign's figures: each scenario's verdict, each boot, the difference classes."""

    request: CampaignRequest
    release: str
    profile: str
    verdicts: tuple[ScenarioVerdict, ...]
    boots: tuple[BootFigures, ...]
    seconds: float
    classes: tuple[DifferenceClass, ...]

    @property
    def agreeing(self) -> int:
        """Return how many scenarios agree at every step."""
        return sum(1 for v in self.verdicts if v.agrees)

    @property
    def steps(self) -> int:
        """Return how many steps were compared."""
        return sum(len(v.report.steps) for v in self.verdicts)

    @property
    def agreed_steps(self) -> int:
        """Return how many steps agree."""
        return sum(v.report.agreed for v in self.verdicts)


def generated(seed: int, max_events: int) -> tuple[str, Scenario]:
    """Return the text and the scenario drawn from random.Random(seed)."""
    gen = random_scenario(random.Random(seed), ALLOW, max_events, REAL_KVM)
    return gen.text, load_scenario(f"generated-{seed}.toml", gen.text)


def difference_key(d: Difference) -> str:
    """Return a difference with its numbers blanked: one key per class."""
    blank = re.compile(r"0x[0-9a-f]+|\d+")
    return f"{d.aspect.value}: model {blank.sub('N', d.model)}; real {blank.sub('N', d.real)}"


def classify(verdicts: tuple[ScenarioVerdict, ...]) -> tuple[DifferenceClass, ...]:
    """Return the difference classes, most frequent first (a scenario counts once each)."""
    seen: dict[str, tuple[int, int, Difference]] = {}
    for v in verdicts:
        for key, d in {difference_key(d): d for d in reversed(v.report.differences)}.items():
            count, first, example = seen.get(key, (0, v.seed, d))
            seen[key] = (count + 1, first, example)
    return tuple(sorted((DifferenceClass(ex.aspect, key, n, first, ex)
                         for key, (n, first, ex) in seen.items()),
                        key=lambda c: (-c.count, c.first_seed)))


def unfinished(plan: Plan, release: str) -> RealRun:
    """Return the run of a plan the console shows nothing of (every step missing)."""
    return RealRun(plan.name, release, (), {}, False)


def run_batch(seeds: range, req: CampaignRequest, kernel_image: str,
              cache: Path) -> tuple[list[ScenarioVerdict], Boot, ConsoleLog]:
    """Generate, plan, boot once and compare the scenarios of the given seeds."""
    drawn = [(s, *generated(s, req.max_events)) for s in seeds]
    plans = [make_plan(scn, (step_count(scn),) if req.dump_last else ())
             for _, _, scn in drawn]
    named = [(f"{i:03d}-seed{s}.plan", render_plan(p)) for i, ((s, _, _), p)
             in enumerate(zip(drawn, plans, strict=True))]
    stage2: dict[str, dict[int, TableDump]] = {}

    def on_dump(plan: str, step: int, stub: GdbStub) -> None:
        try:  # not caught running: no real stage 2, a "not read" difference of that step
            stage2.setdefault(plan, {})[step] = read_stage2(stub).dump
        except GdbError:
            pass

    b = boot(resolve_kernel(kernel_image, cache), named, req.mode, cache,
             on_dump if req.dump_last else None)
    log = parse_console(b.console)
    runs = {r.plan: r for r in log.runs}
    out = []
    for (s, text, scn), plan, (name, _) in zip(drawn, plans, named, strict=True):
        real = runs.get(name) or unfinished(plan, log.release)
        profile = profile_for_release(log.release)
        model, model_s2 = run_model(scn, profile, plan.dumps)
        out.append(ScenarioVerdict(s, text, compare(model, real, plan, profile, model_s2,
                                                     stage2.get(name, {}))))
    return out, b, log


def campaign(req: CampaignRequest,
             on_boot: Callable[[int], None] | None = None) -> CampaignReport:
    """Run the campaign; on_boot is called with how many scenarios each boot ran.

    A generated scenario the plan refuses is a defect of REAL_KVM (Unsupported is raised).
    """
    if req.dump_last and req.mode is Mode.PROTECTED:
        raise Unsupported("real KVM campaign: --dump-last with --mode protected: the "
                          "gdbstub's halts rarely find a pKVM guest running; use vhe or nvhe")
    if req.count < 1 or req.per_boot < 1:
        raise Unsupported(f"real KVM campaign: --count {req.count} and --per-boot "
                          f"{req.per_boot} must both be at least 1")
    cache = cache_dir(req.cache)
    kernel = resolve_kernel(req.kernel, cache)
    build_vmm(cache)
    t0 = time.monotonic()
    verdicts: list[ScenarioVerdict] = []
    boots: list[BootFigures] = []
    release = ""
    for first in range(req.seed, req.seed + req.count, req.per_boot):
        if time.monotonic() - t0 > req.budget:
            break
        seeds = range(first, min(first + req.per_boot, req.seed + req.count))
        done, b, log = run_batch(seeds, req, str(kernel.image), cache)
        if not log.runs:
            raise ConsoleError(f"real KVM campaign: the boot for seeds {seeds.start}.."
                               f"{seeds.stop - 1} ran no plan")
        release = log.release
        verdicts += done
        boots.append(BootFigures(len(done), b.seconds, log.kvm_mode))
        if on_boot is not None:
            on_boot(len(done))
    vs = tuple(verdicts)
    return CampaignReport(req, release, profile_for_release(release).name, vs, tuple(boots),
                          time.monotonic() - t0, classify(vs))


def write_reproducers(report: CampaignReport, out: Path) -> dict[str, Path]:
    """Write the first scenario of each difference class into out; return them by key."""
    out.mkdir(parents=True, exist_ok=True)
    texts = {v.seed: v.text for v in report.verdicts}
    paths = {}
    for c in report.classes:
        path = out / f"real-{report.request.mode.value}-seed{c.first_seed}.toml"
        path.write_text(texts[c.first_seed], encoding="utf-8")
        paths[c.key] = path
    return paths
