"""pKVM's errno names."""

from s2mmu.pkvm.errno import EBUSY, EFAULT, errname


def test_names_of_pkvm_values_and_the_librarys() -> None:
    assert (EBUSY, EFAULT) == (16, 14)
    assert errname(-EBUSY) == "-EBUSY"
    assert errname(-11) == "-EAGAIN"
    assert errname(0) == "0"
