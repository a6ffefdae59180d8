"""The command line: output formats, exit statuses and pinned error messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from s2mmu.cli.main import cli

EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "formats" / "examples"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def cases_file() -> Path:
    path = EXAMPLES / "validation.cases.json"
    if not path.exists():
        pytest.skip("shared/formats/examples is not beside the checkout")
    return path


def test_at_json_reproduces_qemu_answers_for_the_shared_examples(cases_file: Path) -> None:
    code, out, _ = run("at", str(cases_file), "--json")
    assert code == 0
    want = json.loads((EXAMPLES / "validation.qemu.json").read_text())
    assert json.loads(out) == want


def test_at_table_names_each_op(cases_file: Path) -> None:
    code, out, _ = run("at", str(cases_file))
    assert code == 0
    assert "AT S1E1RP" in out and "PAR_EL1=0x000000000000081f" in out


def test_translate_explain_shows_every_level_and_the_af_update(cases_file: Path) -> None:
    code, out, _ = run("translate", "0x8040205000", "--case", str(cases_file),
                       "--reg", "TCR_EL1=0x8580903510", "--explain")
    assert code == 0
    for level in ("S1 L0", "S1 L1", "S1 L2", "S1 L3"):
        assert level in out
    assert "0x90003303 -> 0x90003703" in out


def test_translate_without_af_update_reports_access_flag_fault(cases_file: Path) -> None:
    code, out, _ = run("translate", "0x8040205000", "--case", str(cases_file))
    assert code == 0
    assert "Access flag fault, level 3" in out


def test_decode_register_names_fields() -> None:
    code, out, _ = run("decode", "ESR_EL2", "0x920001c7")
    assert code == 0
    assert "S1PTW" in out and "Translation fault, level 3" in out


def test_decode_descriptor_level_minus_one_needs_ds() -> None:
    code, _, err = run("decode", "--descriptor", "0x3", "--level", "-1")
    assert code == 2
    assert err.strip() == ("s2mmu: error: level -1 exists only with the 4KB granule and DS=1 "
                           "(FEAT_LPA2)")


def test_unknown_register_is_one_line_exit_2() -> None:
    code, _, err = run("decode", "FOO_EL1", "1")
    assert code == 2
    assert err.startswith("s2mmu: error: unknown register 'FOO_EL1' (known: ")
    assert len(err.strip().splitlines()) == 1


def test_value_wider_than_register_is_refused() -> None:
    code, _, err = run("decode", "TCR_EL1", hex(1 << 64))
    assert code == 2
    assert "does not fit in 64 bits" in err


def test_va_wider_than_64_bits_is_refused() -> None:
    code, _, err = run("translate", hex(1 << 64))
    assert code == 2
    assert err.strip() == f"s2mmu: error: VA {1 << 64:#x} is wider than 64 bits"


def test_malformed_case_file_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "regs": {"TCR_EL1": "0xzz"}}))
    code, out, err = run("at", str(bad), "--json")
    assert code == 2 and out == ""
    assert err.strip() == ("s2mmu: error: case 'x'.regs.TCR_EL1: expected an integer "
                           "(number, \"0x...\" or \"123\"), got '0xzz'")


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{\n  \"cases\": [,]\n}")
    code, _, err = run("at", str(bad))
    assert code == 2
    assert err.startswith(f"s2mmu: error: {bad}:2: not valid JSON (column")


def test_unknown_at_op_lists_the_known_ones(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"ops": [["S1E3R", "0x0"]]}))
    code, _, err = run("at", str(bad))
    assert code == 2
    assert "unknown AT operation 'S1E3R' (known: S1E0R, S1E0W" in err


def test_demo_arch_shows_the_at_exception_to_el2() -> None:
    code, out, _ = run("demo", "--arch")
    assert code == 0
    assert "exception to EL2: ESR=0x920001c7" in out


# --- bad input: one line naming the rule and the value, exit status 2 -------------------

S1_ON = ("--reg", "SCTLR_EL1=0x30d00801")


def test_translate_refuses_reserved_tg0_naming_field_value_and_rule() -> None:
    code, out, err = run("translate", "0x1000", *S1_ON, "--reg", "TCR_EL1=0xc010")
    assert code == 2 and out == ""
    assert err == ("s2mmu: error: TCR_EL1.TG0=0b11 is reserved (ASL AArch64.S1DecodeTG0: an "
                   "IMPLEMENTATION DEFINED granule; ImplChoices.reserved_tg_granule=4KB); "
                   "--allow-reserved accepts it\n")


def test_translate_refuses_reserved_tg1_for_an_upper_range_va() -> None:
    code, _, err = run("translate", "0xffff000000001000", *S1_ON, "--reg", "TCR_EL1=0x100010")
    assert code == 2
    assert err.startswith("s2mmu: error: TCR_EL1.TG1=0b00 is reserved (ASL AArch64.S1DecodeTG1")


def test_translate_refuses_reserved_vtcr_tg0_when_stage_2_is_on() -> None:
    code, _, err = run("translate", "0x1000", "--reg", "HCR_EL2=0x80000001",
                       "--reg", "VTCR_EL2=0x8000c018")
    assert code == 2
    assert err.startswith("s2mmu: error: VTCR_EL2.TG0=0b11 is reserved (ASL AArch64.S2DecodeTG0")


def test_translate_refuses_impdef_txsz_above_max() -> None:
    # T0SZ=63 > MaxTxSZ (48 with FEAT_TTST): fault or clamp is IMPLEMENTATION DEFINED.
    code, _, err = run("translate", "0x0", *S1_ON, "--reg", "TCR_EL1=0x3f")
    assert code == 2
    assert err.startswith("s2mmu: error: TCR_EL1.T0SZ=63 is outside 16..48 "
                          "(ASL AArch64.S1TxSZFaults: IMPLEMENTATION DEFINED fault or clamp")


def test_translate_allow_reserved_uses_the_impdef_granule() -> None:
    code, out, _ = run("translate", "0x1000", *S1_ON, "--reg", "TCR_EL1=0xc010",
                       "--allow-reserved")
    assert code == 0
    assert "Translation fault, level 0" in out


def test_translate_ignores_tcr_of_a_stage_that_is_off() -> None:
    code, out, _ = run("translate", "0x1000", "--reg", "TCR_EL1=0xc000")
    assert code == 0 and "-> 0x1000" in out


def test_at_keeps_accepting_reserved_tg(tmp_path: Path) -> None:
    case = tmp_path / "c.json"
    case.write_text(json.dumps({"regs": {"SCTLR_EL1": "0x30d00801", "TCR_EL1": "0xc010"},
                                "ops": [["S1E1R", "0x1000"]]}))
    code, out, _ = run("at", str(case), "--json")
    assert code == 0
    assert json.loads(out)["cases"][0]["ops"][0]["outcome"] == "par"


def test_decode_level_0_does_not_exist_with_64k() -> None:
    code, _, err = run("decode", "--descriptor", "0x3", "--level", "0", "--granule", "64k")
    assert code == 2
    assert err == ("s2mmu: error: level 0 does not exist with the 64KB granule: its walks "
                   "start at level 1 or below (ASL AArch64.S1StartLevel, "
                   "AArch64.S2StartLevel)\n")


def test_decode_register_and_descriptor_together_is_refused() -> None:
    code, _, err = run("decode", "TCR_EL1", "0x1", "--descriptor", "0x3")
    assert code == 2
    assert err == "s2mmu: error: decode takes REGISTER VALUE or --descriptor VALUE, not both\n"


def test_usage_error_is_one_line_naming_the_option() -> None:
    code, _, err = run("decode", "--descriptor", "0x3", "--level", "4")
    assert code == 2
    assert err == ("s2mmu: error: decode: Invalid value for '--level': 4 is not in the "
                   "range -1<=x<=3.\n")


def test_unknown_command_is_one_line() -> None:
    code, _, err = run("frobnicate")
    assert code == 2
    assert err == "s2mmu: error: No such command 'frobnicate'.\n"


def test_case_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe{}")
    code, _, err = run("at", str(bad))
    assert code == 2
    assert err == f"s2mmu: error: {bad}: not UTF-8 text (byte 0: 0xff)\n"


def test_cases_key_must_hold_a_list(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"cases": {"name": "x"}}))
    code, _, err = run("at", str(bad))
    assert code == 2
    assert err == "s2mmu: error: cases: expected a list of cases, got dict\n"


def test_case_name_must_be_a_string(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": 7}))
    code, _, err = run("at", str(bad))
    assert code == 2
    assert err == "s2mmu: error: case.name: expected a string, got 7\n"


def test_case_memory_outside_the_pa_space_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "memory": [{"pa": hex(1 << 52), "words": [1]}]}))
    code, _, err = run("translate", "0x0", "--case", str(bad))
    assert code == 2
    assert err == (f"s2mmu: error: case 'x'.memory[0]: pa {1 << 52:#x} (+8 bytes) is outside "
                   "the 52-bit PA space\n")


def test_empty_case_list_gives_translate_nothing_to_take(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    code, _, err = run("translate", "0x0", "--case", str(bad))
    assert code == 2
    assert err == "s2mmu: error: the case file holds no case\n"


# --- translate --explain -----------------------------------------------------------------

def _explain_case(tmp_path: Path) -> Path:
    """Four 4KB levels for VA 0: APTable[0] at L0, UXNTable at L1, an AP=01 page at L3."""
    case = tmp_path / "walk.json"
    case.write_text(json.dumps({"name": "walk", "regs": {
        "SCTLR_EL1": "0x30d00805", "TCR_EL1": "0x500000010", "MAIR_EL1": "0xff",
        "TTBR0_EL1": "0x1000"}, "memory": [
        {"pa": "0x1000", "words": [hex((1 << 61) | 0x2003)]},
        {"pa": "0x2000", "words": [hex((1 << 60) | 0x3003)]},
        {"pa": "0x3000", "words": ["0x4003"]},
        {"pa": "0x4000", "words": ["0x5443"]}]}))
    return case


def test_explain_shows_walk_parameters_and_each_level(tmp_path: Path) -> None:
    code, out, _ = run("translate", "0x0", "--case", str(_explain_case(tmp_path)), "--explain")
    assert code == 0
    assert ("stage 1: TTBR0_EL1, 4KB granule, 48-bit input (T0SZ=16), start level 0, "
            "table at 0x1000, 48-bit output") in out
    assert "S1 L0  0x1000[0]: 0x2000000000002003  table -> 0x2000" in out
    assert "S1 L3  0x4000[0]: 0x0000000000005443  page -> 0x5000" in out


def test_explain_accumulates_aptable_and_uxntable(tmp_path: Path) -> None:
    code, out, _ = run("translate", "0x0", "--case", str(_explain_case(tmp_path)), "--explain")
    lines = [x.strip() for x in out.splitlines() if "so far" in x]
    assert lines == [
        "hierarchical controls so far: APTable=0b01 UXNTable=0 PXNTable=0",
        "hierarchical controls so far: APTable=0b01 UXNTable=1 PXNTable=0",
        "hierarchical controls so far: APTable=0b01 UXNTable=1 PXNTable=0",
    ]


def test_explain_leaf_permissions_apply_the_table_controls(tmp_path: Path) -> None:
    # AP=01 gives EL0 RW; APTable[0] takes EL0 access away, UXNTable EL0 execute.
    code, out, _ = run("translate", "0x0", "--case", str(_explain_case(tmp_path)), "--explain",
                       "--el", "0")
    assert code == 0
    assert "permissions: privileged RWX, EL0 ---" in out
    assert "attributes: MAIR Attr0=0xff = Normal iWB-RAWA oWB-RAWA NSH" in out
    assert "FAULT stage 1: Permission fault, level 3 (FSC 0x0f)" in out
