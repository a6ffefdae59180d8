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


def test_both_scenarios_agree_step_by_step_on_nvhe(nvhe_diff: Diffed) -> None:
    reports, result = nvhe_diff
    assert result.console.kvm_mode == "Hyp mode"
    assert [(r.scenario, r.differences) for r in reports] == [
        ("dirty-round", []), ("host-events", [])]
    assert [len(r.steps) for r in reports] == [12, 18]


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
    r = CliRunner().invoke(cli, ["real", "diff", str(SCENARIOS[0]), "--mode", "protected",
                                 "--kernel", str(real_kernel.image), "--cache",
                                 str(real_cache)])
    assert r.exit_code == 0, r.output
    assert "(KVM: Protected nVHE mode)" in r.output
    assert r.output.splitlines()[-1] == "dirty-round: 12/12 steps agree"


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
    so the diff finds nothing at that step."""
    reports, result = diff_real(load([SCENARIOS[0]]),
                                RealRequest(str(real_kernel.image), Mode.VHE,
                                            str(real_cache)), ("5",))
    (s2,) = result.stage2.values()
    mapped = diff_leaves(s2.dump, result.runs[0][0])
    leaves = {v.ipa: v for v, _ in mapped}
    assert sorted(leaves) == [0x40000000, 0x40001000, 0x40002000]
    assert all(v.size == 0x1000 and v.attrs.level == 3 for v in leaves.values())
    assert [(leaves[a].attrs.perms.w, leaves[a].attrs.perms.px) for a in sorted(leaves)] == [
        (True, False), (False, False), (False, True)]
    assert shared_frames(mapped) == {frozenset({0x40001000, 0x40002000})}
    assert reports[0].differences == []


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
