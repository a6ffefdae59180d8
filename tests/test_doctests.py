"""The examples in the package docstrings run, and give what they say."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["s2mmu", "s2mmu.api", "s2mmu.arch", "s2mmu.arch.explain", "s2mmu.arch.reprs",
           "s2mmu.pgtable"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0


@pytest.mark.parametrize("name", ["s2mmu", "s2mmu.arch", "s2mmu.pgtable"])
def test_package_exports_exist(name: str) -> None:
    module = importlib.import_module(name)
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert missing == []
