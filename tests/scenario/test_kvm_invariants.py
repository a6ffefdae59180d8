"""The kvm layer's per-step invariants through `s2mmu run`: each one broken by a scenario,
named with its step in the text and the JSON, and the exit status 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from s2mmu.cli.main import cli
from s2mmu.cli.schemas import validate
from s2mmu.kvm.invariants import WarnFired
from s2mmu.pgtable import backend as backend_module
from s2mmu.pgtable import walk as walk_module
from s2mmu.pgtable.events import Warn
from s2mmu.pgtable.stage2 import kvm_pgtable_stage2_unmap
from s2mmu.pgtable.table import KvmPgtable
from s2mmu.scenario.kvm_events import other_layers_warns
from s2mmu.scenario.records import StepDraft
from s2mmu.scenario.render_text import failure_text
from s2mmu.scenario.runner import run_scenario
from s2mmu.scenario.schema import ScenarioError, load_layers, load_scenario

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
BROKEN = {
    "memcache_dry": ("warn", 4, "WARN_ON(!mc->nobjs) in kvm_mmu_memory_cache_alloc"),
    "wrprotect_without_tlbi": ("stale-tlb", 3, "stage 2 no longer grants a permission"),
    "unmap_without_tlbi": ("stale-tlb", 3, "vCPU0 TLB holds stage 1+2 VA 0x201000+4K"),
    "table_tlbi_level_hint": ("table-tlbi-level", 3, "carries level hint 2"),
}


def test_every_invariant_is_registered() -> None:
    names = set(load_layers().invariants)
    assert {"warn", "dirty-writable", "stale-tlb", "table-tlbi-level", "reuse-before-tlbi",
            "break-without-tlbi", "valid-to-valid", "walk-contract", "table-refcount"} <= names


@pytest.mark.parametrize("stem", sorted(BROKEN))
def test_a_broken_invariant_fails_the_run_naming_it_and_its_step(stem: str) -> None:
    name, step, words = BROKEN[stem]
    path = str(SCENARIOS / "broken" / f"{stem}.toml")
    text = CliRunner().invoke(cli, ["run", path])
    assert text.exit_code == 1
    assert f"INVARIANT BROKEN: {name}: " in text.output and words in text.output
    assert any(line.startswith(f"  step #{step} ") and f": {name}: " in line
               for line in text.output.splitlines())
    js = CliRunner().invoke(cli, ["run", path, "--json"])
    assert js.exit_code == 1
    doc = json.loads(js.stdout)
    validate(doc)
    assert doc["ok"] is False
    assert {(f["index"], f["kind"], f["invariant"]) for f in doc["failures"]} == {
        (step, "invariant", name)}
    broken = doc["steps"][step - 1]["invariants"]
    assert broken and all(b["invariant"] == name and words in "".join(
        x["text"] for x in broken) for b in broken)


def test_the_same_steps_without_the_bug_hold() -> None:
    for stem in ("memcache_dry_expected", "tlb_unmap"):
        assert run_scenario(SCENARIOS / f"{stem}.toml").ok


def test_a_vcpu_that_looks_in_its_tlb_completes_at_the_stale_page() -> None:
    run = run_scenario(SCENARIOS / "broken" / "unmap_without_tlbi.toml")
    first, last = run.steps[1], run.steps[-1]
    assert first.result == last.result  # the same PA as before the unmap: a TLB hit
    assert last.faults == ()
    fixed = run_scenario(SCENARIOS / "tlb_unmap.toml")
    assert fixed.steps[-1].outcome.value == "error"


SMALL = """
[[vma]]
start = 0x7f0000000000
size = "4M"

[[memslot]]
id = 0
gpa = 0x40000000
size = "4M"
hva = 0x7f0000000000

[[event]]
do = "read"
ipa = 0x40000000
"""


def test_expecting_a_warn_that_does_not_fire_is_a_mismatch() -> None:
    text = SMALL + 'expect_warn = "kvm_mmu_memory_cache_alloc"\n'
    [failure] = run_scenario(load_scenario("w.toml", text)).failures
    assert failure.is_expectation
    assert failure_text(failure) == ("step #2 read (line 12): expected a WARN in "
                                     "kvm_mmu_memory_cache_alloc, got none")


def test_an_unknown_injected_bug_is_refused_naming_the_field() -> None:
    want = (r"w.toml:2: vm.inject: must be one of skip-tlbi-vmid, skip-tlbi-vmid-ipa, "
            r"table-tlbi-level-hint, not ")
    with pytest.raises(ScenarioError, match=want):
        load_scenario("w.toml", '[vm]\ninject = ["no-such-bug"]\n' + SMALL)


def test_a_non_boolean_tlb_flag_is_refused() -> None:
    with pytest.raises(ScenarioError, match=r"vcpu\[0\].tlb: must be true or false"):
        load_scenario("w.toml", SMALL + '\n[[vcpu]]\nid = 0\ntlb = "yes"\n')


def test_the_checkers_events_stay_out_of_a_traced_step() -> None:
    run = run_scenario(load_scenario("w.toml", SMALL), trace=True)
    names = {type(e).__name__ for s in run.steps for e in s.trace}
    assert "PteWrite" not in names and "WalkReturn" not in names
    assert "PageAlloc" in names


# A file-backed VMA: a read of untouched anonymous memory would map the shared zero
# page, and the write would then copy it instead of relaxing the read-only leaf.
LOGGING = SMALL.replace('size = "4M"\n', 'size = "4M"\nkind = "file"\n', 1).replace(
    'hva = 0x7f0000000000\n', 'hva = 0x7f0000000000\nflags = ["log_dirty_pages"]\n', 1) + '''
[[event]]
do = "write"
ipa = 0x40000000
'''


def test_a_fault_that_dirties_a_page_it_does_not_map_writable_fails_the_run(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A relax that reports success on an entry a racer cleared (seed 000's worry)."""
    def relax_on_a_cleared_entry(pgt: KvmPgtable, addr: int, prot: int, flags: int = 0) -> int:
        kvm_pgtable_stage2_unmap(pgt, addr, 0x1000)
        return 0

    monkeypatch.setattr(backend_module, "kvm_pgtable_stage2_relax_perms",
                        relax_on_a_cleared_entry)
    path = tmp_path / "dirty.toml"
    path.write_text(LOGGING)
    js = CliRunner().invoke(cli, ["run", str(path), "--json"])
    assert js.exit_code == 1
    doc = json.loads(js.stdout)
    validate(doc)
    [f] = doc["failures"]
    assert (f["index"], f["invariant"]) == (3, "dirty-writable")
    assert f["message"] == ("dirty-writable: IPA 0x40000000 (slot 0 page 0x0) was marked dirty "
                            "but the fault returned with nothing mapped")


def test_a_walker_that_breaks_its_contract_fails_the_run(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    monkeypatch.setattr(walk_module, "kvm_pgtable_walk_continue", lambda w, r, rule: True)
    path = tmp_path / "walk.toml"
    # a translation fault reported again for the page the read mapped: the map walker's
    # visitor finds nothing to change and returns -EAGAIN, which must end the walk
    path.write_text(SMALL + '\n[[event]]\ndo = "abort"\nesr = 0x92000007\n'
                    'far = 0x40000000\nhpfar = 0x400000\n')
    text = CliRunner().invoke(cli, ["run", str(path)])
    assert text.exit_code == 1
    assert "INVARIANT BROKEN: walk-contract: visitor returned -11" in text.output


def test_a_warn_another_layer_records_counts_once() -> None:
    draft = StepDraft(1, load_scenario("w.toml", SMALL).events[0])
    draft.events = (Warn("host_stage2_adjust_range", "no level fits"),)
    assert other_layers_warns(draft, []) == [
        WarnFired("host_stage2_adjust_range", "no level fits")]
    assert other_layers_warns(draft, [WarnFired("host_stage2_adjust_range",
                                                "no level fits")]) == []


def test_a_break_before_make_without_its_tlbi_leaves_the_block_in_the_tlb() -> None:
    run = run_scenario(SCENARIOS / "broken" / "split_without_tlbi.toml")
    assert {(f.step.index, f.what.invariant) for f in run.failures} == {
        (5, "stale-tlb"), (5, "break-without-tlbi")}
    last = run.steps[-1]
    assert last.faults == () and last.outcome.value == "completed"  # a TLB hit
    fixed = load_scenario(SCENARIOS / "broken" / "split_without_tlbi.toml")
    fixed_text = Path(fixed.path).read_text().replace('inject = ["skip-tlbi-vmid-ipa"]', "")
    run = run_scenario(load_scenario("fixed.toml", fixed_text))
    assert run.ok and len(run.steps[-1].faults) == 1  # the read walks and faults


def test_a_write_protect_without_its_flush_loses_a_dirty_page() -> None:
    text = (SCENARIOS / "broken" / "wrprotect_without_tlbi.toml").read_text()
    broken = run_scenario(load_scenario("broken.toml", text))
    write = broken.steps[3]
    assert write.faults == () and write.outcome.value == "completed"  # from the TLB
    assert broken.steps[4].result.pages == ()  # type: ignore[union-attr]
    fixed = run_scenario(load_scenario("fixed.toml", text.replace(
        'inject = ["skip-tlbi-vmid"]', "").replace("expect_dirty_count = 0",
                                                   "expect_dirty_count = 1")))
    assert fixed.ok and fixed.steps[4].result.pages == (0x202,)  # type: ignore[union-attr]
