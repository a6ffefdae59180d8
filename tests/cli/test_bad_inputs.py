"""Hostile or careless input to every command that reads a file or an integer option:
one line on stderr naming the field, the rule and a shortened value, exit status 2,
nothing on stdout and no output file written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from s2mmu.arch.inputs import MAX_STRING_CHARS
from s2mmu.cli.main import cli

ONES = "1" * 5000
LONG = MAX_STRING_CHARS + 1
LONG_SHOWN = f"'nnnnnnn...nnnnnnn' ({LONG + 2} characters)"

# Each JSON-reading command, given the case file F, and the output it must not write.
JSON_COMMANDS = {
    "at": lambda f, out: ["at", f, "--json"],
    "translate": lambda f, out: ["translate", "0x1000", "--case", f, "--svg", out],
    "conformance": lambda f, out: ["conformance", "--replay", f, "--keep-mismatches", out],
    "qemu-at": lambda f, out: ["qemu-at", f],
}

JSON_INPUTS = {
    "deep-json": ("[" * 5000 + "]" * 5000,
                  "{f}:1: nested deeper than 32 levels of arrays and objects (MAX_DEPTH)"),
    "huge-int-json": ('{"regs": {"TCR_EL1": ' + ONES + "}, \"ops\": []}",
                      "{f}:1: TCR_EL1: the number 1111...1111 (5000 digits) has more than 64 "
                      "digits (MAX_INT_DIGITS)"),
    "long-string-json": (json.dumps({"name": "n" * LONG}),
                         f"{{f}}: name: a string of {LONG} characters is longer than "
                         f"{MAX_STRING_CHARS} (MAX_STRING_CHARS): {LONG_SHOWN}"),
}


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def refused(args: list[str], message: str, out: Path | None = None) -> None:
    code, stdout, stderr = run(*args)
    assert (code, stdout, stderr) == (2, "", f"s2mmu: error: {message}\n")
    assert out is None or not out.exists()


@pytest.mark.parametrize("kind", sorted(JSON_INPUTS))
@pytest.mark.parametrize("command", sorted(JSON_COMMANDS))
def test_malformed_json_is_one_line_in_every_command(tmp_path: Path, command: str,
                                                     kind: str) -> None:
    text, message = JSON_INPUTS[kind]
    f = tmp_path / "case.json"
    f.write_text(text)
    out = tmp_path / "out"
    refused(JSON_COMMANDS[command](str(f), str(out)), message.format(f=f), out)


@pytest.mark.parametrize("command", sorted(JSON_COMMANDS))
def test_non_utf8_case_file_is_one_line_in_every_command(tmp_path: Path, command: str) -> None:
    f = tmp_path / "case.json"
    f.write_bytes(b'{"name": "\xff"}')
    out = tmp_path / "out"
    refused(JSON_COMMANDS[command](str(f), str(out)), f"{f}: not UTF-8 text (byte 10: 0xff)",
            out)


@pytest.mark.parametrize("command", sorted(JSON_COMMANDS))
def test_case_file_name_with_a_newline_is_escaped_on_one_line(tmp_path: Path,
                                                              command: str) -> None:
    f = tmp_path / "bad\nname.json"
    f.write_text("{")
    out = tmp_path / "out"
    shown = str(f).replace("\n", "\\n")
    refused(JSON_COMMANDS[command](str(f), str(out)),
            f"{shown}:1: not valid JSON (column 2: Expecting property name enclosed in double "
            "quotes)", out)


def test_missing_case_file_with_a_newline_in_its_name_is_one_line(tmp_path: Path) -> None:
    f = tmp_path / "no\nsuch.json"
    shown = str(f).replace("\n", "\\n")
    refused(["at", str(f)], f"{shown}: cannot read: No such file or directory")
    refused(["qemu-at", str(f)], f"qemu-at: Invalid value for 'FILE': File '{shown}' does not "
                                 "exist.")


def test_huge_integer_string_in_a_case_file_is_shortened(tmp_path: Path) -> None:
    f = tmp_path / "case.json"
    f.write_text(json.dumps({"name": "c", "regs": {"TCR_EL1": "0x" + ONES}, "ops": []}))
    refused(["at", str(f)], "case 'c'.regs.TCR_EL1: 0x1111...1111 (5000 digits) has more than "
                            "64 digits (MAX_INT_DIGITS)")
    refused(["qemu-at", str(f)], "case 'c': TCR_EL1: 0x1111...1111 (5000 digits) has more "
                                 "than 64 digits (MAX_INT_DIGITS)")


# ---------------------------------------------------------------- scenario files (TOML)

SCENARIO_HEAD = """[[vma]]
start = 0x7f0000000000
size = "4M"
"""

TOML_INPUTS = {
    "deep-toml": (f'[vm]\nipa_bits = 40\n[[event]]\ndo = "check"\nnote = {"[" * 900}'
                  f'{"]" * 900}\n',
                  "{f}:5: event[0].note: nested deeper than 32 levels of arrays and tables "
                  "(MAX_DEPTH)"),
    "huge-int-toml": (f"[vm]\nipa_bits = {ONES}\n",
                      "{f}:2: vm.ipa_bits: the number 1111...1111 (5000 digits) has more than "
                      "64 digits (MAX_INT_DIGITS)"),
    "huge-size-string": (SCENARIO_HEAD.replace('"4M"', f'"{ONES}K"'),
                         "{f}:3: vma[0].size: 1111...1111 (5000 digits) has more than 64 "
                         "digits (MAX_INT_DIGITS)"),
    "long-string-toml": (f'description = "{"n" * LONG}"\n',
                         f"{{f}}: description: a string of {LONG} characters is longer than "
                         f"{MAX_STRING_CHARS} (MAX_STRING_CHARS): {LONG_SHOWN}"),
    "wide-size": (SCENARIO_HEAD.replace('"4M"', "0x1" + "0" * 20),
                  "{f}:3: vma[0].size: 0x100000000000000000000 does not fit in 64 bits"),
}


@pytest.mark.parametrize("kind", sorted(TOML_INPUTS))
def test_malformed_scenario_is_one_line_and_writes_no_html(tmp_path: Path, kind: str) -> None:
    text, message = TOML_INPUTS[kind]
    f = tmp_path / "s.toml"
    f.write_text(text)
    html = tmp_path / "run.html"
    refused(["run", str(f), "--html", str(html)], message.format(f=f), html)
    refused(["run", str(f), "--json"], message.format(f=f))


def test_non_utf8_scenario_names_the_byte(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_bytes(b'name = "\xfe"\n')
    html = tmp_path / "run.html"
    refused(["run", str(f), "--html", str(html)], f"{f}: not UTF-8 text (byte 8: 0xfe)", html)


def test_scenario_name_with_a_newline_is_escaped_on_one_line(tmp_path: Path) -> None:
    f = tmp_path / "bad\nname.toml"
    f.write_text("[frobnicate]\n")
    shown = str(f).replace("\n", "\\n")
    refused(["run", str(f)], f"{shown}:1: frobnicate: unknown table (known: description, "
                             "event, host, kvm, memslot, name, nested, pkvm, pkvm_guest, vcpu, vm, "
                             "vma)")


# ---------------------------------------------------------------- integer options


@pytest.mark.parametrize(("args", "message"), [
    (["translate", "0", "--reg", f"TCR_EL1={ONES}"],
     "--reg TCR_EL1: 1111...1111 (5000 digits) has more than 64 digits (MAX_INT_DIGITS)"),
    (["translate", "0", "--reg", f"TCR_EL1=0x{ONES}"],
     "--reg TCR_EL1: 0x1111...1111 (5000 digits) has more than 64 digits (MAX_INT_DIGITS)"),
    (["translate", ONES], "VA: 1111...1111 (5000 digits) has more than 64 digits "
                          "(MAX_INT_DIGITS)"),
    (["translate", "0x1" + "0" * 60], "VA 0x1000...0000 (61 digits) is wider than 64 bits"),
    (["decode", "TCR_EL1", ONES], "TCR_EL1: 1111...1111 (5000 digits) has more than 64 digits "
                                  "(MAX_INT_DIGITS)"),
    (["decode", "--descriptor", "0x" + ONES], "descriptor: 0x1111...1111 (5000 digits) has "
                                              "more than 64 digits (MAX_INT_DIGITS)"),
    (["translate", "0", "--el", ONES], "translate: Invalid value for '--el': "
                                       "'1111...1111 (5000 digits)' is not a valid integer "
                                       "range."),
    (["translate", "0", "--reg", "TCR_EL1\nX=5"], "unknown register 'TCR_EL1\\nX' (known: "),
])
def test_integer_options_are_refused_in_one_short_line(args: list[str], message: str) -> None:
    code, stdout, stderr = run(*args)
    assert (code, stdout) == (2, "")
    assert stderr.startswith(f"s2mmu: error: {message}") and stderr.count("\n") == 1
    if message.endswith(("(MAX_INT_DIGITS)", "bits", "range.")):
        assert stderr == f"s2mmu: error: {message}\n"


def test_output_path_with_a_newline_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    scenario = Path(__file__).resolve().parents[1] / "scenarios" / "readonly_and_holes.toml"
    out = tmp_path / "no\ndir" / "run.html"
    shown = str(out).replace("\n", "\\n")
    refused(["run", str(scenario), "--html", str(out)],
            f"--html {shown}: cannot write: No such file or directory", out)
    refused(["translate", "0x1000", "--svg", str(out)],
            f"--svg {shown}: cannot write: No such file or directory", out)
