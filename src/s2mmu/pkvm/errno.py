"""The errno values pKVM's hypercalls return beyond the page-table library's.

Kernel: include/uapi/asm-generic/errno-base.h.
"""

from __future__ import annotations

from s2mmu.pgtable.errno import errname as _pgtable_errname

EBUSY = 16
EFAULT = 14

_NAMES = {EBUSY: "EBUSY", EFAULT: "EFAULT"}


def errname(ret: int) -> str:
    """Return '-EBUSY' for -16 and so on (the library's names for its own values)."""
    if -ret in _NAMES:
        return f"-{_NAMES[-ret]}"
    return _pgtable_errname(ret)
