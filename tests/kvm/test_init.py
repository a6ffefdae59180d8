"""The s2mmu.kvm package: its exports and the >>> examples of its docstring."""

from __future__ import annotations

import doctest

import s2mmu.kvm


def test_docstring_examples_run() -> None:
    result = doctest.testmod(s2mmu.kvm, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 10 and result.failed == 0


def test_every_export_exists() -> None:
    assert s2mmu.kvm.__all__ and all(hasattr(s2mmu.kvm, n) for n in s2mmu.kvm.__all__)
