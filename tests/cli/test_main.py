"""The command line: output formats, exit statuses and pinned error messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from s2mmu.cli.main import cli
from s2mmu.cli.schemas import validate

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
    doc = json.loads(out)
    validate(doc)
    assert doc == {"schema": "s2mmu.at/1", **want}


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


# --- translate: the whole story --------------------------------------------------------

def test_sl0_that_does_not_fit_t0sz_is_explained_whole() -> None:
    # issue 8: this crashed in the explain renderer after printing part of its output
    code, out, err = run("translate", "0x1000", "--reg", "HCR_EL2=0x80000001",
                         "--reg", "VTCR_EL2=0xa0", "--explain")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "VA 0x1000 EL1 read in the EL1&0 regime",
        "  SCTLR_EL1 not given: 0x30d00800 (M=0), stage 1 off",
        "  VTTBR_EL2 not given: 0x0",
        "  stage 1 off: the VA is the output address (SCTLR_EL1.M=0)",
        "  stage 2: VTTBR_EL2, 4KB granule, T0SZ=32, SL0=0b10: SL0 does not fit T0SZ (an IPA "
        "of 32 bits cannot start at level 0 (40..52 bits)): no walk",
        "FAULT stage 2: Translation fault, level 0 (FSC 0x04) IPA=0x1000: VTCR_EL2.SL0: an IPA "
        "of 32 bits cannot start at level 0 (40..52 bits)",
        "  taken to EL2: ESR_EL2=0x92000004 FAR_EL2=0x1000 HPFAR_EL2=0x10"]


def test_registers_not_given_are_said_to_leave_the_mmus_off() -> None:
    code, out, _ = run("translate", "0x1000")
    assert code == 0
    assert out.splitlines() == ["VA 0x1000 EL1 read in the EL1&0 regime",
                                "  SCTLR_EL1 not given: 0x30d00800 (M=0), stage 1 off",
                                "  HCR_EL2 not given: 0x80000000 (VM=0), stage 2 off",
                                "-> 0x1000  Device-nGnRnE"]


def test_sctlr_c_0_is_named_in_the_output(cases_file: Path) -> None:
    code, out, _ = run("translate", "0x8040205000", "--case", str(cases_file),
                       "--reg", "TCR_EL1=0x8580903510")
    assert code == 0
    assert ("  SCTLR_EL1.C=0 changed the stage-1 attributes: Normal iWB-RAWA oWB-RAWA ISH -> "
            "Normal iNC oNC OSH") in out.splitlines()


def test_fault_prints_esr_and_far(cases_file: Path) -> None:
    code, out, _ = run("translate", "0x8040205000", "--case", str(cases_file))
    assert code == 0
    assert out.splitlines()[-2:] == [
        "FAULT stage 1: Access flag fault, level 3 (FSC 0x0b): access flag is 0 and TCR.HA=0",
        "  taken to EL1: ESR_EL1=0x9600000b FAR_EL1=0x8040205000"]


def _two_cases(tmp_path: Path, name: str = "cases.json") -> Path:
    f = tmp_path / name
    f.write_text(json.dumps({"cases": [
        {"name": "off", "regs": {}},
        {"name": "dc", "regs": {"HCR_EL2": "0x80001000", "VTCR_EL2": "0x80023558",
                                "VTTBR_EL2": "0x10000"},
         "memory": [{"pa": "0x10000", "words": ["0x7fd"]}]}]}))
    return f


def test_case_file_name_picks_the_case(tmp_path: Path) -> None:
    f = _two_cases(tmp_path)
    code, out, _ = run("translate", "0x1000", "--case", f"{f}#dc")
    assert code == 0
    assert "  HCR_EL2.DC=1: with stage 1 off, accesses are Normal Write-Back Non-shareable " \
        "(not Device-nGnRnE)" in out
    code, out, _ = run("translate", "0x1000", "--case", str(f))
    assert code == 0 and "-> 0x1000  Device-nGnRnE" in out


def test_unknown_case_name_lists_the_cases(tmp_path: Path) -> None:
    f = _two_cases(tmp_path)
    code, out, err = run("translate", "0x1000", "--case", f"{f}#nope")
    assert (code, out) == (2, "")
    assert err == f"s2mmu: error: {f}: no case named 'nope' (cases: 'off', 'dc')\n"


def test_case_path_holding_a_hash_is_a_file_name(tmp_path: Path) -> None:
    f = _two_cases(tmp_path, "a#b.json")
    code, out, _ = run("translate", "0x1000", "--case", str(f))
    assert code == 0 and "Device-nGnRnE" in out


def test_translate_json_is_one_valid_document(cases_file: Path) -> None:
    code, out, _ = run("translate", "0x8040205000", "--case", str(cases_file),
                       "--reg", "TCR_EL1=0x8580903510", "--json")
    assert code == 0
    doc = json.loads(out)
    validate(doc)
    assert doc["schema"] == "s2mmu.translate/1"
    assert doc["result"] == {"outcome": "translated", "pa": "0x90003000", "attributes": {
        "memtype": "Normal", "shareability": "OSH", "text": "Normal iNC oNC OSH"},
        "PAR": "0xff00000090003b80"}
    assert [(s["stage"], s["level"], s["kind"]) for s in doc["steps"]] == [
        (1, 0, "table"), (1, 1, "table"), (1, 2, "table"), (1, 3, "page")]
    assert doc["steps"][3]["descriptor"] == "0x0000000090003303"
    assert doc["hardware_writes"] == [{"pa": "0x60003028", "before": "0x90003303",
                                       "after": "0x90003703"}]
    assert doc["params"]["stage1"]["table"] == "0x60000000"
    assert doc["params"]["stage2"] is None
    assert "TCR_EL1" in doc["input"]["given"]


def test_translate_json_fault_has_esr_far_hpfar_and_par() -> None:
    code, out, _ = run("translate", "0x1000", "--reg", "HCR_EL2=0x80000001",
                       "--reg", "VTCR_EL2=0xa0", "--json")
    assert code == 0
    doc = json.loads(out)
    validate(doc)
    r = doc["result"]
    assert (r["outcome"], r["taken_to"], r["ESR"], r["FAR"], r["HPFAR"], r["PAR"]) == (
        "fault", "EL2", "0x92000004", "0x1000", "0x10", "0x0000000000000a09")
    assert r["fault"]["statuscode"] == "Translation" and r["fault"]["secondstage"]
    assert doc["params"]["stage2"]["no_walk"].startswith("SL0 does not fit T0SZ")
    assert doc["params"]["stage2"]["table"] is None
    assert doc["steps"] == []


def test_demo_arch_json_is_one_valid_document() -> None:
    code, out, _ = run("demo", "--arch", "--json")
    assert code == 0
    doc = json.loads(out)
    validate(doc)
    assert doc["schema"] == "s2mmu.arch-demo/1"
    assert len(doc["translations"]) == 7
    assert doc["at"][-1] == {"title": "AT S1E1R from EL1 after stage 2 unmaps the guest's "
                             "level-2 table page", "op": "S1E1R", "va": "0x400000",
                             "el": "EL1", "pan": 0, "outcome": "exception",
                             "taken_to": "EL2", "ESR": "0x920001c7", "FAR": "0x400000",
                             "HPFAR_EL2": "0x401020"}


# --- any register state: never a traceback, never half an output ---------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

REGS = ["SCTLR_EL1", "TCR_EL1", "HCR_EL2", "VTCR_EL2", "SCTLR_EL2", "TCR_EL2", "MAIR_EL1"]


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.integers(0, (1 << 64) - 1), min_size=len(REGS), max_size=len(REGS)),
       sctlr_m=st.booleans(), allow=st.booleans(), el=st.sampled_from(["0", "1", "2"]),
       va=st.integers(0, (1 << 64) - 1))
def test_translate_explain_and_svg_never_raise_for_any_register_state(
        tmp_path: Path, values: list[int], sctlr_m: bool, allow: bool, el: str,
        va: int) -> None:
    regs = dict(zip(REGS, values, strict=True))
    if sctlr_m:
        regs["SCTLR_EL1"] |= 1
        regs["SCTLR_EL2"] |= 1
    svg = tmp_path / "walk.svg"
    svg.unlink(missing_ok=True)
    args = ["translate", hex(va), "--el", el, "--explain", "--svg", str(svg),
            *[x for k, v in regs.items() for x in ("--reg", f"{k}={v:#x}")]]
    result = CliRunner().invoke(cli, args + (["--allow-reserved"] if allow else []))
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        result.exception
    if result.exit_code == 2:
        assert result.stdout == "" and not svg.exists()
        assert result.stderr.startswith("s2mmu: error: ") and result.stderr.count("\n") == 1
        return
    assert result.exit_code == 0 and result.stderr == "" and svg.exists()
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"VA {va:#x} EL{el} read in the ")
    last = [x for x in lines if not x.startswith("  hardware wrote")][-1]
    assert last.startswith(("-> ", "  taken to EL")), last


ACCESS_CASES = Path(__file__).resolve().parents[1] / "conformance" / "cases"


@pytest.mark.parametrize("name", ["accesses.cases.json", "atomics.cases.json"])
def test_at_text_describes_real_accesses(name: str) -> None:
    code, out, _ = run("at", str(ACCESS_CASES / name))
    assert code == 0
    assert "loaded 0x1122334455667788 from PA 0x90000010" in out
    if name == "atomics.cases.json":
        assert "atomic read 0x0000000000000005 at PA 0x90000048" in out
        assert "(status 0)" in out and "SCTLR_EL1.A=1 enforces alignment" in out


def test_at_json_of_atomics_is_of_the_schema() -> None:
    code, out, _ = run("at", str(ACCESS_CASES / "atomics.cases.json"), "--json")
    assert code == 0
    doc = json.loads(out)
    validate(doc)
    assert {op["outcome"] for case in doc["cases"] for op in case["ops"]} == {
        "load", "store", "atomic", "exception"}


def test_translate_json_with_permission_indirection_and_overlay(cases_file: Path) -> None:
    # PIR_EL1 Perm0 = RW (overlay), POR_EL1 Perm0 = R: the write is an overlay fault,
    # ESR_EL1.ISS2.Overlay (bit 38) set.
    code, out, _ = run("translate", "0x8040201000", "--case", str(cases_file),
                       "--features", "server-v9.4-pie", "--reg", "TCR2_EL1=0xa",
                       "--reg", "HCRX_EL2=0x4000", "--reg", "PIR_EL1=0x5",
                       "--reg", "POR_EL1=0x1", "--access", "w", "--json")
    assert code == 0
    doc = json.loads(out)
    validate(doc)
    assert doc["result"]["ESR"] == "0x409600004f"
    assert {"TCR2_EL1", "PIR_EL1", "POR_EL1"} <= set(doc["input"]["given"])


def test_at_case_file_sets_the_permission_extension_registers(tmp_path: Path) -> None:
    # One 4KB page at VA 0x1000 (L0..L3 tables at 0x10000..0x13000), PIIndex 0; PIR_EL1
    # Perm0 = R: S1E1R completes, S1E1W reports a level-3 Permission fault.
    case = tmp_path / "pie.json"
    case.write_text(json.dumps({
        "regs": {"SCTLR_EL1": "0x30d00801", "TCR_EL1": "0x580803510",
                 "TTBR0_EL1": "0x10000", "MAIR_EL1": "0xff", "TCR2_EL1": "0x2",
                 "HCRX_EL2": "0x4000", "PIR_EL1": "0x8"},
        "memory": [{"pa": "0x10000", "words": ["0x11003"]},
                   {"pa": "0x11000", "words": ["0x12003"]},
                   {"pa": "0x12000", "words": ["0x13003"]},
                   {"pa": "0x13008", "words": ["0x80000703"]}],
        "ops": [["S1E1R", "0x1000"], ["S1E1W", "0x1000"]]}))
    code, out, _ = run("at", str(case), "--json", "--features", "server-v9.4-pie")
    assert code == 0
    ops = json.loads(out)["cases"][0]["ops"]
    assert ops[0]["outcome"] == "par" and int(ops[0]["PAR_EL1"], 16) & 1 == 0
    assert int(ops[1]["PAR_EL1"], 16) & 0x7F == 0b0011111
    code, out, _ = run("at", str(case), "--json")   # QEMU 7.2's features: no PIE
    assert code == 0 and int(json.loads(out)["cases"][0]["ops"][1]["PAR_EL1"], 16) & 1 == 0


@pytest.mark.parametrize("tcr2, want", [("0x800", ["0x60000008", "0x60001008", "0x60002008"]),
                                        ("0x0", [])])
def test_translate_json_with_haft_shows_the_table_descriptor_writes(
        cases_file: Path, tcr2: str, want: list[str]) -> None:
    # FEAT_HAFT: TCR2_EL1.HAFT (bit 11) with TCR_EL1.HA sets AF in the L0-L2 tables.
    code, out, _ = run("translate", "0x8040201000", "--case", str(cases_file),
                       "--features", "server-v9.4-haft", "--reg", "TCR_EL1=0x8580903510",
                       "--reg", f"TCR2_EL1={tcr2}", "--reg", "HCRX_EL2=0x4000", "--json")
    assert code == 0
    doc = json.loads(out)
    validate(doc)
    assert [w["pa"] for w in doc["hardware_writes"]] == want
    assert all(int(w["after"], 16) == int(w["before"], 16) | 1 << 10
               for w in doc["hardware_writes"])
