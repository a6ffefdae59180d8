"""`s2mmu demo --nested`: the text timeline and the one JSON document (validated)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from s2mmu.cli.main import cli
from s2mmu.cli.schemas import validate


def test_nested_demo_text_shows_the_walk_the_forwarded_fault_and_the_tlbi() -> None:
    got = CliRunner().invoke(cli, ["demo", "--nested"])
    assert got.exit_code == 0, got.output
    text = got.output
    assert "kvm_walk_nested_s2: L1 stage 2: L2 IPA 0x80001000 -> IPA 0x40001000 2M level 2 RWX" \
        in text
    assert "kvm_pgtable_stage2_map: IPA 0x80000000 2M -> PA 0x1000000000 RWX: ok" in text
    assert ("=> inject L1 stage-2 fault into the guest hypervisor (ESR 0x9200004f, "
            "IPA 0x80200000)") in text
    assert "VMID 5: shadow IPA 0x80000000 2M unmapped" in text
    assert "invariant: holds" in text and "Shadow" not in text


def test_nested_demo_json_is_one_valid_document() -> None:
    got = CliRunner().invoke(cli, ["demo", "--nested", "--json"])
    assert got.exit_code == 0, got.output
    doc = json.loads(got.output)
    validate(doc)
    assert doc["schema"] == "s2mmu.nested-demo/1" and doc["ok"] is True
    kinds = [s["kind"] for s in doc["steps"]]
    assert kinds == ["l2-access"] * 4 + ["l1-tlbi", "l2-access"]
    m = doc["steps"][0]["mapping"]
    assert (m["ipa"], m["size"], m["pa"]) == ("0x80000000", "0x200000", "0x1000000000")
    assert int(m["prot"], 16) >> 55 & 3 == 2  # L1's level hint
    assert doc["steps"][4]["unmapped"] == [{"vmid": 5, "ipa": "0x80000000", "size": "0x200000"}]
