"""The output contract every command follows: one console, one progress bar, one JSON path.

- Text goes to a rich Console that wraps and colours only on a terminal: piped to a file
  or another program it never wraps (a line is a line, for grep and diff) and carries no
  escape codes; NO_COLOR turns colour off on a terminal too.
- Progress of a long run (conformance, race exploration, big scenarios) goes to stderr,
  and only when stderr is a terminal; otherwise the run stays quiet.
- A --json document is exactly one JSON value on stdout, carrying its "schema" name; the
  schema lives in s2mmu/cli/schemas/ (see :mod:`s2mmu.cli.schemas`).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


PIPED_RULE_WIDTH = 80
"""The width of a rule (a titled separator line) when output is not a terminal."""


class _PipedConsole(Console):
    """A console that never wraps; its rules are PIPED_RULE_WIDTH wide, not unbounded."""

    def rule(self, title: Any = "", *, characters: str = "\u2500", style: Any = "rule.line",
             align: Any = "center") -> None:
        from rich.rule import Rule

        self.print(Rule(title, characters=characters, style=style, align=align),
                   width=PIPED_RULE_WIDTH)


def console(stream: IO[str] | None = None) -> Console:
    """Return the console text output goes to (stdout unless stream is given).

    On a terminal: the terminal's width, colour unless NO_COLOR is set. Elsewhere: no
    wrapping at all (width is effectively unbounded) and no colour or escape codes.
    """
    out = stream if stream is not None else sys.stdout
    if _is_terminal(out):
        return Console(file=out, highlight=False, no_color="NO_COLOR" in os.environ)
    return _PipedConsole(file=out, highlight=False, color_system=None, width=1 << 16,
                   soft_wrap=True, force_terminal=False, emoji=False)


def print_json(doc: Any, stream: IO[str] | None = None) -> None:
    """Print doc as one JSON document (indented, sorted as built) and a newline."""
    out = stream if stream is not None else sys.stdout
    out.write(json.dumps(doc, indent=2) + "\n")


class _Progress:
    """A handle a long run advances; silent when stderr is not a terminal."""

    def __init__(self, bar: Progress | None, task: Any) -> None:
        self._bar, self._task = bar, task

    def advance(self, n: int = 1) -> None:
        """Count n more units done."""
        if self._bar is not None:
            self._bar.advance(self._task, n)

    def update(self, *, total: int | None = None, description: str | None = None) -> None:
        """Change the total or the description shown."""
        if self._bar is not None:
            kwargs: dict[str, Any] = {}
            if total is not None:
                kwargs["total"] = total
            if description is not None:
                kwargs["description"] = description
            self._bar.update(self._task, **kwargs)


@contextmanager
def progress(description: str, total: int | None = None) -> Iterator[_Progress]:
    """Show a progress bar on stderr while the block runs, only if stderr is a terminal."""
    if not _is_terminal(sys.stderr):
        yield _Progress(None, None)
        return
    bar = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                   TimeElapsedColumn(), console=Console(file=sys.stderr), transient=True)
    with bar:
        task = bar.add_task(description, total=total)
        yield _Progress(bar, task)
