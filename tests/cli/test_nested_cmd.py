"""`s2mmu demo --nested`: the nested scenario's timeline and its JSON document (validated)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from s2mmu.cli.main import cli
from s2mmu.cli.schemas import validate


def test_nested_demo_text_shows_the_walk_the_forwarded_fault_the_tlbis_and_at() -> None:
    got = CliRunner().invoke(cli, ["demo", "--nested"])
    assert got.exit_code == 0, got.output
    text = got.output
    assert "kvm_walk_nested_s2: L1 stage 2: L2 IPA 0x80001000 -> IPA 0x40001000 2M level 2 RWX" \
        in text
    assert "kvm_pgtable_stage2_map: IPA 0x80000000 2M -> PA 0x1000200000 RWX: ok" in text
    assert ("=> inject L1 stage-2 fault into the guest hypervisor (ESR 0x9200004f, "
            "IPA 0x80200000)") in text
    assert "L1 TLBI IPAS2E1IS Xt 0x80001: VMID 5: shadow L2 IPA 0x80000000+2M unmapped" in text
    assert "L1 TLBI RIPAS2E1IS Xt 0x408000080300: VMID 5: shadow L2 IPA 0x80300000+16K" in text
    assert "shadow stage 2 kept" in text and "slow path" in text
    assert "OK: every expectation and invariant holds" in text


def test_nested_demo_json_is_one_valid_document() -> None:
    got = CliRunner().invoke(cli, ["demo", "--nested", "--json"])
    assert got.exit_code == 0, got.output
    doc = json.loads(got.output)
    validate(doc)
    assert doc["schema"] == "s2mmu.demo/1" and doc["ok"] is True
    run = doc["runs"][0]
    steps = run["steps"]
    m = steps[1]["faults"][0]["mapping"]
    assert (m["ipa"], m["size"], m["pa"]) == ("0x80000000", "2M", "0x1000200000")
    assert steps[2]["outcome"] == "l1-s2-fault"
    assert steps[4]["result"]["unmapped"] == [{"type": "ShadowUnmap", "vmid": 5,
                                               "ipa": "0x80000000", "size": "2M"}]
    assert run["summary"]["layers"]["nested"]["pool"] == 2


def test_nested_scenario_run_json_validates(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from s2mmu.cli.run_cmd import demo_text
    f = tmp_path / "nested.toml"
    f.write_text(demo_text("nested_demo.toml"))
    got = CliRunner().invoke(cli, ["run", str(f), "--json"])
    assert got.exit_code == 0, got.output
    doc = json.loads(got.output)
    validate(doc)
    assert doc["schema"] == "s2mmu.run/2" and doc["ok"] is True
