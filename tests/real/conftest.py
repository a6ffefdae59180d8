"""Real KVM, booted once per session: Debian's arm64 kernel under QEMU with the VMM.

Where QEMU, the cross compiler or the kernel package cannot be had the boot tests skip,
saying what is missing; where real KVM is required they fail instead:
scripts/install-and-test.sh (what CI runs) installs everything and sets
S2MMU_REQUIRE_REAL=1. The kernel .deb and the VMM are cached in ~/.cache/s2mmu/real (or
$S2MMU_REAL_CACHE) across sessions.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from s2mmu.arch.errors import InputError
from s2mmu.real.boot import Kernel, Mode, build_vmm, cache_dir, resolve_kernel
from s2mmu.real.diff import DiffReport
from s2mmu.real.runner import RealRequest, RealResult, diff_real, load

DATA = Path(__file__).resolve().parents[2] / "src" / "s2mmu" / "real" / "data"
SCENARIOS = [DATA / "dirty_round.toml", DATA / "host_events.toml", DATA / "guest_va.toml"]


def unavailable(e: Exception) -> None:
    """Skip, or fail where real KVM is required."""
    if os.environ.get("S2MMU_REQUIRE_REAL"):
        pytest.fail(f"real KVM required but unavailable: {e}")
    pytest.skip(f"real KVM unavailable: {e}")


@pytest.fixture(scope="session")
def real_cache() -> Path:
    return cache_dir(os.environ.get("S2MMU_REAL_CACHE"))


@pytest.fixture(scope="session")
def real_kernel(real_cache: Path) -> Kernel:
    try:
        build_vmm(real_cache)
        return resolve_kernel(None, real_cache)
    except InputError as e:
        unavailable(e)
        raise


@pytest.fixture(scope="session")
def nvhe_diff(real_kernel: Kernel, real_cache: Path) -> tuple[list[DiffReport], RealResult]:
    """The shipped real scenarios, diffed in one nVHE boot."""
    return diff_real(load(list(SCENARIOS)),
                     RealRequest(str(real_kernel.image), Mode.NVHE, str(real_cache)))
