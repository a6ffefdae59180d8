"""`s2mmu kernel build` / `s2mmu kernel diff`: text, JSON (validated), exit statuses."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from s2mmu.cli.main import cli
from s2mmu.cli.schemas import validate
from s2mmu.kernel.build import KernelBuild
from tests.kernel.test_diff import RELAX_RW_ON_EXEC


def run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_build_names_the_kernel_and_the_profile(kernel_build: KernelBuild,
                                                kernel_cache: Path) -> None:
    code, out, _ = run("kernel", "build", "--cache", str(kernel_cache))
    assert code == 0
    assert out.splitlines()[:2] == [f"kernel: Linux {kernel_build.version} from "
                                    f"{kernel_build.source}", "model profile: v6.12"]
    assert out.splitlines()[-1] == "build: cached"


def test_build_without_a_source_is_one_line_and_exit_2(tmp_path: Path) -> None:
    code, out, err = run("kernel", "build", "--source", str(tmp_path / "none.tar.xz"))
    assert code == 2 and out == ""
    assert err == f"s2mmu: error: kernel source {tmp_path / 'none.tar.xz'}: no such file or " \
                  "directory\n"


def test_diff_ends_with_the_agreement_line(kernel_build: KernelBuild,
                                           kernel_cache: Path) -> None:
    code, out, _ = run("kernel", "diff", "--cache", str(kernel_cache), "--ops", "40")
    assert code == 0
    assert out.splitlines()[-1] == "agreement 100.0% (40/40 operations)"


def test_diff_prints_a_replayable_difference_and_exits_1(kernel_build: KernelBuild,
                                                         kernel_cache: Path) -> None:
    code, out, _ = run("kernel", "diff", "--cache", str(kernel_cache), "--profile", "v6.19",
                       "--replay", RELAX_RW_ON_EXEC)
    assert code == 1
    lines = out.splitlines()
    assert lines[-3].startswith("difference 1: descriptor at 0x")
    assert lines[-2] == f'  replay: s2mmu kernel diff --profile v6.19 --replay "{RELAX_RW_ON_EXEC}"'
    assert lines[-1] == "agreement 50.0% (1/2 operations)"


def test_diff_json_is_one_valid_document(kernel_build: KernelBuild, kernel_cache: Path) -> None:
    code, out, _ = run("kernel", "diff", "--cache", str(kernel_cache), "--ops", "30", "--json")
    doc = json.loads(out)
    validate(doc)
    assert code == 0
    assert doc["compared"] == doc["agreed"] == 30 and doc["differences"] == []
    assert doc["kernel"]["version"] == str(kernel_build.version)


def test_diff_ipa_bits_reach_the_json_and_the_replay_line(kernel_build: KernelBuild,
                                                          kernel_cache: Path) -> None:
    code, out, _ = run("kernel", "diff", "--cache", str(kernel_cache), "--ops", "20",
                       "--ipa-bits", "44", "--json")
    doc = json.loads(out)
    validate(doc)
    assert code == 0 and doc["ipa_bits"] == 44 and doc["agreed"] == 20
    code, out, _ = run("kernel", "diff", "--cache", str(kernel_cache), "--profile", "v6.19",
                       "--fwb", "--ipa-bits", "36", "--replay", RELAX_RW_ON_EXEC)
    assert code == 1
    assert out.splitlines()[-2] == ("  replay: s2mmu kernel diff --profile v6.19 --fwb "
                                    f'--ipa-bits 36 --replay "{RELAX_RW_ON_EXEC}"')


def test_diff_ipa_bits_outside_32_to_48_is_a_usage_error(kernel_build: KernelBuild,
                                                         kernel_cache: Path) -> None:
    code, out, err = run("kernel", "diff", "--cache", str(kernel_cache), "--ipa-bits", "50")
    assert code == 2 and out == ""
    assert "'--ipa-bits': 50 is not in the range 32<=x<=48" in err


def test_diff_at_agrees_with_6_12_and_exits_0(kernel_build: KernelBuild,
                                              kernel_cache: Path) -> None:
    code, out, _ = run("kernel", "diff", "--at", "--cache", str(kernel_cache), "--ops", "40")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].endswith("at.c; model AT profile v6.12")
    assert lines[-1] == "agreement 100.0% (40/40 cases)"


def test_diff_at_prints_a_replayable_case_and_exits_1(kernel_build: KernelBuild,
                                                      kernel_cache: Path) -> None:
    code, out, _ = run("kernel", "diff", "--at", "--cache", str(kernel_cache), "--at-profile",
                       "current", "--case", "15")
    assert code == 1
    lines = out.splitlines()
    assert lines[-4].startswith("difference, case 15: PAR_EL1: kernel 0xff0007f50ac30800")
    assert lines[-2] == "  replay: s2mmu kernel diff --at --at-profile current --seed 0 --case 15"
    assert lines[-1] == "agreement 0.0% (0/1 cases)"


def test_diff_at_json_is_one_valid_document(kernel_build: KernelBuild,
                                            kernel_cache: Path) -> None:
    code, out, _ = run("kernel", "diff", "--at", "--cache", str(kernel_cache), "--ops", "10",
                       "--seed", "2", "--json")
    doc = json.loads(out)
    validate(doc)
    assert code == 0 and doc["compared"] == doc["agreed"] == 10


def test_diff_case_without_at_is_refused(kernel_build: KernelBuild, kernel_cache: Path) -> None:
    code, out, err = run("kernel", "diff", "--cache", str(kernel_cache), "--case", "3")
    assert code == 2 and out == ""
    assert err.startswith("s2mmu: error: kernel diff: --case and --at-profile go with --at")


def test_diff_scenario_list_names_every_scenario_and_exits_0() -> None:
    code, out, _ = run("kernel", "diff", "--scenario", "list")
    assert code == 0
    assert [line.split(":")[0] for line in out.splitlines()] == [
        "dirty-logging", "owner-annotations", "block-over-table"]


def test_diff_unknown_scenario_is_one_line_and_exit_2() -> None:
    code, out, err = run("kernel", "diff", "--scenario", "nope")
    assert code == 2 and out == ""
    assert err == ("s2mmu: error: kernel diff: unknown scenario 'nope'; one of dirty-logging, "
                   "owner-annotations, block-over-table (or list)\n")


def test_diff_scenario_with_replay_is_refused() -> None:
    code, _, err = run("kernel", "diff", "--scenario", "dirty-logging", "--replay", "mkyoung 0x0")
    assert code == 2
    assert err.startswith("s2mmu: error: kernel diff: --scenario dirty-logging goes with neither")


def test_diff_scenario_runs_the_story_and_agrees(kernel_build: KernelBuild,
                                                 kernel_cache: Path) -> None:
    code, out, _ = run("kernel", "diff", "--cache", str(kernel_cache), "--scenario",
                       "dirty-logging")
    lines = out.splitlines()
    assert code == 0
    assert lines[0].endswith("; model profile v6.12; scenario dirty-logging")
    assert lines[-1] == "agreement 100.0% (39/39 operations)"


def test_diff_scenario_json_names_it_and_validates(kernel_build: KernelBuild,
                                                   kernel_cache: Path) -> None:
    code, out, _ = run("kernel", "diff", "--cache", str(kernel_cache), "--scenario",
                       "block-over-table", "--profile", "v6.19", "--json")
    doc = json.loads(out)
    validate(doc)
    assert code == 1 and doc["scenario"] == "block-over-table"
    assert doc["differences"][0]["replay"] == ["map 0x400000 0x200000 0x140400000 RWX fault",
                                               "relax_perms 0x401000 RW"]
    code, out, _ = run("kernel", "diff", "--cache", str(kernel_cache), "--ops", "5", "--json")
    assert "scenario" not in json.loads(out)


def test_diff_granule_reaches_the_json(kernel_granule_build: KernelBuild, kernel_cache: Path,
                                       granule_name: str) -> None:
    code, out, _ = run("kernel", "diff", "--cache", str(kernel_cache), "--ops", "30",
                       "--granule", granule_name, "--json")
    doc = json.loads(out)
    validate(doc)
    assert code == 0 and doc["granule"] == granule_name and doc["agreed"] == 30


def test_diff_granule_reaches_the_replay_line(kernel_granule_build: KernelBuild,
                                              kernel_cache: Path, granule_name: str) -> None:
    walk = "walk 0x0 0x400000 LEAF fail@1=-EAGAIN"
    code, out, _ = run("kernel", "diff", "--cache", str(kernel_cache), "--granule", granule_name,
                       "--profile", "v6.19", "--replay", walk)
    assert code == 1
    assert out.splitlines()[-3] == "difference 1: return value: kernel 0, model -11"
    assert out.splitlines()[-2] == (f"  replay: s2mmu kernel diff --profile v6.19 --granule "
                                    f"{granule_name} --replay \"{walk}\"")


def test_build_names_the_granule(kernel_granule_build: KernelBuild, kernel_cache: Path,
                                 granule_name: str) -> None:
    code, out, _ = run("kernel", "build", "--cache", str(kernel_cache), "--granule", granule_name)
    assert code == 0
    assert out.splitlines()[2] == (f"granule: {granule_name} (PAGE_SHIFT "
                                   f"{kernel_granule_build.page_shift})")
    assert out.splitlines()[3].endswith(f"libkpgtable-{granule_name}.so")


def test_diff_granule_with_a_scenario_is_refused() -> None:
    code, out, err = run("kernel", "diff", "--granule", "16k", "--scenario", "dirty-logging")
    assert code == 2 and out == ""
    assert err.startswith("s2mmu: error: kernel diff: --granule 16k goes with random or "
                          "replayed operations")
