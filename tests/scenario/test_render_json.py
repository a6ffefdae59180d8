"""s2mmu.run/2 and s2mmu.demo/1: real output validated against the shipped schemas."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest

from s2mmu.cli.schemas import validate
from s2mmu.scenario.render_json import demo_json, run_json
from s2mmu.scenario.render_text import step_head
from s2mmu.scenario.runner import run_scenario
from s2mmu.scenario.schema import load_scenario

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
DATA = Path(__file__).resolve().parents[2] / "src" / "s2mmu" / "scenario" / "data"
FILES = sorted(SCENARIOS.glob("*.toml")) + sorted(DATA.glob("*.toml"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_every_scenario_run_validates(path: Path) -> None:
    doc = run_json(run_scenario(load_scenario(path), trace=True), trace=True)
    validate(doc)
    assert doc["schema"] == "s2mmu.run/2"


def test_the_schema_rejects_decimal_addresses_and_unknown_fields() -> None:
    doc = run_json(run_scenario(load_scenario(DATA / "demo.toml")))
    fault = next(f for s in doc["steps"] for f in s["faults"])
    bad = copy.deepcopy(doc)
    next(f for s in bad["steps"] for f in s["faults"])["abort"]["ipa"] = "1073741824"
    with pytest.raises(jsonschema.ValidationError):
        validate(bad)
    bad = copy.deepcopy(doc)
    bad["steps"][0]["dirty"] = []
    with pytest.raises(jsonschema.ValidationError):
        validate(bad)
    assert fault["abort"]["ipa"].startswith("0x")


def test_index_is_the_number_the_text_shows() -> None:
    run = run_scenario(load_scenario(DATA / "demo.toml"))
    doc = run_json(run)
    for step, js in zip(run.steps, doc["steps"], strict=True):
        assert step_head(step).startswith(f"#{js['index']} ")
        assert js["line"] == step.line
    assert [s["index"] for s in doc["steps"]] == list(range(1, len(doc["steps"]) + 1))
    assert doc["steps"][0]["do"] == "memslot" and doc["steps"][4]["do"] == "exec"


def test_pages_are_slot_relative_hex_with_their_slot() -> None:
    doc = run_json(run_scenario(load_scenario(DATA / "demo.toml")))
    dirtied = [p for s in doc["steps"] for f in s["faults"] for p in f["dirtied"]]
    assert dirtied == [{"slot": 0, "page": "0x210"}, {"slot": 0, "page": "0x500"}]
    log = next(s for s in doc["steps"] if s["do"] == "get_dirty_log")
    assert log["result"] == {"type": "DirtyLog", "slot": 0, "pages": ["0x210", "0x500"]}
    assert log["summary"] == "slot 0: KVM_GET_DIRTY_LOG: 2 dirty [0x210, 0x500]"


def test_decisions_carry_their_kernel_step_typed_values_and_words() -> None:
    doc = run_json(run_scenario(load_scenario(DATA / "demo.toml")))
    decisions = next(s for s in doc["steps"] if s["do"] == "write")["faults"][0]["decisions"]
    vma = next(d for d in decisions if d["step"] == "vma_lookup")
    assert vma == {"step": "vma_lookup", "type": "VmaInfo", "name": "guest-hugetlb",
                   "kind": "hugetlb", "mem_type": "normal", "vma_shift": 21, "pfnmap": False,
                   "cacheable": True, "allow_any_uncached": False, "mte_allowed": False,
                   "text": "VMA guest-hugetlb (hugetlb, normal), vma_shift 21"}
    size = next(d for d in decisions if d["type"] == "MapSize")
    assert (size["vma_pagesize"], size["reason"], size["ipa"]) == ("2M", "vma-shift",
                                                                   "0x80000000")


def test_demo_is_one_document_holding_every_run() -> None:
    runs = [run_scenario(load_scenario(DATA / n)) for n in ("demo.toml", "demo_nofwb.toml")]
    doc = demo_json(runs)
    validate(doc)
    assert doc["schema"] == "s2mmu.demo/1" and doc["ok"] is True
    assert [r["name"] for r in doc["runs"]] == ["demo", "demo-nofwb"]
    bad = copy.deepcopy(doc)
    bad["runs"][1]["steps"][0]["outcome"] = "fine"
    with pytest.raises(jsonschema.ValidationError):
        validate(bad)
