"""The pkvm layer of scenarios: tables, events, expectations, invariants, wording, JSON."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from s2mmu.cli.main import cli
from s2mmu.cli.run_cmd import PKVM_DEMOS, demo_text
from s2mmu.cli.schemas import validate
from s2mmu.pgtable.errno import EAGAIN, EPERM
from s2mmu.pgtable.prot import KVM_PGTABLE_PROT_RW
from s2mmu.pkvm.errno import EBUSY
from s2mmu.pkvm.host_fault import Fixup, HostFaultPolicy, HostSeaPanic, ZeropadFixedUp
from s2mmu.pkvm.invariants import PkvmViolation
from s2mmu.pkvm.states import PKVM_PAGE_OWNED
from s2mmu.scenario.pkvm_events import (
    AccessResult,
    ExpectAccess,
    ExpectData,
    ExpectDirtyMarks,
    ExpectRet,
    GuestCall,
    GuestOp,
    HostAccessed,
    HostAccessEvent,
    HypCall,
    HypOp,
    NotRun,
    PkvmSummary,
    PkvmWorld,
    Returned,
)
from s2mmu.scenario.records import Mismatch, Run
from s2mmu.scenario.render_json import run_json
from s2mmu.scenario.render_text import timeline_lines
from s2mmu.scenario.runner import run_scenario
from s2mmu.scenario.schema import ScenarioError, load_scenario

GOLDEN = Path(__file__).resolve().parents[1] / "scenarios" / "demo_pkvm.golden.txt"

PKVM = """
[pkvm]
policy = "data-abort"

[[pkvm_guest]]
handle = 1

[[pkvm_guest]]
handle = 2
protected = true
"""


def run(events: str, head: str = PKVM) -> Run:
    return run_scenario(load_scenario("p.toml", head + events))


def rets(r: Run) -> list[int | None]:
    return [s.result.ret if isinstance(s.result, Returned) else None for s in r.steps]


# -- tables -------------------------------------------------------------------------------------


def test_a_scenario_without_pkvm_tables_has_no_pkvm_state_or_summary() -> None:
    r = run_scenario(load_scenario("k.toml", "[[vma]]\nstart = 0x7f0000000000\nsize = \"4M\"\n"))
    assert r.world.part(PkvmWorld).pkvm is None
    assert "pkvm" not in r.summaries and "kvm" in r.summaries


def test_the_pkvm_tables_boot_the_hypervisor_and_its_guests() -> None:
    r = run("", '[kvm]\nprofile = "v6.18"\n' + PKVM.replace(
        'policy = "data-abort"', 'policy = "sea"\nram_pages = 64\nunmap_donated = true'))
    pw = r.world.part(PkvmWorld)
    assert pw.pkvm is not None and pw.policy is HostFaultPolicy.INJECT_SEA and pw.unmap_donated
    assert pw.pkvm.env.profile.name == "v6.18"
    assert {h: vm.protected for h, vm in pw.pkvm.vms.items()} == {1: False, 2: True}
    s = r.summaries["pkvm"]
    assert isinstance(s, PkvmSummary) and (s.host_pages, s.guests) == (64, (1, 2))
    assert "kvm" not in r.summaries  # no VMA, no memslot: the kvm layer has nothing to say


@pytest.mark.parametrize("text, message", [
    ('[pkvm]\npolicy = "panic"\n',
     "p.toml:2: pkvm.policy: must be one of bug, data-abort, sea, not 'panic'"),
    ('[kvm]\nprofile = "v7"\n',
     "p.toml:2: kvm.profile: must be one of v6.1, v6.2, v6.6, v6.12, v6.18, v6.19, not 'v7'"),
    ("[pkvm]\nram_pages = 0\n", "p.toml:2: pkvm.ram_pages: must be 1..4096, not 0"),
    ("[pkvm]\nunmap_donated = 1\n", "p.toml:2: pkvm.unmap_donated: must be true or false, "
                                    "not 1"),
    ("[pkvm]\nwho = 1\n", "p.toml:2: pkvm.who: unknown field (known: nomap_pages, policy, "
                          "ram_pages, unmap_donated)"),
    ("[[pkvm_guest]]\nhandle = 1\n", "p.toml:1: pkvm_guest[0]: needs a [pkvm] table (the "
                                     "hypervisor)"),
    ("[pkvm]\n[[pkvm_guest]]\nprotected = true\n",
     "p.toml:2: pkvm_guest[0]: missing field 'handle'"),
    ("[pkvm]\n[[pkvm_guest]]\nhandle = 0\n", "p.toml:3: pkvm_guest[0].handle: must be 1..255 "
                                             "(the model uses it as the guest's VMID), not 0"),
    ("[pkvm]\n[[pkvm_guest]]\nhandle = 1\n[[pkvm_guest]]\nhandle = 1\n",
     "p.toml:5: pkvm_guest[1].handle: handle 1 is already used"),
])
def test_bad_tables_are_one_line_naming_file_line_and_field(text: str, message: str) -> None:
    with pytest.raises(ScenarioError) as e:
        load_scenario("p.toml", text)
    assert str(e.value) == message


@pytest.mark.parametrize("event, message", [
    ('do = "host_donate_hyp"\n', "p.toml:12: event[0]: missing field 'pfn'"),
    ('do = "host_donate_hyp"\npfn = 0x10000000\n',
     "p.toml:14: event[0].pfn: 0x10000000 is beyond the host's 40-bit stage 2"),
    ('do = "host_share_hyp"\npfn = 0x40000\nnr_pages = 2\n',
     "p.toml:15: event[0].nr_pages: host_share_hyp takes one page (__pkvm_host_share_hyp(pfn))"),
    ('do = "host_share_guest"\nguest = 3\ngfn = 1\npfn = 0x40000\n',
     "p.toml:14: event[0].guest: no [[pkvm_guest]] with handle 3 (known: 1, 2)"),
    ('do = "host_share_guest"\nguest = 1\ngfn = 1\npfn = 0x40000\nprot = "WR"\n',
     "p.toml:17: event[0].prot: must be letters of \"RWX\" in that order, like \"RW\", "
     "not 'WR'"),
    ('do = "host_unshare_guest"\nguest = 1\ngfn = 1\npfn = 0x40000\n',
     "p.toml:16: event[0].pfn: not a field of a host_unshare_guest event (known: do, "
     "expect_broken, expect_error, expect_leaves, expect_ret, expect_seq, expect_warn, gfn, "
     "guest, note)"),
    ('do = "host_access"\npa = 0x40000000\nsize = 65\n',
     "p.toml:15: event[0].size: must be 1..64 bytes, not 65"),
    ('do = "host_access"\npa = 0x40000000\nwrite = true\n',
     "p.toml:12: event[0]: a store needs data, a load takes none"),
    ('do = "host_access"\npa = 0x40000000\nsize = 2\nwrite = true\ndata = "41"\n',
     "p.toml:17: event[0].data: holds 1 bytes, the access is 2"),
    ('do = "host_access"\npa = 0x40000000\nwrite = true\ndata = "0011223344556677"\n'
     'fixup = "zeropad"\n', "p.toml:17: event[0].fixup: zeropad is a load's fixup "
                            "(load_unaligned_zeropad), not a store's"),
    ('do = "host_access"\npa = 0xfffffffffc\n',
     "p.toml:14: event[0].pa: 0xfffffffffc+8 ends beyond the host's 40-bit stage 2"),
    ('do = "host_donate_hyp"\npfn = 0x40000\nexpect_ret = "EWHAT"\n',
     "p.toml:15: event[0].expect_ret: must be \"0\" or one of E2BIG, EAGAIN, EBUSY, EEXIST, "
     "EFAULT, EINVAL, EIO, ENOENT, ENOMEM, EPERM, ERANGE, not 'EWHAT'"),
    ('do = "host_access"\npa = 0x40000000\nexpect_access = "ok"\n',
     "p.toml:15: event[0].expect_access: must be one of done, fixed-up, hyp-panic, oops, "
     "sea-panic, not 'ok'"),
    ('do = "host_access"\npa = 0x40000000\nexpect_ret = "0"\n',
     "p.toml:15: event[0].expect_ret: not a field of a host_access event (known: data, do, "
     "expect_access, expect_broken, expect_data, expect_error, expect_leaves, expect_seq, "
     "expect_warn, fixup, note, pa, size, write)"),
])
def test_bad_events_are_one_line_naming_file_line_and_field(event: str, message: str) -> None:
    with pytest.raises(ScenarioError) as e:
        load_scenario("p.toml", PKVM + "\n[[event]]\n" + event)
    assert str(e.value) == message


def test_pkvm_events_need_the_pkvm_table() -> None:
    with pytest.raises(ScenarioError) as e:
        load_scenario("p.toml", '[[event]]\ndo = "host_share_hyp"\npfn = 0x40000\n')
    assert str(e.value) == "p.toml:2: event[0].do: a host_share_hyp event needs a [pkvm] table"


def test_events_parse_into_their_typed_values() -> None:
    scn = load_scenario("p.toml", PKVM + """
[[event]]
do = "host_donate_hyp"
pfn = 0x40010
nr_pages = 2
expect_ret = "0"

[[event]]
do = "host_share_guest"
guest = 1
pfn = 0x40020
gfn = 0x80
prot = "RW"
write_fault = true
expect_dirty_marks = 1

[[event]]
do = "host_access"
pa = 0x4000fffc
fixup = "zeropad"
expect_access = "fixed-up"
expect_data = "0000 0000 0000 0000"
""")
    donate, share, access = scn.events
    assert isinstance(donate, HypCall) and (donate.op, donate.pfn, donate.nr_pages) == (
        HypOp.HOST_DONATE_HYP, 0x40010, 2) and donate.expects == (ExpectRet(0),)
    assert isinstance(share, GuestCall) and (share.op, share.guest, share.gfn, share.pfn,
                                             share.prot, share.write_fault) == (
        GuestOp.SHARE, 1, 0x80, 0x40020, KVM_PGTABLE_PROT_RW, True)
    assert share.expects == (ExpectDirtyMarks(1),)
    assert isinstance(access, HostAccessEvent) and (access.pa, access.length, access.fixup,
                                                    access.va) == (
        0x4000FFFC, 8, Fixup.ZEROPAD, 0xFFFF_0000_4000_FFFC)
    assert access.expects == (ExpectAccess(AccessResult.FIXED_UP), ExpectData(bytes(8)))


# -- each event ---------------------------------------------------------------------------------


def test_host_hyp_calls_share_pin_unshare_donate_and_give_back() -> None:
    r = run("""
[[event]]
do = "host_share_hyp"
pfn = 0x40000
[[event]]
do = "hyp_pin_shared_mem"
pfn = 0x40000
[[event]]
do = "host_unshare_hyp"
pfn = 0x40000
expect_ret = "-EBUSY"
[[event]]
do = "hyp_unpin_shared_mem"
pfn = 0x40000
[[event]]
do = "host_unshare_hyp"
pfn = 0x40000
[[event]]
do = "host_donate_hyp"
pfn = 0x40001
nr_pages = 2
[[event]]
do = "host_share_hyp"
pfn = 0x40002
[[event]]
do = "hyp_donate_host"
pfn = 0x40001
nr_pages = 2
""")
    assert r.ok, [str(f.what) for f in r.failures]
    assert rets(r) == [0, 0, -EBUSY, 0, 0, 0, -EPERM, 0]
    assert [s.result.function for s in r.steps if isinstance(s.result, Returned)][:3] == [
        "__pkvm_host_share_hyp", "hyp_pin_shared_mem", "__pkvm_host_unshare_hyp"]


def test_guest_calls_share_relax_wrprotect_mkyoung_donate_and_reclaim() -> None:
    r = run("""
[[event]]
do = "host_share_guest"
guest = 1
pfn = 0x40020
gfn = 0x80
prot = "R"
[[event]]
do = "host_share_guest"
guest = 1
pfn = 0x40021
gfn = 0x80
[[event]]
do = "host_relax_perms_guest"
guest = 1
gfn = 0x80
prot = "RW"
[[event]]
do = "host_wrprotect_guest"
guest = 1
gfn = 0x80
[[event]]
do = "host_mkyoung_guest"
guest = 1
gfn = 0x80
[[event]]
do = "host_relax_perms_guest"
guest = 2
gfn = 0x80
[[event]]
do = "host_donate_guest"
guest = 2
pfn = 0x40030
gfn = 0x10
[[event]]
do = "host_reclaim_page"
guest = 2
gfn = 0x10
[[event]]
do = "start_teardown_vm"
guest = 2
[[event]]
do = "finalize_teardown_vm"
guest = 2
[[event]]
do = "host_reclaim_page"
guest = 2
gfn = 0x10
[[event]]
do = "finalize_teardown_vm"
guest = 2
[[event]]
do = "host_unshare_guest"
guest = 1
gfn = 0x80
[[event]]
do = "teardown"
guest = 1
""")
    assert r.ok, [str(f.what) for f in r.failures]
    # the host's record refuses a second share at the same gfn with -EAGAIN (seed 000's
    # 'mappings' tree); protected guests refuse relax; reclaim needs a dying VM; a VM
    # still holding a donated page cannot be finalized.
    assert rets(r) == [0, -EAGAIN, 0, 0, 0, -EPERM, 0, -EPERM, 0, -EBUSY, 0, 0, 0, 0]
    assert r.world.part(PkvmWorld).pkvm.vms == {}  # type: ignore[union-attr]


def test_a_guest_call_on_a_torn_down_guest_names_the_field() -> None:
    with pytest.raises(ScenarioError) as e:
        run('[[event]]\ndo = "teardown"\nguest = 1\n[[event]]\ndo = "host_mkyoung_guest"\n'
            'guest = 1\ngfn = 1\n')
    assert str(e.value) == "p.toml:16: event[1].guest: guest 1 was torn down"


def test_write_faults_mark_the_page_dirty_only_when_the_call_returns_0() -> None:
    events = """
[[event]]
do = "host_relax_perms_guest"
guest = 1
gfn = 0x80
prot = "RW"
write_fault = true
"""
    old = run(events, '[kvm]\nprofile = "v6.18"\n' + PKVM)
    new = run(events)
    assert rets(old) == [0] and len(old.world.part(PkvmWorld).dirty_marks) == 1
    assert rets(new) == [-EAGAIN] and new.world.part(PkvmWorld).dirty_marks == []


def test_host_access_under_each_policy_and_the_direct_map() -> None:
    events = """
[[event]]
do = "host_donate_hyp"
pfn = 0x40010
[[event]]
do = "host_access"
pa = 0x4000fffc
fixup = "zeropad"
[[event]]
do = "host_access"
pa = 0x40010000
size = 4
"""
    got = {}
    for policy in ("data-abort", "sea", "bug"):
        for unmap in ("false", "true"):
            head = PKVM.replace('"data-abort"', f'"{policy}"\nunmap_donated = {unmap}')
            r = run(events, head)
            got[policy, unmap] = [type(s.result.outcome).__name__ if isinstance(
                s.result, HostAccessed) else type(s.result).__name__ for s in r.steps[1:]]
    assert got == {
        ("data-abort", "false"): ["ZeropadFixedUp", "HostOops"],
        ("data-abort", "true"): ["ZeropadFixedUp", "HostOops"],
        ("sea", "false"): ["HostSeaPanic", "NotRun"],
        ("sea", "true"): ["ZeropadFixedUp", "HostOops"],
        ("bug", "false"): ["HostAccessHypPanic", "NotRun"],
        ("bug", "true"): ["ZeropadFixedUp", "HostOops"]}


def test_a_store_then_a_load_moves_the_bytes() -> None:
    r = run('[[event]]\ndo = "host_access"\npa = 0x40000010\nsize = 2\nwrite = true\n'
            'data = "beef"\n[[event]]\ndo = "host_access"\npa = 0x4000000f\nsize = 4\n'
            'expect_data = "00beef00"\nexpect_access = "done"\n')
    assert r.ok


# -- expectations ---------------------------------------------------------------------------


def test_each_expectation_reports_what_it_found_instead() -> None:
    r = run("""
[[event]]
do = "host_share_hyp"
pfn = 0x40000
expect_ret = "-EPERM"
[[event]]
do = "host_share_guest"
guest = 1
pfn = 0x40001
gfn = 1
write_fault = true
expect_dirty_marks = 2
[[event]]
do = "host_donate_hyp"
pfn = 0x40010
[[event]]
do = "host_access"
pa = 0x40010000
expect_access = "done"
expect_data = "00"
[[event]]
do = "host_share_hyp"
pfn = 0x40000
expect_ret = "0"
""", PKVM.replace('"data-abort"', '"sea"'))
    ms = [(f.step.index, f.what) for f in r.failures]
    assert ms == [(1, Mismatch(ExpectRet(-EPERM), 0)), (2, Mismatch(ExpectDirtyMarks(2), 1)),
                  (4, Mismatch(ExpectAccess(AccessResult.DONE), AccessResult.SEA_PANIC)),
                  (4, Mismatch(ExpectData(b"\0"), None)), (5, Mismatch(ExpectRet(0), None))]
    text = "\n".join(timeline_lines(r))
    assert "EXPECTATION FAILED: expected return -EPERM, got 0" in text
    assert "EXPECTATION FAILED: expected the gfn marked dirty 2 time(s), got 1" in text
    assert "EXPECTATION FAILED: expected host access done, got sea-panic" in text
    assert "EXPECTATION FAILED: expected data 00, got none" in text
    assert "#5  [line  31] host_share_hyp pfn 0x40000: not run: the host panicked at step #4\n" \
           "    EXPECTATION FAILED: expected return 0, got no call" in text
    assert isinstance(r.steps[3].result, HostAccessed)
    assert r.steps[3].result.outcome == HostSeaPanic(0xFFFF_0000_4001_0000)
    assert isinstance(r.steps[4].result, NotRun)


# -- invariants ---------------------------------------------------------------------------------


def test_the_ownership_invariants_catch_a_broken_state() -> None:
    scn = load_scenario("p.toml", PKVM + '[[event]]\ndo = "host_donate_hyp"\npfn = 0x40010\n'
                        '[[event]]\ndo = "host_share_hyp"\npfn = 0x40000\n')

    def corrupt(step: object, world: object) -> None:
        from s2mmu.scenario.records import World

        assert isinstance(world, World)
        pkvm = world.part(PkvmWorld).pkvm
        assert pkvm is not None
        if step.index == 1:  # type: ignore[attr-defined]
            # the host believes it still owns the donated page
            pkvm.vmemmap.hyp_phys_to_page(0x4001_0000).host_state = PKVM_PAGE_OWNED

    r = run_scenario(scn, on_step=corrupt)
    assert {b.invariant for b in r.steps[1].invariants} == {"pkvm-ownership"}
    broken = [b.violation for b in r.steps[1].invariants]
    assert broken and all(isinstance(v, PkvmViolation) for v in broken)
    assert {v.rule for v in broken} >= {"owner"} and broken[0].phys == 0x4001_0000
    text = "\n".join(timeline_lines(r))
    assert f"    INVARIANT BROKEN: pkvm-ownership: {broken[0]}" in text
    doc = run_json(r)
    validate(doc)
    assert doc["steps"][1]["invariants"][0]["phys"] == "0x40010000"


# -- text, JSON, the demo -------------------------------------------------------------------------


def test_every_built_in_pkvm_story_holds_and_is_valid_json() -> None:
    for name in PKVM_DEMOS:
        r = run_scenario(load_scenario(name, demo_text(name)))
        assert r.ok, (name, [str(f.what) for f in r.failures])
        validate(run_json(r))


def test_seed_002_fixed_up_under_data_abort_panic_under_sea() -> None:
    ends = {}
    for name in PKVM_DEMOS[:4]:
        r = run_scenario(load_scenario(name, demo_text(name)))
        load = r.steps[2].result
        assert isinstance(load, HostAccessed)
        ends[name] = load.outcome
    data, far = bytes.fromhex("4142434400000000"), 0xFFFF_0000_4001_0000
    assert ends == {"pkvm_donate_data_abort.toml": ZeropadFixedUp(data, far, stage=2),
                    "pkvm_donate_sea.toml": HostSeaPanic(far),
                    "pkvm_donate_data_abort_unmapped.toml": ZeropadFixedUp(data, far, stage=1),
                    "pkvm_donate_sea_unmapped.toml": ZeropadFixedUp(data, far, stage=1)}


def test_seed_000_marks_the_page_dirty_twice_before_the_fix_once_after() -> None:
    marks, relax = {}, {}
    for name in PKVM_DEMOS[4:]:
        r = run_scenario(load_scenario(name, demo_text(name)))
        marks[name] = [m.step for m in r.world.part(PkvmWorld).dirty_marks]
        relax[name] = rets(r)[2]
    assert relax == {"pkvm_relax_v6_18.toml": 0, "pkvm_relax_v6_19.toml": -EAGAIN}
    assert marks == {"pkvm_relax_v6_18.toml": [3, 4], "pkvm_relax_v6_19.toml": [4]}


def test_demo_pkvm_text_matches_the_golden_file() -> None:
    result = CliRunner().invoke(cli, ["demo", "--pkvm"])
    assert result.exit_code == 0
    assert result.output == GOLDEN.read_text()


def test_demo_pkvm_json_is_one_valid_document() -> None:
    import json

    result = CliRunner().invoke(cli, ["demo", "--pkvm", "--json"])
    assert result.exit_code == 0
    doc = json.loads(result.output)
    validate(doc)
    assert [r["name"] for r in doc["runs"]] == [
        "pkvm-donate-data-abort", "pkvm-donate-sea", "pkvm-donate-data-abort-unmapped",
        "pkvm-donate-sea-unmapped", "pkvm-relax-v6.18", "pkvm-relax-v6.19"]
    sea = doc["runs"][1]
    assert sea["summary"]["layers"] == {"pkvm": {
        "profile": "v6.19", "policy": "sea", "pages": {"host": 511, "shared": 0, "hyp": 1,
                                                       "guests": 0},
        "guests": [], "dirty_marks": 0, "direct_map_holes": 0, "panicked_at": 3}}
    assert sea["steps"][2]["result"] == {
        "type": "HostAccessed", "result": "sea-panic",
        "outcome": {"type": "HostSeaPanic", "far": "0xffff000040010000"},
        "text": "panic: SEA in the kernel, FAR 0xffff000040010000"}
    assert sea["steps"][1]["result"] == {"type": "Returned", "function": "__pkvm_host_donate_hyp",
                                         "ret": 0, "errno": "0",
                                         "text": "__pkvm_host_donate_hyp = 0"}


def test_demo_refuses_arch_and_pkvm_together() -> None:
    result = CliRunner().invoke(cli, ["demo", "--pkvm", "--arch"])
    assert result.exit_code == 2
    assert "--arch, --pkvm and --nested are different demos" in result.output


def test_run_reaches_a_pkvm_scenario_file(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text(demo_text("pkvm_relax_v6_18.toml"))
    result = CliRunner().invoke(cli, ["run", str(f)])
    assert result.exit_code == 0
    assert "__pkvm_host_relax_perms_guest = 0, page marked dirty" in result.output
    assert "  dirty marks: 2; direct-map holes: 0" in result.output
