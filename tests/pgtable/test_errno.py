"""Errno names: results print as the kernel's symbolic names."""

from s2mmu.pgtable.errno import E2BIG, EAGAIN, EINVAL, ENOMEM, EPERM, ERANGE, errname


def test_errno_values_are_the_linux_numbers() -> None:
    assert (EPERM, E2BIG, EAGAIN, ENOMEM, EINVAL, ERANGE) == (1, 7, 11, 12, 22, 34)


def test_errname_prints_negative_errnos_by_name() -> None:
    assert errname(0) == "0"
    assert errname(-EAGAIN) == "-EAGAIN"
    assert errname(-ERANGE) == "-ERANGE"


def test_errname_prints_unknown_values_as_numbers() -> None:
    assert errname(-999) == "-999"
    assert errname(5) == "5"
