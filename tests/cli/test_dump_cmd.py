"""`s2mmu dump`: golden text, JSON validated against its schema, one-line bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from s2mmu.cli.dump_cmd import size_text
from s2mmu.cli.main import cli
from s2mmu.cli.schemas import validate

DATA = Path(__file__).resolve().parent / "data"
SMALL = DATA / "dump_small_s2.json"
EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "formats" / "examples"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["dump", *args])
    return result.exit_code, result.stdout, result.stderr


def test_small_stage2_matches_the_golden_text() -> None:
    code, out, err = run("--case", str(SMALL))
    assert (code, err) == (0, "")
    assert out == (DATA / "dump_small_s2.txt").read_text()


def test_golden_text_merges_blocks_and_pages_and_marks_the_reserved_entry() -> None:
    lines = (DATA / "dump_small_s2.txt").read_text().splitlines()
    assert lines[0].startswith("---[ VTTBR_EL2: IPA 0x0-0x10000000000, 4K granule, start level 1")
    assert lines[1].startswith("0x0000000040000000-0x0000000040400000        4M L2 -> "
                               "0x0000000080000000  R W px  ux   AF")
    assert "F  descriptor 0x0000000090005001: bits[1:0]=0b01 is reserved at level 3" in lines[5]
    assert lines[-1] == "---[ VTTBR_EL2 end ]---"


def test_pkvm_names_the_page_state_in_the_software_bits() -> None:
    code, out, _ = run("--case", str(SMALL), "--pkvm", "--range", "0x40402000-0x40403000")
    assert code == 0
    assert out.splitlines()[1].endswith("SW=0b0001 PKVM_PAGE_SHARED_OWNED")


def test_perm_filter_keeps_writable_executable_ranges_only() -> None:
    code, out, _ = run("--case", str(SMALL), "--perm", "wx")
    assert code == 0
    starts = [line[:18] for line in out.splitlines() if line.startswith("0x")]
    assert starts == ["0x0000000040000000", "0x0000000040402000"]


def test_json_is_one_document_valid_against_its_schema() -> None:
    code, out, _ = run("--case", str(SMALL), "--json", "--range", "0x40000000-0x40404000")
    assert code == 0
    doc = json.loads(out)
    validate(doc)
    assert doc["schema"] == "s2mmu.dump/1"
    first = doc["regions"][0]["ranges"][0]
    assert (first["start"], first["end"], first["oa"], first["entries"], first["kind"]) == (
        "0x40000000", "0x40400000", "0x80000000", 2, "block")
    assert first["perms"]["EL1"] == {"r": True, "w": True, "x": True}
    assert doc["filter"]["range"] == {"start": "0x40000000", "end": "0x40404000"}


def test_stage1_of_the_shared_example_with_json() -> None:
    cases = EXAMPLES / "validation.cases.json"
    if not cases.exists():
        pytest.skip("shared/formats/examples is not beside the checkout")
    code, out, _ = run("--case", str(cases), "--json")
    assert code == 0
    doc = json.loads(out)
    validate(doc)
    assert (doc["stage"], doc["regime"]) == (1, "EL1&0")
    assert [r["name"] for r in doc["regions"]] == ["TTBR0_EL1", "TTBR1_EL1"]
    user = [r for r in doc["regions"][0]["ranges"] if r["start"] == "0x8040203000"][0]
    assert user["perms"]["EL0"] == {"r": True, "w": True, "x": False}
    code, out, _ = run("--case", str(cases), "--case-name", "stage2_4k_40bit_ipa_from_EL2",
                       "--stage", "1")
    assert code == 0
    assert ("0x0000008040201000-0x0000008040204000       12K L3 -> 0x0000000030000000  "
            "EL1:RWX EL0:--X") in out


@pytest.mark.parametrize(("args", "message"), [
    (["--range", "0x30000000-0x20000000"],
     "--range 0x30000000-0x20000000: the start 0x30000000 is not below the end 0x20000000"),
    (["--range", "0x0-0x20000000000"],
     "--range 0x0-0x20000000000 is outside the 40-bit IPA space (0x0-0x10000000000)"),
    (["--perm", "rq"],
     "--perm: unknown permission letter 'q' in 'rq' (use r, w and x, e.g. 'wx' for W+X "
     "mappings)"),
    (["--case-name", "nope"],
     f"--case-name 'nope': no such case in {SMALL} (cases: small_s2)"),
])
def test_bad_input_is_one_line_exit_2(args: list[str], message: str) -> None:
    code, out, err = run("--case", str(SMALL), *args)
    assert (code, out) == (2, "")
    assert err == f"s2mmu: error: {message}\n"


def test_stage1_that_is_off_is_a_region_not_walked() -> None:
    code, out, _ = run("--case", str(SMALL), "--stage", "1")
    assert code == 0
    assert "not walked: stage 1 is off (SCTLR_ELx.M=0, or HCR_EL2.DC/TGE)" in out


def test_stage2_of_a_case_without_one_is_refused(tmp_path: Path) -> None:
    case = tmp_path / "c.json"
    case.write_text(json.dumps({"name": "s1only", "regs": {}}))
    code, _, err = run("--case", str(case), "--stage", "2")
    assert code == 2
    assert err == ("s2mmu: error: case 's1only': stage 2 is off (HCR_EL2.VM=0 and DC=0); "
                   "there is no stage 2 to dump\n")


def test_sizes_are_printed_in_the_largest_dividing_unit() -> None:
    assert [size_text(s) for s in (4096, 12288, 2 << 20, 3 << 29, 1 << 30, 64 << 30)] == [
        "4K", "12K", "2M", "1536M", "1G", "64G"]


STEPS = Path(__file__).resolve().parent / "data" / "stage2_steps.toml"


def test_scenario_after_a_step_prints_the_same_dump_as_run_dump_after() -> None:
    code, out, _ = run("--scenario", str(STEPS), "--after", "#4", "--perm", "x")
    assert code == 0
    r = CliRunner().invoke(cli, ["run", str(STEPS), "--dump-after", "4", "--perm", "x"])
    assert out.splitlines() == r.stdout.split("stage 2 after #4", 1)[1].splitlines()[1:]
    assert len(out.splitlines()) == 4


def test_scenario_json_names_the_scenario_and_step() -> None:
    code, out, _ = run("--scenario", str(STEPS), "--after", "last", "--json")
    assert code == 0
    doc = json.loads(out)
    validate(doc)
    assert doc["source"] == {"scenario": str(STEPS), "after": 4}
    assert [r["start"] for r in doc["regions"][0]["ranges"]] == ["0x40003000", "0x40005000"]


@pytest.mark.parametrize(("args", "message"), [
    (["--scenario", str(STEPS), "--after", "5"],
     "--after 5: no such step (the run has steps #1-#4, or 'last')"),
    (["--scenario", str(STEPS)],
     "--scenario FILE needs --after N (a step number as `s2mmu run` prints it, or 'last')"),
    (["--case", str(SMALL), "--after", "1"], "--after N goes with --scenario FILE, not --case"),
    (["--case", str(SMALL), "--scenario", str(STEPS), "--after", "1"],
     "give one of --case FILE and --scenario FILE, not both"),
    (["--scenario", str(STEPS), "--after", "1", "--stage", "1"],
     "--scenario dumps the VM's stage 2: --stage 1 and --el do not apply"),
    ([], "s2mmu dump needs --case FILE (an AT case file) or --scenario FILE"),
])
def test_scenario_bad_input_is_one_line_exit_2(args: list[str], message: str) -> None:
    code, out, err = run(*args)
    assert (code, out) == (2, "")
    assert err == f"s2mmu: error: {message}\n"
