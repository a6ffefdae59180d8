"""The s2mmu.scenario package: its exports and the >>> examples of its docstring."""

from __future__ import annotations

import doctest

import s2mmu.scenario


def test_docstring_examples_run() -> None:
    result = doctest.testmod(s2mmu.scenario, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 10 and result.failed == 0


def test_every_export_exists_and_is_documented() -> None:
    for name in s2mmu.scenario.__all__:
        obj = getattr(s2mmu.scenario, name)
        assert obj.__doc__, name
