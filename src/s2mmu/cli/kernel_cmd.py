"""`s2mmu kernel build` and `s2mmu kernel diff`: the kernel's own code as an oracle.

build compiles arch/arm64/kvm/hyp/pgtable.c (and from 6.12 arch/arm64/kvm/at.c) from an
installed kernel source (Debian's linux-source-6.12 by default, linux-source-6.1 too)
with s2mmu's shims; diff runs pgtable.c and the model side by side on random operations
and compares return values, descriptors, refcounts and events after every one
(s2mmu.kernel.diff); diff --at runs at.c's software walk and the nested AT emulation on
random guest states and compares PAR_EL1 and descriptor updates (s2mmu.kernel.at_diff).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from s2mmu.arch.errors import InputError
from s2mmu.arch.inputs import one_line
from s2mmu.cli import output
from s2mmu.kernel.at_binding import KernelAt
from s2mmu.kernel.at_diff import AtDiffReport, run_at_diff
from s2mmu.kernel.binding import KernelPgtable
from s2mmu.kernel.build import GRANULES, KernelBuild, build
from s2mmu.kernel.diff import (
    GRANULE_NAMES,
    IPA_BITS,
    IPA_BITS_RANGE,
    DiffReport,
    Op,
    parse_ops,
    run_diff,
)
from s2mmu.kernel.diff_scenarios import SCENARIOS, scenario
from s2mmu.nested.at import PROFILES as AT_PROFILES
from s2mmu.nested.at import V6_12
from s2mmu.pgtable.caps import KvmCaps
from s2mmu.pgtable.profile import PROFILES

SOURCE_HELP = ("Kernel source: a linux-source tarball or a kernel tree "
               "(default: $S2MMU_KERNEL_SOURCE, else /usr/src/linux-source-6.12.tar.xz).")
CACHE_HELP = ("Where extracted files and the library are kept "
              "(default: $XDG_CACHE_HOME/s2mmu/kernel).")


F = TypeVar("F", bound=Callable[..., Any])


def input_errors(fn: F) -> F:
    """Turn InputError into one line on stderr and exit status 2 (as s2mmu.cli.main does).

    main imports this module, so it cannot import main's decorator.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InputError as e:
            click.echo(f"s2mmu: error: {one_line(str(e))}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


@click.group()
def kernel() -> None:
    """Build the kernel's own pgtable.c and at.c and compare the model with them."""


GRANULE_HELP = ("Stage-2 granule: the host PAGE_SIZE pgtable.c is built with "
                "(each granule is its own cached library).")


@kernel.command("build")
@click.option("--source", metavar="TARBALL_OR_TREE", help=SOURCE_HELP)
@click.option("--cache", metavar="DIR", help=CACHE_HELP)
@click.option("--granule", type=click.Choice(list(GRANULES)), default="4k", show_default=True,
              help=GRANULE_HELP)
@input_errors
def build_cmd(source: str | None, cache: str | None, granule: str) -> None:
    """Extract and compile the kernel's pgtable.c into a shared library (cached)."""
    b = build(source, cache, GRANULES[granule])
    con = output.console()
    con.print(f"kernel: Linux {b.version} from {b.source}")
    con.print(f"model profile: {b.profile.name}")
    con.print(f"granule: {granule} (PAGE_SHIFT {b.page_shift})")
    con.print(f"library: {b.library}")
    con.print(f"at.c library: {b.at_library or '(none: at.c is built from 6.12 on)'}")
    if b.cached:
        con.print("build: cached")
    else:
        con.print(f"build: extract {b.extract_seconds:.1f} s, compile {b.compile_seconds:.1f} s")


def diff_doc(b: KernelBuild, report: DiffReport, length: int,
             ipa_bits: int = IPA_BITS, scenario_name: str | None = None) -> dict[str, Any]:
    """Return the s2mmu.kernel-diff/1 document of a run ("scenario" only for --scenario)."""
    doc: dict[str, Any] = {
        "schema": "s2mmu.kernel-diff/1",
        "kernel": {"version": str(b.version), "source": str(b.source)},
        "profile": report.profile,
        "seed": report.seed,
        "sequence_length": length,
        "ipa_bits": ipa_bits,
        "granule": GRANULE_NAMES[b.page_shift],
        "compared": report.compared,
        "agreed": report.agreed,
        "agreement": round(report.agreement, 3),
        "by_operation": dict(sorted(report.by_op.items())),
        "differences": [
            {"what": r.difference.what, "kernel": r.difference.kernel,
             "model": r.difference.model, "replay": [str(op) for op in ops]}
            for r, ops in report.differences if r.difference is not None
        ],
    }
    if scenario_name is not None:
        doc["scenario"] = scenario_name
    return doc


def at_diff_doc(b: KernelBuild, report: AtDiffReport) -> dict[str, Any]:
    """Return the s2mmu.kernel-at-diff/1 document of an --at run."""
    return {
        "schema": "s2mmu.kernel-at-diff/1",
        "kernel": {"version": str(b.version), "source": str(b.source)},
        "profile": report.profile,
        "seed": report.seed,
        "compared": report.compared,
        "agreed": report.agreed,
        "agreement": round(report.agreement, 3),
        "by_instruction": dict(sorted(report.by_op.items())),
        "differences": [
            {"case": d.index, "state": d.case, "what": d.what, "kernel": d.kernel,
             "model": d.model}
            for d in report.differences
        ],
    }


def at_diff_run(b: KernelBuild, n_cases: int, seed: int, case: int | None,
                at_profile: str | None, as_json: bool) -> None:
    """Run `kernel diff --at` and exit 0 only at full agreement."""
    if b.at_library is None:
        raise InputError(f"kernel diff --at: Linux {b.version} has no at.c software walker "
                         "(at.c is built from 6.12 on; use linux-source-6.12)")
    k = KernelAt(b.at_library)
    total = 1 if case is not None else n_cases
    with output.progress("kernel diff --at", total=total) as bar:
        report = run_at_diff(k, cases=n_cases, seed=seed, only=case,
                             profile=AT_PROFILES[at_profile] if at_profile else V6_12,
                             advance=bar.advance)
    if as_json:
        output.print_json(at_diff_doc(b, report))
    else:
        con = output.console()
        con.print(f"kernel: Linux {b.version} ({b.source}) at.c; model AT profile "
                  f"{report.profile}", highlight=False)
        con.print("instructions agreed: " + ", ".join(
            f"{name} {n}" for name, n in sorted(report.by_op.items())), highlight=False)
        for d in report.differences:
            con.print(f"difference, case {d.index}: {d.what}: kernel {d.kernel}, model "
                      f"{d.model}", highlight=False, markup=False)
            con.print(f"  state: {d.case}", highlight=False, markup=False)
            con.print(f"  replay: s2mmu kernel diff --at --at-profile {report.profile} "
                      f"--seed {seed} --case {d.index}", highlight=False, markup=False)
        con.print(f"agreement {report.agreement:.1f}% ({report.agreed}/{report.compared} "
                  "cases)", highlight=False)
    sys.exit(0 if not report.differences else 1)


@kernel.command("diff")
@click.option("--ops", "n_ops", type=click.IntRange(1, 10_000_000), default=400,
              show_default=True, help="How many operations (with --at: cases) to compare.")
@click.option("--at", "at_mode", is_flag=True,
              help="Compare at.c's software AT walk with the nested AT emulation instead "
                   "(random guest states; schema s2mmu.kernel-at-diff/1).")
@click.option("--case", "case", type=click.IntRange(0, 10_000_000),
              help="With --at: run only this case number of the seed.")
@click.option("--at-profile", "at_profile", type=click.Choice(sorted(AT_PROFILES)),
              help="With --at: the model's AT emulation profile (default: v6.12).")
@click.option("--seed", type=click.IntRange(0, 2**63), default=0, show_default=True,
              help="Seed of the random operations.")
@click.option("--length", type=click.IntRange(1, 10_000), default=40, show_default=True,
              help="Operations per sequence (each sequence starts from an empty stage 2).")
@click.option("--profile", "profile_name", type=click.Choice(sorted(PROFILES)),
              help="Model behaviour profile (default: the one the kernel version picks).")
@click.option("--fwb", is_flag=True, help="Both sides with FEAT_S2FWB (ARM64_HAS_STAGE2_FWB).")
@click.option("--tlb-range", is_flag=True, help="Both sides with FEAT_TLBIRANGE.")
@click.option("--ipa-bits", type=click.IntRange(*IPA_BITS_RANGE), default=IPA_BITS,
              show_default=True,
              help="Guest IPA size of both stage 2s (kvm_get_vtcr picks the start level).")
@click.option("--granule", type=click.Choice(list(GRANULES)), default="4k", show_default=True,
              help=GRANULE_HELP + " The random operations use its pages and level-2 "
                   "blocks (2M, 32M, 512M).")
@click.option("--replay", "replay_text", metavar="OPS",
              help="Run these operations (as a difference prints them, ';'-separated).")
@click.option("--scenario", "scenario_name", metavar="NAME",
              help="Run a named hand-written sequence instead of random ones "
                   f"({', '.join(SCENARIOS)}; 'list' lists them).")
@click.option("--source", metavar="TARBALL_OR_TREE", help=SOURCE_HELP)
@click.option("--cache", metavar="DIR", help=CACHE_HELP)
@click.option("--json", "as_json", is_flag=True,
              help="One JSON document (schema s2mmu.kernel-diff/1).")
@input_errors
def diff_cmd(n_ops: int, at_mode: bool, case: int | None, at_profile: str | None,
             seed: int, length: int,
             profile_name: str | None, fwb: bool, tlb_range: bool, ipa_bits: int,
             granule: str, replay_text: str | None, scenario_name: str | None,
             source: str | None, cache: str | None, as_json: bool) -> None:
    """Run the kernel's pgtable.c and the model on the same operations and compare."""
    if (case is not None or at_profile is not None) and not at_mode:
        raise InputError("kernel diff: --case and --at-profile go with --at; without --at "
                         "use --replay and --profile")
    if scenario_name is not None and (at_mode or replay_text is not None):
        raise InputError(f"kernel diff: --scenario {scenario_name} goes with neither --at "
                         "nor --replay")
    if scenario_name == "list":
        con = output.console()
        for sc in SCENARIOS.values():
            con.print(f"{sc.name}: {sc.summary} ({len(sc.text)} operations)",
                      highlight=False, markup=False)
        sys.exit(0)
    if granule != "4k" and (scenario_name is not None or at_mode):
        raise InputError(f"kernel diff: --granule {granule} goes with random or replayed "
                         "operations; --scenario and --at are written for 4k")
    story = scenario(scenario_name) if scenario_name is not None else None
    replay: list[Op] | None = parse_ops(replay_text) if replay_text is not None else None
    b = build(source, cache, GRANULES[granule])
    if at_mode:
        at_diff_run(b, n_ops, seed, case, at_profile, as_json)
    k = KernelPgtable(b.library)
    if story is not None:
        replay = story.ops(k.series)
    profile = PROFILES[profile_name] if profile_name else b.profile
    caps = KvmCaps(stage2_fwb=fwb, tlb_range=tlb_range)
    total = len(replay) if replay is not None else n_ops
    with output.progress("kernel diff", total=total) as bar:
        report = run_diff(k, profile, ops=n_ops, seed=seed, length=length, caps=caps,
                          replay=replay, advance=bar.advance, ipa_bits=ipa_bits)
    if as_json:
        output.print_json(diff_doc(b, report, length, ipa_bits, scenario_name))
    else:
        con = output.console()
        con.print(f"kernel: Linux {b.version} ({b.source}); granule {granule}; model profile "
                  f"{profile.name}" + (f"; scenario {scenario_name}" if scenario_name else ""),
                  highlight=False)
        con.print("operations agreed: " + ", ".join(
            f"{name} {n}" for name, n in sorted(report.by_op.items())), highlight=False)
        for i, (r, ops) in enumerate(report.differences, 1):
            d = r.difference
            assert d is not None
            con.print(f"difference {i}: {d.what}: kernel {d.kernel}, model {d.model}",
                      highlight=False, markup=False)
            flags = "".join((" --fwb" if fwb else "", " --tlb-range" if tlb_range else "",
                             f" --ipa-bits {ipa_bits}" if ipa_bits != IPA_BITS else "",
                             f" --granule {granule}" if granule != "4k" else ""))
            con.print(f"  replay: s2mmu kernel diff --profile {profile.name}{flags} --replay "
                      f"\"{'; '.join(str(op) for op in ops)}\"", highlight=False, markup=False)
        con.print(f"agreement {report.agreement:.1f}% ({report.agreed}/{report.compared} "
                  "operations)", highlight=False)
    sys.exit(0 if not report.differences else 1)
