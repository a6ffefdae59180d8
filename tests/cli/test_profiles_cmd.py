"""`s2mmu profiles` (text table and s2mmu.profiles/1 JSON) and `s2mmu run --profile`."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner

from s2mmu.cli.main import cli
from s2mmu.cli.profiles_cmd import stands_for
from s2mmu.cli.schemas import validate

RELAX_AFTER_UNMAP = str(Path(__file__).parents[1] / "scenarios" / "relax_after_unmap.toml")


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_the_table_has_a_column_per_release_and_a_row_per_knob() -> None:
    code, out, _ = run("profiles")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["knob", "v6.1", "v6.2", "v6.6", "v6.12", "v6.18", "v6.19*"]
    rows = {ln.split()[0]: ln.split()[1:] for ln in lines[1:] if ln and not ln.startswith(" ")}
    assert rows["eagain_rule"] == ["any-error", "any-error", "HANDLE_FAULT", "HANDLE_FAULT",
                                   "HANDLE_FAULT", "IGNORE_EAGAIN"]
    assert rows["shared_fault_walks"] == ["no", "yes", "yes", "yes", "yes", "yes"]
    assert rows["at_hw_af"] == ["-", "-", "-", "no", "no", "yes"]
    assert re.search(r"\nfault: map, relax_perms +none +SHARED +SHARED\|HANDLE_FAULT +"
                     r"SHARED\|HANDLE_FAULT +SHARED\|HANDLE_FAULT +SHARED\n", out)
    assert re.search(r"\naccess fault: mkyoung +none +none +SHARED\|HANDLE_FAULT", out)
    assert rows["relax_perms_local_tlbi"] == ["no", "no", "yes", "yes", "yes", "yes"]
    assert rows["relax_perms_tlbi_on_eagain"] == ["no", "no", "no", "yes", "yes", "yes"]
    assert '  eagain_rule: v6.3 ddcadb297ce5 "KVM: arm64: Ignore EAGAIN for walks outside' in out
    assert "  max_owner_id: v6.19 commit not pinned" in out
    assert '  shared_fault_walks: v6.2 1577cb5823ce "KVM: arm64: Handle stage-2 faults' in out


def test_json_follows_its_schema() -> None:
    code, out, _ = run("profiles", "--json")
    assert code == 0
    doc = json.loads(out)
    validate(doc)
    assert doc["default"] == "v6.19"
    v612 = next(p for p in doc["profiles"] if p["name"] == "v6.12")
    assert v612["fault_walk_flags"] == "SHARED|HANDLE_FAULT"
    assert v612["knobs"]["eagain_rule"] == "HANDLE_FAULT" and v612["knobs"]["at_hw_af"] is False
    assert {k["layer"] for k in doc["knobs"]} == {"pgtable", "nested"}


def test_each_profile_says_which_releases_it_stands_for() -> None:
    assert [stands_for(n) for n in ("v6.1", "v6.2", "v6.6", "v6.12", "v6.18", "v6.19")] == [
        "..v6.1", "v6.2", "v6.3..v6.6", "v6.7..v6.13", "v6.14..v6.18", "v6.19.."]


def test_run_profile_overrides_the_file() -> None:
    code, out, _ = run("run", RELAX_AFTER_UNMAP)
    assert code == 0 and "kvm_pgtable_stage2_relax_perms: IPA 0x40001000 4K" in out
    code, out, _ = run("run", RELAX_AFTER_UNMAP, "--profile", "v6.1")
    assert code == 1
    assert "step #3 write (line 35): expected the step's faults to mark 1 page(s) dirty, got 2" \
        in out


def test_run_with_an_unknown_profile_is_one_line_listing_the_names() -> None:
    code, out, err = run("run", RELAX_AFTER_UNMAP, "--profile", "v6.3..v6.19-rc4")
    assert code == 2 and out == ""
    assert err == ("s2mmu: error: unknown kernel profile 'v6.3..v6.19-rc4' (known: v6.1, v6.2, "
                   "v6.6, v6.12, v6.18, v6.19)\n")


def test_the_run_says_which_release_it_followed() -> None:
    code, out, _ = run("run", RELAX_AFTER_UNMAP, "--profile", "v6.19")
    assert code == 0 and out.splitlines()[0] == f"scenario relax-after-unmap ({RELAX_AFTER_UNMAP})"
    code, out, _ = run("run", RELAX_AFTER_UNMAP)
    assert out.splitlines()[0].endswith("), kernel profile v6.12")
    code, out, _ = run("run", RELAX_AFTER_UNMAP, "--profile", "v6.1", "--json")
    doc = json.loads(out)
    validate(doc)
    assert code == 1 and doc["profile"] == "v6.1" and not doc["ok"]
