"""Shared fixtures for the conformance tests: QEMU presence, case files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from s2mmu.conformance.qemu import QemuConfig, unavailable_reason

CASES = Path(__file__).parent / "cases"
"""Case files: shared/formats/examples (validation.*) and the curated set (curated_*)."""

requires_qemu = pytest.mark.skipif(
    unavailable_reason() is not None,
    reason=f"QEMU conformance needs {unavailable_reason()}",
)
"""Mark a test that boots QEMU; it skips, naming the apt command, when QEMU is absent."""


def load(name: str) -> Any:
    """Return the JSON of a case file in tests/conformance/cases."""
    return json.loads((CASES / name).read_text())


@pytest.fixture(scope="session")
def qemu_config() -> QemuConfig:
    """Return the QEMU configuration the tests use (two instances at once)."""
    return QemuConfig(jobs=2)
