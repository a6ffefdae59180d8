"""Real KVM/arm64 booted under QEMU: the shipped scenarios agree with the model.

One nVHE boot runs both scenarios (tests/real/conftest.py); the command line boots twice
more (protected with text, VHE with JSON). Skipped when QEMU, the cross compiler or the
kernel package cannot be had, failed instead under S2MMU_REQUIRE_REAL=1.
"""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from s2mmu.cli.main import cli
from s2mmu.cli.real_cmd import diff_json, run_json
from s2mmu.cli.schemas import validate
from s2mmu.real.boot import Kernel, Mode
from s2mmu.real.diff import DiffReport, shared_frames
from s2mmu.real.diff import leaves as diff_leaves
from s2mmu.real.runner import RealRequest, RealResult, diff_real, load
from tests.real.conftest import SCENARIOS

Diffed = tuple[list[DiffReport], RealResult]
THP_SPLIT = SCENARIOS[0].parent / "thp_split.toml"


def test_the_scenarios_agree_step_by_step_on_nvhe(nvhe_diff: Diffed) -> None:
    reports, result = nvhe_diff
    assert result.console.kvm_mode == "Hyp mode"
    assert [(r.scenario, r.differences) for r in reports] == [
        ("dirty-round", []), ("host-events", []), ("guest-va", [])]
    assert [len(r.steps) for r in reports] == [12, 18, 15]


def test_guest_accesses_by_va_walk_the_guest_s_stage_1(nvhe_diff: Diffed) -> None:
    """The guest's first fetch walks its stage 1: three S1PTW aborts then the fetch's own
    (FAR_EL2 the VA each time); QEMU 7.2 reports the level-2 table's S1PTW fault at the
    stage-1 level (a listed departure); the guest's own stage-1 faults come back as
    ESR_EL1/FAR_EL1 equal to the model's."""
    reports, _ = nvhe_diff
    steps = {s.index: s for s in reports[2].steps}
    assert [(f.ipa, f.s1ptw, f.far) for f in steps[2].real_faults] == [
        (0x40000000, True, 0x200000), (0x40001000, True, 0x200000),
        (0x40200000, False, 0x200000)]
    assert steps[2].departures == ("s2_walk_fault_level",)
    assert (steps[6].real_answer.esr, steps[6].real_answer.far) == (0x96000006, 0x1000000)


def test_the_dirty_round_is_real(nvhe_diff: Diffed) -> None:
    reports, _ = nvhe_diff
    steps = {s.index: s for s in reports[0].steps}
    assert steps[9].dirty == (0, 3) and steps[11].dirty == (3,)
    assert [str(f) for f in steps[7].real_faults] == ["write Permission L3 @0x40000000"]


def test_json_documents_follow_their_schemas(nvhe_diff: Diffed) -> None:
    reports, result = nvhe_diff
    doc = diff_json(reports, result)
    validate(doc)
    assert doc["kernel"]["mode"] == "nvhe" and doc["profile"] == "v6.1"
    validate(run_json(result))


def test_cli_diff_in_protected_mode(real_kernel: Kernel, real_cache: Path) -> None:
    """Under pKVM, --dump-after reads the host's stage 2 (VMID 0): 6.1's, with the
    hypervisor's annotations and the page states in its PTEs, agrees range by range with
    the model's for the same story, and holds the guest's memory as host-owned pages."""
    r = CliRunner().invoke(cli, ["real", "diff", str(SCENARIOS[0]), "--mode", "protected",
                                 "--kernel", str(real_kernel.image), "--cache",
                                 str(real_cache), "--dump-after", "5", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    validate(doc)
    assert doc["kernel"]["kvm_says"] == "Protected nVHE mode"
    (scn,) = doc["scenarios"]
    assert (scn["agreed"], scn["steps"]) == (12, 12)
    host = scn["compared"][4]["host_stage2"]
    assert host["only_real"] == [] and host["only_model"] == []
    assert host["real"] == host["model"] and "annotated" in host["real"]
    assert host["guest_memory"]["real"] == host["guest_memory"]["model"]
    assert host["guest_memory"]["real"]["annotated"] == 0


def test_cli_run_json_in_vhe_mode(real_kernel: Kernel, real_cache: Path) -> None:
    r = CliRunner().invoke(cli, ["real", "run", str(SCENARIOS[0]), "--json", "--kernel",
                                 str(real_kernel.image), "--cache", str(real_cache)])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    validate(doc)
    assert doc["kernel"]["kvm_says"] == "VHE mode"
    steps = doc["scenarios"][0]["steps"]
    assert steps[8]["dirty"] == [0, 3]
    assert steps[4]["answer"] == {"outcome": "mmio",
                                  "mmio": {"ipa": "0x9000000", "length": 4, "write": False}}


def test_stage2_read_through_the_gdbstub(real_kernel: Kernel, real_cache: Path) -> None:
    """The real stage 2 after the MMIO step, walked by s2mmu.arch.dump over memory read
    from QEMU, holds what KVM 6.1 does: the written page writable, data pages XN, the
    fetched page executable; and the two pages first touched by a read and by a fetch
    both map the host's shared zero page, read-only (R--, R-x). The model does the same,
    so the diff finds nothing at that step. In the same boot, the VMM's pagemap places
    each leaf in its folio: a THP's 2M block at offset 0, then (dirty logging) single
    pages at their own offsets in that folio, as in the model."""
    reports, result = diff_real(load([SCENARIOS[0], THP_SPLIT]),
                                RealRequest(str(real_kernel.image), Mode.VHE,
                                            str(real_cache)), ("5",))
    s2 = result.stage2[(0, 5)]
    mapped = diff_leaves(s2.dump, result.runs[0][0])
    leaves = {v.ipa: v for v, _ in mapped}
    assert sorted(leaves) == [0x40000000, 0x40001000, 0x40002000]
    assert all(v.size == 0x1000 and v.attrs.level == 3 for v in leaves.values())
    assert [(leaves[a].attrs.perms.w, leaves[a].attrs.perms.px) for a in sorted(leaves)] == [
        (True, False), (False, False), (False, True)]
    assert shared_frames(mapped) == {frozenset({0x40001000, 0x40002000})}
    assert [str(r) for _, r in {s.index: s for s in reports[0].steps}[5].relations] == [
        "hva +0x0 in a 4K folio", "zero +0x0 in a 4K folio", "zero +0x0 in a 4K folio"]
    assert [r.differences for r in reports] == [[], []]
    doc = diff_json(reports, result)
    validate(doc)
    assert doc["scenarios"][1]["compared"][4]["relations"][0] == {
        "ipa": "0x40005000", "size": 4096, "backing": "hva", "folio": 0x200000,
        "offset": 0x5000, "contiguous": True}
    thp = {s.index: s for s in reports[1].steps}[5]
    assert [(v.ipa, str(r)) for v, r in thp.relations] == [
        (0x40005000, "hva +0x5000 in a 2048K folio"),
        (0x40007000, "hva +0x7000 in a 2048K folio")]


ZERO_PAGE_COW = Path(__file__).resolve().parents[1] / "scenarios" / "zero_page_cow.toml"



def test_a_write_to_the_zero_page_is_copied_and_6_1_remaps_the_copy_read_only(
        real_kernel: Kernel, real_cache: Path) -> None:
    """Read and fetch map the one zero page read-only on 6.1 as in the model; the write's
    permission fault copies it. 6.1 still has the change_pte notifier: wp_page_copy's
    set_pte_at_notify has kvm_set_spte_gfn map the copy PROT_R, so the retried write is a
    second permission fault (relaxed); the v6.1 profile's change_pte knob says the same,
    so every step agrees."""
    reports, result = diff_real(load([ZERO_PAGE_COW]),
                                RealRequest(str(real_kernel.image), Mode.VHE,
                                            str(real_cache)), ("3", "5"))
    (report,) = reports
    assert report.profile == "v6.1" and report.agreed == 5 and report.differences == []
    assert [str(f) for f in report.steps[3].real_faults] == [
        "write Permission L3 @0x40001000", "write Permission L3 @0x40001000"]
    after_fetch = diff_leaves(result.stage2[(0, 3)].dump, result.runs[0][0])
    assert shared_frames(after_fetch) == {frozenset({0x40001000, 0x40002000})}


def test_cli_campaign_json_in_nvhe_mode(real_kernel: Kernel, real_cache: Path) -> None:
    """Six generated scenarios in one nVHE boot: every step agrees (the campaign's seeds
    0..299 agreed in each mode when this was written)."""
    r = CliRunner().invoke(cli, ["real", "campaign", "--count", "6", "--per-boot", "6",
                                 "--mode", "nvhe", "--json", "--kernel",
                                 str(real_kernel.image), "--cache", str(real_cache)])
    doc = json.loads(r.output)
    validate(doc)
    assert (doc["scenarios"], doc["boots"], doc["kvm_says"]) == (6, 1, "Hyp mode")
    assert doc["agreeing"] == 6 and doc["classes"] == [] and r.exit_code == 0
