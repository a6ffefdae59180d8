"""Fixtures shared with tests/kernel: the kernel library built once per session."""

from tests.kernel.conftest import kernel, kernel_build, kernel_cache  # noqa: F401
