"""The output contract: no wrapping or colour when piped, progress only on a terminal."""

from __future__ import annotations

import io

import pytest

from s2mmu.cli import output, schemas


def test_console_does_not_wrap_when_not_a_terminal() -> None:
    buf = io.StringIO()
    line = "S1 L0  0x60000000[1]: 0x0000000060001003  table -> 0x60001000 " * 6
    output.console(buf).print(line)
    assert buf.getvalue().count("\n") == 1
    assert "\x1b[" not in buf.getvalue()


def test_console_prints_no_escape_codes_for_markup_when_piped() -> None:
    buf = io.StringIO()
    output.console(buf).print("[bold red]fault[/]")
    assert buf.getvalue() == "fault\n"


def test_progress_is_silent_when_stderr_is_not_a_terminal(
        capsys: pytest.CaptureFixture[str]) -> None:
    with output.progress("exploring", total=3) as p:
        p.advance()
        p.update(total=4, description="more")
    assert capsys.readouterr().err == ""


def test_print_json_writes_one_document() -> None:
    import json

    buf = io.StringIO()
    output.print_json({"schema": "s2mmu.x/1", "v": "0x10"}, buf)
    assert json.loads(buf.getvalue()) == {"schema": "s2mmu.x/1", "v": "0x10"}


def test_schema_file_names() -> None:
    assert schemas.schema_file("s2mmu.run/2") == "s2mmu.run.2.json"


def test_a_rule_is_80_columns_when_piped() -> None:
    buf = io.StringIO()
    output.console(buf).rule("AT instructions")
    (line,) = buf.getvalue().splitlines()
    assert len(line) == output.PIPED_RULE_WIDTH and "AT instructions" in line
