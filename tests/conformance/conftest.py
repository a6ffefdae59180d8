"""Shared fixtures for the conformance tests: QEMU presence, case files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from s2mmu.conformance.qemu import HarnessUnavailable, QemuConfig, unavailable_reason
from s2mmu.conformance.target import QemuTarget, qemu_target

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


def qemu10_unavailable(reason: str) -> None:
    """Skip a test that needs QEMU 10.0, or fail where it is required.

    scripts/install-and-test.sh (what CI runs) adds bookworm-backports, fetches QEMU 10.0
    and sets S2MMU_REQUIRE_QEMU10=1; S2MMU_REQUIRE_REAL and $CI count too.
    """
    if any(os.environ.get(name) for name in ("S2MMU_REQUIRE_QEMU10", "S2MMU_REQUIRE_REAL",
                                             "CI")):
        pytest.fail(f"QEMU 10.0 required but unavailable: {reason}")
    pytest.skip(f"QEMU 10.0 unavailable: {reason}")


@pytest.fixture(scope="session")
def qemu10() -> QemuTarget:
    """Return QEMU 10.0 as a conformance target (fetched into the cache if needed)."""
    if unavailable_reason() is not None:
        qemu10_unavailable(str(unavailable_reason()))
    try:
        return qemu_target("10.0")
    except HarnessUnavailable as error:
        qemu10_unavailable(str(error))
        raise


@pytest.fixture(scope="session")
def qemu72() -> QemuTarget:
    """Return the system's QEMU 7.2 as a conformance target (skips without QEMU)."""
    if unavailable_reason() is not None:
        pytest.skip(f"QEMU conformance needs {unavailable_reason()}")
    return qemu_target("7.2")
