"""The errno values the fault path and the ioctls return beyond the page-table library's.

Kernel: include/uapi/asm-generic/errno-base.h, errno.h.
"""

from __future__ import annotations

from s2mmu.pgtable.errno import errname as _pgtable_errname

ENOEXEC = 8
EFAULT = 14
EBUSY = 16
ENOSYS = 38

_NAMES = {ENOEXEC: "ENOEXEC", EFAULT: "EFAULT", EBUSY: "EBUSY", ENOSYS: "ENOSYS"}


def errname(ret: int) -> str:
    """Return '-EFAULT' for -14 and so on (the library's names for its own values)."""
    if -ret in _NAMES:
        return f"-{_NAMES[-ret]}"
    return _pgtable_errname(ret)
