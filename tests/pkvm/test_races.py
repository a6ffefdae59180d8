"""pKVM races: host stage-2 idmap faults on two CPUs, explored schedule by schedule."""

from __future__ import annotations

import dataclasses

import pytest

from s2mmu.pgtable.concurrency import World, explore, run_schedule
from s2mmu.pgtable.errno import EAGAIN, EPERM
from s2mmu.pgtable.profile import PROFILES
from s2mmu.pkvm.races import PKVM_RACES, host_idmap_faults


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_two_host_faults_in_one_block_serialize_and_one_finds_it_mapped(profile: str) -> None:
    found = explore(host_idmap_faults(PROFILES[profile]), max_preemptions=8)
    assert found.ok and found.complete and found.runs == 2
    first = run_schedule(host_idmap_faults(PROFILES[profile]), [0])
    second = run_schedule(host_idmap_faults(PROFILES[profile]), [1])
    assert (first.results, second.results) == ([0, -EAGAIN], [-EAGAIN, 0])


def test_without_host_mmu_lock_the_explorer_finds_a_broken_run() -> None:
    def unlocked() -> World:
        world = host_idmap_faults()()
        world.ops = [dataclasses.replace(op, lock=None) for op in world.ops]
        return world

    # The host's walk is not a shared walker: a CPU looking between another's descriptor
    # writes reads an invalid, non-zero entry the other left mid-update as an owner
    # annotation (-EPERM and a WARN_ON).
    found = explore(unlocked, max_preemptions=2)
    assert not found.ok
    bad = found.failures[0]
    assert bad.results[1] == -EPERM
    assert [(v.rule, v.detail) for v in bad.violations] == [
        ("warn", "WARN_ON in host_stage2_adjust_range: host state != PKVM_NOPAGE")]


def test_the_race_is_registered_for_the_race_command() -> None:
    from s2mmu.cli.race_cmd import ALL_RACES

    assert ALL_RACES["pkvm-host-idmap-faults"] is PKVM_RACES["pkvm-host-idmap-faults"]
    assert "same-ipa-faults" in ALL_RACES
