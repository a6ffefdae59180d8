"""The case generator: reproducible, every family, cases QEMU can hold and both sides parse."""

from __future__ import annotations

import pytest

from s2mmu.arch import atcase
from s2mmu.arch.errors import InputError
from s2mmu.conformance.casefile import parse_cases
from s2mmu.conformance.generator import FAMILIES, family_names, generate_case, generate_cases
from s2mmu.conformance.qemu import memory_skip_reason


def test_same_seed_same_cases() -> None:
    assert generate_cases(40, seed=7) == generate_cases(40, seed=7)


def test_different_seeds_differ() -> None:
    assert generate_cases(5, seed=1) != generate_cases(5, seed=2)


def test_a_case_depends_only_on_family_seed_and_index() -> None:
    whole = generate_cases(len(FAMILIES) * 2, seed=3)
    index = len(FAMILIES) + 4
    family = whole[index]["family"]
    assert generate_case(family, 3, index) == whole[index]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_gives_cases_within_qemu_ram_that_both_sides_parse(family: str) -> None:
    cases = [generate_case(family, seed=11, index=i) for i in range(12)]
    for case in cases:
        assert case["family"] == family
        (parsed,) = parse_cases(case)
        assert memory_skip_reason(parsed) is None
        assert len(atcase.parse_cases(case)) == 1
        assert parsed.ops


def test_el1_and_el2_execution_with_translation_says_where_the_stub_is() -> None:
    cases = [generate_case("el1_exec", 5, i) for i in range(40)]
    assert any("stub_va_el1" in case.get("harness", {}) for case in cases)
    assert any(op["el"] == "EL1" for case in cases for op in case["ops"])


def test_unknown_family_is_one_line_listing_the_known_ones() -> None:
    with pytest.raises(InputError, match=r"^unknown case family 'nope' \(known: s1_4k, "):
        family_names("s1_4k,nope")


@pytest.mark.parametrize(("family", "ops"), [
    ("loads", {"LDR"}), ("stores", {"STR", "LDR"}), ("fetches", {"FETCH"}),
    ("exclusives", {"LDXR", "LDAXR", "STXR", "LDR"}),
    ("atomics", {"LDADD", "SWP", "CAS", "LDR"}),
    ("alignment", {"LDR", "STR", "LDXR", "SWP"})])
def test_access_families_make_only_their_accesses_at_el0_to_el2(family: str,
                                                                 ops: set[str]) -> None:
    cases = [generate_case(family, seed=4, index=i) for i in range(30)]
    drawn = {op["op"] for case in cases for op in case["ops"]}
    assert drawn == ops
    assert {op["el"] for case in cases for op in case["ops"]} == {"EL0", "EL1", "EL2"}


def test_access_outputs_land_in_ram_the_model_reads_as_data() -> None:
    # The model's successful loads read the data pages the generator filled: at least
    # one non-zero value, and every output inside QEMU virt RAM.
    values = []
    for i in range(40):
        answer = atcase.run_case(atcase.parse_cases(generate_case("loads", 9, i))[0])
        values += [int(op["value"], 16) for op in answer["ops"] if op["outcome"] == "load"]
    assert values and any(values)


def test_alignment_family_misaligns_accesses_and_sets_sctlr_a() -> None:
    cases = [generate_case("alignment", 6, i) for i in range(30)]
    vas = [int(op["va"], 16) for case in cases for op in case["ops"]]
    assert sum(va % 8 != 0 for va in vas) > len(vas) // 3
    sctlr = [int(case["regs"].get(name, "0"), 16) for case in cases
             for name in ("SCTLR_EL1", "SCTLR_EL2")]
    assert any(v >> 1 & 1 for v in sctlr) and not all(v >> 1 & 1 for v in sctlr)
    # Every other access family keeps its accesses aligned and SCTLR_ELx.A clear.
    for family in ("loads", "stores", "fetches"):
        for i in range(10):
            case = generate_case(family, 6, i)
            size = 4 if family == "fetches" else 8
            assert all(int(op["va"], 16) % size == 0 for op in case["ops"])


@pytest.mark.parametrize("family", ["stores", "exclusives", "atomics", "alignment"])
def test_stores_go_above_the_given_words(family: str) -> None:
    for i in range(20):
        case = generate_case(family, 2, i)
        (parsed,) = parse_cases(case)
        given = {pa for pa, _ in parsed.words}
        answer = atcase.run_case(atcase.parse_cases(case)[0])
        changed = {int(c["pa"], 16) for c in answer["memory_changes"]}
        assert changed <= given
