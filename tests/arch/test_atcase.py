"""AT case files: parsing (errors are one line naming the field and value), running, output."""

import json
from pathlib import Path

import pytest

from s2mmu.arch.at import AtOp
from s2mmu.arch.atcase import (
    load_memory,
    parse_case,
    parse_cases,
    parse_int,
    run_case,
    run_cases,
)
from s2mmu.arch.errors import InputError

EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "formats" / "examples"

CASE = {
    "name": "s1_4k_48bit",
    "el": "EL2",
    "regs": {"SCTLR_EL1": "0x30d00801", "TCR_EL1": "0x580903510", "MAIR_EL1": "0x4404ff",
             "TTBR0_EL1": "0x60000000"},
    "memory": [
        {"pa": "0x60000008", "words": ["0x60001003"]},
        {"pa": "0x60001008", "words": ["0x60002003"]},
        {"pa": "0x60002008", "words": ["0x60003003"]},
        {"pa": "0x60003008", "bytes": "0307009000000000"},
    ],
    "ops": [{"op": "S1E1R", "va": "0x8040201000"},
            ["S1E1W", "0x8040201008"],
            {"op": "S1E1R", "va": "0x8040202000", "el": "EL1", "pan": 1}],
}


def error(obj) -> str:
    with pytest.raises(InputError) as e:
        parse_cases(obj)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def case(**changes):
    c = json.loads(json.dumps(CASE))
    c.update(changes)
    return c


# ---------------------------------------------------------------- parsing

def test_integers_in_every_accepted_form():
    assert parse_int(16, "x") == 16
    assert parse_int("0x1_0000", "x") == 0x10000
    assert parse_int("1_000", "x") == 1000
    assert parse_int(" 0X10 ", "x") == 16


def test_file_shapes():
    assert len(parse_cases(CASE)) == 1
    assert len(parse_cases([CASE, CASE])) == 2
    assert len(parse_cases({"cases": [CASE]})) == 1


def test_parsed_case():
    c = parse_case(case(comment="ignored", expect=[]))
    assert c.name == "s1_4k_48bit"
    assert c.regs.TCR_EL1 == 0x580903510
    assert c.regs.HCR_EL2 == 0x80000000           # default: RW
    assert [(o.op, o.va, o.el, o.pan) for o in c.ops] == [
        (AtOp.S1E1R, 0x8040201000, 2, False), (AtOp.S1E1W, 0x8040201008, 2, False),
        (AtOp.S1E1R, 0x8040202000, 1, True)]
    assert c.extra == {"comment": "ignored", "expect": []}
    mem = load_memory(c)
    assert mem.read64(0x60003008) == 0x90000703


def test_hcr_rw_is_always_set():
    c = parse_case(case(regs={"HCR_EL2": "0x1"}))
    assert c.regs.HCR_EL2 == 0x80000001


def test_bytes_as_list():
    c = parse_case(case(memory=[{"pa": 0x1000, "bytes": [1, 2, 3]}]))
    assert load_memory(c).read_bytes(0x1000, 3) == b"\x01\x02\x03"


# Error messages are part of the interface.
@pytest.mark.parametrize(("obj", "msg"), [
    ("nope", "an AT case file holds an object or a list, got str"),
    ([3], "cases[0]: expected an object, got int"),
    (case(el="EL4"), "case 's1_4k_48bit'.el: el must be EL0, EL1, EL2 or EL3, got 'EL4'"),
    (case(pan=2), "case 's1_4k_48bit'.pan: pan must be 0 or 1, got 2"),
    (case(regs=[1]), "case 's1_4k_48bit'.regs: expected an object"),
    (case(regs={"TCR_EL1": "zz"}),
     "case 's1_4k_48bit'.regs.TCR_EL1: expected an integer (number, \"0x...\" or \"123\"), "
     "got 'zz'"),
    (case(regs={"TCR_EL1": True}),
     "case 's1_4k_48bit'.regs.TCR_EL1: expected an integer, got True"),
    (case(regs={"TCR_EL1": "0x1_0000_0000_0000_0000"}),
     "case 's1_4k_48bit'.regs: TCR_EL1: value 0x10000000000000000 does not fit in 64 bits"),
    (case(ops={"op": "S1E1R"}), "case 's1_4k_48bit'.ops: expected a list"),
    (case(ops=[["S1E1R"]]), "case 's1_4k_48bit'.ops[0]: a list op is [\"OP\", va]"),
    (case(ops=[{"op": "S1E1R"}]), "case 's1_4k_48bit'.ops[0]: expected an object with 'op' "
                                  "and 'va'"),
    (case(ops=[{"op": 5, "va": 0}]), "case 's1_4k_48bit'.ops[0].op: expected a string"),
    (case(ops=[{"op": "S1E1R", "va": "0x1_0000_0000_0000_0000"}]),
     "case 's1_4k_48bit'.ops[0].va: 0x10000000000000000 is not a 64-bit address"),
    (case(ops=[{"op": "S1E1R", "va": 0, "el": "EL0"}]),
     "case 's1_4k_48bit'.ops[0].el: el must be EL1, EL2 or EL3, got 'EL0' (EL0 is for "
     "accesses: LDR, STR, FETCH)"),
    (case(memory={}), "case 's1_4k_48bit'.memory: expected a list, got dict"),
    (case(memory=[{"words": []}]), "case 's1_4k_48bit'.memory[0]: expected an object with "
                                   "'pa' and 'words' or 'bytes'"),
    (case(memory=[{"pa": 0}]), "case 's1_4k_48bit'.memory[0]: needs 'words' or 'bytes'"),
    (case(memory=[{"pa": 0, "words": "0x1"}]), "case 's1_4k_48bit'.memory[0].words: "
                                               "expected a list"),
    (case(memory=[{"pa": 0, "words": ["0x1_0000_0000_0000_0000"]}]),
     "case 's1_4k_48bit'.memory[0].words[0]: '0x1_0000_0000_0000_0000' does not fit in "
     "64 bits"),
    (case(memory=[{"pa": 0, "words": [-1]}]),
     "case 's1_4k_48bit'.memory[0].words[0]: -1 does not fit in 64 bits"),
    (case(memory=[{"pa": 0, "bytes": "xyz"}]),
     "case 's1_4k_48bit'.memory[0].bytes: not a hex string"),
    (case(memory=[{"pa": 0, "bytes": [256]}]),
     "case 's1_4k_48bit'.memory[0].bytes: expected a hex string or a list of byte values"),
    (case(memory=[{"pa": "0xF_FFFF_FFFF_FFFC", "words": [0]}]),
     "case 's1_4k_48bit'.memory[0]: pa 0xffffffffffffc (+8 bytes) is outside the 52-bit PA "
     "space"),
])
def test_parse_errors(obj, msg):
    assert error(obj) == msg


def test_unknown_register_error_names_case_and_register():
    msg = error(case(regs={"TCR_EL3": 0}))
    assert msg.startswith("case 's1_4k_48bit'.regs: unknown register 'TCR_EL3' (known: ")


def test_unknown_op_error_names_case_and_op():
    msg = error(case(ops=[["S1E3R", 0]]))
    assert msg.startswith("case 's1_4k_48bit'.ops[0].op: unknown AT operation 'S1E3R' (known: ")


# ---------------------------------------------------------------- running

def test_run_case_output_format():
    out = run_case(parse_case(CASE))
    assert out["name"] == "s1_4k_48bit"
    assert out["ops"][0] == {"op": "S1E1R", "va": "0x8040201000", "el": "EL2", "pan": 0,
                             "outcome": "par", "PAR_EL1": "0xff00000090000b80"}
    assert out["ops"][1]["PAR_EL1"] == "0xff00000090000b80"
    assert out["memory_changes"] == []


def test_run_case_exception_output():
    c = case(regs={**CASE["regs"], "HCR_EL2": "0x80000001", "VTCR_EL2": "0x80023558",
                   "VTTBR_EL2": "0x70000000"},
             ops=[{"op": "S1E1R", "va": "0x8040201000", "el": "EL1"},
                  {"op": "S12E1R", "va": "0x0", "el": "EL1"}])
    out = run_case(parse_case(c))
    # Stage 2 has no tables (VTTBR points at zeros): the first stage-1 table read (IPA
    # 0x60000008) faults at stage-2 level 1.
    assert out["ops"][0] == {"op": "S1E1R", "va": "0x8040201000", "el": "EL1", "pan": 0,
                             "outcome": "exception", "taken_to": "EL2", "ESR": "0x920001c5",
                             "FAR": "0x8040201000", "HPFAR_EL2": "0x600000"}
    assert out["ops"][1] == {"op": "S12E1R", "va": "0x0", "el": "EL1", "pan": 0,
                             "outcome": "exception", "taken_to": "EL1", "ESR": "0x2000000"}


def test_memory_changes_in_op_order():
    c = case(regs={**CASE["regs"], "TCR_EL1": hex(0x580903510 | (1 << 39))},
             memory=CASE["memory"][:3] + [{"pa": "0x60003008", "words": ["0x90000303"]}])
    out = run_case(parse_case(c))
    assert out["memory_changes"] == [
        {"pa": "0x60003008", "before": "0x90000303", "after": "0x90000703", "op": 0}]


def test_validation_examples_reproduce_qemu_bit_for_bit():
    if not EXAMPLES.is_dir():
        pytest.skip("shared/formats/examples is not beside the checkout")
    cases = json.loads((EXAMPLES / "validation.cases.json").read_text())
    expect = json.loads((EXAMPLES / "validation.qemu.json").read_text())
    got = run_cases(cases)
    assert [c["ops"] for c in got["cases"]] == [c["ops"] for c in expect["cases"]]
    assert [c["memory_changes"] for c in got["cases"]] == [
        c["memory_changes"] for c in expect["cases"]]
