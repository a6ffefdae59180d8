"""`s2mmu decode`: the text table and the s2mmu.decode/1 JSON document, from real runs."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from s2mmu.arch.registers import REGISTERS
from s2mmu.cli.main import cli
from s2mmu.cli.schemas import validate


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["decode", *args])
    return result.exit_code, result.stdout, result.stderr


def rows(out: str) -> dict[str, list[str]]:
    """Return the table rows keyed by bit range: [field, value, valid, meaning]."""
    table = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 5 and cells[1].startswith("["):
            table[cells[1]] = [cells[0], cells[2], cells[3], cells[4]]
    return table


def decode_json(*args: str) -> dict:
    code, out, err = run("--json", *args)
    assert code == 0, err
    doc = json.loads(out)
    validate(doc)
    return doc


def test_ds_descriptor_shows_oa_51_50_not_sh() -> None:
    code, out, _ = run("--descriptor", "0x0780000090003b03", "--ds")
    assert code == 0
    table = rows(out)
    assert table["[9:8]"] == ["OA[51:50]", "0x3", "yes", "address bits [51:50] (DS=1: not SH)"]
    assert table["[58:55]"][:3] == ["SW", "0xf", "yes"]
    assert "stage 1 level 3 4K DS=1 descriptor 0x0780000090003b03: page" in out
    assert "  output address: 0xc000090003000" in out
    assert "  software bits [58:55]: 0xf" in out


def test_descriptor_without_ds_shows_sh() -> None:
    _, out, _ = run("--descriptor", "0x0040000090003703")
    assert rows(out)["[9:8]"] == ["SH", "0x3", "yes", "Inner Shareable"]


def test_stage2_descriptor_software_bits_and_permissions() -> None:
    _, out, _ = run("--descriptor", "0x01800000400007fd", "--level", "2", "--stage", "2")
    assert "  permissions: read/write; executable at EL1 and EL0" in out
    assert "  software bits [58:55]: 0x3" in out
    assert rows(out)["[58:55]"][:2] == ["SW", "0x3"]


def test_par_bit_11_is_res1_not_nse_without_feat_rme() -> None:
    _, out, _ = run("PAR_EL1", "0xff00000090000b80")
    assert rows(out)["[11]"] == ["RES1", "0x1", "no", "reserved, RES1 (NSE only with FEAT_RME)"]
    assert "NSE │" not in out


def test_esr_isv_0_marks_the_syndrome_fields_res0() -> None:
    _, out, _ = run("ESR_EL2", "0x920001c7")
    table = rows(out)
    for rng in ("[23:22]", "[21]", "[20:16]", "[15]", "[14]"):
        assert table[rng][2:] == ["no", "RES0: ISV=0, no valid instruction syndrome"]
    assert table["[6]"][3].startswith("abort caused by an instruction writing to memory")
    assert table["[7]"][3].startswith("fault on the stage 2 translation")
    assert table["[8]"][3] == "from a cache maintenance or address translation instruction"
    assert table["[25]"][3] == "1 for a Data Abort with ISV=0 (not an instruction length)"


def test_esr_isv_1_interprets_sas_and_srt() -> None:
    _, out, _ = run("ESR_EL2", "0x93c38046")
    table = rows(out)
    assert table["[23:22]"] == ["SAS", "0x3", "yes", "doubleword (8 bytes)"]
    assert table["[20:16]"] == ["SRT", "0x3", "yes", "X3"]


def test_vtcr_sl0_and_t0sz_mean_something() -> None:
    _, out, _ = run("VTCR_EL2", "0x80023558")
    table = rows(out)
    assert table["[7:6]"] == ["SL0", "0x1", "yes", "stage 2 starts at level 1 (4KB granule)"]
    assert table["[5:0]"] == ["T0SZ", "0x18", "yes", "40-bit IPA space (1TB)"]


def test_mair_attr_bytes_and_hpfar_fipa() -> None:
    _, out, _ = run("MAIR_EL1", "0x44ff04")
    table = rows(out)
    assert table["[7:0]"] == ["Attr0", "0x4", "yes", "Device-nGnRE"]
    assert table["[15:8]"] == ["Attr1", "0xff", "yes", "Normal iWB-RAWA oWB-RAWA"]
    _, out, _ = run("HPFAR_EL2", "0x402100")
    assert rows(out)["[47:4]"][3].startswith("faulting IPA page 0x40210000")


def test_features_change_the_decode() -> None:
    _, out, _ = run("VTCR_EL2", "0x80023558", "--features", "server-v8.2")
    assert rows(out)["[32]"] == ["RES0", "0x0", "no", "reserved, RES0 (DS only with FEAT_LPA2)"]


def test_every_value_is_hex_in_text() -> None:
    _, out, _ = run("TCR_EL1", "0x580903510")
    assert all(re.fullmatch(r"0x[0-9a-f]+", r[1]) for r in rows(out).values())
    assert "TCR_EL1 = 0x0000000580903510 (features qemu-max)" in out


@pytest.mark.parametrize("name", sorted(REGISTERS))
def test_json_of_every_register_validates(name: str) -> None:
    doc = decode_json(name, "0x8000000000000f0f")
    assert doc["register"] == name and doc["value"] == "0x8000000000000f0f"
    covered = sum(((1 << (f["hi"] - f["lo"] + 1)) - 1) << f["lo"] for f in doc["fields"])
    assert covered == (1 << 64) - 1


def test_json_register_fields() -> None:
    doc = decode_json("ESR_EL2", "0x920001c7")
    assert doc["layout"] == "ESR_ELx"
    sas = [f for f in doc["fields"] if f["name"] == "SAS"][0]
    assert sas == {"name": "SAS", "hi": 23, "lo": 22, "value": "0x0",
                   "meaning": "RES0: ISV=0, no valid instruction syndrome", "valid": False}


@pytest.mark.parametrize(("args", "kind"), [
    (("--descriptor", "0x0"), "invalid"),
    (("--descriptor", "0x60001003", "--level", "1"), "table"),
    (("--descriptor", "0x400007fd", "--level", "2", "--stage", "2"), "block"),
    (("--descriptor", "0x0780000090003b03", "--ds"), "page"),
    (("--descriptor", "0x20000000f401", "--level", "2", "--granule", "64k"), "block"),
])
def test_json_of_every_descriptor_form_validates(args: tuple[str, ...], kind: str) -> None:
    doc = decode_json(*args)
    d = doc["descriptor"]
    assert d["kind"] == kind
    assert (d["output_address"] is None) == (kind in ("invalid", "table"))
    assert (d["next_table_address"] is None) == (kind != "table")
    assert re.fullmatch(r"0x[0-9a-f]+", d["software_bits"])


def test_json_ds_page() -> None:
    d = decode_json("--descriptor", "0x0780000090003b03", "--ds")["descriptor"]
    assert (d["output_address"], d["software_bits"], d["level"], d["stage"]) == (
        "0xc000090003000", "0xf", 3, 1)
    assert d["permissions"] == "EL1 read/write, EL0 none; executable"


def test_ds_without_feat_lpa2_is_refused() -> None:
    code, out, err = run("--descriptor", "0x3", "--ds", "--features", "server-v8.2")
    assert (code, out) == (2, "")
    assert err == ("s2mmu: error: --ds needs FEAT_LPA2, which --features server-v8.2 does not "
                   "have (without it DS is treated as 0: ASL AArch64.GetS1TTWParams)\n")


def test_register_value_too_wide_names_the_register() -> None:
    code, _, err = run("ESR_EL2", hex(1 << 64))
    assert code == 2
    assert err == "s2mmu: error: ESR_EL2: value 0x10000000000000000 does not fit in 64 bits\n"
