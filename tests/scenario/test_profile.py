"""One kernel release selects every layer's rules: [kvm] profile, run_scenario(profile=),
and the fault path's walker flags seen through a scenario (relax after a racing unmap)."""

from __future__ import annotations

from pathlib import Path

import pytest

from s2mmu.arch.errors import InputError
from s2mmu.kvm.fault import PgtableCall, PgtableOp
from s2mmu.nested.at import AtContext, AtProfile, kvm_at
from s2mmu.nested.profile import CURRENT, KERNEL_PROFILES
from s2mmu.pgtable.errno import EAGAIN
from s2mmu.scenario import KvmWorld, ScenarioError, load_scenario, nested_events, run_scenario
from s2mmu.scenario.records import Run

RELAX_AFTER_UNMAP = Path(__file__).parents[1] / "scenarios" / "relax_after_unmap.toml"
PKVM = '[pkvm]\n[[pkvm_guest]]\nhandle = 1\n'


def relax_calls(run: Run) -> list[int]:
    """Return what every relax_perms of the run's faults returned."""
    return [d.ret for s in run.steps for f in s.faults for d in f.handled.decisions
            if isinstance(d, PgtableCall) and d.op is PgtableOp.RELAX_PERMS]


def marks(run: Run, index: int) -> int:
    return sum(len(f.handled.dirtied) for f in run.steps[index].faults)


def test_no_kvm_table_is_the_current_code() -> None:
    scn = load_scenario("s.toml", PKVM)
    assert scn.profile is CURRENT and CURRENT.name == "v6.19"


def test_kvm_profile_selects_every_layer() -> None:
    scn = load_scenario("s.toml", '[kvm]\nprofile = "v6.12"\n' + PKVM)
    assert scn.profile is KERNEL_PROFILES["v6.12"]
    assert scn.profile.at is not None and not scn.profile.at.hw_af
    run = run_scenario(scn)
    assert run.world.part(KvmWorld).kvm.env.profile.name == "v6.12"


@pytest.mark.parametrize(("text", "message"), [
    ('[kvm]\nprofile = "v6.3..v6.19-rc4"\n',
     "s.toml:2: kvm.profile: must be one of v6.1, v6.2, v6.6, v6.12, v6.18, v6.19, "
     "not 'v6.3..v6.19-rc4'"),
    ('[kvm]\nprofile = 6\n', "s.toml:2: kvm.profile: must be one of v6.1, v6.2, v6.6, v6.12, "
                            "v6.18, v6.19, not 6"),
    ('[kvm]\nrelease = "v6.1"\n', "s.toml:2: kvm.release: unknown field (known: profile)"),
])
def test_a_bad_kvm_table_is_one_line_naming_the_field(text: str, message: str) -> None:
    with pytest.raises(ScenarioError) as e:
        load_scenario("s.toml", text)
    assert str(e.value) == message


def test_the_runner_overrides_the_file_and_refuses_unknown_releases() -> None:
    run = run_scenario(load_scenario("s.toml", '[kvm]\nprofile = "v6.12"\n' + PKVM),
                       profile="v6.1")
    assert run.scenario.profile.name == "v6.1"
    assert run.world.part(KvmWorld).kvm.env.profile.name == "v6.1"
    with pytest.raises(InputError, match=r"^unknown kernel profile 'v5' \(known: v6\.1, "):
        run_scenario(load_scenario("s.toml", PKVM), profile="v5")


@pytest.mark.parametrize(("release", "relax", "marked"), [
    ("v6.1", [0], 2),          # invalid entries skipped: the relax "succeeds" on nothing
    ("v6.2", [0], 2),          # SHARED, but the attr walker skips invalid entries (v6.3 fix)
    ("v6.6", [-EAGAIN], 1),    # SHARED|HANDLE_FAULT: -EAGAIN, the guest retries
    ("v6.12", [-EAGAIN], 1),
    ("v6.18", [-EAGAIN], 1),
    ("v6.19", [-EAGAIN], 1),   # SHARED: -EAGAIN ends the walk by default
])
def test_a_relax_after_a_racing_unmap_follows_the_release(release: str, relax: list[int],
                                                          marked: int) -> None:
    run = run_scenario(RELAX_AFTER_UNMAP, profile=release)
    write = run.steps[2]
    assert relax_calls(run) == relax
    assert marks(run, 2) == marked
    assert write.faults[-1].handled.mapping is not None  # the retry maps the page RW
    assert run.ok is (release != "v6.1" and release != "v6.2")


def test_the_scenario_file_holds_under_its_own_profile() -> None:
    assert run_scenario(RELAX_AFTER_UNMAP).ok


def test_a_race_point_other_than_the_two_seams_is_refused() -> None:
    text = RELAX_AFTER_UNMAP.read_text().replace('at = "before-seq"', 'at = "after-map"')
    with pytest.raises(ScenarioError, match=r"event\[1\]\.race: must be \{do = munmap\|madvise"
                                            r"\|migrate\|hwpoison, hva = \.\.\., size = \.\.\., "
                                            r"at = before-lock\|before-seq\}"):
        load_scenario("r.toml", text)


NESTED_AT = """
[[vma]]
start = 0x7f0000000000
size = "64M"
[[memslot]]
id = 0
gpa = 0x40000000
size = "64M"
hva = 0x7f0000000000
[nested]
tables = 0x43000000
[[nested.map]]
l2_ipa = 0x80000000
ipa = 0x40400000
size = "4K"
perms = "RW"
[[event]]
do = "l1_at"
op = "S12E1R"
va = 0x80000000
"""


@pytest.mark.parametrize(("release", "hw_af"), [("v6.12", False), ("v6.18", False),
                                                ("v6.19", True)])
def test_the_nested_at_emulation_follows_the_release(release: str, hw_af: bool,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[AtProfile] = []

    def spy(ctx: AtContext, *args: object) -> object:
        seen.append(ctx.profile)
        return kvm_at(ctx, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(nested_events, "kvm_at", spy)
    run = run_scenario(load_scenario("n.toml", f'[kvm]\nprofile = "{release}"\n' + NESTED_AT))
    assert run.ok and [p.hw_af for p in seen] == [hw_af]


def test_an_at_under_a_release_without_at_c_is_refused() -> None:
    with pytest.raises(ScenarioError, match=r"n\.toml:\d+: event\[0\]\.do: kernel profile v6\.6 "
                                            r"has no AT emulation"):
        run_scenario(load_scenario("n.toml", '[kvm]\nprofile = "v6.6"\n' + NESTED_AT))
