"""Errno-named results, as the kernel's page-table code returns them.

Every operation returns an int: 0 on success or a negative errno (``-EAGAIN``), exactly
like arch/arm64/kvm/hyp/pgtable.c, because walk control depends on the value.

Kernel: include/uapi/asm-generic/errno-base.h, errno.h (the numbers).
"""

from __future__ import annotations

EPERM = 1
ENOENT = 2
E2BIG = 7
EAGAIN = 11
ENOMEM = 12
EEXIST = 17
EINVAL = 22
ERANGE = 34
EIO = 5

_NAMES = {
    EPERM: "EPERM",
    ENOENT: "ENOENT",
    E2BIG: "E2BIG",
    EAGAIN: "EAGAIN",
    ENOMEM: "ENOMEM",
    EEXIST: "EEXIST",
    EINVAL: "EINVAL",
    ERANGE: "ERANGE",
    EIO: "EIO",
}


def errname(ret: int) -> str:
    """Return a result as the kernel would print it: "0", "-EAGAIN", or the number."""
    if ret == 0:
        return "0"
    name = _NAMES.get(-ret)
    return f"-{name}" if name is not None else str(ret)
