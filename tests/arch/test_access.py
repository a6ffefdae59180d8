"""Access descriptors: the constructors refuse an EL no access comes from."""

from __future__ import annotations

import pytest

from s2mmu.arch.access import AccessType, acc_at, acc_gpr, acc_ifetch
from s2mmu.arch.errors import InputError


def test_constructors_build_the_access_asked_for():
    assert (acc_gpr(0, True).acctype, acc_gpr(0, True).write) == (AccessType.GPR, True)
    assert acc_ifetch(1).is_ifetch() and acc_at(2, False, pan=True).pan


@pytest.mark.parametrize("make", [lambda el: acc_gpr(el, False), acc_ifetch,
                                  lambda el: acc_at(el, False)])
@pytest.mark.parametrize("el", [3, -1])
def test_constructors_refuse_an_el_outside_el0_to_el2(make, el):
    with pytest.raises(InputError) as e:
        make(el)
    assert str(e.value) == (f"el={el}: an access comes from EL0, EL1 or EL2 "
                            "(the EL whose permissions apply)")
