"""Malformed files against every command that reads one: one line, exit 2, nothing else.

The contract for a refused file: exactly one line on stderr starting "s2mmu: error: ",
exit status 2, nothing on stdout, no --html/--svg file written. The commands that read a
file: run (scenario TOML), at, translate --case, conformance --replay and qemu-at (AT case
JSON, shared/formats/at-case.md); conformance and qemu-at refuse a bad file before they
need QEMU.

Hypothesis mutates valid files (generated scenarios, small AT cases) by one class at a
time: unknown field, wrong type, value beyond 64 bits, a byte that is not UTF-8,
truncation. The classes the project knows to fail today (deep nesting, integers over
4,300 digits, long values echoed, newlines in file names, a PFNMAP BAR beyond the host
PA size) and the new ones this fuzzer found are their own xfail(strict=True) tests below.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st

from s2mmu.cli.main import cli
from tests.scenario.strategies import Generated, scenarios

CI = settings(deadline=None, derandomize=True, database=None)
LONG = 5000
MAX_LINE = 1000
"""An error line longer than this echoes a value it should have shortened."""

GOOD_SCENARIO = """[host]
features = ["fwb", "dic"]

[[vma]]
start = 0x7f0000000000
size = "2M"

[[memslot]]
id = 0
gpa = 0x40000000
size = "2M"
hva = 0x7f0000000000

[[event]]
do = "write"
ipa = 0x40000000
"""
GOOD_CASE = {"name": "c", "regs": {"SCTLR_EL1": "0x30d00801", "TCR_EL1": "0x580903510",
                                   "TTBR0_EL1": "0x60000000"},
             "memory": [{"pa": "0x60000008", "words": ["0x60001003"]}],
             "ops": [{"op": "S1E1R", "va": "0x8040202000"}]}


def invoke(args: list[str]) -> Result:
    return CliRunner().invoke(cli, args)


def assert_refused(result: Result, written: Path | None = None) -> str:
    """Assert the refusal contract; return the message after 's2mmu: error: '."""
    exc = result.exception
    assert exc is None or isinstance(exc, SystemExit), f"traceback: {exc!r}"
    assert result.exit_code == 2, (result.exit_code, result.stdout[-300:], result.stderr[-300:])
    assert result.stdout == ""
    err = result.stderr
    assert err.startswith("s2mmu: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert len(err) <= MAX_LINE, f"{len(err)} characters: {err[:200]}..."
    if written is not None:
        assert not written.exists()
    return err[len("s2mmu: error: "):-1]


# -- the commands that read a file ------------------------------------------------------------

def toml_commands(f: Path, out: Path) -> list[tuple[list[str], Path | None]]:
    return [(["run", str(f)], None), (["run", str(f), "--json"], None),
            (["run", str(f), "--html", str(out)], out)]


def json_commands(f: Path, out: Path) -> list[tuple[list[str], Path | None]]:
    return [(["at", str(f)], None), (["at", str(f), "--json"], None),
            (["translate", "0x8040202000", "--case", str(f), "--svg", str(out)], out),
            (["conformance", "--replay", str(f)], None), (["qemu-at", str(f)], None)]


def refused_everywhere(content: bytes | str, kind: str, name: str = "bad") -> list[str]:
    """Write content, run every command that reads such a file; return the messages."""
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / (name + (".toml" if kind == "toml" else ".json"))
        f.write_bytes(content.encode() if isinstance(content, str) else content)
        out = Path(tmp) / "out.html"
        commands = toml_commands if kind == "toml" else json_commands
        return [assert_refused(invoke(args), written) for args, written in commands(f, out)]


def test_the_good_files_are_accepted(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text(GOOD_SCENARIO)
    (tmp_path / "c.json").write_text(json.dumps(GOOD_CASE))
    assert invoke(["run", str(tmp_path / "s.toml")]).exit_code == 0
    assert invoke(["at", str(tmp_path / "c.json")]).exit_code == 0


# -- hypothesis: one mutation of a valid file -------------------------------------------------

def value_lines(text: str) -> list[int]:
    """Return the indices of `key = value` lines whose value is complete on the line."""
    lines = text.splitlines()
    return [i for i, line in enumerate(lines) if " = " in line and not line.startswith(" ")
            and not line.rstrip().endswith("[")]


def mutate_scenario(text: str, kind: str, pick: int) -> str:
    """Return text with one line mutated by kind (unknown field, wrong type, wide value)."""
    lines = text.splitlines()
    if kind == "unknown field":
        headers = [i for i, line in enumerate(lines) if line.startswith("[")]
        i = headers[pick % len(headers)]
        lines.insert(i + 1, "bogus_field = 1")
        return "\n".join(lines) + "\n"
    candidates = value_lines(text)
    if kind == "beyond 64 bits":
        candidates = [i for i in candidates if lines[i].split(" = ", 1)[1].startswith("0x")]
    i = candidates[pick % len(candidates)]
    key, value = lines[i].split(" = ", 1)
    if kind == "wrong type":
        new = "[1]" if value.startswith('"') else '"zz"'
    else:
        new = "0x1_0000_0000_0000_0000"
    lines[i] = f"{key} = {new}"
    return "\n".join(lines) + "\n"


MUTATIONS = ["unknown field", "wrong type", "beyond 64 bits"]


@settings(CI, max_examples=60)
@given(scenarios(frozenset()), st.sampled_from(MUTATIONS), st.integers(0, 1000))
def test_a_mutated_scenario_is_refused_in_one_line(gen: Generated, kind: str, pick: int) -> None:
    bad = mutate_scenario(gen.text, kind, pick)
    with tempfile.TemporaryDirectory() as tmp:
        f, out = Path(tmp) / "bad.toml", Path(tmp) / "out.html"
        f.write_text(bad)
        msg = assert_refused(invoke(["run", str(f), "--html", str(out)]), out)
    assert msg.startswith(f"{f}:")
    want = {"unknown field": ("unknown field", "not a field of", "unknown table"),
            "wrong type": ("must be",), "beyond 64 bits": ("does not fit in 64 bits",)}[kind]
    assert any(w in msg for w in want), msg


@settings(CI, max_examples=40)
@given(scenarios(frozenset()), st.integers(0, 1 << 16), st.booleans())
def test_a_truncated_or_non_utf8_scenario_never_traces(gen: Generated, cut: int,
                                                       bad_byte: bool) -> None:
    data = gen.text.encode()
    cut %= len(data)
    data = data[:cut] + b"\xff" + data[cut:] if bad_byte else data[:cut]
    with tempfile.TemporaryDirectory() as tmp:
        f, out = Path(tmp) / "bad.toml", Path(tmp) / "out.html"
        f.write_bytes(data)
        result = invoke(["run", str(f), "--html", str(out)])
        if bad_byte or result.exit_code == 2:
            msg = assert_refused(result, out)
            assert not bad_byte or msg == f"{f}: not UTF-8 text (byte {cut})"
        else:
            assert result.exception is None or isinstance(result.exception, SystemExit)
            assert result.exit_code in (0, 1) and result.stdout


def at_cases() -> st.SearchStrategy[dict[str, object]]:
    """Small AT case objects: registers from the format's list, one to three ops."""
    regs = st.dictionaries(st.sampled_from(["SCTLR_EL1", "TCR_EL1", "MAIR_EL1", "TTBR0_EL1",
                                            "HCR_EL2", "VTCR_EL2", "VTTBR_EL2", "TCR_EL2"]),
                           st.integers(0, (1 << 64) - 1).map(hex), max_size=4)
    ops = st.lists(st.fixed_dictionaries({"op": st.sampled_from(["S1E1R", "S1E1W", "S12E1R",
                                                                 "S1E2R"]),
                                          "va": st.integers(0, (1 << 64) - 1).map(hex)}),
                   min_size=1, max_size=3)
    return st.fixed_dictionaries({"name": st.just("c"), "regs": regs, "ops": ops})


JSON_MUTATIONS: dict[str, tuple[Callable[[dict[str, object]], object], str]] = {
    "unknown register": (lambda c: {**c, "regs": {"NOPE_EL1": "0x1"}}, "unknown register"),
    "regs not an object": (lambda c: {**c, "regs": [1]}, "regs"),
    "op not a string": (lambda c: {**c, "ops": [{"op": 3, "va": "0x0"}]}, "op"),
    "va not an integer": (lambda c: {**c, "ops": [{"op": "S1E1R", "va": "zz"}]}, "va"),
    "va beyond 64 bits": (lambda c: {**c, "ops": [{"op": "S1E1R", "va": hex(1 << 64)}]}, "va"),
    "negative va": (lambda c: {**c, "ops": [{"op": "S1E1R", "va": -1}]}, "va"),
    "memory beyond the PA space": (
        lambda c: {**c, "memory": [{"pa": hex(1 << 52), "words": ["0x1"]}]}, "52-bit PA space"),
    "el out of range": (lambda c: {**c, "el": "EL9"}, "EL9"),
    "bytes not hex": (lambda c: {**c, "memory": [{"pa": "0x0", "bytes": "zz"}]}, "hex"),
    "not an object": (lambda c: 5, "case"),
}


@settings(CI, max_examples=30)
@given(at_cases(), st.sampled_from(sorted(JSON_MUTATIONS)))
def test_a_mutated_at_case_is_refused_in_one_line(case: dict[str, object], kind: str) -> None:
    mutate, want = JSON_MUTATIONS[kind]
    for msg in refused_everywhere(json.dumps(mutate(case)), "json"):
        assert want in msg, (kind, msg)


@settings(CI, max_examples=30)
@given(at_cases(), st.integers(0, 1 << 16))
def test_a_truncated_at_case_is_refused_in_one_line(case: dict[str, object], cut: int) -> None:
    text = json.dumps(case)
    text = text[:cut % len(text)]
    for msg in refused_everywhere(text, "json"):
        assert "not valid JSON" in msg or "not JSON" in msg, msg


def test_a_non_utf8_at_case_is_refused_by_every_command() -> None:
    for msg in refused_everywhere(b'{"name": "\xff"}', "json"):
        assert "UTF-8" in msg and "byte 10" in msg


def test_unknown_keys_of_an_at_case_are_ignored_as_the_format_says(tmp_path: Path) -> None:
    f = tmp_path / "c.json"
    f.write_text(json.dumps({**GOOD_CASE, "comment": "x", "expect": {"PAR_EL1": "0x0"}}))
    result = invoke(["at", str(f), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["cases"][0]["name"] == "c"


# -- known classes (issue 8), fixed in parallel -----------------------------------------------

def deep_json() -> str:
    return "[" * 5000 + "]" * 5000


@pytest.mark.xfail(strict=True, reason="known class: JSON nested a few thousand deep "
                   "(RecursionError in json.loads)")
def test_json_nested_5000_deep_is_refused() -> None:
    refused_everywhere(deep_json(), "json")


@pytest.mark.xfail(strict=True, reason="known class: TOML nested 900 deep (RecursionError in "
                   "tomllib)")
@pytest.mark.parametrize("nested", ["a = " + "[" * 900 + "]" * 900,
                                    "a = " + "{ b = " * 900 + "1" + " }" * 900],
                         ids=["array", "inline table"])
def test_toml_nested_900_deep_is_refused(nested: str) -> None:
    refused_everywhere(nested + "\n", "toml")


@pytest.mark.xfail(strict=True, reason="known class: JSON integer over 4,300 digits "
                   "(ValueError from int())")
def test_a_json_integer_of_5000_digits_is_refused() -> None:
    case = json.dumps(GOOD_CASE).replace('"0x8040202000"', "1" * LONG)
    refused_everywhere(case, "json")


@pytest.mark.xfail(strict=True, reason="known class: TOML integer over 4,300 digits "
                   "(ValueError from tomllib)")
def test_a_toml_integer_of_5000_digits_is_refused() -> None:
    refused_everywhere(GOOD_SCENARIO.replace("id = 0", "id = " + "1" * LONG), "toml")


@pytest.mark.xfail(strict=True, reason="known class: integer over 4,300 digits inside a size "
                   "string (ValueError from int() in Checker.size)")
def test_a_size_string_of_5000_digits_is_refused() -> None:
    refused_everywhere(GOOD_SCENARIO.replace('size = "2M"\n\n[[memslot]]',
                                             f'size = "{"1" * LONG}K"\n\n[[memslot]]'), "toml")


@pytest.mark.xfail(strict=True, reason="known class: 5,000-character values echoed in full "
                   "in errors")
@pytest.mark.parametrize("edit", [
    ('size = "2M"\n\n[[memslot]]', f'size = "2M"\nkind = "{"x" * LONG}"\n\n[[memslot]]'),
    ('size = "2M"\n\n[[memslot]]', f'size = "2M"\n{"k" * LONG} = 1\n\n[[memslot]]'),
    ("id = 0", "id = 0x" + "1" * LONG),
    ('ipa = 0x40000000', f'ipa = 0x40000000\nexpect = "{"y" * LONG}"'),
], ids=["string value", "key", "hex integer", "expect"])
def test_a_5000_character_scenario_value_is_shortened_in_the_error(edit: tuple[str, str]) -> None:
    refused_everywhere(GOOD_SCENARIO.replace(*edit), "toml")


@pytest.mark.xfail(strict=True, reason="known class: 5,000-character values echoed in full "
                   "in errors")
@pytest.mark.parametrize("case", [
    {**GOOD_CASE, "ops": [{"op": "X" * LONG, "va": "0x0"}]},
    {**GOOD_CASE, "regs": {"A" * LONG: "0x1"}},
    {**GOOD_CASE, "ops": [{"op": "S1E1R", "va": "0x" + "f" * LONG}]},
], ids=["op", "register name", "va"])
def test_a_5000_character_at_case_value_is_shortened_in_the_error(
        case: dict[str, object]) -> None:
    refused_everywhere(json.dumps(case), "json")


@pytest.mark.xfail(strict=True, reason="known class: a file name with a newline splits the "
                   "error line")
@pytest.mark.parametrize("kind, content", [("toml", "[host\n"), ("json", "{")])
def test_a_file_name_with_a_newline_keeps_the_error_on_one_line(kind: str,
                                                                content: str) -> None:
    refused_everywhere(content, kind, name="bad\nname")


PFNMAP_BEYOND = GOOD_SCENARIO.replace("[host]\n", "[host]\npa_bits = 44\n") + """
[[vma]]
start = 0x7f1000000000
size = "4K"
kind = "pfnmap"
pa = 0x100000000000               # 1 << 44: the first PA beyond a 44-bit host
"""


@pytest.mark.xfail(strict=True, reason="known class: PFNMAP pa beyond the host PA size "
                   "(accepted; stage 2 maps the PA truncated)")
@pytest.mark.parametrize("text", [
    PFNMAP_BEYOND,
    GOOD_SCENARIO + '\n[[event]]\ndo = "mmap"\nstart = 0x7f1000000000\nsize = "4K"\n'
                    'kind = "pfnmap"\npa = 0xfffffffffffff000\n',
], ids=["vma", "mmap event"])
def test_a_pfnmap_bar_beyond_the_host_pa_size_is_refused(text: str) -> None:
    msg, *_ = refused_everywhere(text, "toml")
    assert ".pa:" in msg


# -- new classes this fuzzer found ------------------------------------------------------------

@pytest.mark.xfail(strict=True, reason="NEW class: a host event whose range passes 2^64 is "
                   "accepted (munmap/madvise hva + size beyond 64 bits)")
@pytest.mark.parametrize("event", [
    'do = "munmap"\nhva = 0xfffffffffffff000\nsize = "1M"',
    'do = "read"\nipa = 0x40000000\nrace = { do = "munmap", hva = 0xfffffffffffff000, '
    'size = "1M" }',
], ids=["munmap", "race"])
def test_a_host_event_range_beyond_64_bits_is_refused(event: str) -> None:
    msg, *_ = refused_everywhere(GOOD_SCENARIO + "\n[[event]]\n" + event + "\n", "toml")
    assert "64 bits" in msg
