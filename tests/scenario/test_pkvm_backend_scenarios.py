"""Scenarios whose VM runs under pKVM: [host] kvm_mode = "protected", [vm] protected."""

from __future__ import annotations

import json
from importlib import resources

import pytest
from click.testing import CliRunner

from s2mmu.cli.main import cli
from s2mmu.cli.schemas import validate
from s2mmu.kvm.fault import PgtableCall
from s2mmu.pgtable.backend import BackendKind, MmuLockMode
from s2mmu.pkvm.backend import PkvmBackend
from s2mmu.pkvm.host_fault import ZeropadFixedUp
from s2mmu.scenario.kvm_events import KvmWorld
from s2mmu.scenario.pkvm_events import HostAccessed, PkvmWorld
from s2mmu.scenario.records import Run
from s2mmu.scenario.render_json import run_json
from s2mmu.scenario.runner import run_scenario
from s2mmu.scenario.schema import ScenarioError, load_scenario

SHARED, PROTECTED = "pkvm_guest_shared.toml", "pkvm_guest_protected.toml"
RELAX = "pkvm_guest_relax.toml"
PAGE, PMD = 0x1000, 0x20_0000


def builtin(name: str) -> Run:
    text = resources.files("s2mmu.scenario.data").joinpath(name).read_text()
    return run_scenario(load_scenario(name, text))


def calls(r: Run) -> list[PgtableCall]:
    return [d for s in r.steps for f in s.faults for d in f.handled.decisions
            if isinstance(d, PgtableCall)]


@pytest.mark.parametrize("name", [SHARED, PROTECTED, RELAX])
def test_the_built_in_pkvm_guest_scenarios_hold_and_are_valid_json(name: str) -> None:
    r = builtin(name)
    assert r.ok, [str(f.what) for f in r.failures]
    validate(run_json(r))
    assert isinstance(r.world.part(KvmWorld).kvm.backend, PkvmBackend)
    assert {(c.backend, c.lock) for c in calls(r)} == {(BackendKind.PKVM, MmuLockMode.WRITE)}
    assert calls(r)[0].step == "pkvm_pgtable_stage2_map"


def test_shared_guest_blocks_pages_and_blocks_again() -> None:
    r = builtin(SHARED)
    assert [c.size for c in calls(r)] == [PMD, PAGE, PMD]
    hvm = r.world.part(KvmWorld).kvm.backend
    assert isinstance(hvm, PkvmBackend)
    assert hvm.hvm.mappings.as_dict() == {}  # the munmap unshared the block
    assert r.world.part(PkvmWorld).pkvm is hvm.pkvm


def test_protected_guest_pages_rwx_survive_munmap_and_the_host_is_fixed_up() -> None:
    r = builtin(PROTECTED)
    assert [(c.size, c.prot) for c in calls(r)] == [(PAGE, 0xF), (PAGE, 0xF)]
    last = r.steps[-1].result
    assert isinstance(last, HostAccessed) and isinstance(last.outcome, ZeropadFixedUp)
    assert last.outcome.far == 0xFFFF_0010_0000_1000


def test_run_json_of_a_pkvm_guest_names_the_pkvm_function() -> None:
    path = resources.files("s2mmu.scenario.data").joinpath(SHARED)
    result = CliRunner().invoke(cli, ["run", str(path), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    validate(doc)
    steps = [d["step"] for s in doc["steps"] for f in s["faults"] for d in f["decisions"]]
    assert steps.count("pkvm_pgtable_stage2_map") == 3


BASE = """
[[vma]]
start = 0x7f0000000000
size = "2M"
kind = "anon"

[[memslot]]
id = 0
gpa = 0x40000000
size = "2M"
hva = 0x7f0000000000
"""


@pytest.mark.parametrize(("head", "message"), [
    ('[host]\nkvm_mode = "protected"\n',
     'host.kvm_mode: "protected" needs a [pkvm] table (the hypervisor)'),
    ('[host]\nkvm_mode = "pkvm"\n',
     "host.kvm_mode: must be one of default, protected, not 'pkvm'"),
    ("[vm]\nprotected = true\n",
     "vm.protected: KVM_CREATE_VM fails -EINVAL: KVM_VM_TYPE_ARM_PROTECTED without "
     "protected KVM (pkvm_init_host_vm)"),
])
def test_bad_pkvm_vm_tables_are_one_line_errors(head: str, message: str) -> None:
    with pytest.raises(ScenarioError) as e:
        run_scenario(load_scenario("t.toml", 'name = "t"\n' + head + BASE))
    assert message in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(("profile", "result", "dirty"), [
    ("v6.18", "resumed", [1]), ("v6.19", "retry", [])])
def test_seed_000_on_the_fault_path_marks_an_unmapped_page_dirty_before_the_fix(
        profile: str, result: str, dirty: list[int]) -> None:
    text = resources.files("s2mmu.scenario.data").joinpath(RELAX).read_text()
    text = (text.replace('profile = "v6.18"', f'profile = "{profile}"')
            .replace('expect = "resumed"', f'expect = "{result}"')
            .replace("expect_dirty = [1]", f"expect_dirty = {dirty}"))
    if result != "resumed":  # after the fix nothing breaks the dirty-writable invariant
        text = text.replace('expect_broken = "dirty-writable"\n', "")
    r = run_scenario(load_scenario(RELAX, text))
    assert r.ok, [str(f.what) for f in r.failures]
    # Before the fix the dirty-writable invariant catches the bug at the fault's step.
    assert [b.invariant for b in r.steps[3].meant] == (
        ["dirty-writable"] if result == "resumed" else [])
    (call,) = [d for f in r.steps[3].faults for d in f.handled.decisions
               if isinstance(d, PgtableCall)]
    assert call.step == "pkvm_pgtable_stage2_relax_perms"
    assert call.ret == (0 if result == "resumed" else -11)


def test_a_traced_step_lists_each_hypervisor_event_once() -> None:
    """Under protected KVM the VM's event log is the hypervisor's: both layers see it."""
    r = run_scenario(load_scenario("pkvm_guest_shared.toml", resources.files(
        "s2mmu.scenario.data").joinpath("pkvm_guest_shared.toml").read_text()), trace=True)
    for step in r.steps:
        ids = [id(e) for e in step.trace]
        assert len(ids) == len(set(ids)), step.index
