"""The s2mmu command line: parse, call one function, format.

click gives subcommands, typed options and exit status 2 for usage errors; rich gives
tables and colour. Bad input (s2mmu.arch.errors.InputError) is one line on stderr and
exit status 2, never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from s2mmu.arch import inputs
from s2mmu.arch.access import AccessDescriptor, acc_gpr, acc_ifetch
from s2mmu.arch.access_op import AccessOp
from s2mmu.arch.atcase import parse_cases, parse_int, run_case, run_case_detailed
from s2mmu.arch.descriptors import DescContext
from s2mmu.arch.errors import InputError
from s2mmu.arch.features import PRESETS, FeatureSet
from s2mmu.arch.inputs import one_line, shorten, shorten_hex
from s2mmu.arch.params import Granule, impdef_register_encodings
from s2mmu.arch.registers import REGISTERS
from s2mmu.arch.state import SysRegs, regime_for
from s2mmu.arch.translate import Env
from s2mmu.cli import output, render

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str) -> None:
    """Print one line naming the rule and the value, then exit with status 2."""
    click.echo(f"s2mmu: error: {one_line(message)}", err=True)
    sys.exit(2)


def input_errors(fn: F) -> F:
    """Turn InputError (bad input) into one line on stderr and exit status 2."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InputError as e:
            fail(str(e))
        except BrokenPipeError:
            raise
        except OSError as e:
            fail(f"cannot read {e.filename}: {e.strerror}" if e.filename else f"{e}")
        except json.JSONDecodeError as e:
            fail(f"cannot read input: {e}")
        return None

    return wrapper  # type: ignore[return-value]


def check_u64(value: int, what: str) -> None:
    """Refuse a value that is not a 64-bit unsigned number, saying which way it is out."""
    if value < 0:
        raise InputError(f"{what} {shorten_hex(value)} is negative; it must be 0..2^64-1")
    if value >> 64:
        raise InputError(f"{what} {shorten_hex(value)} is wider than 64 bits")


def load_json(path: str) -> Any:
    """Return the JSON in path, or raise InputError naming the file and the problem.

    Every check of the input layer applies (s2mmu.arch.inputs: depth, digits, lengths).
    """
    return inputs.load_json(path)


def features_option(preset: str) -> FeatureSet:
    """Return the FeatureSet of a preset name."""
    return PRESETS[preset]()


class OneLineErrors(click.Group):
    """A click group whose usage errors are one line on stderr and exit status 2."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """Run the command line; a usage error names the command and the rule broken."""
        kwargs["standalone_mode"] = False
        try:
            rv = super().main(*args, **kwargs)
        except click.UsageError as e:
            sub = e.ctx is not None and e.ctx.parent is not None
            fail((f"{e.ctx.info_name}: " if e.ctx is not None and sub else "")
                 + e.format_message())
        except click.ClickException as e:
            fail(e.format_message())
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="s2mmu")
def cli() -> None:
    """s2mmu: an executable model of Arm64 two-stage memory virtualisation as KVM/arm64 does it."""


@cli.command()
@click.option("--arch", "arch_tour", is_flag=True,
              help="Show the architecture tour (walks, AT, faults) instead of the KVM scenario.")
@click.option("--json", "as_json", is_flag=True,
              help="Every demo run as one JSON document (schema s2mmu.demo/1; with --arch: "
                   "s2mmu.arch-demo/1).")
@click.option("--pkvm", "pkvm_stories", is_flag=True,
              help="Run the pKVM scenarios instead: seed 002 (a page donated to the "
                   "hypervisor, touched by the host) under both policies, and seed 000 "
                   "(relax_perms on a gone mapping) before and after the fix.")
@click.option("--trace", is_flag=True, help="Add the full event stream.")
@click.option("--nested", is_flag=True,
              help="Run the nested scenario: an L1 guest hypervisor's stage 2 under KVM's "
                   "shadow stage 2, its TLBIs and AT instructions (data/nested_demo.toml).")
@input_errors
def demo(arch_tour: bool, as_json: bool, pkvm_stories: bool, trace: bool, nested: bool) -> None:
    """Run the built-in scenario: a guest's life under KVM (or --arch: the architecture tour;
    --pkvm: the pKVM stories; --nested: a guest hypervisor's stage 2 under KVM)."""
    if sum((arch_tour, pkvm_stories, nested)) > 1:
        raise click.UsageError("--arch, --pkvm and --nested are different demos: choose one")
    if not arch_tour:
        from s2mmu.cli.run_cmd import DEMOS, NESTED_DEMOS, PKVM_DEMOS, run_demo

        run_demo(as_json, trace, NESTED_DEMOS if nested else PKVM_DEMOS if pkvm_stories
                 else DEMOS)
        return
    from s2mmu.scenario.arch_demo import at_tour, build_demo, s1_walk_fault_at_el1, translate_tour

    m = build_demo()
    tour = translate_tour(m)
    ats = [*at_tour(m), s1_walk_fault_at_el1(m)]
    if as_json:
        output.print_json(arch_demo_doc(m, tour, ats))
        return
    out = render.console()
    out.rule("[bold]s2mmu demo: a guest's stage 1 inside guest memory, over a stage 2")
    out.print(f"VTCR_EL2={m.regs.VTCR_EL2:#x} VTTBR_EL2={m.regs.VTTBR_EL2:#x} "
              f"TCR_EL1={m.regs.TCR_EL1:#x} TTBR0_EL1={m.regs.TTBR0_EL1:#x} "
              f"TTBR1_EL1={m.regs.TTBR1_EL1:#x} MAIR_EL1={m.regs.MAIR_EL1:#x}")
    for t in tour:
        out.rule(t.title)
        out.print(f"VA {t.va:#x} {access_name(t.access)}")
        out.print(render.walk_lines(list(t.trace)), end="")
        out.print(render.describe_result(t.result))
    writes = m.env.mem.hw_writes
    if writes:
        out.rule("descriptor words written by the translation hardware")
        for w in writes:
            out.print(f"  PA {w.pa:#x}: {w.before:#018x} -> {w.after:#018x}")
    out.rule("AT instructions")
    for a in ats:
        out.print(f"[bold]AT {a.op.name}[/bold] {a.va:#x} at EL{a.el} PAN={int(a.pan)}: {a.title}")
        out.print(render.describe_at(a.result))


def arch_demo_doc(m: Any, tour: list[Any], ats: list[Any]) -> dict[str, Any]:
    """Return the s2mmu.arch-demo/1 document: the tour's translations and AT instructions."""
    from s2mmu.arch.atcase import AtOpSpec
    from s2mmu.arch.explain import record_run
    from s2mmu.arch.state import Regime
    from s2mmu.cli.arch_json import demo_at_json, translation_json, writes_json

    translations = []
    for t in tour:
        run = record_run(m.regs, Regime.EL10, t.va, t.access, m.env, t.trace, t.result)
        translations.append({"title": t.title, **translation_json(run)})
    return {"schema": "s2mmu.arch-demo/1",
            "regs": {k: f"{v:#x}" for k, v in m.regs.to_mapping().items()},
            "translations": translations,
            "hardware_writes": writes_json(m.env.mem.hw_writes),
            "at": [demo_at_json(a.title, AtOpSpec(a.op, a.va, a.el, a.pan), a.result)
                   for a in ats]}


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="The run as JSON (schema s2mmu.run/2).")
@click.option("--trace", is_flag=True, help="Add the full event stream to every step.")
@click.option("--html", "html_file", type=click.Path(dir_okay=False), metavar="OUT",
              help="Also write the report as a self-contained HTML timeline (with the "
                   "stage 2 after each step that changed it).")
@click.option("--dump-after", "dump_after", multiple=True, metavar="N",
              help="Also print the stage 2 after step #N (as the timeline numbers it; "
                   "'last' for the final state), as `s2mmu dump` prints it. Repeatable.")
@click.option("--range", "range_text", metavar="START-END",
              help="With --dump-after: only IPAs in [START, END).")
@click.option("--perm", "perm_text", metavar="RWX",
              help="With --dump-after: only ranges with all these permissions (e.g. wx).")
@click.option("--profile", "profile", metavar="NAME",
              help="Follow this kernel release's rules instead of the file's [kvm] profile "
                   "(`s2mmu profiles` lists them).")
def run(file: str, as_json: bool, trace: bool, html_file: str | None,
        dump_after: tuple[str, ...], range_text: str | None, perm_text: str | None,
        profile: str | None) -> None:
    """Run a scenario file: timeline, summary, broken invariants (exit 1 on failure)."""
    from s2mmu.cli.run_cmd import run_file

    sys.exit(run_file(file, as_json, trace, html=html_file, dump_after=dump_after,
                      range_text=range_text, perm_text=perm_text, profile=profile))


def access_name(a: AccessDescriptor) -> str:
    """Return an access as 'EL1 read (PAN)'."""
    kind = "fetch" if a.is_ifetch() else ("write" if a.write else "read")
    return f"EL{a.el} {kind}" + (" (PAN)" if a.pan else "")


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True,
              help="Print the at-case.md output format (schema s2mmu.at/1).")
@click.option("--features", type=click.Choice(sorted(PRESETS)), default="qemu-max",
              show_default=True, help="Implemented features.")
@input_errors
def at(file: str, as_json: bool, features: str) -> None:
    """Run the AT instructions of an AT case file (shared/formats/at-case.md)."""
    cases = parse_cases(load_json(file))
    fs = features_option(features)
    if as_json:
        from s2mmu.cli.arch_json import at_doc

        output.print_json(at_doc([run_case(c, fs) for c in cases]))
        return
    out = render.console()
    for case in cases:
        results, mem, _ = run_case_detailed(case, fs)
        out.rule(f"case {case.name}")
        for spec, r in zip(case.ops, results, strict=True):
            kind = "  " if isinstance(spec.op, AccessOp) else "AT"
            out.print(f"{kind} {spec.op.name:7} {spec.va:#018x} EL{spec.el} PAN={int(spec.pan)}  ",
                      render.describe_at(r))
        for w in mem.hw_writes:
            out.print(f"  hardware wrote PA {w.pa:#x}: {w.before:#x} -> {w.after:#x}")


def parse_reg_options(items: tuple[str, ...]) -> dict[str, int]:
    """Parse NAME=VALUE register options."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"--reg expects NAME=VALUE, got {shorten(item)}")
        out[name.strip().upper()] = parse_int(value, f"--reg {name}")
    return out


ACCESS = {"r": (False, False), "w": (True, False), "x": (False, True)}


@cli.command()
@click.argument("va")
@click.option("--case", "case_file", metavar="FILE[#NAME]",
              help="Take registers and memory from an AT case file: the case called NAME, "
                   "or the first one.")
@click.option("--reg", "reg_items", multiple=True, metavar="NAME=VALUE",
              help="Set a register (repeatable); overrides the case file.")
@click.option("--el", type=click.IntRange(0, 2), default=1, show_default=True,
              help="Exception level of the access.")
@click.option("--access", type=click.Choice(sorted(ACCESS)), default="r", show_default=True)
@click.option("--pan", is_flag=True, help="PSTATE.PAN=1 for the access.")
@click.option("--stage1-only", is_flag=True, help="Stop at the IPA (stage 2 still walks tables).")
@click.option("--explain", is_flag=True, help="Print the walk level by level.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the translation as JSON (schema s2mmu.translate/1).")
@click.option("--features", type=click.Choice(sorted(PRESETS)), default="qemu-max",
              show_default=True)
@click.option("--allow-reserved", is_flag=True,
              help="Accept reserved TGx encodings and IMPLEMENTATION DEFINED TxSZ values, "
                   "resolved by the model's ImplChoices (refused otherwise).")
@click.option("--svg", "svg_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Also draw the walk as SVG: the nested-walk grid, reads numbered in order.")
@click.option("--to", "end", metavar="END",
              help="Translate every address from VA up to END (exclusive), --step apart, "
                   "through the batch engine; print runs that translate alike "
                   "(--json: schema s2mmu.translate-range/1).")
@click.option("--step", default="0x1000", show_default=True, metavar="BYTES",
              help="The distance between addresses of a --to range.")
@input_errors
def translate(va: str, case_file: str | None, reg_items: tuple[str, ...], el: int, access: str,
              pan: bool, stage1_only: bool, explain: bool, as_json: bool, features: str,
              allow_reserved: bool, svg_file: str | None, end: str | None, step: str) -> None:
    """Translate one VA (or, with --to, a range) through the regime the registers describe.

    Registers not given take the at-case defaults (MMUs off) and the output says so.
    The whole output is built before anything is printed or written.
    """
    from s2mmu.arch.atcase import load_memory
    from s2mmu.arch.explain import explain_lines, headline, trace_translation
    from s2mmu.arch.memory import PhysMem

    addr = parse_int(va, "VA")
    check_u64(addr, "VA")
    values = parse_reg_options(reg_items)
    case_name = None
    if case_file:
        case = pick_case(case_file)
        case_name = case.name
        regs = SysRegs.from_mapping({**case.regs.to_mapping(), **values})
        given = frozenset(case.given) | frozenset(values)
        mem = load_memory(case)
    else:
        regs, mem, given = SysRegs.from_mapping(values), PhysMem(), frozenset(values)
    write, ifetch = ACCESS[access]
    acc = acc_ifetch(el) if ifetch else acc_gpr(el, write, pan=pan)
    env = Env(mem, features_option(features))
    regime = regime_for(el, regs)
    impdef = impdef_register_encodings(regs, regime, addr, env.fs, env.choices)
    if impdef and not allow_reserved:
        raise InputError(f"{impdef[0]}; --allow-reserved accepts it")
    if end is not None:
        if explain or svg_file is not None:
            raise InputError("--to translates a range: --explain and --svg take one VA")
        translate_range_cmd(regs, regime, addr, parse_int(end, "--to"),
                            parse_int(step, "--step"), acc, env, stage1_only, as_json,
                            {"el": el, "access": access, "pan": pan, "case": case_name,
                             "features": features})
        return
    run = trace_translation(regs, regime, addr, acc, env, stage1_only=stage1_only, given=given)
    if as_json:
        from s2mmu.cli.arch_json import translate_doc

        doc = translate_doc(run, case_name, features)
    else:
        text = render.explain_text(explain_lines(run, walk=explain))
    if svg_file is not None:
        from s2mmu.cli.svg import walk_svg, write_atomic

        picture = walk_svg(headline(run), addr, list(run.steps), run.result, run.s1p, run.s2p,
                           env, abort=run.abort)
        try:
            write_atomic(svg_file, picture)
        except OSError as e:
            raise InputError(f"--svg {svg_file}: cannot write: {e.strerror or e}") from None
    if as_json:
        output.print_json(doc)
    else:
        render.console().print(text, end="", soft_wrap=True)


def translate_range_cmd(regs: SysRegs, regime: Any, start: int, end: int, step: int,
                        acc: AccessDescriptor, env: Env, stage1_only: bool, as_json: bool,
                        inp: dict[str, Any]) -> None:
    """Translate a range of addresses with the batch engine and print its runs."""
    from s2mmu.arch.params import stage2_enabled
    from s2mmu.cli.range_render import range_addresses, range_doc, range_text, translate_range

    vas = range_addresses(start, end, step)
    res, runs = translate_range(regs, regime, vas, acc, env, stage1_only)
    two = stage2_enabled(regs, regime) and not stage1_only
    if as_json:
        output.print_json(range_doc({"start": f"{start:#x}", "end": f"{end:#x}",
                                     "step": f"{step:#x}", "stage1_only": stage1_only,
                                     **inp}, res, runs))
        return
    what = "write" if acc.write else ("fetch" if acc.is_ifetch() else "read")
    title = (f"{start:#x}..{end:#x} step {step:#x}: {len(vas)} addresses, EL{acc.el} {what}, "
             f"{regime.value} regime{', stage 1 and 2' if two else ''}")
    render.console().print(range_text(title, res, runs, two), end="", soft_wrap=True,
                           markup=False, highlight=False)


def pick_case(spec: str) -> Any:
    """Return the case FILE#NAME names (the first case of FILE without #NAME).

    A path that exists as written is a file name even if it holds '#'.
    """
    path, name = spec, None
    if "#" in spec and not Path(spec).exists():
        path, _, name = spec.rpartition("#")
    cases = parse_cases(load_json(path))
    if not cases:
        raise InputError("the case file holds no case")
    if name is None:
        return cases[0]
    for c in cases:
        if c.name == name:
            return c
    raise InputError(f"{path}: no case named {name!r} (cases: "
                     f"{', '.join(repr(c.name) for c in cases)})")


GRANULES = {"4k": Granule.G4K, "16k": Granule.G16K, "64k": Granule.G64K}


@cli.command()
@click.argument("register", required=False)
@click.argument("value", required=False)
@click.option("--descriptor", help="Decode a translation table descriptor instead.")
@click.option("--level", type=click.IntRange(-1, 3), default=3, show_default=True)
@click.option("--granule", type=click.Choice(sorted(GRANULES)), default="4k", show_default=True)
@click.option("--stage", type=click.IntRange(1, 2), default=1, show_default=True)
@click.option("--ds", is_flag=True, help="TCR.DS/VTCR.DS=1 (FEAT_LPA2 52-bit form).")
@click.option("--e2h", is_flag=True, help="Decode TCR_EL2 with the E2H=1 layout.")
@click.option("--features", type=click.Choice(sorted(PRESETS)), default="qemu-max",
              show_default=True, help="Implemented features the value is read with.")
@click.option("--json", "as_json", is_flag=True, help="Print one s2mmu.decode/1 document.")
@input_errors
def decode(register: str | None, value: str | None, descriptor: str | None, level: int,
           granule: str, stage: int, ds: bool, e2h: bool, features: str,
           as_json: bool) -> None:
    """Decode a register value, or a descriptor, field by field with Arm's names."""
    from s2mmu.arch.descriptors import descriptor_view
    from s2mmu.arch.regdecode import decode_register, register_layout
    from s2mmu.cli import decode_render, output

    fs = features_option(features)
    if descriptor is not None and register is not None:
        raise InputError("decode takes REGISTER VALUE or --descriptor VALUE, not both")
    if descriptor is not None:
        raw = parse_int(descriptor, "descriptor")
        check_u64(raw, "descriptor")
        g = GRANULES[granule]
        if ds and not fs.has("FEAT_LPA2"):
            raise InputError(f"--ds needs FEAT_LPA2, which --features {features} does not have "
                             "(without it DS is treated as 0: ASL AArch64.GetS1TTWParams)")
        if level == -1 and not (ds and g is Granule.G4K):
            raise InputError("level -1 exists only with the 4KB granule and DS=1 (FEAT_LPA2)")
        if level == 0 and g is Granule.G64K:
            raise InputError("level 0 does not exist with the 64KB granule: its walks start "
                             "at level 1 or below (ASL AArch64.S1StartLevel, "
                             "AArch64.S2StartLevel)")
        ctx = DescContext(g, ds, fs.has("FEAT_LPA"), stage, fs.pa_max() >= 52)
        view = descriptor_view(raw, level, ctx)
        if as_json:
            output.print_json(decode_render.descriptor_json(view, granule, ds, features))
        else:
            render.console().print(decode_render.descriptor_text(view, granule, ds, features))
        return
    if register is None or value is None:
        raise InputError("decode needs REGISTER VALUE, or --descriptor VALUE")
    name = register.upper()
    if name not in REGISTERS:
        raise InputError(f"unknown register {shorten(register)} "
                         f"(known: {', '.join(sorted(REGISTERS))})")
    raw = parse_int(value, name)
    if raw < 0 or raw >> 64:
        raise InputError(f"{name}: value {raw:#x} does not fit in 64 bits")
    spec = register_layout(name, raw, e2h)
    assert spec is not None
    decoded = decode_register(spec, raw, fs)
    if as_json:
        output.print_json(decode_render.register_json(name, decoded, features))
    else:
        render.console().print(render.register_table(decoded, name, features))


def _add_optional_commands() -> None:
    """Attach the commands of later layers."""
    try:
        from s2mmu.cli.conformance_cmd import conformance, qemu_at
    except ImportError:
        return
    cli.add_command(conformance)
    cli.add_command(qemu_at)
    from s2mmu.cli.race_cmd import race

    cli.add_command(race)


_add_optional_commands()


def _add_dump_command() -> None:
    """Attach `s2mmu dump` (s2mmu.cli.dump_cmd)."""
    from s2mmu.cli.dump_cmd import dump

    cli.add_command(dump)


_add_dump_command()


def _add_kernel_command() -> None:
    """Attach `s2mmu kernel` (s2mmu.cli.kernel_cmd: the kernel's pgtable.c as an oracle)."""
    from s2mmu.cli.kernel_cmd import kernel

    cli.add_command(kernel)


_add_kernel_command()


def _add_profiles_command() -> None:
    """Attach `s2mmu profiles` (s2mmu.cli.profiles_cmd: the kernel releases' rules)."""
    from s2mmu.cli.profiles_cmd import profiles

    cli.add_command(profiles)


_add_profiles_command()


def _add_real_command() -> None:
    """Attach `s2mmu real` (s2mmu.cli.real_cmd: scenarios on real KVM/arm64 under QEMU)."""
    from s2mmu.cli.real_cmd import real

    cli.add_command(real)


_add_real_command()


def main() -> None:
    """Run the command line; a reader that goes away (| head) ends it quietly."""
    try:
        cli()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(141)

