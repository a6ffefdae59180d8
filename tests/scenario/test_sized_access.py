"""Sized guest accesses in scenarios: an access crossing a page faults on its second page."""

from __future__ import annotations

from s2mmu.cli.schemas import validate
from s2mmu.scenario.render_json import run_json
from s2mmu.scenario.render_text import timeline_lines
from s2mmu.scenario.runner import run_scenario
from s2mmu.scenario.schema import load_scenario

TEXT = """name = "sized"
[[vma]]
start = 0x7f0000000000
size = "4M"
kind = "anon"

[[memslot]]
id = 0
gpa = 0x40000000
size = "4M"
hva = 0x7f0000000000

[[event]]
do = "read"
ipa = 0x40000000
expect_mapping = "4K"

[[event]]
do = "read"
ipa = 0x40000ffc
size = 8
expect = "completed"
expect_mapping = "4K"
"""


def test_an_8_byte_load_at_page_end_minus_4_faults_on_the_next_page() -> None:
    r = run_scenario(load_scenario("sized.toml", TEXT))
    assert r.ok, [str(f.what) for f in r.failures]
    (fault,) = r.steps[2].faults
    assert (fault.abort.far, fault.abort.hpfar) == (0x4000_1000, 0x40_0010)
    doc = run_json(r)
    validate(doc)
    assert doc["steps"][2]["faults"][0]["abort"]["far"] == "0x40001000"
    assert any("read IPA 0x40000ffc, 8 bytes -> completed" in line for line in timeline_lines(r))


def test_the_same_load_inside_one_page_does_not_fault() -> None:
    inside = TEXT.replace("0x40000ffc", "0x40000ff8")
    inside = inside[:inside.rindex("expect_mapping")] + 'expect_mapping = "none"\n'
    r = run_scenario(load_scenario("sized.toml", inside))
    assert r.ok, [str(f.what) for f in r.failures]
    assert r.steps[2].faults == ()


def test_the_built_in_unaligned_load_scenario_holds() -> None:
    from importlib import resources

    name = "guest_load_unaligned.toml"
    text = resources.files("s2mmu.scenario.data").joinpath(name).read_text()
    r = run_scenario(load_scenario(name, text))
    assert r.ok and r.steps[2].faults[0].abort.far == 0x4000_1000
