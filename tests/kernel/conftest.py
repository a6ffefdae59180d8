"""The kernel library, built once per test session from the installed kernel source.

Where the source or a compiler is missing the kernel tests skip, saying what to install;
where the oracle is required they fail instead: scripts/install-and-test.sh (what CI
runs) installs both and sets S2MMU_REQUIRE_KERNEL=1, and $CI counts too.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from s2mmu.arch.errors import InputError
from s2mmu.kernel.at_binding import KernelAt
from s2mmu.kernel.binding import KernelPgtable
from s2mmu.kernel.build import GRANULES, KernelBuild, build

LINUX_6_1 = "/usr/src/linux-source-6.1.tar.xz"
"""Debian's linux-source-6.1 (scripts/install-and-test.sh installs it)."""


@pytest.fixture(scope="session")
def kernel_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kernel-cache")


@pytest.fixture(scope="session")
def kernel_build(kernel_cache: Path) -> KernelBuild:
    try:
        return build(None, str(kernel_cache))
    except InputError as e:
        if os.environ.get("S2MMU_REQUIRE_KERNEL") or os.environ.get("CI"):
            pytest.fail(f"kernel oracle required but unavailable: {e}")
        pytest.skip(f"kernel oracle unavailable: {e}")


@pytest.fixture(scope="session")
def kernel(kernel_build: KernelBuild) -> KernelPgtable:
    return KernelPgtable(kernel_build.library)


def _build_or_skip(source: str | None, cache: Path, page_shift: int = 12) -> KernelBuild:
    try:
        return build(source, str(cache), page_shift)
    except InputError as e:
        if os.environ.get("S2MMU_REQUIRE_KERNEL") or os.environ.get("CI"):
            pytest.fail(f"kernel oracle required but unavailable: {e}")
        pytest.skip(f"kernel oracle unavailable: {e}")


@pytest.fixture(scope="session")
def kernel_at(kernel_build: KernelBuild) -> KernelAt:
    if kernel_build.at_library is None:
        pytest.fail(f"Linux {kernel_build.version}: no at.c library was built")
    return KernelAt(kernel_build.at_library)


@pytest.fixture(scope="session")
def kernel_6_1_build(kernel_cache: Path) -> KernelBuild:
    return _build_or_skip(LINUX_6_1, kernel_cache)


@pytest.fixture(scope="session")
def kernel_6_1(kernel_6_1_build: KernelBuild) -> KernelPgtable:
    return KernelPgtable(kernel_6_1_build.library)


@pytest.fixture(scope="session", params=["16k", "64k"])
def granule_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def kernel_granule_build(kernel_cache: Path, granule_name: str) -> KernelBuild:
    return _build_or_skip(None, kernel_cache, GRANULES[granule_name])


@pytest.fixture(scope="session")
def kernel_granule(kernel_granule_build: KernelBuild) -> KernelPgtable:
    return KernelPgtable(kernel_granule_build.library)


@pytest.fixture(scope="session")
def kernel_6_1_granule(kernel_cache: Path, granule_name: str) -> KernelPgtable:
    return KernelPgtable(_build_or_skip(LINUX_6_1, kernel_cache, GRANULES[granule_name]).library)
