"""The harness's own case-file reader: defaults, memory words, pinned error messages."""

from __future__ import annotations

import pytest

from s2mmu.arch.errors import InputError
from s2mmu.conformance.casefile import REGISTER_DEFAULTS, parse_cases, parse_int


def test_integers_accept_numbers_hex_decimal_and_separators() -> None:
    assert parse_int(17, "x") == 17
    assert parse_int("0x1_0000", "x") == 0x10000
    assert parse_int("1_000", "x") == 1000


def test_bad_integer_names_the_field_and_value() -> None:
    with pytest.raises(InputError, match=r"^case 'c': pan: not an integer: 'one'$"):
        parse_cases({"name": "c", "pan": "one", "ops": []})


def test_registers_not_given_take_the_documented_defaults_and_rw_is_forced() -> None:
    (case,) = parse_cases({"regs": {"HCR_EL2": "0x1"}, "ops": []})
    assert case.regs["SCTLR_EL1"] == REGISTER_DEFAULTS["SCTLR_EL1"]
    assert case.regs["TCR_EL2"] == 0x80800000
    assert case.regs["HCR_EL2"] == 0x80000001
    assert case.regs["TTBR0_EL1"] == 0


def test_unknown_register_is_one_line_naming_it() -> None:
    with pytest.raises(InputError, match=r"unknown register 'TCR_EL3'"):
        parse_cases({"regs": {"TCR_EL3": 0}, "ops": []})


def test_unknown_op_is_one_line_naming_it() -> None:
    known = r"\(known: S1E0R, .*, S12E1W; accesses: LDR, STR, FETCH, LDXR, LDAXR, STXR, " \
        r"LDADD, SWP, CAS\)"
    with pytest.raises(InputError, match=rf"op 0: unknown AT operation 'S1E3R' {known}"):
        parse_cases({"ops": [["S1E3R", 0]]})


def test_memory_becomes_aligned_little_endian_words_without_zeros() -> None:
    (case,) = parse_cases({"memory": [
        {"pa": "0x1000", "words": ["0x11", "0"]},
        {"pa": "0x2004", "bytes": "aabb"},
        {"pa": "0x3000", "bytes": [1, 2, 3, 4, 5, 6, 7, 8]},
    ], "ops": []})
    assert case.words == ((0x1000, 0x11), (0x2000, 0xBBAA << 32), (0x3000, 0x0807060504030201))


def test_ops_inherit_case_el_and_pan_unless_given() -> None:
    (case,) = parse_cases({"el": "EL1", "pan": 1, "ops": [
        ["S1E1R", "0x1000"], {"op": "S1E2R", "va": 0, "el": "EL3", "pan": 0}]})
    assert [(op.el, op.pan) for op in case.ops] == [(1, 1), (3, 0)]


def test_a_file_may_hold_one_case_a_list_or_cases() -> None:
    one = {"name": "a", "ops": []}
    assert len(parse_cases(one)) == 1
    assert len(parse_cases([one, one])) == 2
    assert len(parse_cases({"cases": [one]})) == 1
