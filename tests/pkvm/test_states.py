"""Page states in software bits, and components."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from s2mmu.pgtable.prot import KVM_PGTABLE_PROT_RWX, KVM_PGTABLE_PROT_SW0, KVM_PGTABLE_PROT_SW1
from s2mmu.pkvm.states import (
    FFA,
    HOST,
    HYP,
    PKVM_ID_FFA,
    PKVM_ID_GUEST,
    PKVM_ID_HOST,
    PKVM_ID_HYP,
    PKVM_NOPAGE,
    PKVM_PAGE_OWNED,
    PKVM_PAGE_SHARED_BORROWED,
    PKVM_PAGE_SHARED_OWNED,
    Guest,
    PkvmPageState,
    component_id,
    pkvm_getstate,
    pkvm_mkstate,
)


def test_state_values_are_the_kernels_two_bit_field() -> None:
    assert [int(s) for s in PkvmPageState] == [0, 1, 2, 3]
    assert pkvm_mkstate(0, PKVM_PAGE_SHARED_OWNED) == KVM_PGTABLE_PROT_SW0
    assert pkvm_mkstate(0, PKVM_PAGE_SHARED_BORROWED) == KVM_PGTABLE_PROT_SW1
    assert pkvm_mkstate(0, PKVM_NOPAGE) == KVM_PGTABLE_PROT_SW0 | KVM_PGTABLE_PROT_SW1
    assert pkvm_mkstate(KVM_PGTABLE_PROT_RWX, PKVM_PAGE_OWNED) == KVM_PGTABLE_PROT_RWX


@given(st.sampled_from(list(PkvmPageState)), st.sampled_from(list(PkvmPageState)))
def test_mkstate_replaces_the_state_and_getstate_reads_it_back(
    old: PkvmPageState, new: PkvmPageState
) -> None:
    prot = pkvm_mkstate(pkvm_mkstate(KVM_PGTABLE_PROT_RWX, old), new)
    assert pkvm_getstate(prot) is new
    assert prot & KVM_PGTABLE_PROT_RWX == KVM_PGTABLE_PROT_RWX


def test_every_component_has_its_owner_id_and_guests_share_one() -> None:
    assert component_id(HOST) is PKVM_ID_HOST
    assert component_id(HYP) is PKVM_ID_HYP
    assert component_id(FFA) is PKVM_ID_FFA
    assert component_id(Guest(1, True)) is component_id(Guest(2, False)) is PKVM_ID_GUEST
