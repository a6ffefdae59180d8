"""The nested layer of scenarios: L2 accesses, L1 TLBIs and AT through the registry, the
shadow invariant after every step, and one clear refusal per malformed key."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from s2mmu.cli.main import cli
from s2mmu.kvm.abort import InjectedS2Fault, kvm_vcpu_abt_iss1tw
from s2mmu.nested.invariants import ShadowPermsExceed
from s2mmu.nested.mmu import ShadowUnmap
from s2mmu.pgtable.prot import KVM_PGTABLE_PROT_X
from s2mmu.pgtable.s2trans import NestedWalkError
from s2mmu.scenario.nested_events import AtDone, L2Completed, TlbiDone, TlbiUndefined
from s2mmu.scenario.records import Broken, Outcome, result_outcome
from s2mmu.scenario.runner import run_scenario
from s2mmu.scenario.schema import ScenarioError, load_scenario

BASE = """
[host]
features = {host}
[vm]
ipa_bits = 40
[[vma]]
name = "ram"
start = 0x7f0000000000
size = "64M"
[[memslot]]
id = 0
gpa = 0x40000000
size = "64M"
hva = 0x7f0000000000
[nested]
{nested}
[[nested.map]]
l2_ipa = 0x80000000
ipa = 0x40000000
size = "2M"
level = 2
[[nested.map]]
l2_ipa = 0x80200000
ipa = 0x40400000
size = "4K"
perms = "R"
{maps}
{events}
"""


def scenario(events: str = "", nested: str = "", maps: str = "",
             host: str = '["fwb", "dic", "idc", "tlb_range"]') -> str:
    """Return the base scenario with events, [nested] keys (vmid 5 and tables at
    0x43000000 unless given), extra [[nested.*]] tables and the [host] features."""
    for key, line in (("vmid", "vmid = 5"), ("tables", "tables = 0x43000000")):
        if f"{key} =" not in nested:
            nested = f"{line}\n{nested}"
    return BASE.format(events=events, nested=nested, maps=maps, host=host)


def run(text: str):  # type: ignore[no-untyped-def]
    return run_scenario(load_scenario("t.toml", text))


def test_the_built_in_demo_holds_every_expectation_and_the_invariant() -> None:
    from s2mmu.cli.run_cmd import demo_text
    r = run_scenario(load_scenario("nested_demo.toml", demo_text("nested_demo.toml")))
    assert r.ok, [f.what for f in r.failures]
    outcomes = [s.outcome for s in r.steps if s.event.do.startswith("l2_")]
    assert outcomes == [Outcome.COMPLETED, Outcome.L1_S2_FAULT, Outcome.L1_S2_FAULT,
                        Outcome.COMPLETED, Outcome.COMPLETED, Outcome.L1_S2_FAULT]
    ats = [s.result for s in r.steps if isinstance(s.result, AtDone)]
    assert [a.path for a in ats] == ["fast", "fast", "slow"]


def test_an_l2_read_fills_the_shadow_and_a_write_to_a_read_only_page_is_forwarded() -> None:
    r = run(scenario("""
[[event]]
do = "l2_read"
ipa = 0x80001000
[[event]]
do = "l2_write"
ipa = 0x80200000
"""))
    assert r.ok
    assert isinstance(r.steps[1].result, L2Completed)
    last = r.steps[2].faults[-1].handled.result
    assert isinstance(last, InjectedS2Fault) and last.esr & 0x3F == 0x0F


def test_a_refused_l1_walk_is_injected_with_fsc_0_not_raised() -> None:
    r = run(scenario("""
[[event]]
do = "l2_read"
ipa = 0x80001000
expect = "l1-s2-fault"
expect_esr = 0x92000000
""", nested="regs = { VTCR_EL2 = 0x80023f0a }"))  # T0SZ=10: a 54-bit IPA KVM refuses
    assert r.ok, [f.what for f in r.failures]
    walk = r.steps[1].faults[0].handled.decisions[0]
    assert isinstance(walk.trans, NestedWalkError) and walk.trans.errno == "EFAULT"


def test_result_outcome_counts_an_injected_l1_fault() -> None:
    assert result_outcome(InjectedS2Fault(0x92000006, 0x1000)) is Outcome.L1_S2_FAULT


def test_tlbi_fields_encode_xt_and_a_missing_range_feature_is_undefined() -> None:
    r = run(scenario("""
[[event]]
do = "l2_read"
ipa = 0x80200000
[[event]]
do = "l1_tlbi"
op = "RIPAS2LE1IS"
ipa = 0x80200000
tg = "4K"
scale = 0
num = 0
expect_shadow = { l2_ipa = 0x80200000, size = "none" }
"""))
    assert r.ok, [f.what for f in r.failures]
    assert r.steps[2].result == TlbiDone(r.steps[2].event.op, 1 << 46 | 0x80200,
                                         (ShadowUnmap(5, 0x8020_0000, 0x2000),))
    r = run(scenario("""
[[event]]
do = "l1_tlbi"
op = "RIPAS2E1IS"
xt = 0x400000080200
""", host='["fwb", "dic", "idc"]'))  # no FEAT_TLBIRANGE on the host: none in L1
    assert isinstance(r.steps[1].result, TlbiUndefined)


def test_a_stale_shadow_is_allowed_until_l1_invalidates_it() -> None:
    from s2mmu.scenario.nested_events import NestedWorld
    text = scenario("""
[[event]]
do = "l2_read"
ipa = 0x80200000
[[event]]
do = "l1_unmap"
l2_ipa = 0x80200000
[[event]]
do = "l1_tlbi"
op = "IPAS2E1IS"
ipa = 0x80000000
ttl_level = 3
[[event]]
do = "l1_tlbi"
op = "IPAS2E1IS"
ipa = 0x80200000
ttl_level = 3
expect_shadow = { l2_ipa = 0x80200000, size = "none" }
""")
    pending = []
    r = run_scenario(load_scenario("t.toml", text),
                     on_step=lambda s, w: pending.append(list(w.part(NestedWorld).stale)))
    assert r.ok, [f.what for f in r.failures]
    assert pending[2:] == [[(0x8020_0000, 0x1000)], [(0x8020_0000, 0x1000)], []]


def test_the_invariant_reports_a_shadow_l1_never_allowed() -> None:
    from s2mmu.scenario.nested_events import NestedWorld, shadow_invariant
    r = run(scenario("""
[[event]]
do = "l2_read"
ipa = 0x80200000
"""))
    nw = r.world.part(NestedWorld)
    assert nw.mem is not None and not shadow_invariant(r.world)
    nw.mem.write64(0x4300_0010, 0)  # L1's level-1 entry for 2G..3G, zeroed behind KVM's back
    assert shadow_invariant(r.world)


def test_l1_map_then_l2_access() -> None:
    r = run(scenario("""
[[event]]
do = "l1_map"
l2_ipa = 0x80400000
ipa = 0x40600000
size = "4K"
[[event]]
do = "l2_write"
ipa = 0x80400000
expect = "completed"
expect_shadow = { l2_ipa = 0x80400000, size = "4K", perms = "RWX" }
"""))
    assert r.ok, [f.what for f in r.failures]


BAD = [
    ("", 'granule = "8K"', "nested.granule: must be one of 16K, 4K, 64K, not '8K'"),
    ("", "t0sz = 64", "nested.t0sz: must be 0..63, not 64"),
    ("", "sl0 = 4", "nested.sl0: must be 0..3, not 4"),
    ("", "ps = 9", "nested.ps: must be 0..7, not 9"),
    ("", "vmid = 0x10000", "nested.vmid: must be 0..65535, not 65536"),
    ("", "bogus = 1", "nested.bogus: unknown field"),
    ("", 'profile = "v6.12"', "nested.profile: unknown field"),
    ("", 'features = "qemu-max"', "nested.features: not a [nested] key: the guest "
                                  "hypervisor's features come from the VM's ID registers"),
    ("", 'without = ["FEAT_TTL"]', "nested.without: not a [nested] key: lower the VM's ID "
                                   "registers with [vm] id_regs"),
    ("", "regs = { XYZ_EL2 = 1 }", "nested.regs: 'XYZ_EL2': not a register"),
    ("", "regs = { HCR_EL2 = -1 }", "nested.regs: HCR_EL2: must not be negative"),
    ("", "", "nested.map: map[2].l2_ipa: 0x80001000 is not a non-zero multiple of 0x1000"),
    ("", "", "nested.map: map[2].perms: must be one of"),
    ("", "", "nested.map: map[2].level: must be 1..3, not 0"),
    ("", "", "nested.map: map[2]: missing field 'size'"),
    ("", "", "nested.desc: desc[0]: missing field 'value'"),
    ("", "", 'nested.s1map: s1map[0].regime: must be "el1" or "el2", not \'el3\''),
]
BAD_MAPS = {
    11: "[[nested.map]]\nl2_ipa = 0x80001800\nipa = 0x40000000\nsize = \"4K\"",
    12: "[[nested.map]]\nl2_ipa = 0x80400000\nipa = 0x40000000\nsize = \"4K\"\nperms = \"X\"",
    13: "[[nested.map]]\nl2_ipa = 0x80400000\nipa = 0x40000000\nsize = \"4K\"\nlevel = 0",
    14: "[[nested.map]]\nl2_ipa = 0x80400000\nipa = 0x40000000",
    15: "[[nested.desc]]\ngpa = 0x43000000",
    16: "[[nested.s1map]]\nregime = \"el3\"\ntables = 0\nva = 0\noa = 0\nsize = \"4K\"",
}
BAD[11] = ("", "", "nested.map: map[2].l2_ipa: 0x80001800 is not a non-zero multiple of 0x1000")


def refused_by_the_cli(tmp_path, text: str) -> str:  # type: ignore[no-untyped-def]
    """Return `s2mmu run`'s one error line for a scenario it must refuse with exit 2."""
    f = tmp_path / "bad.toml"
    f.write_text(text)
    got = CliRunner().invoke(cli, ["run", str(f)])
    lines = [ln for ln in got.output.splitlines() if ln]
    assert got.exit_code == 2 and len(lines) == 1, got.output
    assert "Traceback" not in got.output
    return lines[0]


@pytest.mark.parametrize("i", range(len(BAD)))
def test_a_malformed_nested_table_is_one_line_naming_the_key(tmp_path, i: int) -> None:  # type: ignore[no-untyped-def]
    _, nested, want = BAD[i]
    assert want in refused_by_the_cli(tmp_path, scenario(nested=nested,
                                                         maps=BAD_MAPS.get(i, "")))


BAD_EVENTS = [
    ('do = "l2_read"', "event[0].do: l2_read needs exactly one of 'ipa'"),
    ('do = "l2_read"\nipa = 0x1000000000000', "event[0].ipa: L2 IPA 0x1000000000000 is beyond"),
    ('do = "l1_tlbi"\nop = "TLBIALL"', "event[0].op: must be one of IPAS2E1IS"),
    ('do = "l1_tlbi"\nop = "IPAS2E1IS"\nxt = 1\nipa = 0', "event[0].ipa: give either xt"),
    ('do = "l1_tlbi"\nop = "IPAS2E1IS"\nipa = 0\nscale = 1', "event[0].scale: not a field of "
                                                            "TLBI IPAS2E1IS"),
    ('do = "l1_tlbi"\nop = "RIPAS2E1IS"\nipa = 0\ntg = "8K"', "event[0].tg: must be one of"),
    ('do = "l1_tlbi"\nop = "RIPAS2E1IS"\nipa = 0\nscale = 4', "event[0].scale: SCALE 4"),
    ('do = "l1_tlbi"\nop = "RIPAS2E1IS"\nipa = 0x1000\ntg = "64K"',
     "event[0].ipa: base 0x1000 is not a multiple of the 64K granule"),
    ('do = "l1_tlbi"\nop = "IPAS2E1IS"\nipa = 0\nttl_level = 4',
     "event[0].ttl_level: TTL level 4 is not 0..3"),
    ('do = "l1_tlbi"\nop = "IPAS2E1IS"\nipa = 0\nttl_level = 1\nttl_granule = "2K"',
     "event[0].ttl_granule: must be one of"),
    ('do = "l1_at"\nop = "S1E3R"\nva = 0', "event[0].op: must be one of"),
    ('do = "l1_at"\nop = "S1E1R"', "event[0].do: l1_at needs 'va'"),
    ('do = "l1_at"\nop = "S1E1R"\nva = 0\npan = 1', "event[0].pan: must be true or false"),
    ('do = "l1_unmap"', "event[0].do: l1_unmap needs 'l2_ipa'"),
    ('do = "l1_map"\nl2_ipa = 0\nipa = 0\nsize = "4K"\nperms = "RX"',
     "event[0].perms: must be one of"),
    ('do = "l1_map"\nl2_ipa = 0\nipa = 0\nsize = "4K"\nlevel = 7', "event[0].level: must be 1..3"),
    ('do = "l2_read"\nipa = 0\nexpect_esr = "x"', "event[0].expect_esr: must be an ESR value"),
    ('do = "l2_read"\nipa = 0\nexpect_shadow = { l2_ipa = 0, size = "3M" }',
     "event[0].expect_shadow: size: must be one of 4K, 2M, 1G, none, not '3M'"),
    ('do = "l2_read"\nipa = 0\nexpect_shadow = { l2_ipa = 0, perms = "RQ" }',
     "event[0].expect_shadow: perms: must be letters of"),
    ('do = "l2_read"\nipa = 0\nexpect_shadow = { l2_ipa = 0, pa = -1 }',
     "event[0].expect_shadow: pa: must be a host PA below 2^52, not -1"),
    ('do = "l1_at"\nop = "S1E1R"\nva = 0\nexpect_par = true', "event[0].expect_par: must be a "
                                                             "PAR_EL1 value"),
    ('do = "l1_at"\nop = "S1E1R"\nva = 0\nexpect_path = "medium"',
     "event[0].expect_path: must be \"fast\" or \"slow\", not 'medium'"),
    ('do = "l1_at"\nop = "S1E1R"\nva = 0\nexpect_esr = 0', "event[0].expect_esr: not a field of"),
]


@pytest.mark.parametrize(("event", "want"), BAD_EVENTS)
def test_a_malformed_nested_event_is_one_line_naming_the_key(tmp_path, event: str,  # type: ignore[no-untyped-def]
                                                             want: str) -> None:
    assert want in refused_by_the_cli(tmp_path, scenario("[[event]]\n" + event))


def test_a_nested_event_without_nested_is_refused() -> None:
    text = scenario("[[event]]\ndo = \"l2_read\"\nipa = 0").split("[nested]")[0] + \
        "[[event]]\ndo = \"l2_read\"\nipa = 0\n"
    with pytest.raises(ScenarioError, match=r"event\[0\]\.do: l2_read needs a \[nested\] table"):
        load_scenario("t.toml", text)


@pytest.mark.parametrize(("text", "want"), [
    (scenario(maps="[[nested.map]]\nl2_ipa = 0x80400000\nipa = 0x40000000\nsize = \"4K\""
                   "\n[[nested.desc]]\ngpa = 0x90000000\nvalue = 1"),
     "nested.desc: desc[0]: guest PA 0x90000000 is outside guest memory"),
    (scenario('[[event]]\ndo = "l1_unmap"\nl2_ipa = 0x80400000'),
     "event[0].l2_ipa: L1's stage 2 maps nothing at L2 IPA 0x80400000"),
    (scenario(nested='tables = 0x90000000'), "nested.tables"),
])
def test_the_cli_refuses_bad_nested_input_with_exit_2(tmp_path, text: str,  # type: ignore[no-untyped-def]
                                                      want: str) -> None:
    f = tmp_path / "n.toml"
    f.write_text(text)
    got = CliRunner().invoke(cli, ["run", str(f)])
    assert got.exit_code == 2, got.output
    lines = [ln for ln in got.output.splitlines() if ln]
    assert len(lines) == 1 and want in lines[0] and "Traceback" not in got.output


def test_entering_l2_with_other_vttbrs_looks_up_then_recycles_round_robin() -> None:
    from s2mmu.scenario.nested_events import L2Entered
    vttbr = 0x43000000
    r = run(scenario(f"""
[[event]]
do = "l2_read"
ipa = 0x80001000
[[event]]
do = "l2_enter"
regs = {{ VTTBR_EL2 = {6 << 48 | vttbr:#x} }}
[[event]]
do = "l2_enter"
regs = {{ VTTBR_EL2 = {5 << 48 | vttbr | 1:#x} }}
expect_shadow = {{ l2_ipa = 0x80001000, size = "4K" }}
[[event]]
do = "l2_enter"
regs = {{ VTTBR_EL2 = {7 << 48 | vttbr:#x} }}
expect_shadow = {{ l2_ipa = 0x80001000, size = "none" }}
"""))
    assert r.ok, [f.what for f in r.failures]
    got = [s.result for s in r.steps[2:]]
    assert [(e.vmid, e.found, e.recycled_vmid) for e in got if isinstance(e, L2Entered)] == [
        (6, False, None), (5, True, None), (7, False, 5)]


def test_l2_enter_refuses_an_unknown_register() -> None:
    with pytest.raises(ScenarioError, match=r"event\[0\]\.regs: 'VTTBR_EL3': not a register"):
        load_scenario("t.toml", scenario('[[event]]\ndo = "l2_enter"\n'
                                         'regs = { VTTBR_EL3 = 1 }'))


def test_an_l2_access_by_va_walks_l2s_stage1_through_the_shadow() -> None:
    from s2mmu.scenario.nested_events import L2Faulted
    maps = ('[[nested.s1map]]\nregime = "el1"\ntables = 0x80100000\nva = 0x10000000\n'
            'oa = 0x80000000\nsize = "64K"')
    r = run(scenario("""
[[event]]
do = "l2_read"
va = 0x10002000
expect = "completed"
[[event]]
do = "l2_read"
va = 0x20000000
expect = "guest-fault"
""", maps=maps))
    assert r.ok, [f.what for f in r.failures]
    assert isinstance(r.steps[1].result, L2Completed) and r.steps[1].result.pa & 0xFFF == 0
    # The stage-1 walk's first table read faults on the empty shadow (S1PTW).
    assert kvm_vcpu_abt_iss1tw(r.steps[1].faults[0].abort)
    assert not kvm_vcpu_abt_iss1tw(r.steps[1].faults[-1].abort)
    assert isinstance(r.steps[2].result, L2Faulted)


def test_an_l2_access_needs_exactly_one_of_ipa_and_va() -> None:
    with pytest.raises(ScenarioError, match=r"event\[0\]\.do: l2_read needs exactly one of"):
        load_scenario("t.toml", scenario('[[event]]\ndo = "l2_read"\nipa = 0\nva = 0'))


def test_every_at_op_runs_from_a_scenario_and_pan_applies_to_s1e1rp() -> None:
    from s2mmu.arch.at import AtOp
    maps = ('[[nested.s1map]]\nregime = "el1"\ntables = 0x80100000\nva = 0x10000000\n'
            'oa = 0x80000000\nsize = "64K"\n'
            '[[nested.s1map]]\nregime = "el1"\ntables = 0x80100000\nva = 0x10100000\n'
            'oa = 0x80010000\nsize = "4K"\nel0 = true\n'
            '[[nested.s1map]]\nregime = "el2"\ntables = 0x43800000\nva = 0x20000000\n'
            'oa = 0x40000000\nsize = "64K"')
    events = "".join(f'[[event]]\ndo = "l1_at"\nop = "{op.name}"\n'
                     f'va = {0x20003000 if op.el == 2 else 0x10002000:#x}\n' for op in AtOp)
    events += ('[[event]]\ndo = "l1_at"\nop = "S1E1RP"\nva = 0x10100000\npan = true\n'
               '[[event]]\ndo = "l1_at"\nop = "S1E1RP"\nva = 0x10100000\n')
    r = run(scenario(events, maps=maps, host='["fwb", "dic", "idc", "tlb_range", "FEAT_ATS1A"]'))
    assert r.ok, [f.what for f in r.failures]
    pars = {s.result.op: s.result.par for s in r.steps[1:1 + len(AtOp)]
            if isinstance(s.result, AtDone)}
    assert set(pars) == set(AtOp)
    for op, par in pars.items():
        if op.el == 0:  # the page is not EL0-accessible: a level-3 permission fault
            assert par & 0x7F == 0x1F, (op, hex(par))
        else:
            assert not par & 1 and par >> 12 & 0xFFFFF in (0x40002, 0x80002, 0x40003), op
    pan_on, pan_off = (s.result.par for s in r.steps[-2:] if isinstance(s.result, AtDone))
    assert pan_on & 0x7F == 0x1F and not pan_off & 1


def test_a_wrong_shadow_expectation_names_what_the_shadow_holds() -> None:
    from s2mmu.scenario.render_text import mismatch_text
    r = run(scenario("""
[[event]]
do = "l2_read"
ipa = 0x80001000
expect_shadow = { l2_ipa = 0x80001000, size = "4K", perms = "R", pa = 0x1 }
"""))
    (m,) = r.steps[1].mismatches
    assert mismatch_text(m.expectation, m.got).startswith(
        "expected the shadow leaf at L2 IPA 0x80001000 to be 4K R at PA 0x1, got 4K RX at PA ")


# -- L1's XN per kernel release (tests/scenarios/nested_exec_xn.toml) -------------------------

XN_SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "nested_exec_xn.toml"


def broken_x(release: str) -> list[tuple[int, int]]:
    """Return (step number, L2 IPA) of every shadow leaf the invariant finds granting X that L1
    denies, under a release."""
    run = run_scenario(XN_SCENARIO, profile=release)
    broken = [(f.step.index, f.what.violation) for f in run.failures
              if isinstance(f.what, Broken) and f.what.invariant == "nested-shadow"]
    return [(i, v.l2_ipa) for i, v in broken if isinstance(v, ShadowPermsExceed)
            and v.granted & ~v.allowed & int(KVM_PGTABLE_PROT_X)]


def test_current_code_forwards_both_fetches_and_maps_no_x() -> None:
    run = run_scenario(XN_SCENARIO)
    assert run.ok and run.failures == []
    assert [s.outcome for s in run.steps[1:]] == [Outcome.COMPLETED, Outcome.L1_S2_FAULT,
                                                  Outcome.L1_S2_FAULT]


def test_v6_19_maps_both_pages_executable_and_the_invariant_says_so() -> None:
    # d93febe2ed2e: without FEAT_XNX every L1 leaf reads executable: the fetch after the
    # read is relaxed to X, the first fetch is mapped X.
    assert broken_x("v6.19") == [(3, 0x80000000), (4, 0x80000000), (4, 0x80001000)]


def test_v6_12_forwards_the_permission_fault_but_maps_a_first_fetch_executable() -> None:
    assert broken_x("v6.12") == [(4, 0x80001000)]
    run = run_scenario(XN_SCENARIO, profile="v6.12")
    assert run.steps[2].outcome is Outcome.L1_S2_FAULT


PAN_SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "nested_pan_el0_probe.toml"


def test_el0_probe_is_reachable_from_a_scenario_and_differs_under_e0pd() -> None:
    run = run_scenario(PAN_SCENARIO)
    assert run.ok
    arch, probe = (s.result for s in run.steps[1:])
    assert isinstance(arch, AtDone) and isinstance(probe, AtDone)
    assert arch.par & 1 and (arch.par >> 1) & 0x3F == 0b001111   # PAN: permission fault
    assert not probe.par & 1                                        # the probe lets it through


def test_a_bad_pan_check_is_one_line_naming_the_key() -> None:
    text = PAN_SCENARIO.read_text().replace('pan_check = "el0-probe"', 'pan_check = "el0"')
    with pytest.raises(ScenarioError, match=r"pan_check: must be one of architecture, "
                                            r"el0-probe, not 'el0'"):
        load_scenario("p.toml", text)


def test_an_at_the_vm_id_registers_lack_is_undefined_in_l1() -> None:
    from s2mmu.arch.at import AtOp
    from s2mmu.scenario.nested_events import AtUndefined
    from s2mmu.scenario.render_text import timeline_lines
    events = "".join(f'[[event]]\ndo = "l1_at"\nop = "{op}"\nva = 0x20000000\n'
                     for op in ("S1E1A", "S1E2A", "S1E1RP"))
    r = run(scenario(events))                       # the host has no FEAT_ATS1A
    got = [s.result for s in r.steps[1:]]
    assert got[:2] == [AtUndefined(AtOp.S1E1A, "AT S1E1A needs FEAT_ATS1A"),
                       AtUndefined(AtOp.S1E2A, "AT S1E2A needs FEAT_ATS1A")]
    assert isinstance(got[2], AtDone)               # PAN2: the model's host has it
    assert "L1 AT S1E1A VA 0x20000000: UNDEFINED (AT S1E1A needs FEAT_ATS1A): injected " \
           "into L1" in "\n".join(timeline_lines(r))
    # userspace lowers ID_AA64MMFR1_EL1.PAN to 1 (FEAT_PAN): S1E1RP is UNDEFINED in L1 too
    lowered = scenario(events).replace("ipa_bits = 40", "ipa_bits = 40\nid_regs = { "
                                       "ID_AA64MMFR1_EL1 = 0x100021 }", 1)
    got = [s.result for s in run(lowered).steps[1:]]
    assert got[2] == AtUndefined(AtOp.S1E1RP, "AT S1E1RP needs FEAT_PAN2")
