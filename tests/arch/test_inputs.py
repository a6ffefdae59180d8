"""The input layer: limits checked before the parsers, one-line shortened refusals."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s2mmu.arch.errors import InputError
from s2mmu.arch.inputs import (
    MAX_DEPTH,
    MAX_FILE_BYTES,
    MAX_INT_DIGITS,
    MAX_STRING_CHARS,
    escape,
    int_of_text,
    load_json,
    loads_json,
    loads_toml,
    one_line,
    range_beyond,
    read_text,
    shorten,
    shorten_hex,
    size_of_text,
)

ONES = "1" * 5000


def refusal(fn, *args) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError) as e:
        fn(*args)
    return str(e.value)


# ---------------------------------------------------------------- shorten, escape


def test_shorten_keeps_short_values_as_their_repr() -> None:
    assert [shorten(v) for v in (5, -3, "EL1", True, [1, 2])] == ["5", "-3", "'EL1'", "True",
                                                                    "[1, 2]"]


def test_shorten_cuts_a_long_integer_to_its_ends_with_the_digit_count() -> None:
    assert shorten(int(ONES[:3000])) == "1111...1111 (3000 digits)"
    assert shorten_hex(int("0x" + ONES, 16)) == "0x1111...1111 (5000 digits)"
    # too long for decimal (Python refuses str() beyond 4,300 digits): hex instead
    assert shorten(int(ONES, 16)) == "0x1111...1111 (5000 digits)"


def test_shorten_cuts_a_long_string_and_escapes_a_newline() -> None:
    assert shorten("a\nb") == "'a\\nb'"
    assert shorten("x" * 100) == "'xxxxxxx...xxxxxxx' (102 characters)"
    assert shorten(list(range(1000))) == "a list of 1000 items"


def test_escape_makes_control_characters_visible_on_one_line() -> None:
    assert escape("bad\nname\t\x7f\u2028.json") == "bad\\nname\\t\\x7f\\u2028.json"
    assert escape("plain/path.json") == "plain/path.json"


def test_one_line_shortens_long_numbers_and_bounds_the_message() -> None:
    assert one_line(f"x: '{ONES}' is not\nan integer") == \
        "x: '1111...1111 (5000 digits)' is not\\nan integer"
    assert one_line("0x" + "ab" * 30) == "0xabab...abab (60 digits)"
    assert one_line("test_some_long_pytest_directory_name_that_is_not_a_number0") == \
        "test_some_long_pytest_directory_name_that_is_not_a_number0"
    long = one_line("word " * 1000)
    assert long.endswith("... (5000 characters)") and len(long) < 1100


@given(st.text())
def test_shorten_and_one_line_always_give_one_line(text: str) -> None:
    assert "\n" not in shorten(text) and "\r" not in shorten(text)
    assert "\n" not in one_line(text) and "\r" not in one_line(text)


# ---------------------------------------------------------------- integers as text


def test_int_of_text_reads_hex_binary_octal_decimal_with_underscores() -> None:
    assert [int_of_text(t, "f") for t in ("0x4000_0000", "0b101", "0o17", "42", " -7 ")] == \
        [0x4000_0000, 5, 15, 42, -7]


def test_int_of_text_refuses_more_than_max_int_digits_before_int() -> None:
    assert MAX_INT_DIGITS == 64
    assert refusal(int_of_text, ONES, "--reg TCR_EL1") == \
        "--reg TCR_EL1: 1111...1111 (5000 digits) has more than 64 digits (MAX_INT_DIGITS)"
    assert refusal(int_of_text, "0x" + ONES, "VA") == \
        "VA: 0x1111...1111 (5000 digits) has more than 64 digits (MAX_INT_DIGITS)"
    assert int_of_text("0b" + "1" * 64, "f") == (1 << 64) - 1


def test_int_of_text_refuses_non_integers_with_a_short_value() -> None:
    assert refusal(int_of_text, "0xzz", "VA") == \
        "VA: expected an integer (number, \"0x...\" or \"123\"), got '0xzz'"
    assert refusal(int_of_text, "\u0661\u0662", "VA") == \
        "VA: expected an integer (number, \"0x...\" or \"123\"), got '\u0661\u0662'"


def test_size_of_text_reads_sizes_and_refuses_a_huge_one() -> None:
    assert [size_of_text(t) for t in ("4K", "2M", "1GiB", "3T", "abc")] == \
        [4096, 2 << 20, 1 << 30, 3 << 40, None]
    assert refusal(size_of_text, ONES + "K") == \
        "1111...1111 (5000 digits) has more than 64 digits (MAX_INT_DIGITS)"


def test_range_beyond_is_about_the_end_of_the_range() -> None:
    assert not range_beyond((1 << 48) - 0x1000, 0x1000, 48)
    assert range_beyond((1 << 48) - 0x1000, 0x2000, 48)


# ---------------------------------------------------------------- texts before parsing


def test_json_nested_deeper_than_max_depth_is_refused_before_json_recurses() -> None:
    assert MAX_DEPTH == 32
    deep = "[" * 5000 + "]" * 5000
    assert refusal(loads_json, deep, "f.json") == \
        "f.json:1: nested deeper than 32 levels of arrays and objects (MAX_DEPTH)"
    assert loads_json("[" * 32 + "]" * 32, "f.json") is not None


def test_json_depth_names_the_key_and_line() -> None:
    text = '{\n "cases": ' + "[" * 40 + "]" * 40 + "}"
    assert refusal(loads_json, text, "f.json") == \
        "f.json:2: cases: nested deeper than 32 levels of arrays and objects (MAX_DEPTH)"


def test_brackets_and_digits_inside_strings_do_not_count() -> None:
    text = json.dumps({"name": "[" * 100 + ONES, "bytes": "ab" * 3000})
    assert loads_json(text, "f.json")["name"].startswith("[[[")


def test_json_number_of_5000_digits_is_refused_before_int() -> None:
    text = '{"regs": {"TCR_EL1": ' + ONES + "}}"
    assert refusal(loads_json, text, "f.json") == ("f.json:1: TCR_EL1: the number 1111...1111 "
                                                   "(5000 digits) has more than 64 digits "
                                                   "(MAX_INT_DIGITS)")


def test_toml_nested_900_deep_is_refused_before_tomllib_recurses() -> None:
    text = "[vm]\nx = " + "[" * 900 + "]" * 900 + "\n"
    assert refusal(loads_toml, text, "s.toml") == \
        "s.toml:2: vm.x: nested deeper than 32 levels of arrays and tables (MAX_DEPTH)"


def test_toml_huge_integer_names_the_table_entry_and_key() -> None:
    text = f'[[event]]\ndo = "check"\n[[event]]\ndo = "read"\nipa = 0x{ONES}\n'
    assert refusal(loads_toml, text, "s.toml") == ("s.toml:5: event[1].ipa: the number "
                                                   "0x1111...1111 (5000 digits) has more than "
                                                   "64 digits (MAX_INT_DIGITS)")


def test_toml_comments_and_strings_hide_brackets_and_digits() -> None:
    text = f'# {"[" * 100}\nname = "{ONES}"\nd = """\n{"{" * 50}\n"""\n'
    assert loads_toml(text, "s.toml")["name"] == ONES


def test_a_string_longer_than_max_string_chars_is_refused_with_its_path() -> None:
    text = json.dumps({"cases": [{"name": "n" * (MAX_STRING_CHARS + 1)}]})
    assert refusal(loads_json, text, "f.json") == (
        f"f.json: cases[0].name: a string of {MAX_STRING_CHARS + 1} characters is longer "
        f"than {MAX_STRING_CHARS} (MAX_STRING_CHARS): 'nnnnnnn...nnnnnnn' "
        f"({MAX_STRING_CHARS + 3} characters)")


def test_invalid_json_and_toml_are_one_line_with_the_line() -> None:
    assert refusal(loads_json, '{\n "a": [,]\n}', "f.json") == \
        "f.json:2: not valid JSON (column 8: Expecting value)"
    assert refusal(loads_toml, "a = 1\nb = \n", "s.toml").startswith("s.toml:2: not valid TOML")


# ---------------------------------------------------------------- files


def test_read_text_names_an_escaped_file_that_cannot_be_read(tmp_path: Path) -> None:
    name = str(tmp_path / "no\nsuch.json")
    assert refusal(read_text, name) == \
        f"{escape(name)}: cannot read: No such file or directory"
    assert "\n" not in refusal(read_text, name)


def test_read_text_refuses_non_utf8_naming_the_byte(tmp_path: Path) -> None:
    f = tmp_path / "bin.json"
    f.write_bytes(b"{}\xff")
    assert refusal(read_text, f) == f"{f}: not UTF-8 text (byte 2: 0xff)"


def test_read_text_refuses_a_file_larger_than_max_file_bytes(tmp_path: Path) -> None:
    f = tmp_path / "big.json"
    with f.open("wb") as out:
        out.truncate(MAX_FILE_BYTES + 1)
    assert refusal(read_text, f) == (f"{f}: a file of {MAX_FILE_BYTES + 1} bytes is larger "
                                     f"than {MAX_FILE_BYTES} (MAX_FILE_BYTES)")


def test_load_json_reads_a_bounded_file(tmp_path: Path) -> None:
    f = tmp_path / "ok.json"
    f.write_text('{"cases": []}')
    assert load_json(f) == {"cases": []}


def test_nothing_in_the_layer_depends_on_the_recursion_limit() -> None:
    limit = sys.getrecursionlimit()
    try:
        sys.setrecursionlimit(200)
        assert refusal(loads_json, "[" * 5000, "f.json").endswith("(MAX_DEPTH)")
    finally:
        sys.setrecursionlimit(limit)
