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
            assert not bad_byte or msg == f"{f}: not UTF-8 text (byte {cut}: 0xff)"
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


# -- known classes (issue 8), fixed: each pins the refusal's text --------------------------

def deep_json() -> str:
    return "[" * 5000 + "]" * 5000


def test_json_nested_5000_deep_is_refused() -> None:
    for msg in refused_everywhere(deep_json(), "json"):
        assert msg.endswith("/bad.json:1: nested deeper than 32 levels of arrays and objects "
                            "(MAX_DEPTH)"), msg


@pytest.mark.parametrize("nested", ["a = " + "[" * 900 + "]" * 900,
                                    "a = " + "{ b = " * 900 + "1" + " }" * 900],
                         ids=["array", "inline table"])
def test_toml_nested_900_deep_is_refused(nested: str) -> None:
    for msg in refused_everywhere(nested + "\n", "toml"):
        assert msg.endswith("/bad.toml:1: a: nested deeper than 32 levels of arrays and tables "
                            "(MAX_DEPTH)"), msg


def test_a_json_integer_of_5000_digits_is_refused() -> None:
    case = json.dumps(GOOD_CASE).replace('"0x8040202000"', "1" * LONG)
    for msg in refused_everywhere(case, "json"):
        assert msg.endswith("/bad.json:1: va: the number 1111...1111 (5000 digits) has more "
                            "than 64 digits (MAX_INT_DIGITS)"), msg


def test_a_toml_integer_of_5000_digits_is_refused() -> None:
    for msg in refused_everywhere(GOOD_SCENARIO.replace("id = 0", "id = " + "1" * LONG), "toml"):
        assert msg.endswith("/bad.toml:9: memslot[0].id: the number 1111...1111 (5000 digits) "
                            "has more than 64 digits (MAX_INT_DIGITS)"), msg


def test_a_size_string_of_5000_digits_is_refused() -> None:
    for msg in refused_everywhere(GOOD_SCENARIO.replace('size = "2M"\n\n[[memslot]]',
                                                        f'size = "{"1" * LONG}K"\n\n[[memslot]]'),
                                  "toml"):
        assert msg.endswith("/bad.toml:6: vma[0].size: 1111...1111 (5000 digits) has more than "
                            "64 digits (MAX_INT_DIGITS)"), msg




@pytest.mark.parametrize(("edit", "want"), [
    (('size = "2M"\n\n[[memslot]]', f'size = "2M"\nkind = "{"x" * LONG}"\n\n[[memslot]]'),
     "/bad.toml:7: vma[0].kind: must be one of anon, file, hugetlb, pfnmap, not "
     "'xxxxxxx...xxxxxxx' (5002 characters)"),
    (('size = "2M"\n\n[[memslot]]', f'size = "2M"\n{"k" * LONG} = 1\n\n[[memslot]]'),
     "/bad.toml:7: vma[0].kkkkkkkkkkkkkkkk...kkkkkkkk (5000 characters): unknown field (known: "
     "allow_any_uncached, hugetlb, kind, mem_type, mte_allowed, name, pa, size, start, thp, "
     "writable)"),
    (("id = 0", "id = 0x" + "1" * LONG),
     "/bad.toml:9: memslot[0].id: the number 0x1111...1111 (5000 digits) has more than 64 "
     "digits (MAX_INT_DIGITS)"),
    (('ipa = 0x40000000', f'ipa = 0x40000000\nexpect = "{"y" * LONG}"'),
     "/bad.toml:17: event[0].expect: must be one of completed, error, guest-fault, hwpoison, "
     "l1-s2-fault, mmio, nisv, resumed, retry, sea-dabt, sea-pabt, serror, size-fault, not "
     "'yyyyyyy...yyyyyyy' (5002 characters)"),
], ids=["string value", "key", "hex integer", "expect"])
def test_a_5000_character_scenario_value_is_shortened_in_the_error(edit: tuple[str, str],
                                                                   want: str) -> None:
    for msg in refused_everywhere(GOOD_SCENARIO.replace(*edit), "toml"):
        assert msg.endswith(want), msg


@pytest.mark.parametrize(("case", "want"), [
    ({**GOOD_CASE, "ops": [{"op": "X" * LONG, "va": "0x0"}]},
     "unknown AT operation 'XXXXXXX...XXXXXXX' (5002 characters) (known: "),
    ({**GOOD_CASE, "regs": {"A" * LONG: "0x1"}},
     "unknown register 'AAAAAAA...AAAAAAA' (5002 characters) (known: "),
    ({**GOOD_CASE, "ops": [{"op": "S1E1R", "va": "0x" + "f" * LONG}]},
     "va: 0xffff...ffff (5000 digits) has more than 64 digits (MAX_INT_DIGITS)"),
], ids=["op", "register name", "va"])
def test_a_5000_character_at_case_value_is_shortened_in_the_error(
        case: dict[str, object], want: str) -> None:
    for msg in refused_everywhere(json.dumps(case), "json"):
        assert msg.startswith("case 'c'") and want in msg, msg


@pytest.mark.parametrize(("kind", "content", "want"), [
    ("toml", "[host\n", "/bad\\nname.toml:1: not valid TOML: Expected ']' at the end of a "
                        "table declaration (at line 1, column 6)"),
    ("json", "{", "/bad\\nname.json:1: not valid JSON (column 2: Expecting property name "
                  "enclosed in double quotes)"),
])
def test_a_file_name_with_a_newline_keeps_the_error_on_one_line(kind: str, content: str,
                                                                want: str) -> None:
    for msg in refused_everywhere(content, kind, name="bad\nname"):
        assert msg.endswith(want), msg


PFNMAP_BEYOND = GOOD_SCENARIO.replace("[host]\n", "[host]\npa_bits = 44\n") + """
[[vma]]
start = 0x7f1000000000
size = "4K"
kind = "pfnmap"
pa = 0x100000000000               # 1 << 44: the first PA beyond a 44-bit host
"""


@pytest.mark.parametrize(("text", "want"), [
    (PFNMAP_BEYOND, "/bad.toml:23: vma[1].pa: 0x100000000000+0x1000 ends beyond the host's "
                    "44-bit PA space ([host] pa_bits)"),
    (GOOD_SCENARIO + '\n[[event]]\ndo = "mmap"\nstart = 0x7f1000000000\nsize = "4K"\n'
                     'kind = "pfnmap"\npa = 0xfffffffffffff000\n',
     "/bad.toml:23: event[1].pa: 0xfffffffffffff000+0x1000 ends beyond the host's 48-bit PA "
     "space ([host] pa_bits)"),
    (PFNMAP_BEYOND.replace("pa_bits = 44", "pa_bits = 52").replace(
        "pa = 0x100000000000 ", "pa = 0x1000000000000"),
     "/bad.toml:23: vma[1].pa: 0x1000000000000+0x1000 ends beyond the host's usable 48-bit PA "
     "space ([host] pa_bits = 52, but 4K pages without FEAT_LPA2 map at most 48 bits)"),
], ids=["vma", "mmap event", "above 2^48 on a 52-bit host"])
def test_a_pfnmap_bar_beyond_the_host_pa_size_is_refused(text: str, want: str) -> None:
    for msg in refused_everywhere(text, "toml"):
        assert msg.endswith(want), msg


# -- host events with ranges beyond 2^64: the kernel's -EINVAL ---------------------------------

def run_text(tmp_path: Path, text: str) -> str:
    """Run a scenario; it must hold (exit 0); return its text output."""
    f = tmp_path / "s.toml"
    f.write_text(text)
    result = invoke(["run", str(f)])
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize(("event", "want"), [
    ('do = "munmap"\nhva = 0xfffffffffffff000\nsize = "1M"',
     "munmap HVA 0xfffffffffffff000+1M: -EINVAL"),
    ('do = "madvise"\nhva = 0xfffffffffffff000\nsize = "1M"',
     "madvise HVA 0xfffffffffffff000+1M: -EINVAL"),
    ('do = "madvise"\nhva = 0x7f0000000000\nsize = 0xffffffffffffffff',
     "madvise HVA 0x7f0000000000+0xffffffffffffffff: -EINVAL"),
], ids=["munmap", "madvise", "madvise of size 2^64 - 1"])
def test_a_host_event_range_beyond_64_bits_is_einval(tmp_path: Path, event: str,
                                                     want: str) -> None:
    """munmap and madvise refuse a range that passes 2^64 (or whose page-aligned length
    wraps to 0) with -EINVAL at once; the step says so and nothing is unmapped."""
    out = run_text(tmp_path, GOOD_SCENARIO + "\n[[event]]\n" + event + "\n")
    assert f"[line  18] {want}\n" in out
    assert "stage-2 mappings: 1 x 4K" in out and "mmu_invalidate_seq: 0" in out


def test_a_racing_munmap_beyond_64_bits_unmaps_nothing(tmp_path: Path) -> None:
    out = run_text(tmp_path, GOOD_SCENARIO + '\n[[event]]\ndo = "read"\nipa = 0x40001000\n'
                   'race = { do = "munmap", hva = 0xfffffffffffff000, size = "1M" }\n'
                   'expect = "completed"\n')
    assert "[line  18] vCPU0 read IPA 0x40001000 -> completed (PA 0x1000001000)\n" in out
    assert "mmu_invalidate_seq: 0" in out
