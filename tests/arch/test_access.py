"""Access descriptors: the constructors refuse an EL no access comes from."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s2mmu.arch.access import AccessType, acc_at, acc_gpr, acc_ifetch, access_pieces
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


def test_an_access_crossing_a_page_is_two_pieces_the_second_at_the_boundary():
    assert access_pieces(0x1FFC, 8, 0x1000) == [(0x1FFC, 4), (0x2000, 4)]
    assert access_pieces(0x1FF8, 8, 0x1000) == [(0x1FF8, 8)]
    assert access_pieces(0x0FFF, 16, 0x1000) == [(0x0FFF, 1), (0x1000, 15)]


@given(st.integers(0, 1 << 48), st.sampled_from([1, 2, 4, 8, 16, 0x3000]),
       st.sampled_from([0x1000, 0x4000, 0x10000]))
def test_pieces_cover_the_access_in_order_one_page_each(address, size, page):
    pieces = access_pieces(address, size, page)
    assert pieces[0][0] == address and sum(n for _, n in pieces) == size
    for (a, n), nxt in zip(pieces, [*pieces[1:], None], strict=True):
        assert a // page == (a + n - 1) // page
        if nxt is not None:
            assert nxt[0] == a + n and nxt[0] % page == 0


def test_an_empty_access_is_refused():
    with pytest.raises(InputError) as e:
        access_pieces(0x1000, 0, 0x1000)
    assert str(e.value) == "size=0: an access is at least one byte"
