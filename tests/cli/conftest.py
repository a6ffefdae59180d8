"""Fixtures shared with tests/kernel: the kernel library built once per session."""

from tests.kernel.conftest import (  # noqa: F401
    granule_name,
    kernel,
    kernel_build,
    kernel_cache,
    kernel_granule_build,
)
