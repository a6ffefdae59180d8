"""Output and input paths: one line and exit 2, nothing half-written."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from s2mmu.cli.main import cli

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "readonly_and_holes.toml"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_empty_html_path_is_refused() -> None:
    code, _, err = run("run", str(SCENARIO), "--html", "")
    assert code == 2
    assert err.strip() == "s2mmu: error: --html : cannot write: not a file path"


def test_keep_mismatches_in_an_impossible_place_is_refused_before_running() -> None:
    code, out, err = run("conformance", "--cases", "1", "--keep-mismatches", "/proc/nope")
    assert code == 2 and out == ""
    assert err.strip() == ("s2mmu: error: --keep-mismatches /proc/nope: cannot create the "
                           "directory: No such file or directory")


def test_non_utf8_case_file_for_qemu_at_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bin.json"
    bad.write_bytes(b"\xff\xfe")
    code, _, err = run("qemu-at", str(bad))
    assert code == 2
    assert err.strip() == f"s2mmu: error: {bad}: not UTF-8 text (byte 0: 0xff)"


def test_missing_case_file_names_the_file() -> None:
    code, _, err = run("at", "/nonexistent/case.json")
    assert code == 2
    assert err.strip() == ("s2mmu: error: /nonexistent/case.json: cannot read: No such file or "
                           "directory")
