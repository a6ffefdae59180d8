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
    assert err.startswith(f"s2mmu: error: {bad}: not valid JSON (line 2, column")


def test_unknown_at_op_lists_the_known_ones(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"ops": [["S1E3R", "0x0"]]}))
    code, _, err = run("at", str(bad))
    assert code == 2
    assert "unknown AT operation 'S1E3R' (known: S1E0R, S1E0W" in err


def test_demo_runs_and_shows_at_exception_to_el2() -> None:
    code, out, _ = run("demo", "--arch") if "--arch" in _demo_options() else run("demo")
    assert code == 0
    assert "exception to EL2: ESR=0x920001c7" in out


def _demo_options() -> list[str]:
    demo = cli.commands["demo"]
    return [opt for p in demo.params for opt in p.opts]
